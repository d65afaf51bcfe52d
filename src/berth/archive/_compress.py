"""Compressed tar streams: what the first bytes say, and a reader of the plain bytes.

Applying a layer parses the tar, hashes it for the DiffID and writes files; decompressing it
in that same thread serialises the four.  So gzip and zstd are decompressed beside the
reader: by default in a worker thread (zlib and zstd release the GIL) that hands plain
chunks over a bounded queue, or, when ``BERTH_GZIP_DECOMPRESS=unpigz`` asks for it, by
``unpigz`` as dockerd does (``MOBY_DISABLE_PIGZ`` turns that off, as there).  Either way the
reader stops the helper when it is closed early and surfaces a damaged or cut stream as
:class:`CorruptCompression`.

The thread is the default because it measured fastest on a 2-core machine
(bench/decompress.py, a 106 MB layer, gzip -6 to 50 MB; MB/s of plain tar, median of 15):
``apply_layer`` 171 in the thread, 158 through unpigz, 117 in the reading thread (before);
decompress + hash alone 337, 236 and 248.  Python's zlib inflates faster than unpigz here
(unpigz parallelises only the CRC and I/O), and the pipe costs more than the queue.
"""

from __future__ import annotations

import bz2
import fcntl
import gzip
import hashlib
import io
import logging
import lzma
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import IO, cast

import zstandard

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20
#: compressed bytes taken from the source per step
_IN_CHUNK = 256 << 10
#: plain bytes per hand-off to the reader; at most _DEPTH of them wait in the queue
_OUT_CHUNK = 1 << 20
_DEPTH = 4
#: pipe size asked of the kernel for unpigz's stdin and stdout (the default 64 KiB costs
#: a context switch every 64 KiB)
_PIPE_SIZE = 1 << 20

#: how gzip is decompressed: by unpigz, in a worker thread, or in the reading thread
GZIP_METHODS = ("unpigz", "thread", "inline")
#: names one of GZIP_METHODS for the daemon; the thread when unset
GZIP_METHOD_ENV = "BERTH_GZIP_DECOMPRESS"


class CorruptCompression(EOFError):
    """The compressed stream is damaged or cut short.

    An EOFError (what Python's decompressors raise for a cut stream) so that every caller's
    tar-error wording (layers, docker cp, load) counts it as the client's corrupt input.
    """


