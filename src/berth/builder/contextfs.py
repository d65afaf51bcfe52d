"""The build context as a read-only tree over the tar the client sent, written to disk once.

The request body (plain, gzip, bzip2, xz or zstd) is decompressed into one unlinked
temporary file, the spool: nothing to clean up however the build or the daemon ends.
Its headers are then read into :class:`ContextFS`, a tree of :class:`ContextEntry`
holding each entry's metadata and the offset of its bytes in the spool.  COPY and ADD
read their sources from the tree and copy the bytes straight from the spool into the
step's layer, so no file of the context is written twice, and a build answered from
the cache writes none: dockerd unpacks every context into a directory first.

Names are placed as moby's unpacker in a chroot places them: cleaned, ``..`` that leaves
the root refused (``breakoutError``), an absolute name taken below the root, a symlink
met on the way followed inside the tree, a missing parent made (0755, root's), a later
entry replacing an earlier one (a directory over a directory merged), a hard link
sharing its target's bytes and metadata.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from berth import errdefs
from berth.archive import read_member, tar_padding
from berth.utils.gostr import go_clean
from berth.utils.symlink import Link, follow_in_root

BLOCK = 512
_CHUNK = 1 << 20
_XATTR = "SCHILY.xattr."

_KINDS = {
    tarfile.REGTYPE: stat.S_IFREG,
    tarfile.AREGTYPE: stat.S_IFREG,
    tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}


@dataclass(slots=True, eq=False)
class ContextEntry:
    """One name of the context: what ``lstat`` of it would say once unpacked."""

    kind: int  # stat.S_IF*
    mode: int  # permission and set-id bits
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    link: str = ""  # a symlink's target
    rdev: int = 0
    offset: int = -1  # where a regular file's bytes start in the spool
    xattrs: tuple[tuple[str, bytes], ...] = ()
    #: the file's identity: hard links share it
    ino: int = 0
    #: a directory's entries by name
    children: dict[str, ContextEntry] | None = None


#: a name met while following a path, and its entry if it is there
_Step = tuple[str, "ContextEntry | None"]


def _new_dir(mode: int, uid: int, gid: int, mtime_ns: int, ino: int) -> ContextEntry:
    return ContextEntry(stat.S_IFDIR, mode, uid, gid, mtime_ns, ino=ino, children={})


class ContextFS:
    """The tree of a spooled context (see the module).  An empty one (no spool) stands for
    a build whose Dockerfile came alone."""

    def __init__(self, spool: IO[bytes] | None = None) -> None:
        self._spool = spool
        self._size = 0
        self._next_ino = 1
        self.made_ns = time.time_ns()
        self.root = _new_dir(0o755, 0, 0, self.made_ns, self._ino())
        #: content hashes by canonical path, kept for the build's later COPY steps
        self.sums: dict[str, str] = {}

    def _ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def close(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()

    # -- reading names ------------------------------------------------------------------------
    def canonical(self, rel: str) -> str:
        """*rel* with every symlink followed inside the tree, relative (``.`` for the root);
        missing parts are kept as written (``FollowSymlinkInScope``)."""

        def step(stack: list[_Step], part: str) -> _Step | Link:
            parent = stack[-1][1]
            children = parent.children if parent is not None else None
            child = children.get(part) if children is not None else None
            if child is not None and child.kind == stat.S_IFLNK:
                return Link(child.link)
            return (part, child)

        start: _Step = ("", self.root)
        stack = follow_in_root(rel, start, step)
        return "/".join(name for name, _ in stack[1:]) or "."

    def lookup(self, canon: str) -> ContextEntry:
        """The entry at canonical *canon* (its last name not followed); FileNotFoundError
        or NotADirectoryError as ``lstat`` would raise them."""
        node = self.root
        if canon == ".":
            return node
        for part in canon.split("/"):
            if node.children is None:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), canon)
            child = node.children.get(part)
            if child is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), canon)
            node = child
        return node

    def walk(self, canon: str) -> Iterator[tuple[str, ContextEntry]]:
        """Everything below the directory *canon* (itself first unless it is the root),
        depth first in name order, links not followed: Go's ``filepath.WalkDir``."""
        top = self.lookup(canon)
        if canon != ".":
            yield canon, top
        prefix = "" if canon == "." else canon + "/"
        stack: list[tuple[str, Iterator[tuple[str, ContextEntry]]]] = [
            (prefix, iter(sorted((top.children or {}).items())))
        ]
        while stack:
            prefix, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            name, entry = item
            rel = prefix + name
            yield rel, entry
            if entry.children is not None:
                stack.append((rel + "/", iter(sorted(entry.children.items()))))

    def remove(self, canon: str) -> None:
        """Drop *canon* (and what is under it) from the tree, if it is there."""
        parent, base = posixpath.split(canon)
        try:
            node = self.lookup(parent or ".")
        except OSError:
            return
        if node.children is not None:
            node.children.pop(base, None)

    # -- reading bytes --------------------------------------------------------------------------
    def _fd(self) -> int:
        if self._spool is None:
            raise ValueError("the build context is closed")
        return self._spool.fileno()

    def read(self, entry: ContextEntry, limit: int = -1) -> bytes:
        """A regular file's bytes (the first *limit* of them)."""
        n = entry.size if limit < 0 else min(limit, entry.size)
        return os.pread(self._fd(), n, entry.offset) if n else b""

    def chunks(self, entry: ContextEntry) -> Iterator[bytes]:
        fd, pos, left = self._fd(), entry.offset, entry.size
        while left > 0:
            data = os.pread(fd, min(left, _CHUNK), pos)
            if not data:
                raise errdefs.System("the build context's spool is shorter than its index")
            pos += len(data)
            left -= len(data)
            yield data

    def copy_to(self, entry: ContextEntry, dst: int) -> None:
        """Write a regular file's bytes to *dst*: in the kernel when it can."""
        src, pos, left = self._fd(), entry.offset, entry.size
        use_range = True
        while left > 0:
            try:
                if use_range:
                    n = os.copy_file_range(src, dst, left, pos)
                else:
                    n = os.sendfile(dst, src, pos, left)
            except OSError as e:
                if use_range and e.errno in (
                    errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF
                ):  # fmt: skip
                    use_range = False
                    continue
                raise
            if n == 0:
                raise errdefs.System("the build context's spool is shorter than its index")
            pos += n
            left -= n

    def open(self, entry: ContextEntry) -> IO[bytes]:
        """A regular file's bytes as a file (ADD looks into archives)."""
        return io.BufferedReader(_Slice(self, entry), _CHUNK)

    # -- building the tree ----------------------------------------------------------------------
    def _dir(self, rel: str) -> ContextEntry:
        """The directory *rel*, links on the way followed inside the tree, missing ones
        made (0755, root's, as moby makes a missing parent)."""
        node = self.root
        if not rel:
            return node
        try:
            canon = self.canonical(rel)
        except OSError as e:
            raise errdefs.InvalidParameter(f"invalid tar archive: {rel!r}: {e.strerror}") from None
        if canon == ".":
            return node
        for part in canon.split("/"):
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = _new_dir(0o755, 0, 0, self.made_ns, self._ino())
                node.children[part] = child
            elif child.children is None:
                raise errdefs.InvalidParameter(f"invalid tar archive: {rel!r} is not a directory")
            node = child
        return node

    def _add(self, m: tarfile.TarInfo, offset: int) -> None:
        name = m.name
        clean = go_clean(name)
        if clean == ".." or clean.startswith("../"):
            raise errdefs.InvalidParameter(
                f'invalid tar archive: "{name}" is outside of the context'
            )
        cleaned = clean.lstrip("/")  # an absolute name is taken below the root, as in Go
        if cleaned in ("", "."):
            return
        parent_rel, base = posixpath.split(cleaned)
        parent = self._dir(parent_rel)
        assert parent.children is not None
        mtime_ns = int(m.mtime * 1e9)
        mode = m.mode & 0o7777
        existing = parent.children.get(base)
        if m.islnk():
            entry = self._hard_link(m)
        elif m.isdir():
            if existing is not None and existing.children is not None:
                existing.mode, existing.uid, existing.gid = mode, m.uid, m.gid
                existing.mtime_ns = mtime_ns
                existing.xattrs = _xattrs(m)
                return
            entry = _new_dir(mode, m.uid, m.gid, mtime_ns, self._ino())
            entry.xattrs = _xattrs(m)
        else:
            kind = _KINDS.get(m.type, stat.S_IFREG)
            entry = ContextEntry(
                kind,
                mode,
                m.uid,
                m.gid,
                mtime_ns,
                size=m.size if kind == stat.S_IFREG else 0,
                link=m.linkname if kind == stat.S_IFLNK else "",
                rdev=os.makedev(m.devmajor, m.devminor)
                if kind in (stat.S_IFCHR, stat.S_IFBLK)
                else 0,
                offset=offset if kind == stat.S_IFREG else -1,
                xattrs=_xattrs(m),
                ino=self._ino(),
            )
            if kind == stat.S_IFREG and offset + m.size > self._size:
                raise errdefs.InvalidParameter("invalid tar archive: unexpected end of data")
        parent.children[base] = entry

    def _hard_link(self, m: tarfile.TarInfo) -> ContextEntry:
        if go_clean(m.linkname).startswith("../"):
            raise errdefs.InvalidParameter(
                f'invalid tar archive: hard link "{m.name}" -> "{m.linkname}" leaves the context'
            )
        target = go_clean("/" + m.linkname).lstrip("/")
        tparent, tbase = posixpath.split(target)
        try:
            found = self.lookup(_join(self.canonical(tparent or "."), tbase))
        except OSError:
            raise errdefs.InvalidParameter(
                f'invalid tar archive: hard link "{m.name}" -> "{m.linkname}": no such file'
            ) from None
        if found.children is not None:
            raise errdefs.InvalidParameter(
                f"invalid tar archive: cannot extract {m.name!r}: hard link to a directory"
            )
        return replace(found)  # same bytes, same metadata, same ino


