"""Cutting a container's raw output into log messages, as moby's ``logger.Copier`` does.

moby reads each stream into a 16 KiB buffer and logs every ``\\n``-terminated
line in it as one message.  When the buffer fills up without a newline, its
16 KiB are logged as a *partial* message (no newline), and the rest of the
line follows in later messages; the piece that finally ends the line carries
the newline (it is just ``"\\n"`` when the line was an exact multiple of
16 KiB).  At end of stream an unterminated remainder is logged as a partial
message.  All pieces of one line share one timestamp.

berth stamps a line with the time its first byte arrived (moby stamps when the
line is cut, which is the same read in the common case); pieces of a long line
keep the stamp of the line's first byte, as moby's do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from berth.logger.message import LogMessage

log = logging.getLogger(__name__)

#: ``lines(stream, block, lines, time_ns)``: log each of *lines* (*block*'s whole lines,
#: without their newlines, each shorter than one message) as a message stamped
#: *time_ns*, at once; False when the logger takes messages only one by one.
LinesSink = Callable[[str, bytes, list[bytes], int], bool]

#: moby's ``defaultBufSize``: the most bytes of one message (without its newline).
MAX_MESSAGE_SIZE = 16 * 1024


class Copier:
    """Splits a raw output stream into LogMessages as moby's copier does (on b"\\n", at most
    16 KiB per message, a partial message keeps no newline), timestamping each message when
    its first byte arrives.

    One Copier serves one stream and is fed from one thread (or task) at a
    time.  Errors raised by *sink* are logged and the output keeps flowing, as
    in moby: a failing log driver must not block the container.
    """

    __slots__ = ("_buf", "_lines", "_max", "_sink", "_started_ns", "stream")

    def __init__(
        self,
        stream: str,
        sink: Callable[[LogMessage], None],
        *,
        max_size: int = MAX_MESSAGE_SIZE,
        lines: LinesSink | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.stream = stream
        self._sink = sink
        self._max = max_size
        self._buf = bytearray()
        #: arrival time of the first byte of the line being assembled (None between lines)
        self._started_ns: int | None = None
        #: takes a chunk's whole lines at once (see :data:`LinesSink`), when the logger can
        self._lines = lines

    @property
    def pending(self) -> int:
        """Bytes of an unterminated line held back, waiting for its newline."""
        return len(self._buf)

    def _emit(self, line: bytes, ts: int) -> None:
        try:
            self._sink(LogMessage(self.stream, line, ts))
        except Exception:
            log.exception("failed to log a %d-byte %s message", len(line), self.stream)

    def feed(self, data: bytes, now_ns: int | None = None) -> None:
        """Take the next chunk of output; *now_ns* is when it arrived (default: now)."""
        n = len(data)
        if not n:
            return
        now = time.time_ns() if now_ns is None else now_ns
        buf = self._buf
        limit = self._max
        pos = 0
        ts = self._started_ns
        batch = self._lines is not None  # whole lines at once, from the first line start
        while pos < n:
            if batch and ts is None:  # at a line's start (not after a partial piece)
                batch = False
                pos = self._whole_lines(data, pos, now)
                if pos >= n:
                    break
            if ts is None:
                ts = now
            room = limit - len(buf)  # always >= 1: a full buffer is emitted at once
            # The line ends in this message when its newline comes before the
            # message holds `limit` bytes of content.
            nl = data.find(b"\n", pos, pos + room)
            if nl >= 0:
                if buf:
                    buf += data[pos : nl + 1]
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = data[pos : nl + 1]
                self._emit(line, ts)
                ts = None
                pos = nl + 1
                continue
            take = min(room, n - pos)
            buf += data[pos : pos + take]
            pos += take
            if len(buf) >= limit:
                # A full message without a newline: a partial piece of a long
                # line.  The rest of the line keeps the same timestamp.
                line = bytes(buf)
                buf.clear()
                self._emit(line, ts)
        self._started_ns = ts

    def _whole_lines(self, data: bytes, pos: int, now: int) -> int:
        """Hand the whole lines of *data* from *pos* (a line start) to the lines sink in
        one call, when each is one message (shorter than the limit); where they end."""
        last = data.rfind(b"\n", pos)
        if last < 0:
            return pos
        block = data[pos : last + 1]
        lines = block[:-1].split(b"\n")
        if len(block) - len(lines) >= self._max and max(map(len, lines)) >= self._max:
            return pos  # a line longer than one message: cut as moby cuts it
        assert self._lines is not None
        try:
            if not self._lines(self.stream, block, lines, now):
                return pos
        except Exception:
            log.exception("failed to log %d %s messages", len(lines), self.stream)
        return last + 1

    def flush(self, now_ns: int | None = None) -> None:
        """At end of stream: log a pending unterminated line as a partial message.

        Its timestamp is that of its first byte; *now_ns* is used only when
        that is unknown.
        """
        if self._buf:
            ts = self._started_ns
            if ts is None:
                ts = time.time_ns() if now_ns is None else now_ns
            line = bytes(self._buf)
            self._buf.clear()
            self._emit(line, ts)
        self._started_ns = None
