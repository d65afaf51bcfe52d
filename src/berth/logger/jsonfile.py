"""The json-file log driver: moby's default, file for file and byte for byte.

One JSON line per message (``{"log":…,"stream":…,"attrs":…,"time":…}``);
rotation, compression and reading (tail by reading backwards, since by
bisecting offsets, follow across rotations) are the shared machinery of
:mod:`berth.logger._logfile`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from berth.logger._codec import (
    encode_attrs,
    encode_entry,
    escape_json_bytes,
    format_time,
    plain_ascii,
)
from berth.logger._fdio import write_all
from berth.logger._files import JSON_LINES, LogFormat
from berth.logger._logfile import FileLogger, LogPosition, LogReader, read_logs
from berth.logger.message import LogMessage

__all__ = ["JSONFileLogger", "LogPosition", "LogReader", "read_logs"]

NAME = "json-file"


class JSONFileLogger(FileLogger):
    """Writes LogMessages to a json-file log, rotating it like moby's json-file driver."""

    FORMAT: LogFormat = JSON_LINES

    def __init__(
        self,
        path: Path,
        *,
        max_size: int = -1,
        max_file: int = 1,
        compress: bool = False,
        attrs: Mapping[str, str] | None = None,
        mode: int = 0o640,
    ) -> None:
        self._attrs_json = encode_attrs(attrs)
        self._streams: dict[str, bytes] = {}
        super().__init__(path, max_size=max_size, max_file=max_file, compress=compress, mode=mode)

    def _recover(self, fd: int, size: int) -> int:
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ends_line = os.pread(rfd, 1, size - 1) == b"\n"
        finally:
            os.close(rfd)
        if not ends_line:
            # A line cut short by a crash: end it, so that it stays one
            # corrupt line (skipped by readers) and does not swallow the next.
            size += write_all(fd, b"\n")
        return size

    def _repair_torn(self, fd: int, size: int, written: int) -> int:
        # Readers only ever read up to the size: make the torn line visible and
        # terminated so later lines stay whole.
        size += written
        try:
            size += write_all(fd, b"\n")
        except OSError:
            pass
        return size

    def _stream_json(self, stream: str) -> bytes:
        enc = self._streams.get(stream)
        if enc is None:
            enc = escape_json_bytes(stream.encode("utf-8", "surrogateescape"))
            self._streams[stream] = enc
        return enc

    def encode(self, msg: LogMessage) -> bytes:
        """The exact line (with its newline) this logger writes for *msg*."""
        return encode_entry(msg.line, self._stream_json(msg.stream), self._attrs_json, msg.time_ns)

    def log_lines(self, stream: str, block: bytes, lines: list[bytes], time_ns: int) -> bool:
        """Append *lines* (the whole lines of *block*, without their newlines, each a
        message of its own) stamped *time_ns*, in one write: the bytes :meth:`encode`
        gives each, made in one join when nothing in them needs escaping.  False, and
        nothing written, for a log rotated by size, which takes its messages one by one."""
        if self.max_size != -1:
            return False
        stream_json = self._stream_json(stream)
        if plain_ascii(block, newlines=True):
            head = b'{"log":"'
            attrs = b',"attrs":' + self._attrs_json if self._attrs_json else b""
            tail = b'\\n","stream":"%s"%s,"time":"%s"}\n' % (
                stream_json,
                attrs,
                format_time(time_ns),
            )
            data = head + (tail + head).join(lines) + tail
        else:
            data = b"".join(
                encode_entry(line + b"\n", stream_json, self._attrs_json, time_ns) for line in lines
            )
        self._append(data, time_ns)
        return True
