"""dockerd's JSON progress messages, as the CLI renders them into progress bars.

A message is ``{"status": ..., "id": ..., "progressDetail": {...}, "progress": ...}``; the
CLI keeps one line per ``id`` and redraws it.  Pull and push report from several worker
threads at once; :class:`Reporter` serialises them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Progress = Callable[[dict[str, Any]], None]

#: bytes between two progress messages of one layer
PROGRESS_STEP = 512 << 10


def short_id(digest: str) -> str:
    """The 12 hex digits dockerd shows for a layer (``stringid.TruncateID``)."""
    return digest.split(":", 1)[-1][:12]


def human_size(n: int) -> str:
    """Go's ``units.HumanSize`` (decimal, 4 significant digits)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.4g}{unit}"
        size /= 1000
    return f"{size:.4g}TB"


def bar(current: int, total: int) -> str:
    """dockerd's ``JSONProgress.String`` bar, without the terminal width games."""
    if total <= 0:
        return human_size(current)
    width = 50
    pct = min(current * width // total, width)
    arrow = ">" if pct < width else "="
    body = "=" * max(pct - 1, 0) + (arrow if pct else "") + " " * (width - pct)
    return f"[{body}]  {human_size(current)}/{human_size(total)}"


class Reporter:
    """Serialises progress messages from worker threads."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, status: str, ident: str = "", **extra: Any) -> None:
        msg: dict[str, Any] = {"status": status}
        msg.update(extra)
        if ident:
            msg["id"] = ident
        with self._lock:
            self._progress(msg)

    def update(self, ident: str, status: str) -> None:
        """A layer's new state (``progress.Update``): an empty progressDetail."""
        self(status, ident, progressDetail={})

    def step(self, status: str, ident: str, current: int, total: int) -> None:
        detail: dict[str, int] = {"current": current}
        if total > 0:
            detail["total"] = total
        self(status, ident, progressDetail=detail, progress=bar(current, total))

    def aux(self, data: dict[str, Any]) -> None:
        """An ``aux`` message (push's result, which docker-py and the CLI read)."""
        with self._lock:
            self._progress({"progressDetail": {}, "aux": data})
