"""tar-split: a layer's tar stream kept as its skeleton, rebuilt byte for byte from the files.

A pushed (or saved) layer must be the very tar whose sha256 is the DiffID in
the image config, and a tar written afresh from the layer's files never is
(header fields, order, padding, whatever followed the end blocks).  So, as
moby does with vbatts/tar-split, everything of the tar except the contents
of the regular files is recorded while the layer is applied, and the stream
is rebuilt by splicing those contents back in from the layer's directory.

The record is moby's ``tar-split.json.gz``: gzip'd JSON lines, ``type`` 1 a
file (``name`` as the tar spelled it, ``size``), ``type`` 2 a segment
(``payload``: the bytes, base64).  berth adds ``path`` (the file's place in
the layer directory when it is not the cleaned name, e.g. behind a symlink
of the same layer) and leaves out the CRC-64 moby keeps in a file's
``payload``: the rebuilt stream is checked against the DiffID instead.
berth reads moby's records; moby's tar-split would refuse berth's for the
missing CRC.

A tar that writes a regular file and then replaces or removes it (the same
name twice, a whiteout of it, its directory replaced) leaves the layer
directory without the first contents: such a recording is marked
unreproducible rather than rebuilt wrongly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import zlib
from typing import IO, BinaryIO

import msgspec

from berth import errdefs
from berth.archive._pack import XATTR_PREFIX, capability, hardlinked, tar_header

FILE_TYPE = 1
SEGMENT_TYPE = 2

_FLUSH = 1 << 20  # pending segment bytes written out early once known and this many
_CHUNK = 1 << 20
_END = 1 << 62
_BLOCK = 512
_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Entry(msgspec.Struct, omit_defaults=True):
    """One line of ``tar-split.json.gz`` (vbatts/tar-split's ``storage.Entry``, plus ``path``)."""

    type: int
    name: str = ""
    name_raw: bytes = b""
    size: int = 0
    payload: bytes | None = None
    position: int = 0
    path: str = ""  # berth: where the contents are, relative to the layer directory
    path_raw: bytes = b""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Entry)


def _text_or_raw(value: str) -> tuple[str, bytes]:
    """A name as JSON can hold it: text if it is UTF-8, else its bytes (moby's ``name_raw``)."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), b""
    except UnicodeDecodeError:
        return "", raw


class TarSplitRecorder:
    """Records the skeleton of a tar while :func:`~berth.archive.apply_layer` reads it.

    Every byte read goes through :meth:`feed`; the applier claims the data of
    each regular file it writes to disk with :meth:`file` *before* reading it,
    so those bytes are dropped as they pass and the recording never holds more
    than the reader's look-ahead.  Whatever nobody claims (headers, PAX and
    GNU long-name records, padding, data of entries not written to disk, the
    end blocks and what follows them) is a segment, kept verbatim.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
        self._position = 0
        self._pos = 0  # bytes fed so far
        self._start = 0  # stream offset of self._buf[self._head]
        self._buf = bytearray()
        self._head = 0
        self._known = 0  # unclaimed bytes before this offset are segments for sure
        self._files: set[str] = set()  # paths (in the layer directory) whose contents we need
        self._dirs: set[str] = set()  # their parent directories
        #: why the recording cannot rebuild the tar, or None
        self.unreproducible: str | None = None

    # -- the byte stream ---------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        skip = self._start - self._pos
        self._pos += n
        if skip >= n:
            return
        self._buf += data[skip:] if skip > 0 else data
        if self._known > self._start and len(self._buf) - self._head >= _FLUSH:
            self._segment(min(self._known, self._pos) - self._start)

    def file(self, name: str, path: str, offset: int, size: int) -> None:
        """The *size* bytes at *offset* are the contents of regular file *name*, written to
        *path* (relative to the layer directory)."""
        assert self._start <= offset <= self._pos, (self._start, offset, self._pos)
        self._segment(offset - self._start)
        text, raw = _text_or_raw(name)
        entry = Entry(FILE_TYPE, name=text, name_raw=raw, size=size)
        if path != _clean(name):
            entry.path, entry.path_raw = _text_or_raw(path)
        self._emit(entry)
        self._files.add(path)
        parent = posixpath.dirname(path)
        while parent and parent not in self._dirs:
            self._dirs.add(parent)
            parent = posixpath.dirname(parent)
        end = offset + size
        available = min(end, self._pos) - self._start
        self._head += available
        self._start = end  # what of the contents is still to come is dropped by feed
        self._compact()

    def segment_until(self, offset: int | None) -> None:
        """Unclaimed bytes before *offset* (None: all that follow) are segments."""
        self._known = _END if offset is None else max(self._known, offset)

    def removed(self, path: str, is_dir: bool) -> None:
        """The applier removed *path* (relative to the layer directory)."""
        if self.unreproducible is not None:
            return
        if path in self._files:
            self.unreproducible = (
                f"the tar replaces {path!r} after writing it as a regular file, so the layer "
                "no longer holds the first contents"
            )
        elif is_dir and path in self._dirs:
            self.unreproducible = (
                f"the tar removes the directory {path!r} after writing regular files in it"
            )

    def finish(self) -> None:
        """Write out the rest (the stream must have been read to its end)."""
        self._segment(len(self._buf) - self._head)
        self._gz.close()

    # -- output ------------------------------------------------------------------------------
    def _segment(self, n: int) -> None:
        if n <= 0:
            return
        chunk = bytes(memoryview(self._buf)[self._head : self._head + n])
        self._head += n
        self._start += n
        self._emit(Entry(SEGMENT_TYPE, payload=chunk))
        self._compact()

    def _compact(self) -> None:
        if self._head >= len(self._buf):
            self._buf.clear()
            self._head = 0
        elif self._head > _FLUSH and self._head * 2 > len(self._buf):
            del self._buf[: self._head]
            self._head = 0

    def _emit(self, entry: Entry) -> None:
        entry.position = self._position
        self._position += 1
        self._gz.write(_encoder.encode(entry) + b"\n")