def detect_compression(head: bytes) -> str:
    """ "gzip", "bzip2", "xz", "zstd" or "none", from the first bytes of a stream."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


def _go_parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool, which dockerd applies to MOBY_DISABLE_PIGZ; None if invalid."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def default_gzip_method(environ: Mapping[str, str] | None = None) -> str:
    """The worker thread, unless ``BERTH_GZIP_DECOMPRESS`` names another of GZIP_METHODS.

    "unpigz" is dockerd's way and is kept as dockerd keeps it: MOBY_DISABLE_PIGZ set to a
    true Go bool turns it off (an unparsable value is warned about and ignored, as there),
    and without unpigz on PATH it is the thread.
    """
    env = os.environ if environ is None else environ
    method = env.get(GZIP_METHOD_ENV, "") or "thread"
    if method not in GZIP_METHODS:
        log.warning("ignoring %s=%r: expected one of %s", GZIP_METHOD_ENV, method, GZIP_METHODS)
        method = "thread"
    if method != "unpigz":
        return method
    disable = env.get("MOBY_DISABLE_PIGZ", "")
    if disable:
        parsed = _go_parse_bool(disable)
        if parsed is None:
            log.warning("invalid value in MOBY_DISABLE_PIGZ env var: %r", disable)
        elif parsed:
            log.debug("use of pigz is disabled due to MOBY_DISABLE_PIGZ=%s", disable)
            return "thread"
    return "unpigz" if shutil.which("unpigz", path=env.get("PATH")) else "thread"


def decompress(
    stream: IO[bytes], *, gzip_method: str | None = None, buffered: bool = True
) -> IO[bytes]:
    """Wrap *stream* so reads give the uncompressed bytes (gzip, zstd, bzip2, xz or plain).

    Without *buffered*, a plain stream is read through no buffer of ours: its ``read``
    may give less than asked for, and its ``read1`` is the source's (for a reader that
    takes whatever piece is there, as :class:`~berth.archive._tarread.TarStream` does).

    *gzip_method* (one of :data:`GZIP_METHODS`) overrides :func:`default_gzip_method`;
    "unpigz" without unpigz on PATH falls back to the thread.  A damaged or truncated
    stream raises :class:`CorruptCompression` from a read; closing the reader early stops
    and reaps whatever decompresses beside it.
    """
    if gzip_method is not None and gzip_method not in GZIP_METHODS:
        raise ValueError(f"unknown gzip method {gzip_method!r}, expected one of {GZIP_METHODS}")
    head = stream.read(6)
    kind = detect_compression(head)
    if kind == "gzip":
        method = gzip_method or default_gzip_method()
        if method == "unpigz":
            unpigz = shutil.which("unpigz")
            if unpigz is not None:
                log.debug("using %s to decompress", unpigz)
                return io.BufferedReader(_UnpigzReader(unpigz, head, stream), COPY_CHUNK)
            method = "thread"
        if method == "thread":
            return io.BufferedReader(_ThreadReader(_inflate, head, stream), COPY_CHUNK)
        raw = io.BufferedReader(_Peekable(head, stream), buffer_size=COPY_CHUNK)
        return io.BufferedReader(_InlineErrors(gzip.GzipFile(fileobj=raw, mode="rb")), COPY_CHUNK)
    if kind == "zstd":
        return io.BufferedReader(_ThreadReader(_unzstd, head, stream), COPY_CHUNK)
    if kind == "none" and not buffered:
        return cast(IO[bytes], _Peekable(head, stream))
    raw = io.BufferedReader(_Peekable(head, stream), buffer_size=COPY_CHUNK)
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


class _Peekable(io.RawIOBase):
    """A reader whose first bytes have been looked at and are replayed."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read1(self, size: int = -1) -> bytes:
        """The first bytes, then what the source's ``read1`` gives (its ``read``'s)."""
        if self._head:
            n = len(self._head) if size < 0 else min(size, len(self._head))
            out, self._head = self._head[:n], self._head[n:]
            return out
        read1 = getattr(self._rest, "read1", None)
        return read1(size) if read1 is not None else self._rest.read(size)


_GZIP_CUT = "gzip: compressed data ended before the end-of-stream marker was reached"


class _InlineErrors(io.RawIOBase):
    """The in-thread gzip reader with its errors raised as the other ways raise them.

    Damaged deflate data is a zlib.error there, which no caller's tar wording knows.
    """

    def __init__(self, inner: gzip.GzipFile) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        try:
            return self._inner.readinto(b)
        except EOFError:
            raise CorruptCompression(_GZIP_CUT) from None
        except (zlib.error, gzip.BadGzipFile) as e:
            raise CorruptCompression(f"corrupt gzip data: {e}") from None

    def close(self) -> None:
        self._inner.close()
        super().close()


# -- a decoder in a worker thread ---------------------------------------------------------


