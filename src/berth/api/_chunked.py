"""A chunked request body (RFC 9112, section 7.1) decoded without I/O.

h11 makes an event of every chunk, and the docker CLI sends an upload in chunks of 32 KiB:
a ``docker cp`` of 100 MB is 3,200 events, and they were most of the event loop's work.
This decoder takes whatever a read returned and gives back the body bytes in it as views
of that read, so one read becomes one piece of body however many chunks it held.
"""

from __future__ import annotations

import re

import h11

#: a chunk-size line (with its extensions) or a trailer line longer than this is refused
MAX_LINE = 4096
#: all trailer lines together
MAX_TRAILERS = 64 * 1024

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# The usual framing, matched in one step: a size line without extensions, and the end of
# a chunk's data followed by one. A ``docker cp`` of small files comes in chunks of a few
# hundred bytes (a tar header, a file, its padding), 30,000 of them for 10,000 files.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
_NEXT_SIZE_LINE = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")

_SIZE, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)


class ChunkedDecoder:
    """Feed it the bytes after the request head, in any pieces; it returns the body's."""

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # bytes of the current chunk still to come
        self._partial = b""  # the start of a line that has not ended yet
        self._trailers = 0
        self._leftover = b""

    @property
    def done(self) -> bool:
        """The last chunk and the trailers have come."""
        return self._state == _DONE

    @property
    def leftover(self) -> bytes:
        """What came after the body: the start of the next request."""
        return self._leftover

    def feed(self, data: bytes) -> list[memoryview]:
        """The body bytes in *data*, as views of it; RemoteProtocolError for bad framing."""
        if self._state == _DONE:
            self._leftover += data
            return []
        if self._partial:
            data, self._partial = self._partial + data, b""
        view = memoryview(data)
        out: list[memoryview] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._left, end - pos)
                out.append(view[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                continue
            if state != _TRAILERS:
                size_line = (_NEXT_SIZE_LINE if state == _DATA_END else _SIZE_LINE).match(data, pos)
                if size_line is not None:
                    pos = size_line.end()
                    self._left = int(size_line[1], 16)
                    self._state = _DATA if self._left else _TRAILERS
                    continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_LINE:
                    raise _error("a chunk line is too long")
                self._partial = data[pos:]
                break
            line = data[pos:eol]
            pos = eol + 2
            if self._state == _SIZE:
                self._left = _chunk_size(line)
                self._state = _DATA if self._left else _TRAILERS
            elif self._state == _DATA_END:
                if line:
                    raise _error("chunk data is longer than its size")
                self._state = _SIZE
            else:  # trailers, then an empty line
                self._trailers += len(line) + 2
                if self._trailers > MAX_TRAILERS:
                    raise _error("the trailers are too long")
                if not line:
                    self._state = _DONE
                    self._leftover = data[pos:]
                    break
        return out


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip(b" \t")
    if not _HEX.fullmatch(size):
        raise _error(f"invalid chunk size {line[:32]!r}")
    return int(size, 16)


def _error(message: str) -> h11.RemoteProtocolError:
    return h11.RemoteProtocolError(message, error_status_hint=400)
