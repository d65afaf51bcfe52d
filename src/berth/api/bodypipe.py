"""Bodies between the event loop and a worker thread, never spooled.

:class:`BodyPipe` hands a request body to a worker as a blocking file: the
loop queues the chunks, the worker reads them like any file.  If the worker
stops early (a refused tarball) it closes its end, and the loop discards the
rest of the body instead of blocking.

:class:`ResponsePipe` is the other way round: a worker thread writes a
response body (a tar of a container's files) and the loop streams it.  If
the client goes away, the loop closes its end and the worker fails with
EPIPE instead of blocking on a reader that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, Protocol, cast

log = logging.getLogger(__name__)

_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
#: Bytes of a request body queued for its reader before the loop stops reading.
_QUEUE_LIMIT = 8 << 20


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BodyPipe:
    """The loop hands body chunks to a blocking reader in a worker thread.

    Chunks go through a bounded in-memory queue: no copy through the kernel and
    no syscall per chunk (an OS pipe cost a 100 MB ``docker cp`` about 60 ms of
    CPU).  The loop waits while the queue is full.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # of the first chunk: what was taken of it already
        self._queued = 0
        self._eof = False
        self._closed = False
        self._space: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reader = cast(IO[bytes], _BodyReader(self))

    async def feed(self, chunks: AsyncIterator[bytes]) -> None:
        """Queue *chunks* for the reader, then mark the end; never raises for a gone reader."""
        loop = asyncio.get_running_loop()
        try:
            async for chunk in chunks:
                while chunk:
                    with self._cond:
                        if self._closed:
                            break  # keep reading so the connection stays usable
                        if self._queued < _QUEUE_LIMIT:
                            self._chunks.append(chunk)
                            self._queued += len(chunk)
                            self._cond.notify()
                            break
                        space = loop.create_future()
                        self._space, self._loop = space, loop
                    await space
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def close_reader(self) -> None:
        """The reader is done (or gave up): what is queued or still to come is dropped."""
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._offset = 0
            self._queued = 0
            self._cond.notify_all()
            self._wake_feeder()

    def _wake_feeder(self) -> None:  # under self._cond
        space, loop = self._space, self._loop
        if space is not None and loop is not None and self._queued < _QUEUE_LIMIT // 2:
            self._space = None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake, space)

    def _take_one(self, size: int) -> bytes:
        """Up to *size* bytes of the first chunk there (waiting for one); b"" at the end."""
        with self._cond:
            while not self._chunks and not (self._eof or self._closed):
                self._cond.wait()
            if not self._chunks:
                return b""
            # The first chunk is read from an offset, not cut: cutting copied what was
            # left of it each time (a tar's 512-byte headers out of a 256 KiB read).
            chunk, start = self._chunks[0], self._offset
            if size < 0 or len(chunk) - start <= size:
                self._chunks.popleft()
                self._offset = 0
                piece = chunk[start:] if start else chunk
            else:
                self._offset = start + size
                piece = chunk[start : start + size]
            self._queued -= len(piece)
            self._wake_feeder()
            return piece

    def _take(self, size: int) -> bytes:
        """Up to *size* bytes (all for a negative size), short only at the end of the body."""
        parts: list[bytes] = []
        while size != 0:
            chunk = self._take_one(size)
            if not chunk:
                break
            parts.append(chunk)
            if size > 0:
                size -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _BodyReader(io.RawIOBase):
    """The worker's end of a :class:`BodyPipe`: a blocking, read-only file."""

    def __init__(self, pipe: BodyPipe) -> None:
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed body")
        return self._pipe._take(-1 if size is None else size)

    def readall(self) -> bytes:
        return self.read(-1)

    def read1(self, size: int = -1) -> bytes:
        """What one chunk of the body gives, up to *size* bytes: no joining."""
        if self.closed:
            raise ValueError("read from a closed body")
        return self._pipe._take_one(size)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._pipe.close_reader()
        super().close()


class ResponsePipe:
    """An async iterator of what a worker thread writes; see the module docstring."""

    def __init__(self) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(wfd, _F_SETPIPE_SZ, _PIPE_SIZE)
        os.set_blocking(rfd, False)
        self._rfd = rfd
        self._wfd = wfd
        self._watching: asyncio.AbstractEventLoop | None = None

    def start(self, produce: Callable[[int], None], name: str) -> None:
        """Run ``produce(fd)`` in a thread of its own; the pipe ends when it returns.

        Once started, the producer owns its resources: it must release them
        however it ends (EPIPE included).
        """
        wfd = self._wfd

        def run() -> None:
            try:
                produce(wfd)
            except BaseException:
                log.exception("%s failed", name)
            finally:
                os.close(wfd)

        threading.Thread(target=run, name=name, daemon=True).start()
        self._wfd = -1

    def __aiter__(self) -> ResponsePipe:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            fd = self._rfd
            if fd < 0:
                raise StopAsyncIteration
            try:
                data = os.read(fd, _PIPE_SIZE)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(fd, _wake, ready)
                self._watching = loop
                try:
                    await ready
                finally:
                    self._unwatch()
                continue
            if not data:
                self.close()
                raise StopAsyncIteration
            return data

    def _unwatch(self) -> None:
        # Before the descriptor is closed: a reused number must not meet a stale watch.
        loop, self._watching = self._watching, None
        if loop is not None and self._rfd >= 0:
            loop.remove_reader(self._rfd)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close both ends still held here; a running producer then gets EPIPE."""
        self._unwatch()
        for attr in ("_rfd", "_wfd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __del__(self) -> None:
        self.close()


class _Closeable(Protocol):
    def close(self) -> None: ...


def piped(source: _Closeable, produce: Callable[[int], None], name: str) -> ResponsePipe:
    """A :class:`ResponsePipe` that ``produce(fd)`` fills from *source* in a thread of its
    own.  Once started the producer owns *source*; if the pipe cannot be made or started,
    *source* is closed here, so nothing it holds (a mount, a layer reference) leaks."""
    try:
        pipe = ResponsePipe()
    except BaseException:
        source.close()
        raise
    try:
        pipe.start(produce, name)
    except BaseException:
        pipe.close()
        source.close()
        raise
    return pipe
