"""Memory per running container, and start latency, in each ``--shim-group`` mode.

    .venv/bin/python bench/shims.py                      # berthd in each mode, 100 containers
    .venv/bin/python bench/shims.py --reference unix:///tmp/ref/docker.sock --containers 50

For each mode a berthd of its own (temp paths) runs N ``sleep`` containers, spread over
``--projects`` compose projects by their ``com.docker.compose.project`` label (what
``project`` groups by). Memory is RSS and PSS of the daemon, its containerd and every shim,
once idle and once with the N running; per container is the difference over N, so the
growth of the daemon and containerd counts too (the containers' own ``sleep`` does not).
Timed: each ``docker run -d`` that fills the engine, and ``docker run --rm busybox true``
with the N running. The reference engine (one shim per container) gets the same.
Nothing asserts a figure: this is for people, not for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from engines import Engine, memory_kib
from workloads import IMAGE, LABEL

from berth.daemon.options import SHIM_GROUPS
from berth.testing import busybox_rootfs_tar, running_berthd

PROJECT_LABEL = "com.docker.compose.project"


def totals(e: Engine) -> tuple[float, float, int]:
    """(RSS, PSS) in MiB of daemon, containerd and shims; and how many shims."""
    procs = e.processes()
    mem = [memory_kib(p) for p in procs.all()]
    return sum(m[0] for m in mem) / 1024, sum(m[1] for m in mem) / 1024, len(procs.shims)


def measure(e: Engine, containers: int, projects: int, rounds: int) -> dict[str, float]:
    idle_rss, idle_pss, _ = totals(e)
    ids: list[str] = []
    starts: list[float] = []
    try:
        for i in range(containers):
            project = f"{PROJECT_LABEL}=bench{i % projects}"
            r = e.ok("run", "-d", "-l", LABEL, "-l", project, IMAGE, "sleep", "3600")
            ids.append(r.stdout.decode().strip())
            starts.append(r.seconds)
        time.sleep(2)
        rss, pss, shims = totals(e)
        runs = [e.ok("run", "--rm", IMAGE, "true").seconds for _ in range(rounds)]
    finally:
        if ids:
            e.ok("rm", "-f", *ids)
    return {
        "shims": shims,
        "rss_per_container": (rss - idle_rss) / containers,
        "pss_per_container": (pss - idle_pss) / containers,
        "rss_idle": idle_rss,
        "rss_running": rss,
        "run_d_ms": statistics.median(starts) * 1000,
        "run_rm_ms": statistics.median(runs) * 1000,
    }


@contextlib.contextmanager
def berth(mode: str, tar: Path) -> Iterator[Engine]:
    with running_berthd(extra_args=["--shim-group", mode]) as d:
        e = Engine(f"berth --shim-group {mode}", d.host)
        e.ok("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
        yield e


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--containers", type=int, default=100, help="running containers (100)")
    p.add_argument("--projects", type=int, default=5, help="compose projects they are in (5)")
    p.add_argument("--rounds", type=int, default=10, help="run --rm samples per engine (10)")
    p.add_argument("--reference", help="a reference engine's socket, e.g. dockerd's")
    args = p.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmpdir:
        tar = busybox_rootfs_tar(Path(tmpdir) / "busybox.tar")
        for mode in SHIM_GROUPS:
            with berth(mode, tar) as e:
                rows[e.name] = measure(e, args.containers, args.projects, args.rounds)
            print(e.name, rows[e.name], flush=True)
        if args.reference:
            ref = Engine("reference", args.reference)
            ref.ok("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
            try:
                rows[ref.name] = measure(ref, args.containers, args.projects, args.rounds)
            finally:
                ref.ok("rmi", IMAGE)
    print(
        f"\n{args.containers} running containers in {args.projects} compose projects; "
        "memory in MiB (daemon + containerd + shims), times are medians in ms\n"
    )
    print("| engine | shims | RSS per container | PSS per container | RSS idle → running "
          "| run -d (filling) | run --rm true (N running) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['shims']:.0f} | {r['rss_per_container']:.2f} "
            f"| {r['pss_per_container']:.2f} | {r['rss_idle']:.0f} → {r['rss_running']:.0f} "
            f"| {r['run_d_ms']:.0f} | {r['run_rm_ms']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
