"""The file log drivers' common part, as moby's ``loggerutils.LogFile``: writing with rotation
and compression, and reading with tail/since/until/follow.  A driver supplies the encoding.

Writing (:class:`FileLogger`): each message appended with one ``os.write``
under a lock.  With ``max_size`` set the file is rotated as moby rotates it:
before a write, when the file has *reached* ``max_size``, ``<log>.<n-1>`` is
dropped, ``<log>.<k>`` becomes ``<log>.<k+1>``, ``<log>`` becomes ``<log>.1``
and a fresh ``<log>`` is opened (with ``max_file=1`` the old file is unlinked
instead).  With ``compress`` the new ``<log>.1`` is gzipped in the background
into ``<log>.1.gz``.

Reading (:func:`read_logs`): rotated files then the current one, oldest
first.  ``tail`` and ``since`` find where to start by seeking, never by
decoding the whole log (how depends on the driver's :class:`LogFormat`).

Following: the logger keeps a *position*, (rotation count, size of the
current file), changed under its lock by every write and rotation, and a
condition variable notified on each change.  A follower holds the current
file open, waits on the condition until the position differs from what it
has read, then reads exactly the new bytes.  When the rotation count moved it
first reads the old file (still open, whatever its new name) to its end, then,
under the logger's lock, opens the new current file together with any rotated
files it skipped entirely, so no message is lost or read twice.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from berth import errdefs
from berth.logger._fdio import write_all
from berth.logger._files import (
    JSON_LINES,
    LogFormat,
    Source,
    open_rotated,
    open_source,
    rotated_indices,
    since_position,
    tail_position,
)
from berth.logger._gzip import compress_file
from berth.logger.message import LogMessage

__all__ = ["FileLogger", "LogPosition", "LogReader", "read_logs"]

log = logging.getLogger(__name__)

#: How long a follower sleeps at most before looking at its ``stop`` event.
#: New data wakes it at once; :meth:`FileLogger.wake_readers` does too.
FOLLOW_POLL_S = 0.25

_O_WRITE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class LogPosition(NamedTuple):
    """Where the writer is: how many rotations so far, bytes in the current file."""

    rotation: int
    size: int


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rename_quiet(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        pass


class FileLogger:
    """Writes LogMessages to a log file, rotating it like moby's ``loggerutils.LogFile``.

    Subclasses say how a message is encoded (:meth:`encode`), how a file left
    behind by a crash is made appendable again (:meth:`_recover`) and how a torn
    write is repaired (:meth:`_repair_torn`); :attr:`FORMAT` is how readers decode it.
    """

    FORMAT: LogFormat = JSON_LINES

    def __init__(
        self,
        path: Path,
        *,
        max_size: int = -1,
        max_file: int = 1,
        compress: bool = False,
        mode: int = 0o640,
    ) -> None:
        if max_size != -1 and max_size <= 0:
            raise errdefs.InvalidParameter("max-size must be a positive number")
        if max_file < 1:
            raise errdefs.InvalidParameter("max-file cannot be less than 1")
        if compress and (max_file == 1 or max_size == -1):
            raise errdefs.InvalidParameter(
                "compress cannot be true when max-file is less than 2 or max-size is not set"
            )
        self.path = Path(path)
        self.max_size = max_size
        self.max_file = max_file
        self.compress = compress
        self._mode = mode

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0
        self._closed = False
        self._rotation = 0
        self._last_ns = 0
        self._compressor: threading.Thread | None = None

        fd = os.open(self.path, _O_WRITE, mode)
        try:
            size = os.fstat(fd).st_size
            if size:
                size = self._recover(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = size

    # -- what a driver supplies --------------------------------------------------------

    def encode(self, msg: LogMessage) -> bytes:
        """The exact bytes this logger appends for *msg*."""
        raise NotImplementedError

    def _recover(self, fd: int, size: int) -> int:
        """Make a non-empty file left by an earlier run appendable; returns its new size."""
        return size

    def _repair_torn(self, fd: int, size: int, written: int) -> int:
        """After a write failed with *written* of its bytes out past *size*: the new size.

        The default drops the torn bytes; readers never read past the size anyway.
        """
        os.ftruncate(fd, size)
        return size

    # -- writing ---------------------------------------------------------------------

    def log(self, msg: LogMessage) -> None:
        """Append *msg* (thread-safe); rotates first when the file has reached ``max_size``."""
        self._append(self.encode(msg), msg.time_ns)

    def _append(self, data: bytes, last_ns: int) -> None:
        """Append the encoded *data*, whose last message is stamped *last_ns*."""
        with self._cond:
            if self._closed:
                raise errdefs.Unavailable("cannot write because the output file was closed")
            if self.max_size != -1 and self._size >= self.max_size:
                self._rotate()
            if self._fd < 0:
                raise errdefs.System(f"log file {self.path} is not open after a failed rotation")
            try:
                self._size += write_all(self._fd, data)
            except OSError as e:
                written: int = getattr(e, "written", 0)
                if written:
                    try:
                        self._size = self._repair_torn(self._fd, self._size, written)
                    except OSError:
                        self._size += written
                    self._notify()
                raise errdefs.System(f"error writing log entry: {e}") from e
            self._last_ns = last_ns
            self._notify()

    def _notify(self) -> None:
        if self._waiting:
            self._cond.notify_all()

    def _rotate(self) -> None:
        """Rotate the files (lock held), as moby's ``LogFile.rotate``."""
        if self._compressor is not None:
            # moby holds rotateMu until compression ends: renames must not
            # race the compressor reading <log>.1.
            self._compressor.join()
            self._compressor = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        name = str(self.path)
        try:
            if self.max_file >= 2:
                ext = ".gz" if self.compress else ""
                _unlink_quiet(f"{name}.{self.max_file - 1}{ext}")
                for i in range(self.max_file - 1, 1, -1):
                    _rename_quiet(f"{name}.{i - 1}{ext}", f"{name}.{i}{ext}")
                _rename_quiet(name, f"{name}.1")
            else:
                # Followers may still be reading the old file: unlink it rather
                # than truncate it under them.
                _unlink_quiet(name)
        except OSError as e:
            log.warning("error rotating log file %s, log data may have been lost: %s", name, e)
        # O_TRUNC anyway, in case the rotation did not work out.
        self._fd = os.open(self.path, _O_WRITE | os.O_TRUNC, self._mode)
        self._rotation += 1
        self._size = 0
        self._notify()
        if self.compress and self.max_file >= 2:
            self._compressor = threading.Thread(
                target=self._compress,
                args=(Path(f"{name}.1"), self._last_ns),
                name=f"compress {self.path.name}.1",
                daemon=True,
            )
            self._compressor.start()

    def _compress(self, path: Path, last_ns: int) -> None:
        try:
            compress_file(path, last_ns, self._mode)
        except OSError as e:
            log.error("error compressing log file %s after rotation: %s", path, e)

    def close(self) -> None:
        """Close the file and tell followers that no more messages will come."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._cond.notify_all()
            compressor = self._compressor
            self._compressor = None
        if compressor is not None:
            compressor.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what followers use ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def position(self) -> LogPosition:
        with self._lock:
            return LogPosition(self._rotation, self._size)

    def wait_for_change(
        self, seen: LogPosition, timeout: float | None = None
    ) -> tuple[LogPosition, bool]:
        """Block until the position differs from *seen*, the logger is closed, someone calls
        :meth:`wake_readers`, or *timeout* passes.  Returns (position, closed)."""
        with self._cond:
            if (self._rotation, self._size) == seen and not self._closed:
                self._waiting += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._waiting -= 1
            return LogPosition(self._rotation, self._size), self._closed

    def wake_readers(self) -> None:
        """Wake every waiting follower now (e.g. after setting its ``stop`` event)."""
        with self._cond:
            self._cond.notify_all()

    def snapshot(self) -> tuple[LogPosition, Source | None, list[Source]]:
        """Atomically: the position, the current file and the rotated files, opened.

        The current file's Source is limited to the position's size, so what
        is read from it is exactly what was written before the snapshot.
        """
        with self._lock:
            pos = LogPosition(self._rotation, self._size)
            try:
                current: Source | None = open_source(self.path, pos.size)
            except FileNotFoundError:
                current = None
            try:
                rotated = open_rotated(self.path, range(self.max_file - 1, 0, -1))
            except BaseException:
                if current is not None:
                    current.close()
                raise
        return pos, current, rotated

    def reopen_after(self, rotation: int) -> tuple[LogPosition, Source, list[Source], int]:
        """For a follower that has read rotation *rotation* to its end.

        Under the lock: the position, the current file, and the files of the
        rotations in between (oldest first) that still exist; plus how many of
        those are gone (rotated out of ``max_file`` already).
        """
        with self._lock:
            pos = LogPosition(self._rotation, self._size)
            current = open_source(self.path, pos.size)
            # The file written in rotation q is now <log>.<pos.rotation - q>.
            missed = pos.rotation - rotation - 1
            indices = [k for k in range(missed, 0, -1) if k <= self.max_file - 1]
            try:
                between = open_rotated(self.path, indices)
            except BaseException:
                current.close()
                raise
        return pos, current, between, missed - len(between)


class LogReader(Iterator[LogMessage]):
    """The iterator :func:`read_logs` returns.

    The files are opened (and, with a logger, the write position captured)
    when it is created, not when iteration starts, so a follower sees every
    message logged after ``read_logs`` returned.  Closing it (or exhausting
    it) releases the files.
    """

    def __init__(
        self,
        path: Path,
        *,
        since_ns: int,
        until_ns: int,
        tail: int,
        follow: bool,
        logger: FileLogger | None,
        stop: threading.Event | None,
        fmt: LogFormat = JSON_LINES,
    ) -> None:
        self._path = Path(path)
        self._fmt = logger.FORMAT if logger is not None else fmt
        self._since = since_ns
        self._until = until_ns
        self._tail = tail
        self._stop = stop
        self._logger = logger
        self._follow = follow and logger is not None
        self._done = False
        self._sources: list[Source] = []
        self._current: Source | None = None
        if logger is not None:
            self._pos, self._current, rotated = logger.snapshot()
        else:
            self._pos = LogPosition(0, 0)
            rotated = open_rotated(self._path, rotated_indices(self._path))
            try:
                self._current = open_source(self._path)
            except FileNotFoundError:
                self._current = None
        self._sources = rotated
        self._gen = self._run()

    def __next__(self) -> LogMessage:
        return next(self._gen)

    def __iter__(self) -> LogReader:
        return self

    def close(self) -> None:
        self._gen.close()
        self._release()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self._release()

    def _release(self) -> None:
        for src in self._sources:
            src.close()
        self._sources = []
        if self._current is not None:
            self._current.close()
            self._current = None

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _emit(self, src: Source, start: int, end: int) -> Iterator[LogMessage]:
        """Messages of [start, end) of *src* that pass since/until (moby's forwarder)."""
        stop = self._stop
        for msg in self._fmt.iter_messages(src.fd, start, end):
            if self._since:
                if msg.time_ns < self._since:
                    continue
                # From the first message at or after `since` on, everything
                # passes: timestamps are not strictly monotonic.
                self._since = 0
            if self._until and msg.time_ns > self._until:
                self._done = True
                return
            if stop is not None and stop.is_set():
                self._done = True
                return
            yield msg

    def _run(self) -> Generator[LogMessage, None, None]:
        try:
            yield from self._read_existing()
            if self._follow and not self._done:
                yield from self._follow_logger()
        finally:
            self._release()

    def _read_existing(self) -> Iterator[LogMessage]:
        sources = list(self._sources)
        if self._current is not None:
            sources.append(self._current)
        index, offset = 0, 0
        if self._tail >= 0:
            index, offset = tail_position(sources, self._tail, self._fmt)
        if self._since and index < len(sources):
            index, offset = since_position(sources, index, offset, self._since, self._fmt)
        for i in range(index, len(sources)):
            if self._stopped():
                self._done = True
                return
            src = sources[i]
            src.materialize()
            yield from self._emit(src, offset if i == index else 0, src.size)
            if self._done:
                return
            if src is not self._current:
                src.close()  # free a decompressed copy as soon as possible

    def _follow_logger(self) -> Iterator[LogMessage]:
        logger = self._logger
        assert logger is not None
        rotation, size = self._pos
        while True:
            if self._stopped():
                return
            timeout = FOLLOW_POLL_S
            if self._until:
                left = (self._until - time.time_ns()) / 1e9
                if left < 0:
                    # No message can be stamped before `until` any more.
                    return
                timeout = min(timeout, left + 0.001)
            pos, closed = logger.wait_for_change(LogPosition(rotation, size), timeout)
            if pos == (rotation, size):
                if closed:
                    return
                continue
            current = self._current
            if pos.rotation == rotation:
                if current is not None:
                    yield from self._emit(current, size, pos.size)
                size = pos.size
            else:
                # The file we hold was rotated away: it is complete, read it to
                # its end, then carry on in the files written since.
                if current is not None:
                    yield from self._emit(current, size, os.fstat(current.fd).st_size)
                    if self._done:
                        return
                    current.close()
                    self._current = None
                try:
                    pos, self._current, between, lost = logger.reopen_after(rotation)
                except OSError as e:
                    if e.errno == errno.ENOENT:
                        return  # the log was removed under us
                    raise
                if lost:
                    log.warning(
                        "%s: %d log file rotation(s) were missed while following; "
                        "some messages were skipped",
                        self._path,
                        lost,
                    )
                self._sources.extend(between)
                for src in between:
                    src.materialize()
                    yield from self._emit(src, 0, src.size)
                    if self._done:
                        return
                    src.close()
                rotation, size = pos.rotation, 0
            if self._done:
                return


def read_logs(
    path: Path,
    *,
    since_ns: int = 0,
    until_ns: int = 0,
    tail: int = -1,
    follow: bool = False,
    logger: FileLogger | None = None,
    stop: threading.Event | None = None,
    fmt: LogFormat = JSON_LINES,
) -> LogReader:
    """Messages from the log (rotated files included, oldest first).

    * ``tail >= 0``: only the last ``tail`` messages, found by reading blocks
      backwards from the end of the files; ``tail < 0``: all.
    * ``since_ns``: only messages stamped at or after it (moby skips those
      *before* since; once one passes, all later ones do), found by bisecting
      file offsets.  Applied after ``tail``, as in moby.
    * ``until_ns``: stop at the first message stamped after it.
    * ``follow``: then keep yielding messages as *logger* (which must be the
      logger writing *path*) writes them, across rotations, until *stop* is
      set, the logger is closed, or ``until_ns`` has passed.  Without a
      logger there is no writer to follow and only existing messages come.

    *fmt* is the files' encoding when there is no *logger* (which knows its own).
    Corrupt lines (a crash mid-write) are skipped.  The files are opened and
    the writer's position captured before this returns.
    """
    return LogReader(
        path,
        since_ns=since_ns,
        until_ns=until_ns,
        tail=tail,
        follow=follow,
        logger=logger,
        stop=stop,
        fmt=fmt,
    )
