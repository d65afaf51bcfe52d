"""The ``local`` log driver, as moby's ``daemon/logger/local``: compact, rotated and compressed.

Each message is one protobuf ``LogEntry`` (moby's
``api/types/plugins/logdriver/entry.proto``: ``source`` = 1, ``time_nano`` = 2,
``line`` = 3, ``partial`` = 4, ``partial_log_metadata`` = 5 with ``last`` = 1,
``id`` = 2, ``ordinal`` = 3; ``attrs`` = 6 is read, not written) framed by its
length as a 4-byte big-endian integer before *and* after it, so the file can
be walked backwards from its end for ``tail`` and ``since``.  The line is
stored without its newline; a piece of a line cut by the copier is marked
partial, and the reader adds the newline back to every message that is not a
non-final piece, as moby's decoder does.

The protobuf is encoded and decoded here by hand: a ``LogEntry`` is a handful
of scalar fields, and a few lines of varint code cost less than building
message objects per log line through ``google.protobuf``.

Rotation, compression and following are :class:`berth.logger._logfile.FileLogger`'s.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

from berth.logger._files import FIRST_READ_BLOCK, READ_BLOCK, SCAN_BLOCK, LogFormat
from berth.logger._logfile import FileLogger, LogPosition, LogReader, read_logs
from berth.logger.message import LogMessage

__all__ = [
    "LOCAL_FORMAT",
    "LocalLogger",
    "LogPosition",
    "LogReader",
    "decode_entry",
    "encode_entry",
    "read_logs",
]

log = logging.getLogger(__name__)

NAME = "local"
#: moby's defaults: rotation and compression are on unless turned off.
DEFAULT_MAX_SIZE = 20 * 1024 * 1024
DEFAULT_MAX_FILE = 5
DEFAULT_COMPRESS = True
#: moby's ``maxMsgLen``: a bigger length is a corrupt frame, not a message.
MAX_MSG_LEN = 1_000_000

_LEN = struct.Struct(">I")
_HDR = _LEN.size
_MASK64 = (1 << 64) - 1


# -- protobuf ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= _MASK64  # negative int64s are ten bytes of two's complement, as in Go
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_bytes(tag: int, data: bytes) -> bytes:
    return bytes([tag]) + _varint(len(data)) + data


def encode_entry(
    source: str,
    time_ns: int,
    line: bytes,
    *,
    partial: bool = False,
    last: bool = False,
    partial_id: str = "",
    ordinal: int = 0,
) -> bytes:
    """One framed ``LogEntry``: length, message, length.  Zero values are left out (proto3)."""
    parts = []
    if source:
        parts.append(_field_bytes(0x0A, source.encode("utf-8", "surrogateescape")))
    if time_ns:
        parts.append(b"\x10" + _varint(time_ns))
    if line:
        parts.append(_field_bytes(0x1A, line))
    if partial:
        parts.append(b"\x20\x01")
        meta = []
        if last:
            meta.append(b"\x08\x01")
        if partial_id:
            meta.append(_field_bytes(0x12, partial_id.encode()))
        if ordinal:
            meta.append(b"\x18" + _varint(ordinal))
        parts.append(_field_bytes(0x2A, b"".join(meta)))
    body = b"".join(parts)
    n = _LEN.pack(len(body))
    return n + body + n


class _Malformed(ValueError):
    pass


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Malformed
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs; a varint as int, a length-delimited field as bytes."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
            yield num, v
        elif wire == 2:
            size, i = _read_varint(buf, i)
            if i + size > n:
                raise _Malformed
            yield num, buf[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise _Malformed
        if i > n:
            raise _Malformed


def _attr(buf: bytes) -> tuple[str, str]:
    key = value = ""
    for num, v in _fields(buf):
        if isinstance(v, bytes):
            if num == 1:
                key = v.decode("utf-8", "replace")
            elif num == 2:
                value = v.decode("utf-8", "replace")
    return key, value


def decode_entry(body: bytes) -> LogMessage | None:
    """The message of one ``LogEntry`` (without its frame), or None when it is malformed.

    As moby's decoder, the newline is added back unless the entry is a piece of
    a line that is not its last piece.
    """
    source = ""
    time_ns = 0
    line = b""
    partial = False
    last = False
    attrs: list[tuple[str, str]] = []
    try:
        for num, v in _fields(body):
            if num == 1 and isinstance(v, bytes):
                source = v.decode("utf-8", "surrogateescape")
            elif num == 2 and isinstance(v, int):
                time_ns = v - (1 << 64) if v >> 63 else v
            elif num == 3 and isinstance(v, bytes):
                line = v
            elif num == 4 and isinstance(v, int):
                partial = bool(v)
            elif num == 5 and isinstance(v, bytes):
                for mnum, mv in _fields(v):
                    if mnum == 1 and isinstance(mv, int):
                        last = bool(mv)
            elif num == 6 and isinstance(v, bytes):
                attrs.append(_attr(v))
    except _Malformed:
        return None
    if not partial or last:
        line += b"\n"
    return LogMessage(source, line, time_ns, tuple(attrs))


# -- reading frames ---------------------------------------------------------------------


def iter_messages(fd: int, start: int, end: int) -> Iterator[LogMessage]:
    """Decode the frames in [start, end) of *fd*; *start* must be a frame start.

    A corrupt frame ends the read: past it there is no telling where the next
    frame starts (the writer repairs a file torn by a crash before appending).
    """
    pos = start
    buf = b""
    block = FIRST_READ_BLOCK
    while True:
        i = 0
        n = len(buf)
        while n - i >= _HDR:
            (size,) = _LEN.unpack_from(buf, i)
            if size > MAX_MSG_LEN:
                log.warning("corrupt local log frame (length %d) at %d", size, pos - n + i)
                return
            stop = i + _HDR + size + _HDR
            if stop > n:
                break
            if _LEN.unpack_from(buf, stop - _HDR)[0] != size:
                log.warning("corrupt local log frame at %d", pos - n + i)
                return
            msg = decode_entry(buf[i + _HDR : stop - _HDR])
            if msg is not None:
                yield msg
            i = stop
        if pos >= end:
            return
        want = block
        if n - i >= _HDR:  # a frame longer than the block: read all of it at once
            want = max(block, i + 2 * _HDR + _LEN.unpack_from(buf, i)[0] - n)
        data = os.pread(fd, min(want, end - pos), pos)
        block = min(block * 2, READ_BLOCK)
        if not data:
            return
        pos += len(data)
        buf = buf[i:] + data


class _Backwards:
    """Reads byte ranges of a file near a moving point, a block at a time, going backwards."""

    __slots__ = ("_at", "_buf", "_fd")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""
        self._at = 0

    def read(self, start: int, stop: int) -> bytes:
        at, buf = self._at, self._buf
        if start < at or stop > at + len(buf):
            begin = max(0, min(start, stop - SCAN_BLOCK))
            buf = os.pread(self._fd, stop - begin, begin)
            self._buf, self._at, at = buf, begin, begin
        return buf[start - at : stop - at]


def _frame_before(rd: _Backwards, end: int) -> tuple[int, bytes] | None:
    """(start, body) of the frame that ends at *end*, or None when there is no whole one."""
    if end < 2 * _HDR:
        return None
    (size,) = _LEN.unpack(rd.read(end - _HDR, end))
    start = end - 2 * _HDR - size
    if size > MAX_MSG_LEN or start < 0:
        return None
    frame = rd.read(start, end)
    if _LEN.unpack_from(frame, 0)[0] != size:
        return None
    return start, frame[_HDR : _HDR + size]


def nth_last(fd: int, end: int, need: int) -> tuple[int, LogMessage | None, int]:
    """The *need*-th last frame in [0, end), walking the trailing lengths backwards:
    (its offset, its message, count); (0, None, count found) when there are fewer."""
    rd = _Backwards(fd)
    count = 0
    pos = end
    while pos > 0:
        hit = _frame_before(rd, pos)
        if hit is None:
            log.warning("corrupt local log frame before offset %d", pos)
            break
        pos, body = hit
        count += 1
        if count == need:
            return pos, decode_entry(body), count
    return 0, None, count


def since_offset(fd: int, lo: int, end: int, since_ns: int) -> int:
    """The frame after the last one in [lo, end) stamped before *since_ns*, found walking
    backwards from *end* (frames cannot be found from an arbitrary offset to bisect)."""
    rd = _Backwards(fd)
    pos = end
    while pos > lo:
        hit = _frame_before(rd, pos)
        if hit is None:
            return lo
        start, body = hit
        msg = decode_entry(body)
        if msg is not None and msg.time_ns < since_ns:
            return pos
        pos = start
    return lo


class _LocalFormat:
    def iter_messages(self, fd: int, start: int, end: int) -> Iterator[LogMessage]:
        return iter_messages(fd, start, end)

    def nth_last(self, fd: int, end: int, need: int) -> tuple[int, LogMessage | None, int]:
        return nth_last(fd, end, need)

    def since_offset(self, fd: int, lo: int, end: int, since_ns: int) -> int:
        return since_offset(fd, lo, end, since_ns)


LOCAL_FORMAT: LogFormat = _LocalFormat()


def _last_whole_frame_end(fd: int, size: int) -> int:
    """The end of the last whole frame, scanning from the top (only after a crash)."""
    pos = 0
    while pos + 2 * _HDR <= size:
        head = os.pread(fd, _HDR, pos)
        (n,) = _LEN.unpack(head)
        stop = pos + 2 * _HDR + n
        if n > MAX_MSG_LEN or stop > size or _LEN.unpack(os.pread(fd, _HDR, stop - _HDR))[0] != n:
            break
        pos = stop
    return pos


# -- writing ----------------------------------------------------------------------------


class LocalLogger(FileLogger):
    """Writes LogMessages in the ``local`` driver's format, rotating like moby's ``LogFile``.

    Pieces of one long line are marked as moby's copier marks them: partial,
    with a random id shared by the pieces, an ordinal counting from 1, and
    ``last`` on the piece that ends the line.  The pieces of one stream come
    from one copier, so the per-stream state needs no lock.
    """

    FORMAT: LogFormat = LOCAL_FORMAT

    def __init__(
        self,
        path: Path,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_file: int = DEFAULT_MAX_FILE,
        compress: bool = DEFAULT_COMPRESS,
        mode: int = 0o640,
    ) -> None:
        #: stream -> (id, next ordinal) of the line being written in pieces
        self._partial: dict[str, tuple[str, int]] = {}
        super().__init__(path, max_size=max_size, max_file=max_file, compress=compress, mode=mode)

    def encode(self, msg: LogMessage) -> bytes:
        line = msg.line
        run = self._partial.get(msg.stream)
        if line.endswith(b"\n"):
            if run is None:
                return encode_entry(msg.stream, msg.time_ns, line[:-1])
            del self._partial[msg.stream]
            pid, ordinal = run
            return encode_entry(
                msg.stream,
                msg.time_ns,
                line[:-1],
                partial=True,
                last=True,
                partial_id=pid,
                ordinal=ordinal,
            )
        pid, ordinal = run if run is not None else (secrets.token_hex(32), 1)
        self._partial[msg.stream] = (pid, ordinal + 1)
        return encode_entry(
            msg.stream, msg.time_ns, line, partial=True, partial_id=pid, ordinal=ordinal
        )

    def _recover(self, fd: int, size: int) -> int:
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _frame_before(_Backwards(rfd), size) is not None:
                return size
            # A frame torn by a crash: cut the file back to the last whole one, or
            # every frame appended after it would be unreadable.
            good = _last_whole_frame_end(rfd, size)
        finally:
            os.close(rfd)
        log.warning("%s: dropping %d bytes of a torn log entry", self.path, size - good)
        os.ftruncate(fd, good)
        return good
