"""``docker cp`` and ``docker export``: a container's files as tars, and tars into them
(moby's ``daemon/archive*.go`` and ``daemon/export.go``).

The container may be created, running or stopped: its RW layer is mounted
(a reference more if it runs) for the operation and released on every path
out, errors included.  The container's lock is held only to mount and
unmount, not while bytes flow: dockerd holds it throughout, which lets one
slow client block ``docker stop`` and the exit handling of the container.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

from berth import errdefs
from berth.archive import ContainerFS, Mount, Resolved
from berth.daemon import volumes as _volumes
from berth.runtime.userdb import resolve_user
from berth.types.container import PathStat
from berth.volume.plan import MountPlan, NetworkFiles, container_mounts

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon
    from berth.layer.store import RWLayer

log = logging.getLogger(__name__)


def mount_plan(container: Container) -> MountPlan:
    """The container's mount plan from its record, for ``docker cp`` and, to come, commit,
    export and diff; ``start`` hands the same record to the spec, which plans alike."""
    rec = container.record
    files = NetworkFiles(rec.hostname_path, rec.hosts_path, rec.resolv_conf_path)
    return container_mounts(rec.mount_points.values(), container.host_config, files)


def fs_mounts(d: Daemon, container: Container) -> list[Mount]:
    """The binds, volumes and network files the container's processes see (not tmpfs)."""
    out: list[Mount] = []
    for m in mount_plan(container).files():
        source = m.source
        if m.origin == "user" and m.point is not None and m.point.type == "volume":
            source = _volumes.ensure(d, m.point)
        out.append(Mount(m.destination, source, m.writable))
    return out


class _Session:
    """The container's RW layer mounted and its files opened, until :meth:`close`.

    With *with_mounts* (``docker cp``) its binds and volumes appear over the root as
    its processes see them; without (``docker export``) only its own layers do.
    """

    def __init__(self, d: Daemon, container: Container, *, with_mounts: bool = True) -> None:
        self._d = d
        self.container = container
        layers = d.images.layers
        with container.lock:
            if container.state.removal_in_progress:
                raise errdefs.Conflict(f"container {container.id} is marked for removal")
            self._rw: RWLayer = layers.get_rw_layer(container.id)
            self.rootfs: Path = layers.mount(self._rw)
            try:
                mounts = fs_mounts(d, container) if with_mounts else []
                readonly = container.host_config.readonly_rootfs
                self.user = container.record.config.user
            except BaseException:
                layers.unmount(self._rw)
                raise
        self._closed = False
        self._lock = threading.Lock()
        try:
            self.fs = ContainerFS(str(self.rootfs), mounts, readonly_rootfs=readonly)
        except BaseException:
            self._unmount()
            raise

    def _unmount(self) -> None:
        with self.container.lock:
            self._d.images.layers.unmount(self._rw)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.fs.close()
        finally:
            self._unmount()


def _not_found(ref: str, path: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"Could not find the file {path} in container {ref}")


def _path_error(e: OSError, ref: str, path: str) -> errdefs.BerthError:
    """moby's mapping: a missing path is 404 (with its message); the rest name the path."""
    if isinstance(e, FileNotFoundError):
        return _not_found(ref, path)
    if e.errno == errno.ENOTDIR:
        return errdefs.InvalidParameter(f"lstat {path}: not a directory")
    if e.errno in (errno.ELOOP, errno.ENAMETOOLONG):
        return errdefs.InvalidParameter(f"{path}: {e.strerror}")
    return errdefs.System(f"{path}: {e.strerror or e}")


def _resolve(session: _Session, ref: str, path: str) -> tuple[Resolved, PathStat]:
    try:
        resolved = session.fs.resolve(path)
        return resolved, session.fs.path_stat(resolved)
    except OSError as e:
        raise _path_error(e, ref, path) from None


