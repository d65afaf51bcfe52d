"""Bodies between the event loop and a worker thread through an OS pipe, never spooled.

:class:`BodyPipe` hands a request body to a worker as a blocking file: the
loop writes the pipe, the worker reads the other end like any file.  If the
worker stops early (a refused tarball), the loop sees a broken pipe and
discards the rest of the body instead of blocking.

:class:`ResponsePipe` is the other way round: a worker thread writes a
response body (a tar of a container's files) and the loop streams it.  If
the client goes away, the loop closes its end and the worker fails with
EPIPE instead of blocking on a reader that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import IO

log = logging.getLogger(__name__)

_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BodyPipe:
    def __init__(self) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(wfd, _F_SETPIPE_SZ, _PIPE_SIZE)
        os.set_blocking(wfd, False)
        self._wfd = wfd
        self.reader: IO[bytes] = os.fdopen(rfd, "rb", buffering=_PIPE_SIZE)

    async def feed(self, chunks: AsyncIterator[bytes]) -> None:
        """Copy *chunks* into the pipe, then close it; never raises for a gone reader."""
        loop = asyncio.get_running_loop()
        broken = False
        try:
            async for chunk in chunks:
                if broken:
                    continue  # keep reading so the connection stays usable
                view = memoryview(chunk)
                while view and not broken:
                    try:
                        n = os.write(self._wfd, view)
                        view = view[n:]
                    except BlockingIOError:
                        ready = loop.create_future()
                        loop.add_writer(self._wfd, _wake, ready)
                        try:
                            await ready
                        finally:
                            loop.remove_writer(self._wfd)
                    except (BrokenPipeError, OSError):
                        broken = True
        finally:
            os.close(self._wfd)

    def close_reader(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()


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
