"""Writing to a log file descriptor, shared by the drivers and the compressor."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes | memoryview) -> int:
    """Write all of *data* (``os.write`` may write less); on error, raise with
    ``written`` set to what got out, so a torn write can be repaired."""
    view = memoryview(data)
    total = 0
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            e.written = total  # type: ignore[attr-defined]
            raise
        total += n
        view = view[n:]
    return total