def _join(parent: str, name: str) -> str:
    """A canonical path's child."""
    return name if parent == "." else f"{parent}/{name}"


def _xattrs(m: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (key[len(_XATTR) :], value.encode("utf-8", "surrogateescape"))
        for key, value in m.pax_headers.items()
        if key.startswith(_XATTR)
    )


class _Slice(io.RawIOBase):
    """A regular file of the spool, read by offset (no shared file position)."""

    def __init__(self, fs: ContextFS, entry: ContextEntry) -> None:
        super().__init__()
        self._fs = fs
        self._pos = entry.offset
        self._end = entry.offset + entry.size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fs._fd(), n, self._pos)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


# -- spooling and indexing -----------------------------------------------------------------------


@dataclass
class _SpoolReader:
    """Reads of the spool by position, as :func:`_members` asks for them."""

    fd: int
    pos: int = 0

    def read(self, n: int) -> bytes:
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> None:
        self.pos += n


def spool_context(stream: IO[bytes], tmp_dir: Path) -> ContextFS:
    """Write the plain tar *stream* into an unlinked file under *tmp_dir* and index it;
    the context owns the file.  Raises InvalidParameter for what is not a tar."""
    spool = tempfile.TemporaryFile(dir=tmp_dir, prefix="build-context-")  # noqa: SIM115
    fs = ContextFS(spool)
    try:
        fd = spool.fileno()
        size = 0
        while chunk := stream.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
                size += n
        # Go's writer may leave a tar's end out (the CLI's ``-f -`` context stops right
        # after its last file's data): Go's reader takes that as the end, and so does this
        tail = -size % BLOCK + 2 * BLOCK
        os.write(fd, bytes(tail))
        fs._size = size + tail
        _index(fs, fd)
    except BaseException:
        fs.close()
        raise
    return fs


def _index(fs: ContextFS, fd: int) -> None:
    reader = _SpoolReader(fd)
    while (m := read_member(reader.read, reader.skip)) is not None:
        if m.type not in tarfile.SUPPORTED_TYPES and not m.isreg():
            reader.skip(m.size + tar_padding(m.size))
            continue
        fs._add(m, reader.pos)
        reader.skip(m.size + tar_padding(m.size))
