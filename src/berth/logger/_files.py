"""Reading log files by offset: the pieces behind ``read_logs``, shared by the file drivers.

A driver's on-disk encoding is a :class:`LogFormat` (how to decode a byte range,
find the n-th last message, and find where ``since`` starts); opening files,
rotated and compressed ones included, and turning tail/since into a start
position is the same for every driver.  For json-file (``JSON_LINES``),
nothing here reads a log from the top to find where to start:

* ``tail`` reads blocks backwards from the end of the newest file and counts
  complete, decodable lines until it has enough;
* ``since`` bisects file offsets (messages are written in time order), probing
  the first whole line after the midpoint, until the window is small enough to
  scan; whole files whose last message is older are skipped after one look at
  their last line (or, compressed, at moby's ``lastTime`` gzip header).

Files are read with ``os.pread`` on descriptors opened once, so a rotation
(rename, unlink) never changes what a reader sees mid-read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from berth.logger._codec import decode_entries, decode_entry
from berth.logger._gzip import decompress_to_temp, read_last_time
from berth.logger.message import LogMessage

#: Block size for bulk forward reads: each is decoded at once, so it bounds how many
#: messages are alive together (1,600 of 41 bytes; 256 KiB left berthd 1 MB more
#: after a 50 MB `docker logs`).
READ_BLOCK = 64 * 1024
FIRST_READ_BLOCK = 4 * 1024
#: Block size for reads backwards from the end (tail) and for bisection probes.
SCAN_BLOCK = 64 * 1024
PROBE_BLOCK = 8 * 1024
#: Below this many bytes the bisection stops and the caller scans forward.
BISECT_LINEAR = 64 * 1024

_O_READ = os.O_RDONLY | os.O_CLOEXEC


class LogFormat(Protocol):
    """How one driver's files are read: the only part of reading that differs by driver."""

    def iter_messages(self, fd: int, start: int, end: int) -> Iterator[LogMessage]:
        """The messages in [start, end) of *fd*; *start* is a message boundary."""
        ...

    def nth_last(self, fd: int, end: int, need: int) -> tuple[int, LogMessage | None, int]:
        """(offset, message, count) of the *need*-th last message in [0, end), as
        :func:`nth_last` for json-file."""
        ...

    def since_offset(self, fd: int, lo: int, end: int, since_ns: int) -> int:
        """A message boundary in [lo, end] with no message at or after *since_ns* before it,
        close to the first one that is."""
        ...


class _JSONLines:
    """json-file: one JSON object per line.  Looks the functions up at call time."""

    def iter_messages(self, fd: int, start: int, end: int) -> Iterator[LogMessage]:
        return iter_messages(fd, start, end)

    def nth_last(self, fd: int, end: int, need: int) -> tuple[int, LogMessage | None, int]:
        return nth_last(fd, end, need)

    def since_offset(self, fd: int, lo: int, end: int, since_ns: int) -> int:
        return bisect_since(fd, lo, end, since_ns)


JSON_LINES: LogFormat = _JSONLines()


class Source:
    """One log file open for reading, up to ``size`` bytes.

    A gzip-compressed rotated file is decompressed to an anonymous temporary
    file the first time its contents are needed (``materialize``).
    """

    __slots__ = ("_tmpdir", "fd", "gz", "name", "size")

    def __init__(
        self, fd: int, size: int, *, name: str = "", gz: bool = False, tmpdir: Path | None = None
    ) -> None:
        self.fd = fd
        self.size = size
        self.name = name
        self.gz = gz
        self._tmpdir = tmpdir

    def gz_last_time(self) -> int | None:
        return read_last_time(self.fd) if self.gz else None

    def materialize(self) -> None:
        if not self.gz:
            return
        fd, size = decompress_to_temp(self.fd, self._tmpdir)
        os.close(self.fd)
        self.fd, self.size, self.gz = fd, size, False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"Source({self.name!r}, fd={self.fd}, size={self.size}, gz={self.gz})"


def open_source(path: str | Path, size: int | None = None) -> Source:
    """Open *path* for reading (raises FileNotFoundError); *size* defaults to its current size."""
    fd = os.open(path, _O_READ)
    if size is None:
        size = os.fstat(fd).st_size
    return Source(fd, size, name=str(path))


def open_rotated(path: Path, indices: Iterable[int]) -> list[Source]:
    """Open ``path.<k>`` (or ``path.<k>.gz``) for each k in *indices*, skipping missing ones.

    The plain file is preferred: while a rotated file is being compressed
    both exist, and the plain one is complete.
    """
    out: list[Source] = []
    try:
        for k in indices:
            plain = f"{path}.{k}"
            try:
                out.append(open_source(plain))
                continue
            except FileNotFoundError:
                pass
            try:
                fd = os.open(plain + ".gz", _O_READ)
            except FileNotFoundError:
                continue
            out.append(
                Source(fd, os.fstat(fd).st_size, name=plain + ".gz", gz=True, tmpdir=path.parent)
            )
    except BaseException:
        for src in out:
            src.close()
        raise
    return out


def rotated_indices(path: Path) -> list[int]:
    """The rotated files that exist next to *path*, oldest (highest index) first."""
    found: list[int] = []
    k = 1
    while os.path.exists(f"{path}.{k}") or os.path.exists(f"{path}.{k}.gz"):
        found.append(k)
        k += 1
    found.reverse()
    return found


# -- forward reading ------------------------------------------------------------------