class RecordingReader(io.RawIOBase):
    """Hands every byte read from *inner* to *recorder* as well."""

    def __init__(self, inner: IO[bytes], recorder: TarSplitRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        if n:
            self._recorder.feed(data)
        return n


def _clean(name: str) -> str:
    cleaned = posixpath.normpath(name.lstrip("/"))
    return "" if cleaned == "." else cleaned


# -- rebuilding --------------------------------------------------------------------------------


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hasher = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hasher.update(data)
        self.count += len(data)
        view = memoryview(data)
        while view:
            view = view[self._out.write(view) :]

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class _Opener:
    """Opens files below a root without following a symlink, keeping the last directory."""

    def __init__(self, root: str) -> None:
        self._root = os.open(root, _O_DIR)
        self._dir_path = ""
        self._dir_fd = self._root

    def open(self, rel: str) -> int:
        parent, base = posixpath.split(rel)
        if parent != self._dir_path:
            self._set_dir(parent)
        return os.open(base, _O_FILE, dir_fd=self._dir_fd)

    def _set_dir(self, parent: str) -> None:
        if self._dir_fd != self._root:
            os.close(self._dir_fd)
        self._dir_fd, self._dir_path = self._root, ""
        fd = self._root
        for part in parent.split("/") if parent else ():
            try:
                below = os.open(part, _O_DIR, dir_fd=fd)
            finally:
                if fd != self._root:
                    os.close(fd)
            fd = below
        self._dir_fd, self._dir_path = fd, parent

    def close(self) -> None:
        if self._dir_fd != self._root:
            os.close(self._dir_fd)
        os.close(self._root)


def _entry_path(e: Entry) -> str:
    if e.path_raw:
        return os.fsdecode(e.path_raw)
    if e.path:
        return e.path
    name = os.fsdecode(e.name_raw) if e.name_raw else e.name
    rel = _clean(name)
    if rel == ".." or rel.startswith("../") or not rel:
        raise errdefs.System(f"tar-split: file entry {name!r} is outside the layer")
    return rel


def assemble_tar_split(split: IO[bytes], root: str, out: BinaryIO) -> tuple[str, int]:
    """Write the tar recorded in *split* (a ``tar-split.json.gz``) to *out*, the contents of
    its files read from *root*; return the sha256 digest and length of what was written."""
    w = _HashingWriter(out)
    opener = _Opener(root)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    try:
        with gzip.GzipFile(fileobj=split, mode="rb") as lines:
            for line in lines:
                try:
                    e = _decoder.decode(line)
                except msgspec.DecodeError as err:
                    raise errdefs.System(f"tar-split: corrupt record: {err}") from None
                if e.type == SEGMENT_TYPE:
                    if e.payload:
                        w.write(e.payload)
                elif e.type == FILE_TYPE:
                    if e.size > 0:
                        _copy_file(opener, _entry_path(e), e.size, view, w)
                else:
                    raise errdefs.System(f"tar-split: unknown entry type {e.type}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise errdefs.System(f"tar-split: corrupt record: {err}") from err
    finally:
        opener.close()
    return w.digest(), w.count


class _Sized(msgspec.Struct):
    """What :func:`tar_split_size` needs of an entry: the payload stays base64 text."""

    type: int
    size: int = 0
    payload: str | None = None


_sized_decoder = msgspec.json.Decoder(_Sized)


def tar_split_size(split: IO[bytes]) -> int:
    """The length of the tar recorded in *split*, without reading the layer's files.

    Every byte of the rebuilt stream is either a segment's payload or a file's
    contents of the recorded size (:func:`assemble_tar_split` refuses a file of
    another size), so the sum is exact: a tar header can be written before the
    stream (``docker save``).
    """
    total = 0
    try:
        with gzip.GzipFile(fileobj=split, mode="rb") as lines:
            for line in lines:
                try:
                    e = _sized_decoder.decode(line)
                except msgspec.DecodeError as err:
                    raise errdefs.System(f"tar-split: corrupt record: {err}") from None
                if e.type == SEGMENT_TYPE:
                    if e.payload:  # standard, padded base64: 4 characters carry 3 bytes
                        pad = 2 if e.payload.endswith("==") else int(e.payload.endswith("="))
                        total += len(e.payload) // 4 * 3 - pad
                elif e.type == FILE_TYPE:
                    total += e.size
                else:
                    raise errdefs.System(f"tar-split: unknown entry type {e.type}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise errdefs.System(f"tar-split: corrupt record: {err}") from err
    return total


def _copy_file(opener: _Opener, rel: str, size: int, view: memoryview, w: _HashingWriter) -> None:
    try:
        fd = opener.open(rel)
    except OSError as e:
        raise errdefs.System(f"tar-split: cannot open {rel!r} in the layer: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise errdefs.System(
                f"tar-split: {rel!r} in the layer is not the regular file of {size} bytes "
                "that was registered"
            )
        left = size
        while left:
            n = os.readv(fd, [view[: min(left, len(view))]])
            if n == 0:
                raise errdefs.System(f"tar-split: {rel!r} ended {left} bytes early")
            w.write(view[:n])
            left -= n
    finally:
        os.close(fd)


# -- layers without a recording (overlay2 diff directories) -----------------------------------


_OPAQUE_XATTR = "trusted.overlay.opaque"


def pack_layer_diff(root: str, out: BinaryIO) -> tuple[str, int]:
    """Write an overlay diff directory as a layer tar, as moby's ``TarWithOptions`` with the
    overlay whiteout format would (0/0 character devices as ``.wh.<name>``, opaque
    directories followed by ``.wh..wh..opq``); return its digest and length.

    Only a layer whose tar was written the same way comes out with its DiffID;
    the caller checks.
    """
    w = _HashingWriter(out)
    seen: dict[tuple[int, int], str] = {}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _pack_dir(root_fd, root, "", w, seen)
    finally:
        os.close(root_fd)
    w.write(bytes(2 * _BLOCK))
    return w.digest(), w.count


def _header(w: _HashingWriter, info: tarfile.TarInfo) -> None:
    w.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))


def _pack_dir(
    dir_fd: int, host: str, prefix: str, w: _HashingWriter, seen: dict[tuple[int, int], str]
) -> None:
    for name in sorted(os.listdir(dir_fd), key=os.fsencode):
        rel = prefix + name
        path = os.path.join(host, name)
        st = os.lstat(name, dir_fd=dir_fd)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFSOCK:
            continue
        if kind == stat.S_IFDIR:
            _header(w, tar_header(rel + "/", st))
            try:
                opaque = os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False)
            except OSError:
                opaque = b""
            if opaque == b"y":
                marker = tarfile.TarInfo(rel + "/.wh..wh..opq")
                marker.mode = st.st_mode & 0o777
                marker.uid, marker.gid = st.st_uid, st.st_gid
                marker.uname = marker.gname = ""
                marker.mtime = 0
                _header(w, marker)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _pack_dir(sub, path, rel + "/", w, seen)
            finally:
                os.close(sub)
            continue
        if kind == stat.S_IFCHR and st.st_rdev == 0:
            info = tar_header(posixpath.join(posixpath.dirname(rel), ".wh." + name), st)
            info.type = tarfile.REGTYPE
            info.mode = 0o600
            info.size = 0
            _header(w, info)
            continue
        info = tar_header(rel, st)
        if kind == stat.S_IFLNK:
            info.linkname = os.readlink(name, dir_fd=dir_fd)
        if hardlinked(info, st, seen) or kind != stat.S_IFREG:
            _header(w, info)
            continue
        fd = os.open(name, _O_FILE, dir_fd=dir_fd)
        try:
            cap = capability(fd)
            if cap is not None:
                info.pax_headers = {XATTR_PREFIX + "security.capability": cap}
            _header(w, info)
            left = st.st_size
            while left:
                chunk = os.read(fd, min(left, _CHUNK))
                if not chunk:
                    raise errdefs.System(f"{path} shrank while it was archived")
                w.write(chunk)
                left -= len(chunk)
            if st.st_size % _BLOCK:
                w.write(bytes(_BLOCK - st.st_size % _BLOCK))
        finally:
            os.close(fd)


__all__ = [
    "Entry",
    "RecordingReader",
    "TarSplitRecorder",
    "assemble_tar_split",
    "pack_layer_diff",
    "tar_split_size",
]
