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
import gzip
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from berth import errdefs
from berth.layer.tarapply import decompress
from berth.types.container import PathStat
from berth.utils.timefmt import format_rfc3339_nano

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 255
_DIR_CACHE = 256
_CHUNK = 1 << 20
_BLOCK = 512
_XATTR_PREFIX = "SCHILY.xattr."
_CAPABILITY = "security.capability"

# Go's os.FileMode type and mode bits.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    """``os.FileMode`` of a Unix ``st_mode``, as Go's ``os.Lstat`` builds it."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif kind == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif kind == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif kind == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif kind == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


# -- Go's path/filepath, as the archive code relies on its exact results -------------------


def go_clean(path: str) -> str:
    """``filepath.Clean``: unlike ``posixpath.normpath``, ``//x`` becomes ``/x``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def go_join(*parts: str) -> str:
    """``filepath.Join``: empty parts are dropped and an absolute part does not reset."""
    kept = [p for p in parts if p]
    return go_clean("/".join(kept)) if kept else ""


def go_base(path: str) -> str:
    """``filepath.Base``: the last element, trailing slashes ignored; ``/`` for the root."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def go_split(path: str) -> tuple[str, str]:
    """``filepath.Split``: everything up to and including the last slash, and the rest."""
    i = path.rfind("/")
    return path[: i + 1], path[i + 1 :]


def preserve_trailing_dot_or_separator(cleaned: str, original: str) -> str:
    """moby's ``archive.PreserveTrailingDotOrSeparator``: ``/x/`` and ``/x/.`` keep their tail."""
    if go_base(cleaned) != "." and go_base(original) == ".":
        if not cleaned.endswith("/"):
            cleaned += "/"
        cleaned += "."
    if not cleaned.endswith("/") and original.endswith("/"):
        cleaned += "/"
    return cleaned


def container_abs_path(path: str) -> str:
    """The path as an absolute container path, with a trailing ``/`` or ``/.`` kept."""
    return preserve_trailing_dot_or_separator(go_join("/", path) or "/", path)


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _join(directory: str, name: str) -> str:
    return f"/{name}" if directory == "/" else f"{directory}/{name}"