def stat_path(d: Daemon, ref: str, path: str) -> PathStat:
    """``HEAD /containers/{name}/archive``."""
    session = _Session(d, d.get_container(ref))
    try:
        return _resolve(session, ref, path)[1]
    finally:
        session.close()


class Archive:
    """``GET /containers/{name}/archive``: the stat of the path and, once, its tar.

    Holds the container's files open until :meth:`write_to` ends or :meth:`close`.
    The API sees it as :class:`berth.backend.PathArchive`.
    """

    def __init__(self, session: _Session, resolved: Resolved, stat: PathStat) -> None:
        self._session = session
        self._resolved = resolved
        self.stat = stat

    def write_to(self, fd: int) -> None:
        """Write the tar to *fd* (blocking), then release the container's files."""
        try:
            self._session.fs.archive(self._resolved, fd)
        except BrokenPipeError:
            log.debug("archive of %s: the client went away", self._resolved.abs_path)
        except Exception:
            log.exception("archive of %s failed", self._resolved.abs_path)
        finally:
            self.close()

    def close(self) -> None:
        self._session.close()


def archive_path(d: Daemon, ref: str, path: str) -> Archive:
    container = d.get_container(ref)
    session = _Session(d, container)
    try:
        resolved, stat = _resolve(session, ref, path)
    except BaseException:
        session.close()
        raise
    d.emit_container(container, "archive-path")
    return Archive(session, resolved, stat)


def extract_to_dir(
    d: Daemon,
    ref: str,
    path: str,
    copy_uid_gid: bool,
    no_overwrite_dir_non_dir: bool,
    content: IO[bytes],
) -> None:
    """``PUT /containers/{name}/archive``: unpack *content* into the directory *path*."""
    container = d.get_container(ref)
    session = _Session(d, container)
    try:
        try:
            dest = session.fs.extraction_dir(path)
        except FileNotFoundError:
            raise _not_found(ref, path) from None
        except NotADirectoryError:
            raise errdefs.InvalidParameter("extraction point is not a directory") from None
        except OSError as e:
            raise _path_error(e, ref, path) from None
        session.fs.check_writable(dest.mount)
        chown = None
        if copy_uid_gid and session.user:
            user = resolve_user(session.rootfs, session.user)
            chown = (user.uid, user.gid)
        session.fs.extract(
            dest, content, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, chown=chown
        )
    finally:
        session.close()
    d.emit_container(container, "extract-to-dir")


class Export:
    """``GET /containers/{name}/export``: the container's filesystem as one tar, once.

    What dockerd's ``containerExport`` tars: the mounted RW layer over the init layer
    and the image's layers, as the container's processes see its root, but not its
    volumes and binds, which are mounted only in the container's own mount namespace
    (their mount points are there, empty).  Holds the layer mounted until
    :meth:`write_to` ends or :meth:`close`; the API sees it as
    :class:`berth.backend.ContainerExport`.
    """

    def __init__(self, d: Daemon, session: _Session) -> None:
        self._d = d
        self._session = session

    def write_to(self, fd: int) -> None:
        """Write the tar to *fd* (blocking), then release the layer; the ``export`` event
        once the whole tar is out, as dockerd sends it."""
        container = self._session.container
        try:
            self._session.fs.export(fd)
        except BrokenPipeError:
            log.debug("export of %s: the client went away", container.id)
            return
        except Exception:
            log.exception("export of %s failed", container.id)
            return
        finally:
            self.close()
        self._d.emit_container(container, "export")

    def close(self) -> None:
        self._session.close()


def export_container(d: Daemon, ref: str) -> Export:
    """moby's ``ContainerExport``: refused for a dead container or one being removed."""
    container = d.get_container(ref)
    if container.state.dead:
        raise errdefs.Conflict(f"You cannot export container {container.id} which is Dead")
    if container.state.removal_in_progress:
        raise errdefs.Conflict(f"You cannot export container {container.id} which is being removed")
    return Export(d, _Session(d, container, with_mounts=False))
