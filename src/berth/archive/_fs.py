"""A container's files as its processes see them, for ``docker cp``.

berthd does not enter the container: it walks the root filesystem, and the
binds and volumes mounted over it, through directory file descriptors,
resolving every component itself as if the container's root were ``/``
(symlinks included: an absolute one restarts at that root, ``..`` never
climbs above it).  Every open is ``O_NOFOLLOW`` relative to a directory
already vetted, so a process in the container that swaps a directory for a
symlink mid-copy makes the copy fail, never reach a file of the host.

Paths follow moby's ``docker cp`` rules (``container.ResolvePath``,
``archive.TarResourceRebase``, ``archive.Unpack``): a trailing ``/`` or ``/.``
is kept and means "the directory itself"; the last component of a source is
not followed; archives are PAX tars whose first component is renamed to the
name asked for.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from berth import errdefs
from berth.archive._gopath import container_abs_path, go_base, go_file_mode, go_split
from berth.archive._pack import pack, pack_contents
from berth.archive._unpack import unpack
from berth.types.container import PathStat
from berth.utils.symlink import Link, components, follow_in_root
from berth.utils.timefmt import format_rfc3339_nano

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_CACHE = 256


def _join(directory: str, name: str) -> str:
    return f"/{name}" if directory == "/" else f"{directory}/{name}"


# -- the view of the container's files ----------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A bind or volume: *source* (a host path the daemon trusts) appears at *destination*."""

    destination: str
    source: str
    rw: bool


class Dir:
    """An open directory of the container; the descriptor closes with its last holder."""

    __slots__ = ("_fd", "mount", "path")

    def __init__(self, fd: int, path: str, mount: Mount | None) -> None:
        self._fd = fd
        self.path = path  # the canonical container path
        self.mount = mount  # the mount it lies in; None for the root filesystem

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise OSError(errno.EBADF, "the container's filesystem was closed", self.path)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


@dataclass(frozen=True)
class Entry:
    """A name in a directory of the container, not followed: ``(dir, name)`` for the *at calls.

    A mount point's entry names the mount's source (``name`` is ``.`` for a directory).
    """

    dir: Dir
    name: str
    path: str
    mount: Mount | None
    mount_point: bool

    @property
    def dir_fd(self) -> int:
        return self.dir.fd

    def lstat(self) -> os.stat_result:
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError as e:
            raise type(e)(e.errno, e.strerror, self.path) from None

    def proc_path(self) -> str:
        """A host path of the entry whose directory part cannot be redirected."""
        return f"/proc/self/fd/{self.dir_fd}/{self.name}"


@dataclass(frozen=True)
class Resolved:
    """A source path of ``docker cp`` found in the container (moby's ``ResolvePath``)."""

    entry: Entry
    st: os.stat_result
    abs_path: str  # cleaned, with a trailing "/" or "/." kept