def _within(path: str, root: str) -> bool:
    return root in ("/", path) or path.startswith(root + "/")


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
            for m in sorted(mounts, key=lambda m: len(_components(m.destination))):
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
        while len(self._dirs) > _DIR_CACHE:
            self._dirs.popitem(last=False)  # closed by its last holder
        parts = deque(_components(path))
        stack = [self.root]
        links = 0
        while parts:
            part = parts.popleft()
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            cur = stack[-1]
            child = _join(cur.path, part)
            cached = self._dirs.get(child)
            if cached is not None:
                self._dirs.move_to_end(child)
                stack.append(cached)
                continue
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
                st = entry.lstat()
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(entry.name, dir_fd=entry.dir_fd)
                if target.startswith("/"):
                    del stack[1:]
                parts.extendleft(reversed(_components(target)))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), child)
            d = self.open_entry(entry)
            self._dirs[child] = d
            stack.append(d)
        return stack[-1]

    def canonical(self, path: str) -> str:
        """*path* with every symlink resolved in the container; missing parts kept as written.

        moby's ``FollowSymlinkInScope`` (the ``linkTarget`` of a stat, mount destinations).
        """
        parts = deque(_components(path))
        names: list[str] = []
        links = 0
        while parts:
            part = parts.popleft()
            if part == "..":
                if names:
                    names.pop()
                continue
            try:
                entry = self.lookup(self.open_dir("/" + "/".join(names)), part)
                st = entry.lstat()
            except OSError:
                names.append(part)  # missing (or under a non-directory): taken as written
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(entry.name, dir_fd=entry.dir_fd)
                if target.startswith("/"):
                    names = []
                parts.extendleft(reversed(_components(target)))
                continue
            names.append(part)
        return "/" + "/".join(names)

    def forget(self, path: str) -> None:
        """Drop cached directories at or below *path* (it was replaced)."""
        prefix = path + "/"
        for key in [k for k in self._dirs if k == path or k.startswith(prefix)]:
            del self._dirs[key]

    def check_writable(self, mount: Mount | None) -> None:
        """moby's checks of ``PUT /archive``: no write to a read-only volume or root."""
        if mount is None:
            if self.readonly_rootfs:
                raise errdefs.InvalidParameter("container rootfs is marked read-only")
        elif not mount.rw:
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
        """Write the tar of *r* to descriptor *out*, entries renamed as moby's rebase does.

        ``/x`` gives ``x``, ``x/...``; ``/x/.`` gives ``./``, ``./...``; ``/`` gives
        ``/``, ``/bin``...  Entries that vanish or cannot be read are skipped, as
        dockerd skips them; BrokenPipeError means the reader went away.
        """
        name = go_base(r.abs_path)
        writer = _TarWriter(out)
        seen: dict[tuple[int, int], str] = {}
        if stat.S_ISDIR(r.st.st_mode):
            self._archive_tree(r.entry, "" if name == "/" else name, writer, seen)
        else:
            self._emit(r.entry, name, writer, seen)
        writer.finish()

    def _children(self, d: Dir) -> list[str]:
        with os.scandir(d.fd) as it:
            names = {e.name for e in it}
        names |= self._mount_children.get(d.path, set())
        return sorted(names)

    def _archive_tree(
        self, top: Entry, top_name: str, writer: _TarWriter, seen: dict[tuple[int, int], str]
    ) -> None:
        first = self._emit(top, top_name, writer, seen)
        if first is None:
            return
        stack: list[tuple[Dir, str, Iterator[str]]] = []
        try:
            stack.append((first, top_name, iter(self._children(first))))
            while stack:
                d, prefix, names = stack[-1]
                name = next(names, None)
                if name is None:
                    d.close()
                    stack.pop()
                    continue
                child_name = f"{prefix}/{name}"
                try:
                    entry = self.lookup(d, name)
                except OSError as e:  # a mount whose source is gone
                    log.debug("archive: skipping %s: %s", child_name, e)
                    continue
                sub = self._emit(entry, child_name, writer, seen)
                if sub is None:
                    continue
                try:
                    children = self._children(sub)
                except OSError as e:
                    log.debug("archive: cannot list %s: %s", sub.path, e)
                    sub.close()
                    continue
                stack.append((sub, child_name, iter(children)))
        finally:
            for d, _, _ in stack:
                d.close()

    def _emit(
        self, e: Entry, name: str, writer: _TarWriter, seen: dict[tuple[int, int], str]
    ) -> Dir | None:
        """Write the header (and data) of *e* as *name*; return it opened if it is a directory."""
        try:
            st = e.lstat()
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFDIR:
                d = self.open_entry(e)
                writer.add(_tarinfo(name + "/", os.fstat(d.fd)))
                return d
            if kind == stat.S_IFREG:
                fd = os.open(e.name, _O_SOURCE, dir_fd=e.dir_fd)
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        return None
                    info = _tarinfo(name, st)
                    if _hardlinked(info, st, seen):
                        writer.add(info)
                        return None
                    cap = _capability(fd)
                    if cap is not None:
                        info.pax_headers = {_XATTR_PREFIX + _CAPABILITY: cap}
                    writer.add(info)
                    writer.data(fd, st.st_size, e.path)
                finally:
                    os.close(fd)
                return None
            if kind == stat.S_IFSOCK:
                return None  # Go's tar cannot write sockets; dockerd skips them
            info = _tarinfo(name, st)
            if kind == stat.S_IFLNK:
                info.linkname = os.readlink(e.name, dir_fd=e.dir_fd)
            _hardlinked(info, st, seen)
            writer.add(info)
        except BrokenPipeError:
            raise
        except OSError as err:
            # dockerd logs and skips what it cannot archive (a file removed meanwhile).
            log.debug("archive: skipping %s: %s", e.path, err)
        return None

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
        ex = _Extractor(self, dest, no_overwrite_dir_non_dir, chown)
        with _extract_errors(ex):
            plain = decompress(stream)
            try:
                tf = tarfile.open(fileobj=plain, mode="r|", bufsize=_CHUNK)  # noqa: SIM115
            except tarfile.ReadError as e:
                if str(e) == "empty file":
                    return  # nothing to extract, as Go's tar reader sees an empty stream
                raise
            with tf:
                for member in tf:
                    ex.current = member.name
                    ex.entry(tf, member)
            ex.finish()


# -- writing tars ---------------------------------------------------------------------------