class _Handoff:
    """The bounded queue from a decoding thread to the reader, and the reader's stop sign."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_DEPTH)
        self.stopped = threading.Event()

    def put(self, item: bytes | BaseException | None) -> bool:
        """Hand *item* over; False once the reader has gone, so the producer returns.

        The reader sets ``stopped`` before it drains the queue, so a put blocked on a full
        queue is always released, and at most one more item goes in after that.
        """
        if self.stopped.is_set():
            return False
        self.queue.put(item)
        return not self.stopped.is_set()


Producer = Callable[[bytes, IO[bytes], _Handoff], None]


def _produce(produce: Producer, head: bytes, src: IO[bytes], out: _Handoff) -> None:
    """The thread's body: the producer's chunks, then None at the end or its exception."""
    try:
        produce(head, src, out)
    except BaseException as e:  # raised again in the reading thread
        out.put(e)
    else:
        out.put(None)


class _ThreadReader(io.RawIOBase):
    """Plain bytes that *produce* decodes from ``head + src`` in a thread of its own.

    The thread holds only the hand-off, never this reader, so an abandoned reader is
    collected and its ``close`` (from ``__del__``) stops the thread.
    """

    def __init__(self, produce: Producer, head: bytes, src: IO[bytes]) -> None:
        super().__init__()
        self._out = _Handoff()
        self._chunk = memoryview(b"")
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=_produce, args=(produce, head, src, self._out), name="berth-decompress"
        )
        self._thread.daemon = True
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            if self._done:
                if self._error is not None:
                    raise self._error
                return 0
            item = self._out.queue.get()
            if item is None or isinstance(item, BaseException):
                self._done = True
                self._error = item
                self._thread.join()
                continue
            self._chunk = memoryview(item)
        n = min(len(b), len(self._chunk))
        b[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._out.stopped.set()
            try:
                while True:
                    self._out.queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join()
        self._chunk = memoryview(b"")
        super().close()


def _inflate(head: bytes, src: IO[bytes], out: _Handoff) -> None:
    """gzip members one after another, as Python's gzip reads them (zero padding between
    members skipped); zlib checks each member's CRC and length."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    in_member = True
    data = head
    try:
        while True:
            if not data:
                data = src.read(_IN_CHUNK)
                if not data:
                    break
            if not in_member:
                data = data.lstrip(b"\0")
                if not data:
                    continue
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                in_member = True
            while True:
                plain = d.decompress(data, _OUT_CHUNK)
                data = d.unconsumed_tail
                if plain and not out.put(plain):
                    return
                if d.eof:
                    data = d.unused_data
                    in_member = False
                    break
                if not data and len(plain) < _OUT_CHUNK:
                    break  # all taken in and nothing pending: more input is needed
    except zlib.error as e:
        raise CorruptCompression(f"corrupt gzip data: {e}") from None
    if in_member:
        raise CorruptCompression(_GZIP_CUT)


class _Tap:
    """``head + src`` for the zstd decoder, shown to *seen* on the way."""

    def __init__(self, head: bytes, src: IO[bytes], seen: Callable[[bytes], None]) -> None:
        self._head = head
        self._src = src
        self._seen = seen

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._src.read(size)
        self._seen(data)
        return data


def _unzstd(head: bytes, src: IO[bytes], out: _Handoff) -> None:
    """zstd frames one after another (skippable frames too)."""
    frames = _ZstdFrames()
    tap = cast("IO[bytes]", _Tap(head, src, frames.feed))  # it needs only read()
    reader = zstandard.ZstdDecompressor().stream_reader(
        tap, read_size=_IN_CHUNK, read_across_frames=True
    )
    try:
        while chunk := reader.read(_OUT_CHUNK):
            if not out.put(chunk):
                return
    except zstandard.ZstdError as e:
        raise CorruptCompression(f"corrupt zstd data: {e}") from None
    frames.finish()


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # to 0x184D2A5F


class _ZstdFrames:
    """Follows a zstd stream's frame and block headers (RFC 8878, section 3.1).

    The decoder's streaming reader ends quietly where its input ends, even inside a frame;
    this is what tells a whole stream from a cut one.  The content itself is the decoder's
    to check (and the frame's checksum, when it has one).
    """

    def __init__(self) -> None:
        self._want = 4  # bytes until the current step is complete
        self._keep = True  # a header to collect, or a body to skip
        self._buf = bytearray()
        self._step: Callable[[bytes], None] = self._magic
        self._checksum = 0
        self._between = True  # at a frame boundary
        self.frames = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        if view:
            self._between = False
        while view:
            take = min(self._want, len(view))
            if self._keep:
                self._buf += view[:take]
            view = view[take:]
            self._want -= take
            while self._want == 0:
                header = bytes(self._buf)
                self._buf.clear()
                self._step(header)

    def finish(self) -> None:
        if not self._between or self.frames == 0:
            raise CorruptCompression("zstd: compressed data ended in the middle of a frame")

    def _collect(self, n: int, then: Callable[[bytes], None]) -> None:
        self._want, self._keep, self._step = n, True, then

    def _skip(self, n: int, then: Callable[[bytes], None]) -> None:
        self._want, self._keep, self._step = n, False, then

    def _magic(self, b: bytes) -> None:
        magic = int.from_bytes(b, "little")
        if magic == _ZSTD_MAGIC:
            self._collect(1, self._descriptor)
        elif magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
            self._collect(4, self._skippable)
        else:
            raise CorruptCompression(f"corrupt zstd data: unknown frame magic {b.hex()}")

    def _skippable(self, b: bytes) -> None:
        self._skip(int.from_bytes(b, "little"), self._frame_end)

    def _descriptor(self, b: bytes) -> None:
        fhd = b[0]
        single_segment = fhd >> 5 & 1
        self._checksum = 4 if fhd & 4 else 0
        window = 0 if single_segment else 1
        dict_id = (0, 1, 2, 4)[fhd & 3]
        content_size = (single_segment, 2, 4, 8)[fhd >> 6]
        self._skip(window + dict_id + content_size, self._next_block)

    def _next_block(self, _: bytes) -> None:
        self._collect(3, self._block)

    def _block(self, b: bytes) -> None:
        h = int.from_bytes(b, "little")
        last, kind, size = h & 1, h >> 1 & 3, h >> 3
        if kind == 3:
            raise CorruptCompression("corrupt zstd data: reserved block type")
        self._skip(1 if kind == 1 else size, self._frame_tail if last else self._next_block)

    def _frame_tail(self, _: bytes) -> None:
        self._skip(self._checksum, self._frame_end)

    def _frame_end(self, _: bytes) -> None:
        self.frames += 1
        self._between = True
        self._collect(4, self._magic)


