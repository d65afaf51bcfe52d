"""Deleting directories off the request path.

Removing a container unlinks some forty files and directories (its RW and init layers,
its own directory); on ext4 that is milliseconds each time, and seconds for a
``docker container prune`` of thousands. A :class:`Reaper` takes a directory out of
sight with one rename into its trash directory, on the same filesystem, and a thread
deletes it afterwards. What a crash leaves in the trash is deleted at the next start.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Reaper:
    """Discard directories by renaming them into *trash*; a thread deletes them once
    :meth:`start` has run (before that, and when the rename cannot be done,
    :meth:`discard` deletes in place)."""

    def __init__(self, trash: Path) -> None:
        self.trash = trash
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the deleting thread, first with what an earlier run left in the trash."""
        if self._thread is not None:
            return
        self.trash.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in os.scandir(self.trash):
            self._queue.put(Path(entry.path))
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop once the directory being deleted is (or *timeout* has passed: the thread
        does not hold the process); the rest waits for the next start."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def discard(self, path: Path) -> None:
        """Make *path* (a directory, or nothing) disappear now and be deleted later."""
        if self._thread is None:
            shutil.rmtree(path, ignore_errors=True)
            return
        target = self.trash / secrets.token_hex(8)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EBUSY, errno.EACCES, errno.EPERM):
                raise
            # another filesystem or a mount point: deleted in place, as before
            shutil.rmtree(path, ignore_errors=True)
            return
        self._queue.put(target)

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            shutil.rmtree(path, onerror=_report)


def _report(func: object, path: str, exc: tuple[type[BaseException], BaseException, Any]) -> None:
    if not isinstance(exc[1], FileNotFoundError):
        log.warning("deleting %s: %s", path, exc[1])
