"""``berthd`` (and ``python -m berth``): the daemon, started with glibc's per-thread
caches of freed blocks turned off.

glibc keeps up to seven freed blocks of each small size in a cache per thread, where
neither a free nor ``malloc_trim`` returns them; berthd's 25 or so threads (API and
monitor pools, readers) kept 3 MB that way after the bench's workloads, and its RSS
settled 12% above its idle start instead of 6%, at no measurable CPU cost (the bench's
log ingestion, 7 runs each). The cache size is a tunable that glibc reads only when a
program starts, so berthd sets it and executes itself again, before anything heavy is
imported (the first process costs the interpreter's start, about 20 ms). The second
process puts the environment back as it found it, so containerd and what it runs do
not inherit the setting.
"""

from __future__ import annotations

import os
import sys

#: the tunable (``GLIBC_TUNABLES``) that turns the per-thread caches off
TUNABLE = "glibc.malloc.tcache_count=0"
#: set for the executed process: the ``GLIBC_TUNABLES`` berthd was started with
_STARTED_WITH = "BERTH_STARTED_WITH_TUNABLES"


def _tuned() -> bool:
    """True in a process that runs with :data:`TUNABLE`: the environment is put back as
    it was before; False when berthd must execute itself again to have it."""
    if _STARTED_WITH in os.environ:
        original = os.environ.pop(_STARTED_WITH)
        if original:
            os.environ["GLIBC_TUNABLES"] = original
        else:
            os.environ.pop("GLIBC_TUNABLES", None)
        return True
    current = os.environ.get("GLIBC_TUNABLES", "")
    return TUNABLE in current.split(":")


def main() -> int:
    if not _tuned():
        current = os.environ.get("GLIBC_TUNABLES", "")
        os.environ[_STARTED_WITH] = current
        os.environ["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
        try:
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        except OSError:  # run as we are, with the caches
            _tuned()
    from berth.cli import main as daemon_main

    return daemon_main()


if __name__ == "__main__":
    sys.exit(main())
