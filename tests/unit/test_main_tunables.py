"""``berthd`` executes itself again with glibc's per-thread caches off, and hands its
children the environment it was started with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Bytes that glibc's per-thread cache holds after eight 1000-byte blocks are freed (the
# cache's bin for that size emptied first): seven blocks with the cache on, none without.
_CACHED = (
    "import ctypes\n"
    "libc = ctypes.CDLL('libc.so.6')\n"
    "class Info(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks',\n"
    "        'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
    "libc.mallinfo2.restype = Info\n"
    "libc.malloc.restype = ctypes.c_void_p\n"
    "libc.free.argtypes = [ctypes.c_void_p]\n"
    "def cached():\n"
    "    keep = [libc.malloc(1000) for _ in range(7)]\n"
    "    before = libc.mallinfo2().uordblks\n"
    "    blocks = [libc.malloc(1000) for _ in range(8)]\n"
    "    for b in blocks:\n"
    "        libc.free(b)\n"
    "    held = libc.mallinfo2().uordblks - before\n"
    "    for b in keep:\n"
    "        libc.free(b)\n"
    "    return held\n"
)
# berthd's entry point with the daemon replaced by a report of the process it runs in
_PROBE = _CACHED + (
    "import json, os, sys\n"
    "import berth.cli\n"
    "def report():\n"
    "    print(json.dumps({\n"
    "        'cached': cached(),\n"
    "        'environ': os.environ.get('GLIBC_TUNABLES'),\n"
    "        'marks': [k for k in os.environ if k.startswith('BERTH_STARTED')],\n"
    "        'argv': sys.argv[1:],\n"
    "    }))\n"
    "    return 0\n"
    "berth.cli.main = report\n"
    "import berth.__main__\n"
    "sys.exit(berth.__main__.main())\n"
)


def _run(code: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", code, "--debug"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _berthd(env: dict[str, str]) -> dict[str, object]:
    result: dict[str, object] = json.loads(_run(_PROBE, env))
    return result


def test_the_probe_sees_the_cache_of_a_plain_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    assert int(_run(_CACHED + "print(cached())\n", env)) >= 7 * 1000


def test_the_daemon_runs_with_the_caches_off_and_children_get_the_environment_as_it_was() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    got = _berthd(env)
    assert got["cached"] == 0
    assert got["environ"] is None
    assert got["marks"] == []
    assert got["argv"] == ["--debug"]


def test_tunables_of_ones_own_are_kept() -> None:
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.perturb=0"}
    got = _berthd(env)
    assert got["cached"] == 0
    assert got["environ"] == "glibc.malloc.perturb=0"
    assert got["marks"] == []


def test_started_with_the_tunable_it_does_not_execute_again() -> None:
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
    got = _berthd(env)
    assert got["environ"] == "glibc.malloc.tcache_count=0"  # not put back: it was not set
