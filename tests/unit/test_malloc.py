"""glibc's allocator knobs as berthd sets them, in a process of their own: mallopt takes the
two parameters, and a trim gives freed pages back (measured on that process's RSS after
freeing a heap's worth of small buffers)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from berth.utils import syscalls

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])

assert syscalls.mallopt(syscalls.M_ARENA_MAX, 2)
assert syscalls.mallopt(syscalls.M_MMAP_THRESHOLD, 1 << 20)  # 64 KiB pieces: from the heap
keep = [bytearray(64 << 10) for _ in range(3000)]  # ~190 MiB, touched
full = rss()
del keep[:-1]  # the last one pins the heap's top: only a trim of free pages gives it back
before = rss()
trimmed = syscalls.malloc_trim()
print(full, before, rss(), trimmed)
"""


def test_a_trim_returns_what_was_freed() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    full, before, after = (int(v) for v in out[:3])
    assert out[3] == "True"
    assert before > full // 2  # freed, yet still held by the process
    assert after < before - (full // 2)