class ContainerFS:
    """The container's root filesystem with its mounts over it, walked from *rootfs*."""

    def __init__(
        self, rootfs: str, mounts: Iterable[Mount] = (), *, readonly_rootfs: bool = False
    ) -> None:
        self.readonly_rootfs = readonly_rootfs
        self.root = Dir(os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "/", None)
        self._dirs: OrderedDict[str, Dir] = OrderedDict()
        self._mounts: dict[str, Mount] = {}
        self._mount_children: dict[str, set[str]] = {}
        self._sources: dict[str, tuple[Dir, str]] = {}
        try:
            # Parents first, each destination resolved in the container (through the
            # mounts above it) as runc resolves it when it mounts.
            for m in sorted(mounts, key=lambda m: len(components(m.destination))):
                where = self.canonical(m.destination)
                if where == "/":
                    continue
                self._mounts[where] = m
                parent, _, name = where.rpartition("/")
                self._mount_children.setdefault(parent or "/", set()).add(name)
                self._dirs.clear()  # resolved before this mount was known
                self._make_mount_point(parent or "/", name, m)
        except BaseException:
            self.close()
            raise

    def _make_mount_point(self, parent: str, name: str, m: Mount) -> None:
        """Create a missing mount point as runc would at start (moby's openContainerFS
        does too): a created container's root may lack it."""
        try:
            d = self.open_dir(parent, create=True, check=False)
            e = Entry(d, name, _join(d.path, name), d.mount, False)
            try:
                e.lstat()
                return
            except FileNotFoundError:
                pass
            if os.path.isdir(m.source):
                os.mkdir(name, 0o755, dir_fd=d.fd)
            else:
                os.close(os.open(name, _O_CREATE, 0o755, dir_fd=d.fd))
        except OSError as err:
            log.debug("cannot create mount point %s: %s", m.destination, err)

    def close(self) -> None:
        for d in self._dirs.values():
            d.close()
        self._dirs.clear()
        for d, _ in self._sources.values():
            d.close()
        self._sources.clear()
        self.root.close()

    def __enter__(self) -> ContainerFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resolution ---------------------------------------------------------------------
    def _source(self, m: Mount) -> tuple[Dir, str]:
        found = self._sources.get(m.destination)
        if found is None:
            real = os.path.realpath(m.source)
            if os.path.isdir(real):
                found = (Dir(os.open(real, _O_DIR & ~os.O_NOFOLLOW), real, m), ".")
            else:
                parent, name = os.path.split(real)
                found = (Dir(os.open(parent, _O_DIR & ~os.O_NOFOLLOW), parent, m), name)
            self._sources[m.destination] = found
        return found

    def lookup(self, d: Dir, name: str) -> Entry:
        """The entry *name* of directory *d* (a mount point leads to its source)."""
        path = _join(d.path, name)
        m = self._mounts.get(path)
        if m is not None:
            source_dir, source_name = self._source(m)
            return Entry(source_dir, source_name, path, m, True)
        return Entry(d, name, path, d.mount, False)

    def self_entry(self, d: Dir) -> Entry:
        return Entry(d, ".", d.path, d.mount, d.path in self._mounts)

    def open_entry(self, e: Entry) -> Dir:
        """Open the directory *e* names; fails (ELOOP/ENOTDIR) if it is not one (any more)."""
        try:
            fd = os.open(e.name, _O_DIR, dir_fd=e.dir_fd)
        except OSError as err:
            raise type(err)(err.errno, err.strerror, e.path) from None
        return Dir(fd, e.path, e.mount)

    def open_dir(self, path: str, *, create: bool = False, check: bool = True) -> Dir:
        """The directory at container *path*, every symlink followed inside the container.

        With *create*, missing directories are made (0755, owned by root) as moby's
        implied directories are, where :meth:`check_writable` allows (unless not
        *check*).  Raises FileNotFoundError or NotADirectoryError.
        """
        cached = self._dirs.get(path)
        if cached is not None:  # the walk would reach it through cached parents too
            self._dirs.move_to_end(path)
            return cached
        while len(self._dirs) > _DIR_CACHE:
            self._dirs.popitem(last=False)  # closed by its last holder

        def step(stack: list[Dir], part: str) -> Dir | Link:
            cur = stack[-1]
            child = _join(cur.path, part)
            cached = self._dirs.get(child)
            if cached is not None:
                self._dirs.move_to_end(child)
                return cached
            entry = self.lookup(cur, part)
            try:
                st = entry.lstat()
            except FileNotFoundError:
                if not create or entry.mount_point:
                    raise
                if check:
                    self.check_writable(entry.mount)
                os.mkdir(entry.name, 0o755, dir_fd=entry.dir_fd)
                os.chown(entry.name, 0, 0, dir_fd=entry.dir_fd, follow_symlinks=False)
                os.chmod(entry.name, 0o755, dir_fd=entry.dir_fd)  # not the umask's
                st = entry.lstat()
            if stat.S_ISLNK(st.st_mode):
                return Link(os.readlink(entry.name, dir_fd=entry.dir_fd))
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), child)
            d = self.open_entry(entry)
            self._dirs[child] = d
            return d

        return follow_in_root(path, self.root, step)[-1]

    def canonical(self, path: str) -> str:
        """*path* with every symlink resolved in the container; missing parts kept as written.

        moby's ``FollowSymlinkInScope`` (the ``linkTarget`` of a stat, mount destinations).
        """

        def step(stack: list[str], part: str) -> str | Link:
            try:
                entry = self.lookup(self.open_dir("/" + "/".join(stack[1:])), part)
                st = entry.lstat()
            except OSError:
                return part  # missing (or under a non-directory): taken as written
            if stat.S_ISLNK(st.st_mode):
                return Link(os.readlink(entry.name, dir_fd=entry.dir_fd))
            return part

        return "/" + "/".join(follow_in_root(path, "", step)[1:])

    def forget(self, path: str) -> None:
        """Drop cached directories at or below *path* (it was replaced)."""
        prefix = path + "/"
        for key in [k for k in self._dirs if k == path or k.startswith(prefix)]:
            del self._dirs[key]

    def writable(self, mount: Mount | None) -> bool:
        return not self.readonly_rootfs if mount is None else mount.rw

    def check_writable(self, mount: Mount | None) -> None:
        """moby's checks of ``PUT /archive``: no write to a read-only volume or root."""
        if self.writable(mount):
            return
        if mount is None:
            raise errdefs.InvalidParameter("container rootfs is marked read-only")
        raise errdefs.InvalidParameter("mounted volume is marked read-only")

    # -- stat and archive (GET/HEAD) ----------------------------------------------------------
    def resolve(self, path: str) -> Resolved:
        """moby's ``ResolvePath`` + ``Lstat``: the parent is followed, the last component
        not, unless the path ends in ``/`` or ``/.``."""
        abs_path = container_abs_path(path)
        dir_part, base = go_split(abs_path)
        d = self.open_dir(dir_part)
        entry = self.self_entry(d) if base in ("", ".") else self.lookup(d, base)
        return Resolved(entry, entry.lstat(), abs_path)

    def path_stat(self, r: Resolved) -> PathStat:
        link = self.canonical(r.abs_path) if stat.S_ISLNK(r.st.st_mode) else ""
        return PathStat(
            name=go_base(r.abs_path),
            size=r.st.st_size,
            mode=go_file_mode(r.st.st_mode),
            mtime=format_rfc3339_nano(r.st.st_mtime_ns),
            link_target=link,
        )

    def archive(self, r: Resolved, out: int) -> None:
        """Write the tar of *r* to descriptor *out* (see :func:`berth.archive._pack.pack`)."""
        pack(self, r, out)

    def export(self, out: int) -> None:
        """Write the tar of the whole filesystem to *out*, as ``docker export`` streams it
        (see :func:`berth.archive._pack.pack_contents`)."""
        pack_contents(self, out)

    def children(self, d: Dir) -> list[str]:
        """The names in *d*, with the mount points made in it."""
        with os.scandir(d.fd) as it:
            names = {e.name for e in it}
        names |= self._mount_children.get(d.path, set())
        return sorted(names)

    # -- extract (PUT) --------------------------------------------------------------------
    def extraction_dir(self, path: str) -> Dir:
        """The directory ``PUT /archive`` extracts into: every symlink followed, the last too."""
        return self.open_dir(container_abs_path(path))

    def extract(
        self,
        dest: Dir,
        stream: IO[bytes],
        *,
        no_overwrite_dir_non_dir: bool = False,
        chown: tuple[int, int] | None = None,
    ) -> None:
        """Unpack the tar *stream* (possibly compressed) into *dest*, as moby's ``Unpack``."""
        unpack(self, dest, stream, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, chown=chown)
