"""A tar (or any stream) written by a thread of its own and read through a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import threading
from collections.abc import Callable

from berth import errdefs

#: the pipe's buffer: a few writes of a tar writer between two reads
PIPE_SIZE = 1 << 20


class WriterPipe(io.RawIOBase):
    """The read end of a pipe that ``write(fd)`` fills from a thread of its own.

    A failure of the writer is raised by the read that finds the pipe's end (as it is
    when it is a BerthError, else as a System error about *what*), so that a consumer
    such as the layer store never takes a cut tar for a whole one; closing the reader
    early stops the writer (EPIPE).  *done* is called as soon as the writer has
    finished, either way (a commit resumes its container there).
    """

    def __init__(
        self, write: Callable[[int], None], what: str, done: Callable[[], None] | None = None
    ) -> None:
        super().__init__()
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # beyond /proc/sys/fs/pipe-max-size: the default will do
        self._r = r
        self._what = what
        self._error: BaseException | None = None

        def run() -> None:
            try:
                write(w)
            except BrokenPipeError:
                pass  # the reader went away first: nobody to tell
            except BaseException as e:
                self._error = e
            finally:
                os.close(w)
                if done is not None:
                    done()

        self._thread = threading.Thread(target=run, name="berth-tar-pipe", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = os.readv(self._r, [b])
        if n == 0:
            self._thread.join()
            error = self._error
            if error is not None:
                if isinstance(error, errdefs.BerthError):
                    raise error
                raise errdefs.System(f"{self._what}: {error}") from error
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._r)
            self._thread.join()
        super().close()
