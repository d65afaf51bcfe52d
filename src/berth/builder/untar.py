"""The build context's tar unpacked into the fresh directory the build owns, fast.

A context is often a thousand small files, and ``docker cp``'s unpacker (a
:class:`~berth.archive.ContainerFS` lookup and several syscalls per entry, the data
copied through ``tarfile``'s stream) spent twice the kernel's own cost of creating them.
This reader parses the headers itself (ustar, GNU long names, PAX records), writes each
file's data straight from its read buffer, and keeps the directories it made open by
descriptor, so an entry costs its create, write and attribute calls and little more.

The directory is new and nothing else writes to it while the tar is read, so a path is
safe once it has been resolved inside it: names are cleaned, ``..`` that leaves the root
is refused (moby's ``breakoutError``), and a symlink met on the way (one the tar made) is
followed inside the root as the chroot dockerd unpacks in would follow it
(:func:`berth.utils.symlink.resolve_in_root`); the final component is never followed, an
existing entry is replaced as moby's ``createTarFile`` replaces it.  Directories get
their times last, once their entries are in.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from typing import IO

from berth import errdefs
from berth.utils.gostr import go_clean
from berth.utils.symlink import resolve_in_root

BLOCK = 512
_CHUNK = 1 << 20
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR = "SCHILY.xattr."


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for a moment,
    for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_UMASK = _umask()


class _Reader:
    """Exact reads from the stream, in big chunks."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._pos = 0

    def _fill(self, n: int) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        while len(self._buf) < n:
            chunk = self._stream.read(max(_CHUNK, n - len(self._buf)))
            if not chunk:
                break
            self._buf += chunk

    def read(self, n: int) -> memoryview:
        """*n* bytes, or fewer at the end of the stream."""
        if len(self._buf) - self._pos < n:
            self._fill(n)
        view = memoryview(self._buf)[self._pos : self._pos + n]
        self._pos += len(view)
        return view

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next *n* bytes to *fd*."""
        while n > 0:
            if self._pos >= len(self._buf):
                self._fill(min(n, _CHUNK))
                if self._pos >= len(self._buf):
                    raise errdefs.InvalidParameter("invalid tar archive: unexpected end of data")
            with memoryview(self._buf) as whole:
                view = whole[self._pos : self._pos + n]
                written = os.write(fd, view)
                view.release()
            self._pos += written
            n -= written

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, _CHUNK)))
            if not got:
                raise errdefs.InvalidParameter("invalid tar archive: unexpected end of data")
            n -= got


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise errdefs.InvalidParameter("invalid tar archive: bad PAX record") from None
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
        if length <= 0:
            raise errdefs.InvalidParameter("invalid tar archive: bad PAX record")
    return out


def _padded(size: int) -> int:
    return -size % BLOCK


class _Unpacker:
    def __init__(self, root: str) -> None:
        self.root = root
        self.root_fd = os.open(root, _O_DIR)
        #: directories opened so far, by their path relative to the root ("" = the root)
        self.dirs: dict[str, int] = {"": self.root_fd}
        #: (relative path, atime, mtime) of the directories the tar made, set at the end
        self.dir_times: list[tuple[str, int, int]] = []

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def _forget(self, rel: str) -> None:
        """Drop the cached descriptors at and below *rel*: it is being replaced."""
        for key in [k for k in self.dirs if k and (k == rel or k.startswith(rel + "/"))]:
            os.close(self.dirs.pop(key))

    def _dir(self, rel: str) -> int:
        """The directory *rel* (made 0755 when missing, as moby makes a missing parent),
        with symlinks on the way followed inside the root."""
        fd = self.dirs.get(rel)
        if fd is not None:
            return fd
        parent, name = posixpath.split(rel)
        pfd = self._dir(parent)
        try:
            fd = os.open(name, _O_DIR, dir_fd=pfd)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=pfd)
            fd = os.open(name, _O_DIR, dir_fd=pfd)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            # a symlink (or a file) on the way: resolved inside the root, as in a chroot
            real = resolve_in_root(self.root, rel)
            inside = os.path.relpath(real, self.root)
            if inside == rel or inside.startswith(".."):
                raise errdefs.InvalidParameter(
                    f"invalid tar archive: {rel!r} is not a directory"
                ) from None
            return self._dir(inside if inside != "." else "")
        self.dirs[rel] = fd
        return fd

    def _clear(self, dfd: int, name: str, rel: str, is_dir: bool) -> bool:
        """Make room for an entry: True if a directory stays (a directory over one)."""
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            self._forget(rel)
        _remove_at(dfd, name)
        return False

    def entry(self, m: tarfile.TarInfo, reader: _Reader) -> None:
        name = m.name
        clean = go_clean(name)
        if clean == ".." or clean.startswith("../"):
            raise errdefs.InvalidParameter(
                f'invalid tar archive: "{name}" is outside of the context'
            )
        cleaned = clean.lstrip("/")  # an absolute name is taken below the root, as in Go
        if cleaned in ("", "."):
            reader.skip(m.size + _padded(m.size))
            return
        parent, base = posixpath.split(cleaned)
        dfd = self._dir(parent)
        owner = (m.uid, m.gid)
        times = (int(m.mtime * 1e9), int(m.mtime * 1e9))
        mode = m.mode & 0o7777
        kept_dir = self._clear(dfd, base, cleaned, m.isdir())
        if m.isreg():
            fd = os.open(base, _O_NEW, mode & 0o777, dir_fd=dfd)
            try:
                reader.copy_to(fd, m.size)
                if owner != (0, 0) or os.geteuid() != 0:
                    os.fchown(fd, *owner)
                for key, value in m.pax_headers.items():
                    if key.startswith(_XATTR):
                        os.setxattr(
                            fd, key[len(_XATTR) :], value.encode("utf-8", "surrogateescape")
                        )
                if mode & ~0o777 or mode & _UMASK:
                    os.fchmod(fd, mode)
                os.utime(fd, ns=times)
            finally:
                os.close(fd)
            reader.skip(_padded(m.size))
            return
        if m.isdir():
            if not kept_dir:
                os.mkdir(base, 0o700, dir_fd=dfd)
            os.chown(base, *owner, dir_fd=dfd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=dfd)
            self.dir_times.append((cleaned, *times))
        elif m.issym():
            self._forget(cleaned)
            os.symlink(m.linkname, base, dir_fd=dfd)
            os.chown(base, *owner, dir_fd=dfd, follow_symlinks=False)
            os.utime(base, ns=times, dir_fd=dfd, follow_symlinks=False)
        elif m.islnk():
            target = go_clean("/" + m.linkname).lstrip("/")
            if go_clean(m.linkname).startswith("../"):
                raise errdefs.InvalidParameter(
                    f'invalid tar archive: hard link "{name}" -> "{m.linkname}" leaves the context'
                )
            tparent, tbase = posixpath.split(target)
            try:
                os.link(
                    tbase,
                    base,
                    src_dir_fd=self._dir(tparent),
                    dst_dir_fd=dfd,
                    follow_symlinks=False,
                )
            except FileNotFoundError:
                raise errdefs.InvalidParameter(
                    f'invalid tar archive: hard link "{name}" -> "{m.linkname}": no such file'
                ) from None
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(base, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=dfd)
            os.chown(base, *owner, dir_fd=dfd, follow_symlinks=False)
            os.utime(base, ns=times, dir_fd=dfd, follow_symlinks=False)
        if m.size and not m.isreg():
            reader.skip(m.size + _padded(m.size))

    def finish(self) -> None:
        for rel, atime, mtime in reversed(self.dir_times):
            parent, base = posixpath.split(rel)
            try:
                os.utime(base, ns=(atime, mtime), dir_fd=self._dir(parent), follow_symlinks=False)
            except OSError:
                pass


def _remove_at(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except IsADirectoryError:
        fd = os.open(name, _O_DIR, dir_fd=dfd)
        try:
            for child in os.listdir(fd):
                _remove_at(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dfd)


def _members(reader: _Reader) -> tarfile.TarInfo | None:
    """The next member with its long name and PAX records applied; None at the end."""
    pax: dict[str, str] = {}
    long_name = long_link = None
    while True:
        header = bytes(reader.read(BLOCK))
        if len(header) < BLOCK or header == bytes(BLOCK):
            return None
        try:
            m = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise errdefs.InvalidParameter(f"invalid tar archive: {e}") from None
        if m.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            data = bytes(reader.read(m.size)).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            reader.skip(_padded(m.size))
            if m.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data
            else:
                long_link = data
            continue
        if m.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            records = _pax_records(bytes(reader.read(m.size)))
            reader.skip(_padded(m.size))
            if m.type != tarfile.XGLTYPE:
                pax.update(records)
            continue
        if long_name is not None:
            m.name = long_name
        if long_link is not None:
            m.linkname = long_link
        if pax:
            m.pax_headers = pax
            if "path" in pax:
                m.name = pax["path"]
            if "linkpath" in pax:
                m.linkname = pax["linkpath"]
            for key, attr in (("size", "size"), ("uid", "uid"), ("gid", "gid")):
                if key in pax:
                    setattr(m, attr, int(pax[key]))
            if "mtime" in pax:
                m.mtime = float(pax["mtime"])
        if m.type == tarfile.AREGTYPE and m.name.endswith("/"):
            m.type = tarfile.DIRTYPE
        return m


def unpack_tar(stream: IO[bytes], root: str) -> None:
    """Unpack the plain tar *stream* into the empty directory *root* (see the module)."""
    reader = _Reader(stream)
    u = _Unpacker(root)
    try:
        while (m := _members(reader)) is not None:
            if m.type == tarfile.CONTTYPE:
                m.type = tarfile.REGTYPE
            if m.type not in tarfile.SUPPORTED_TYPES and not m.isreg():
                reader.skip(m.size + _padded(m.size))
                continue
            try:
                u.entry(m, reader)
            except errdefs.BerthError:
                raise
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    raise
                raise errdefs.InvalidParameter(
                    f"invalid tar archive: cannot extract {m.name!r}: {e.strerror or e}"
                ) from None
        u.finish()
    finally:
        u.close()
