"""Hand a request body to a worker thread as a blocking file, without spooling.

The event loop writes into an OS pipe; the worker reads the other end like
any file.  If the worker stops early (a refused tarball), the loop sees a
broken pipe and discards the rest of the body instead of blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from typing import IO

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