class _TarWriter:
    """A PAX tar written straight to a descriptor, file data by ``sendfile``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def add(self, info: tarfile.TarInfo) -> None:
        self._buf += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if len(self._buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            _write_all(self._fd, self._buf)
            self._buf.clear()

    def data(self, src: int, size: int, path: str) -> None:
        """*size* bytes of *src*.  The header is out, so the entry must be whole: a file
        that shrank, or failed to read, is padded with zeros (the tar stays readable)."""
        self.flush()
        offset = 0
        use_sendfile = True
        while offset < size:
            want = min(size - offset, 1 << 30)
            try:
                if use_sendfile:
                    n = os.sendfile(self._fd, src, offset, want)
                else:
                    chunk = os.pread(src, min(want, _CHUNK), offset)
                    n = len(chunk)
                    _write_all(self._fd, chunk)
            except BrokenPipeError:
                raise
            except OSError as e:
                if use_sendfile and e.errno in (errno.EINVAL, errno.ENOSYS):
                    use_sendfile = False
                    continue
                # The output is a pipe, whose only failure is EPIPE: this is the file's.
                log.warning("archive: reading %s failed at byte %d: %s", path, offset, e)
                break
            if n == 0:
                break
            offset += n
        pad = (size - offset) + (-size % _BLOCK)
        if pad:
            self._buf += bytes(pad)

    def finish(self) -> None:
        self._buf += bytes(2 * _BLOCK)  # Go's tar.Writer.Close: two zero blocks, no record padding
        self.flush()


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _tarinfo(name: str, st: os.stat_result) -> tarfile.TarInfo:
    """A header as moby's ``FileInfoHeader``: mode and ids from the inode, mtime to the second."""
    info = tarfile.TarInfo(name)
    info.mode = st.st_mode & 0o7777
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime_ns // 1_000_000_000
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor = os.major(st.st_rdev)
        info.devminor = os.minor(st.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    return info


def _hardlinked(
    info: tarfile.TarInfo, st: os.stat_result, seen: dict[tuple[int, int], str]
) -> bool:
    """Turn *info* into a hard link to an inode already archived; remember a new one."""
    if st.st_nlink <= 1:
        return False
    key = (st.st_dev, st.st_ino)
    first = seen.get(key)
    if first is None:
        seen[key] = info.name
        return False
    info.type = tarfile.LNKTYPE
    info.linkname = first
    info.size = 0
    return True


def _capability(fd: int) -> str | None:
    """``security.capability`` as moby archives it (revision 3 written as revision 2)."""
    try:
        value = os.getxattr(fd, _CAPABILITY)
    except OSError:
        return None
    if len(value) > 3 and value[3] == 3:
        value = value[:3] + b"\x02" + value[4:20]
    return value.decode("utf-8", "surrogateescape")


# -- extracting tars ----------------------------------------------------------------------------


def _ns(value: float) -> int:
    return value * 1_000_000_000 if isinstance(value, int) else int(value * 1_000_000_000)


class _Extractor:
    def __init__(
        self,
        fs: ContainerFS,
        dest: Dir,
        no_overwrite_dir_non_dir: bool,
        chown: tuple[int, int] | None,
    ) -> None:
        self.fs = fs
        self.dest = dest.path
        self.no_overwrite = no_overwrite_dir_non_dir
        self.chown = chown
        self.dirs: list[tuple[str, int, int]] = []
        self.current = ""

    def _member_path(self, name: str) -> str:
        """The entry's path relative to the destination; a path leaving it is refused.

        As Go's ``filepath.Join(dest, name)``, an absolute name is taken below the
        destination (``docker cp C:/ -`` writes ``/bin/...``).
        """
        cleaned = go_clean(name)
        if cleaned == ".." or cleaned.startswith("../"):
            raise errdefs.InvalidParameter(f'"{name}" is outside of "{self.dest}"')
        cleaned = cleaned.lstrip("/")
        return "" if cleaned in ("", ".") else cleaned

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = self._member_path(m.name)
        if not rel:
            if m.isdir():
                return  # the extraction directory itself
            raise errdefs.InvalidParameter(
                f'cannot overwrite the extraction directory "{self.dest}" with non-directory '
                f'"{m.name}"'
            )
        parent_rel, base = posixpath.split(rel)
        parent = self.fs.open_dir(go_join(self.dest, parent_rel), create=True)
        e = self.fs.lookup(parent, base)
        try:
            st: os.stat_result | None = e.lstat()
        except FileNotFoundError:
            if e.mount_point:  # nothing to write over: never create beside a bind's source
                raise errdefs.InvalidParameter(
                    f"cannot write {e.path}: the source of this mount is missing"
                ) from None
            st = None
        if st is not None:
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.no_overwrite and is_dir and not m.isdir():
                raise errdefs.InvalidParameter(
                    f'cannot overwrite directory "{e.path}" with non-directory "{self.dest}"'
                )
            if self.no_overwrite and not is_dir and m.isdir():
                raise errdefs.InvalidParameter(
                    f'cannot overwrite non-directory "{e.path}" with directory "{self.dest}"'
                )
            if not (is_dir and m.isdir()):
                if e.mount_point:
                    raise errdefs.InvalidParameter(
                        f"cannot replace {e.path}: it is a mount point of the container"
                    )
                self.fs.check_writable(e.mount)
                if is_dir:
                    shutil.rmtree(e.name, dir_fd=e.dir_fd)
                else:
                    os.unlink(e.name, dir_fd=e.dir_fd)
                self.fs.forget(e.path)
                st = None
        self.fs.check_writable(e.mount)
        mode = m.mode & 0o7777
        if m.isreg():
            self._regular(tf, m, e, mode)
            return
        if m.isdir():
            if st is None:
                os.mkdir(e.name, 0o700, dir_fd=e.dir_fd)
        elif m.issym():
            target = go_join(posixpath.dirname(go_join(self.dest, rel)), m.linkname)
            if not _within(target, self.dest):
                raise errdefs.InvalidParameter(
                    f'invalid symlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
                )
            os.symlink(m.linkname, e.name, dir_fd=e.dir_fd)
        elif m.islnk():
            self._hardlink(m, e)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(e.name, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=e.dir_fd)
        elif m.isfifo():
            os.mkfifo(e.name, mode, dir_fd=e.dir_fd)
        else:
            raise errdefs.InvalidParameter(f"unhandled tar header type {m.type!r} of {m.name!r}")
        self._attrs(m, e, mode)
        if m.isdir():
            self.dirs.append((e.path, *self._times(m)))

    def _regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, e: Entry, mode: int) -> None:
        fd = os.open(e.name, _O_CREATE, 0o600, dir_fd=e.dir_fd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    _write_all(fd, chunk)
            uid, gid = self.chown or (m.uid, m.gid)
            os.fchown(fd, uid, gid)
            self._xattrs(m, e)
            os.fchmod(fd, mode)
            os.utime(fd, ns=self._times(m))
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, e: Entry) -> None:
        target = go_join(self.dest, m.linkname)
        if not _within(target, self.dest):
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
            )
        parent, base = posixpath.split(target)
        try:
            source = self.fs.lookup(self.fs.open_dir(parent), base)
            os.link(
                source.name,
                e.name,
                src_dir_fd=source.dir_fd,
                dst_dir_fd=e.dir_fd,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{e.path}" -> "{m.linkname}": the target does not exist'
            ) from None

    def _times(self, m: tarfile.TarInfo) -> tuple[int, int]:
        mtime = _ns(m.mtime)
        atime = mtime
        raw = m.pax_headers.get("atime")
        if raw:
            with contextlib.suppress(ValueError):
                atime = max(mtime, _ns(float(raw)))
        return atime, mtime

    def _xattrs(self, m: tarfile.TarInfo, e: Entry) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PREFIX):
                continue
            try:
                os.setxattr(
                    e.proc_path(),
                    key[len(_XATTR_PREFIX) :],
                    value.encode("utf-8", "surrogateescape"),
                    follow_symlinks=False,
                )
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP):
                    raise

    def _attrs(self, m: tarfile.TarInfo, e: Entry, mode: int) -> None:
        """Owner, xattrs, mode and times, never through a symlink (chown first: it clears
        set-id bits)."""
        uid, gid = self.chown or (m.uid, m.gid)
        os.chown(e.name, uid, gid, dir_fd=e.dir_fd, follow_symlinks=False)
        self._xattrs(m, e)
        fd = os.open(e.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=e.dir_fd)
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
        os.utime(e.name, ns=self._times(m), dir_fd=e.dir_fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times last: creating their entries changed them."""
        for path, atime, mtime in self.dirs:
            parent, base = posixpath.split(path)
            try:
                e = self.fs.lookup(self.fs.open_dir(parent), base)
                os.utime(e.name, ns=(atime, mtime), dir_fd=e.dir_fd, follow_symlinks=False)
            except OSError:
                pass  # replaced or removed by a later entry


@contextlib.contextmanager
def _extract_errors(ex: _Extractor) -> Iterator[None]:
    """What went wrong, as the client's fault (4xx) unless the host failed."""
    try:
        yield
    except errdefs.BerthError:
        raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as e:
        raise errdefs.InvalidParameter(f"invalid tar archive: {e}") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise errdefs.System(f"extracting {ex.current}: {e.strerror}") from e
        raise errdefs.InvalidParameter(
            f"cannot extract {ex.current!r}: {e.strerror or e}"
        ) from None
