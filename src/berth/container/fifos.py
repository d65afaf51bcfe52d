"""The stdio FIFOs a crashed berthd left behind, and the shims they hold up.

A shim opens a process's output FIFOs for writing, and that open blocks until a reader
comes.  When berthd dies between asking for a process (an exec, a task) and opening its
ends, the shim waits there for ever, holding locks that make containerd's ``Get`` of the
*container's* task answer "unknown" after two seconds and its ``Kill`` time out.  Opening
the reading ends lets every such open complete, so the restore gets true answers.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: The init process's FIFOs are named ``init-<stream>``; an exec's ``<exec-id>-<stream>``.
INIT_PREFIX = "init-"
_OUTPUTS = ("-stdout", "-stderr")


class HeldReaders:
    """Reading ends of the output FIFOs under a root, held open until :meth:`release`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: list[int] = []
        for container_dir in _dirs(root):
            for entry in _fifos(container_dir):
                if entry.name.endswith(_OUTPUTS):
                    with contextlib.suppress(OSError):
                        self._fds.append(
                            os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                        )

    def release(self, live: set[str]) -> None:
        """Close every held end, and remove the FIFOs of the processes of the containers
        in *live* that nobody will read again: every one but the init process's."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for container_dir in _dirs(self.root):
            if container_dir.name not in live:
                continue
            for entry in _fifos(container_dir):
                if not entry.name.startswith(INIT_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _dirs(root: Path) -> list[Path]:
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries if len(e.name) == 64 and e.is_dir()]


def _fifos(directory: Path) -> list[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(entry.stat(follow_symlinks=False).st_mode):
                out.append(entry)
    return out