# -- unpigz -------------------------------------------------------------------------------


class _Feed:
    """What the thread feeding unpigz met that was not unpigz going away."""

    error: BaseException | None = None


def _feed(head: bytes, src: IO[bytes], sink: IO[bytes], state: _Feed) -> None:
    try:
        data = head
        while data:
            view = memoryview(data)
            while view:
                view = view[sink.write(view) :]
            data = src.read(_IN_CHUNK)
    except BrokenPipeError:
        pass  # unpigz is gone (it failed, or close killed it): its exit status says which
    except BaseException as e:  # the source failed: raised in the reading thread
        state.error = e
    finally:
        sink.close()


def _widen(f: IO[bytes] | None) -> None:
    if f is None:
        return
    try:
        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for an unprivileged daemon: keep the default


class _UnpigzReader(io.RawIOBase):
    """unpigz's stdout, fed ``head + src`` on its stdin by a thread.

    At the end of the output unpigz is reaped and the thread joined; a non-zero exit is
    :class:`CorruptCompression` with unpigz's own message (dockerd passes it on too).
    Closing before the end kills unpigz, reaps it and joins the thread.
    """

    def __init__(self, unpigz: str, head: bytes, src: IO[bytes]) -> None:
        super().__init__()
        self._done = True  # until everything below has started
        self._error: BaseException | None = None
        # a file, not a pipe: unpigz can never block on it (closed in _finish or close)
        self._stderr = tempfile.TemporaryFile(prefix="berth-unpigz-")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [unpigz, "-d", "-c"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
            )
        except BaseException:
            self._stderr.close()
            raise
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdout = self._proc.stdout
        _widen(self._proc.stdin)
        _widen(self._stdout)
        self._fed = _Feed()
        self._writer = threading.Thread(
            target=_feed, args=(head, src, self._proc.stdin, self._fed), name="berth-unpigz"
        )
        self._writer.daemon = True
        self._writer.start()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if not self._done:
            n = os.readv(self._stdout.fileno(), [b])
            if n:
                return n
            self._finish()
        if self._error is not None:
            raise self._error
        return 0

    def _finish(self) -> None:
        self._done = True
        status = self._proc.wait()
        self._writer.join()
        self._stdout.close()
        self._stderr.seek(0)
        message = self._stderr.read().decode(errors="replace").strip()
        self._stderr.close()
        if self._fed.error is not None:
            self._error = self._fed.error
        elif status != 0:
            self._error = CorruptCompression(message or f"unpigz exited with status {status}")

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._proc.kill()  # Popen checks it has not been reaped yet
            self._proc.wait()
            self._writer.join()  # its write fails with EPIPE now that unpigz is gone
            self._stdout.close()
            self._stderr.close()
        super().close()


class DigestReader(io.RawIOBase):
    """Pass bytes through while computing their sha256 and counting them."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.hasher.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        while self.read(COPY_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()