def iter_messages(fd: int, start: int, end: int) -> Iterator[LogMessage]:
    """Decode the lines in [start, end) of *fd*; corrupt and blank lines are skipped.

    A last line without a newline is decoded if it is a whole JSON object, as
    moby's decoder does; a line cut short by a crash is not, and is skipped.
    Blocks are decoded whole; they start small and grow, so a reader that stops
    early (``--until``, a follower catching up) decodes little more than it uses.
    """
    pos = start
    carry = b""
    block = FIRST_READ_BLOCK
    decode, decode_block = decode_entry, decode_entries
    while pos < end:
        data = os.pread(fd, min(block, end - pos), pos)
        block = min(block * 2, READ_BLOCK)
        if not data:
            break
        pos += len(data)
        if carry:
            data = carry + data
        lines = data.split(b"\n")
        carry = lines.pop()
        yield from decode_block(lines)
    if carry:
        msg = decode(carry)
        if msg is not None:
            yield msg


def _iter_lines_at(fd: int, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """(line start, line end, bytes) for each line from *start*, which must be a line start."""
    pos = start
    carry = b""
    carry_at = start
    while pos < end:
        data = os.pread(fd, min(PROBE_BLOCK, end - pos), pos)
        if not data:
            break
        pos += len(data)
        buf = carry + data if carry else data
        i = 0
        while (j := buf.find(b"\n", i)) >= 0:
            yield carry_at + i, carry_at + j + 1, buf[i : j + 1]
            i = j + 1
        carry = buf[i:]
        carry_at += i
    if carry:
        yield carry_at, carry_at + len(carry), carry


def _next_line_start(fd: int, pos: int, end: int) -> int:
    """The first line start at or after *pos* (*end* when there is none)."""
    if pos <= 0:
        return 0
    at = pos - 1  # a newline at pos-1 makes pos itself a line start
    while at < end:
        data = os.pread(fd, min(PROBE_BLOCK, end - at), at)
        if not data:
            break
        i = data.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(data)
    return end


# -- backward reading (tail) ------------------------------------------------------------


def nth_last(fd: int, end: int, need: int) -> tuple[int, LogMessage | None, int]:
    """Find the *need*-th last decodable message in [0, end) of *fd*, reading backwards.

    Returns (offset of its line, the message, count).  When the file holds
    fewer, returns (0, None, number found).
    """
    count = 0
    pos = end
    carry = b""
    while pos > 0:
        step = min(SCAN_BLOCK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        if carry:
            chunk += carry
        e = len(chunk)
        while e > 0:
            # The line ending at e starts after the previous newline; the byte
            # at e-1 is this line's own newline (or its last byte at EOF).
            nl = chunk.rfind(b"\n", 0, e - 1)
            if nl < 0 and pos > 0:
                break  # its start is in an earlier block
            s = nl + 1
            msg = decode_entry(chunk[s:e])
            if msg is not None:
                count += 1
                if count == need:
                    return pos + s, msg, count
            e = s
        carry = chunk[:e]
    return 0, None, count


def tail_position(
    sources: Sequence[Source], n: int, fmt: LogFormat = JSON_LINES
) -> tuple[int, int]:
    """(source index, offset) where the last *n* messages start; (0, 0) when there are fewer."""
    if n == 0:
        return len(sources), 0
    need = n
    for i in range(len(sources) - 1, -1, -1):
        src = sources[i]
        src.materialize()
        offset, msg, found = fmt.nth_last(src.fd, src.size, need)
        if msg is not None:
            return i, offset
        need -= found
    return 0, 0


# -- bisection (since) ------------------------------------------------------------------


def _first_message_from(fd: int, pos: int, hi: int, end: int) -> tuple[int, int, int] | None:
    """(start, end, time) of the first decodable message whose line starts in [pos, hi)."""
    start = _next_line_start(fd, pos, end)
    for s, e, raw in _iter_lines_at(fd, start, end):
        if s >= hi:
            return None
        msg = decode_entry(raw)
        if msg is not None:
            return s, e, msg.time_ns
    return None


def bisect_since(fd: int, lo: int, end: int, since_ns: int) -> int:
    """A line start in [lo, end] such that every message before it (from *lo*) is older
    than *since_ns*, at most about ``BISECT_LINEAR`` bytes before the first that is not.

    *lo* must be a line start.  Lines are assumed to be in time order, as the
    writer appends them.
    """
    hi = end
    while hi - lo > BISECT_LINEAR:
        mid = (lo + hi) // 2
        hit = _first_message_from(fd, mid, hi, end)
        if hit is None:
            hi = mid
            continue
        s, e, t = hit
        if t < since_ns:
            lo = e
        else:
            hi = s
    return lo


def since_position(
    sources: Sequence[Source], index: int, offset: int, since_ns: int, fmt: LogFormat = JSON_LINES
) -> tuple[int, int]:
    """Where to start reading for messages at or after *since_ns*, not before (index, offset)."""
    for i in range(index, len(sources)):
        src = sources[i]
        lo = offset if i == index else 0
        if src.gz:
            last = src.gz_last_time()
            if last is not None and last < since_ns:
                continue
            src.materialize()
        _, last_msg, _ = fmt.nth_last(src.fd, src.size, 1)
        if last_msg is None or last_msg.time_ns < since_ns:
            continue  # nothing in this file is recent enough
        return i, fmt.since_offset(src.fd, lo, src.size, since_ns)
    return len(sources), 0
