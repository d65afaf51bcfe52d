"""``docker diff`` and ``docker commit`` (moby's ``daemon/changes.go`` and ``daemon/commit.go``).

Both read the container's RW layer against its init layer (:mod:`berth.layer.changes`):
created, running or stopped, nothing is mounted and the container's lock is held only to
look at its state.  A commit then streams the layer tar of those changes through a pipe
into the image service, which registers it on the container's image and makes the child
image (:mod:`berth.image.commit`).

``--pause`` (the default) pauses a running container only while its files are read: the
changes are listed and the tar written while it is paused, and it is resumed the moment
the tar's last byte is out, before the layer is finished and the image made (dockerd keeps
it paused until the end).  It is resumed on every path, failures included, and a container
that was paused already is left as it was.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import TYPE_CHECKING

import msgspec

from berth import errdefs
from berth.archive import PIPE_SIZE, Change, WriterPipe
from berth.daemon import stop as _stop
from berth.daemon.create import merge
from berth.image.changes import apply_changes
from berth.image.commit import CommitConfig
from berth.image.reference import repo_tag_reference
from berth.layer.changes import export_rw_changes, rw_changes
from berth.types.commit import CommitOptions, FilesystemChange
from berth.types.container import Config

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon
    from berth.layer import LayerStore, RWLayer

log = logging.getLogger(__name__)

#: the pipe between the tar writer and the layer store (Linux's default is 64 KiB)

_config_decoder = msgspec.json.Decoder(Config)
_config_encoder = msgspec.json.Encoder()


def _api_path(path: str) -> str:
    """A path as JSON can carry it: bytes that are not UTF-8 become U+FFFD, as Go's
    encoder writes them."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _rw_layer(d: Daemon, container: Container) -> RWLayer:
    with container.lock:
        if container.state.removal_in_progress:
            raise errdefs.Conflict(f"container {container.id} is marked for removal")
        return d.images.layers.get_rw_layer(container.id)


def _changes(d: Daemon, container: Container, rw: RWLayer) -> list[Change]:
    try:
        return rw_changes(d.images.layers, rw)
    except OSError as e:  # its layer removed meanwhile, or a disk error: no host path
        raise errdefs.System(
            f"listing the changes of container {container.id}: {e.strerror or e}"
        ) from e


def container_changes(d: Daemon, ref: str) -> list[FilesystemChange]:
    """``GET /containers/{name}/changes``."""
    container = d.get_container(ref)
    changes = _changes(d, container, _rw_layer(d, container))
    return [FilesystemChange(_api_path(c.path), c.kind) for c in changes]


def _copy_config(config: Config) -> Config:
    return _config_decoder.decode(_config_encoder.encode(config))


def new_config(container: Container, opts: CommitOptions) -> Config:
    """The committed image's config: the request's (else the container's), with the
    ``changes`` applied and then the container's config filling in what it leaves unset
    (moby's ``BuildFromConfig`` + ``merge``)."""
    own = container.record.config
    base = _copy_config(opts.config if opts.config is not None else own)
    config = apply_changes(base, opts.changes) if opts.changes else base
    merge(config, _copy_config(own))
    return config


class _Pause:
    """The pause of a commit: taken if asked and the container runs, released once."""

    def __init__(self, d: Daemon, container: Container, wanted: bool) -> None:
        self._d = d
        self._id = container.id
        self._lock = threading.Lock()
        self.paused = False
        st = container.state
        if not wanted or not st.running or st.paused:
            return
        try:
            _stop.pause_container(d, self._id)
        except errdefs.BerthError as e:
            # moby ignores this too: it stopped meanwhile, or is restarting.
            log.debug("commit of %s: not paused: %s", self._id[:12], e)
            return
        self.paused = True

    def release(self) -> None:
        with self._lock:
            if not self.paused:
                return
            self.paused = False
        try:
            _stop.unpause_container(self._d, self._id)
        except errdefs.BerthError as e:
            log.warning("commit of %s: resuming the container: %s", self._id[:12], e)


def commit_container(d: Daemon, opts: CommitOptions) -> str:
    """``POST /commit``: the new image's ID."""
    tag_ref = repo_tag_reference(opts.repo, opts.tag)  # the router's check, first
    if not opts.container:
        raise errdefs.InvalidParameter('invalid name or ID supplied: ""')
    container = d.get_container(opts.container)
    st = container.state
    if st.dead:
        raise errdefs.Conflict(f"You cannot commit container {container.id} which is Dead")
    if st.removal_in_progress:
        raise errdefs.Conflict(f"You cannot commit container {container.id} which is being removed")
    config = new_config(container, opts)  # a bad change is refused before any pause
    layers = d.images.layers
    rw = _rw_layer(d, container)
    commit = CommitConfig(
        container_id=container.id,
        container_os=container.record.os,
        parent_image_id=container.record.image,
        config=config,
        container_config=_copy_config(container.record.config),
        author=opts.author,
        comment=opts.comment,
    )
    pause = _Pause(d, container, opts.pause)
    try:
        changes = _changes(d, container, rw)
        if not changes:
            pause.release()
            image_id = d.images.commit_image(None, commit)
        else:
            tar = WriterPipe(
                lambda fd: _write_tar(layers, rw, changes, fd, container.id),
                "reading the container's changes",
                pause.release,
            )
            with io.BufferedReader(tar, PIPE_SIZE) as stream:
                image_id = d.images.commit_image(stream, commit)
    finally:
        pause.release()
    image_ref = ""
    if tag_ref is not None:
        try:
            d.images.tag(image_id, opts.repo, opts.tag)
        except BaseException:
            d.images.delete(image_id, True, False)
            raise
        image_ref = tag_ref.familiar()
    d.emit_container(
        container, "commit", {"comment": opts.comment, "imageID": image_id, "imageRef": image_ref}
    )
    return image_id


def _write_tar(
    layers: LayerStore, rw: RWLayer, changes: list[Change], fd: int, container_id: str
) -> None:
    try:
        export_rw_changes(layers, rw, changes, fd)
    except BrokenPipeError:
        return  # the layer store stopped reading: its own error says why
    except OSError as e:
        raise errdefs.System(
            f"reading the changes of container {container_id}: {e.strerror or e}"
        ) from e
    # Names that vanish while they are read are left out, as dockerd leaves them; a layer
    # that went whole (the container removed meanwhile) must not become a partial image.
    try:
        still = layers.get_rw_layer(container_id) is rw
    except errdefs.NotFound:
        still = False
    if not still:
        raise errdefs.Conflict(f"container {container_id} was removed while it was committed")
