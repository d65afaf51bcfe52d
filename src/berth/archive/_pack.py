"""Writing tars: PAX headers as moby's ``FileInfoHeader`` makes them, file data by ``sendfile``.

``docker cp`` (and later export, commit and save) stream a tree straight to
a descriptor.  Entries are renamed as moby's ``TarResourceRebase`` does;
what vanishes or cannot be read meanwhile is skipped, as dockerd skips it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from berth.archive._gopath import go_base

if TYPE_CHECKING:
    from berth.archive._fs import ContainerFS, Dir, Entry, Resolved

log = logging.getLogger(__name__)

_O_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20
_BLOCK = 512
XATTR_PREFIX = "SCHILY.xattr."
_CAPABILITY = "security.capability"


class TarWriter:
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
            write_all(self._fd, self._buf)
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
                    write_all(self._fd, chunk)
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


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def tar_header(name: str, st: os.stat_result) -> tarfile.TarInfo:
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


def hardlinked(info: tarfile.TarInfo, st: os.stat_result, seen: dict[tuple[int, int], str]) -> bool:
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


def capability(fd: int) -> str | None:
    """``security.capability`` as moby archives it (revision 3 written as revision 2)."""
    try:
        value = os.getxattr(fd, _CAPABILITY)
    except OSError:
        return None
    if len(value) > 3 and value[3] == 3:
        value = value[:3] + b"\x02" + value[4:20]
    return value.decode("utf-8", "surrogateescape")


# -- a tree of the container ---------------------------------------------------------------


def pack(fs: ContainerFS, r: Resolved, out: int) -> None:
    """Write the tar of *r* to descriptor *out*, entries renamed as moby's rebase does.

    ``/x`` gives ``x``, ``x/...``; ``/x/.`` gives ``./``, ``./...``; ``/`` gives
    ``/``, ``/bin``...  Entries that vanish or cannot be read are skipped, as
    dockerd skips them; BrokenPipeError means the reader went away.
    """
    name = go_base(r.abs_path)
    writer = TarWriter(out)
    seen: dict[tuple[int, int], str] = {}
    if stat.S_ISDIR(r.st.st_mode):
        _pack_tree(fs, r.entry, "" if name == "/" else name, writer, seen)
    else:
        _emit(fs, r.entry, name, writer, seen)
    writer.finish()


def pack_contents(fs: ContainerFS, out: int) -> None:
    """Write the tar of everything under the container's root to descriptor *out*, named
    relative to it (``bin/``, ``bin/sh``), with no entry for the root itself.

    moby's ``TarWithOptions`` of a directory, which ``docker export`` streams; only
    what *fs* was given as mounts is followed into (none, for export).
    """
    writer = TarWriter(out)
    _pack_children(fs, fs.open_entry(fs.self_entry(fs.root)), "", writer, {})
    writer.finish()


def _pack_tree(
    fs: ContainerFS, top: Entry, top_name: str, writer: TarWriter, seen: dict[tuple[int, int], str]
) -> None:
    first = _emit(fs, top, top_name, writer, seen)
    if first is not None:
        _pack_children(fs, first, top_name + "/", writer, seen)


def _pack_children(
    fs: ContainerFS, first: Dir, prefix: str, writer: TarWriter, seen: dict[tuple[int, int], str]
) -> None:
    """Everything below the open directory *first* (closed here), depth first in name
    order as Go's ``filepath.WalkDir``, each name *prefix* + its path below *first*."""
    stack: list[tuple[Dir, str, Iterator[str]]] = []
    try:
        try:
            children = fs.children(first)
        except BaseException:
            first.close()
            raise
        stack.append((first, prefix, iter(children)))
        while stack:
            d, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                d.close()
                stack.pop()
                continue
            child_name = f"{prefix}{name}"
            try:
                entry = fs.lookup(d, name)
            except OSError as e:  # a mount whose source is gone
                log.debug("archive: skipping %s: %s", child_name, e)
                continue
            sub = _emit(fs, entry, child_name, writer, seen)
            if sub is None:
                continue
            try:
                children = fs.children(sub)
            except OSError as e:
                log.debug("archive: cannot list %s: %s", sub.path, e)
                sub.close()
                continue
            stack.append((sub, child_name + "/", iter(children)))
    finally:
        for d, _, _ in stack:
            d.close()


def _emit(
    fs: ContainerFS, e: Entry, name: str, writer: TarWriter, seen: dict[tuple[int, int], str]
) -> Dir | None:
    """Write the header (and data) of *e* as *name*; return it opened if it is a directory."""
    try:
        st = e.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            d = fs.open_entry(e)
            writer.add(tar_header(name + "/", os.fstat(d.fd)))
            return d
        if kind == stat.S_IFREG:
            fd = os.open(e.name, _O_SOURCE, dir_fd=e.dir_fd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return None
                info = tar_header(name, st)
                if hardlinked(info, st, seen):
                    writer.add(info)
                    return None
                cap = capability(fd)
                if cap is not None:
                    info.pax_headers = {XATTR_PREFIX + _CAPABILITY: cap}
                writer.add(info)
                writer.data(fd, st.st_size, e.path)
            finally:
                os.close(fd)
            return None
        if kind == stat.S_IFSOCK:
            return None  # Go's tar cannot write sockets; dockerd skips them
        info = tar_header(name, st)
        if kind == stat.S_IFLNK:
            info.linkname = os.readlink(e.name, dir_fd=e.dir_fd)
        hardlinked(info, st, seen)
        writer.add(info)
    except BrokenPipeError:
        raise
    except OSError as err:
        # dockerd logs and skips what it cannot archive (a file removed meanwhile).
        log.debug("archive: skipping %s: %s", e.path, err)
    return None
