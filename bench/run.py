"""Time docker-CLI workloads against berthd and, side by side, a reference engine.

    make bench                                          # berthd only (starts its own)
    .venv/bin/python bench/run.py --reference unix:///tmp/ref/docker.sock
    .venv/bin/python bench/run.py --berth unix:///run/berth.sock --only 'run --rm'

Samples alternate between the engines (A B A B) so that machine drift hits both
alike. Every sample checks its result and counts as FAILED when it is wrong.
The table shows median, min and max per engine and the berth/reference ratio
of the medians; JSON and markdown copies go to bench/results/. See README.md.
Nothing here asserts a duration: this is for people, not for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engines import Engine, Failed, memory_kib
from workloads import IMAGE, LABEL, Workload, all_workloads

from berth.testing import busybox_rootfs_tar, running_berthd

RESULTS = Path(__file__).parent / "results"
MEMORY_CONTAINERS = 10

#: numbers of published ports of the ``-p`` workloads
PUBLISHED = (1, 10, 100)
#: first container port they publish (each on an ephemeral host port of 127.0.0.1)
FIRST_PORT = 10000


def publish(n: int) -> Callable[[Engine], float]:
    """create + start of a container publishing *n* ports on the default bridge, each
    on an ephemeral host port of 127.0.0.1 (``-p 127.0.0.1::PORT``, so two engines never
    want the same one); the check is ``docker port``'s *n* mappings, then an untimed rm -f.
    dockerd's docker-proxy and iptables rules grow with *n*; berth's one nftables batch
    should not."""
    flags = [a for port in range(FIRST_PORT, FIRST_PORT + n) for a in ("-p", f"127.0.0.1::{port}")]

    def sample(e: Engine) -> float:
        created = e.ok("create", "-l", LABEL, *flags, IMAGE, "sleep", "600")
        cid = created.stdout.decode().strip()
        if len(cid) != 64:
            raise Failed(f"create printed {created.stdout[:80]!r}")
        try:
            started = e.ok("start", cid)
            lines = e.out("port", cid).splitlines()
            bound = {line.split(" -> ")[0] for line in lines if " -> 127.0.0.1:" in line}
            want = {f"{port}/tcp" for port in range(FIRST_PORT, FIRST_PORT + n)}
            if bound != want:
                raise Failed(f"{len(bound)} of {n} ports published: {lines[:3]}")
        finally:
            e.ok("rm", "-f", cid)
        return created.seconds + started.seconds

    return sample


def bridge_workloads() -> list[Workload]:
    """The network's workloads (issue 11); ``run --rm true`` runs on the default bridge
    and ``run --rm --network none true`` without one, in :func:`all_workloads`."""
    return [
        Workload(
            f"create+start -p x{n} (default bridge)", publish(n), rounds=10 if n > 10 else None
        )
        for n in PUBLISHED
    ]


@dataclass
class Row:
    name: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def stats(self, engine: str) -> dict[str, float] | None:
        s = self.samples.get(engine)
        if engine in self.failures or not s:
            return None
        return {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s)}


def run_workload(w: Workload, engines: list[Engine], rounds: int) -> Row:
    row = Row(w.name, {e.name: [] for e in engines})
    live = []
    for e in engines:
        try:
            w.setup(e)
            live.append(e)
        except Failed as f:
            row.failures[e.name] = f"set-up: {f}"
    try:
        for _ in range(min(rounds, w.rounds or rounds)):
            for e in live:
                if e.name in row.failures:
                    continue
                try:
                    row.samples[e.name].append(w.sample(e))
                except Failed as f:
                    row.failures[e.name] = str(f)
    finally:
        for e in live:
            try:
                w.teardown(e)
            except Failed as f:
                row.failures.setdefault(e.name, f"tear-down: {f}")
    return row


def remove_leftovers(e: Engine) -> None:
    ids = e.out("ps", "-aq", "--filter", "label=" + LABEL).split()
    if ids:
        e.ok("rm", "-f", *ids)


def engine_memory(e: Engine) -> dict[str, float]:
    """RSS/PSS (MiB) of the daemon and its containerd, idle and per running container."""

    def totals() -> dict[str, float]:
        procs = e.processes()
        d, c = memory_kib(procs.daemon), memory_kib(procs.containerd or 0)
        shims = [memory_kib(p) for p in procs.shims]
        return {
            "engine_rss": (d[0] + c[0]) / 1024,
            "engine_pss": (d[1] + c[1]) / 1024,
            "daemon_rss": d[0] / 1024,
            "daemon_pss": d[1] / 1024,
            "containerd_rss": c[0] / 1024,
            "containerd_pss": c[1] / 1024,
            "shims": len(shims),
            "all_rss": (d[0] + c[0] + sum(s[0] for s in shims)) / 1024,
            "all_pss": (d[1] + c[1] + sum(s[1] for s in shims)) / 1024,
        }

    idle = totals()
    ids = [
        e.out("run", "-d", "-l", LABEL, IMAGE, "sleep", "3600") for _ in range(MEMORY_CONTAINERS)
    ]
    try:
        time.sleep(2)
        busy = totals()
    finally:
        e.ok("rm", "-f", *ids)
    out = {f"idle_{k}": v for k, v in idle.items()}
    out.update({f"running{MEMORY_CONTAINERS}_{k}": v for k, v in busy.items()})
    out["per_container_rss"] = (busy["all_rss"] - idle["all_rss"]) / MEMORY_CONTAINERS
    out["per_container_pss"] = (busy["all_pss"] - idle["all_pss"]) / MEMORY_CONTAINERS
    return out


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def table(rows: list[Row], engines: list[Engine]) -> list[str]:
    ref = len(engines) > 1
    head = ["workload", "berth median", "min", "max"]
    if ref:
        head += ["reference median", "min", "max", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name]
        for e in engines:
            s = row.stats(e.name)
            cells += [ms(s["median"]), ms(s["min"]), ms(s["max"])] if s else ["FAILED", "", ""]
        if ref:
            a, b = row.stats("berth"), row.stats("reference")
            cells.append(f"{a['median'] / b['median']:.2f}" if a and b else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_table(mem: dict[str, dict[str, float]]) -> list[str]:
    names = list(mem)
    keys = [
        ("idle_daemon_rss", "daemon RSS, idle"),
        ("idle_containerd_rss", "its containerd RSS, idle"),
        ("idle_engine_rss", "daemon + containerd RSS, idle"),
        ("idle_engine_pss", "daemon + containerd PSS, idle"),
        (
            f"running{MEMORY_CONTAINERS}_engine_rss",
            f"daemon + containerd RSS, {MEMORY_CONTAINERS} running",
        ),
        (f"running{MEMORY_CONTAINERS}_all_rss", f"with shims RSS, {MEMORY_CONTAINERS} running"),
        (f"running{MEMORY_CONTAINERS}_all_pss", f"with shims PSS, {MEMORY_CONTAINERS} running"),
        ("per_container_rss", "RSS per running container (shim included)"),
        ("per_container_pss", "PSS per running container (shim included)"),
    ]
    lines = ["| memory (MiB) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in keys:
        lines.append(f"| {label} | " + " | ".join(f"{mem[n][key]:.1f}" for n in names) + " |")
    return lines


@contextlib.contextmanager
def berth_engine(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    with running_berthd() as d:
        yield d.host


def describe(e: Engine) -> str:
    try:
        return e.out("version", "-f", "{{.Server.Version}}")
    except Failed:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--berth", help="berthd socket (default: start one on temp paths)")
    p.add_argument("--reference", help="a reference engine's socket, e.g. dockerd's")
    p.add_argument("--rounds", type=int, default=20, help="samples per workload and engine")
    p.add_argument("--only", action="append", help="run workloads whose name contains this")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmpdir, contextlib.ExitStack() as st:
        tmp = Path(tmpdir)
        tar = busybox_rootfs_tar(tmp / "busybox.tar")
        engines = [Engine("berth", st.enter_context(berth_engine(args.berth)))]
        if args.reference:
            engines.append(Engine("reference", args.reference))
        versions = {e.name: describe(e) for e in engines}
        for e in engines:
            e.ok("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
        rows: list[Row] = []
        memory: dict[str, dict[str, float]] = {}
        try:
            if not args.no_memory and not args.only:
                memory = {e.name: engine_memory(e) for e in engines}
            for w in [*all_workloads(tmp), *bridge_workloads()]:
                if args.only and not any(o in w.name for o in args.only):
                    continue
                row = run_workload(w, engines, args.rounds)
                rows.append(row)
                print("\n".join(table([row], engines)[2:]), flush=True)
        finally:
            for e in engines:
                with contextlib.suppress(Failed):
                    remove_leftovers(e)
                    e.ok("rmi", IMAGE)

    lines = [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores; " + ", ".join(f"{n} {v}" for n, v in versions.items()),
        "",
        f"Times in ms (docker CLI start-up included), up to {args.rounds} samples per engine.",
        "",
        *table(rows, engines),
    ]
    if memory:
        lines += ["", *memory_table(memory)]
    for row in rows:
        for name, why in row.failures.items():
            lines.append(f"\nFAILED {row.name} on {name}: {why}")
    print("\n" + "\n".join(lines))

    RESULTS.mkdir(exist_ok=True)
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    (RESULTS / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "versions": versions,
                "rounds": args.rounds,
                "workloads": [
                    {
                        "name": r.name,
                        "samples": r.samples,
                        "failures": r.failures,
                        "stats": {e.name: r.stats(e.name) for e in engines},
                    }
                    for r in rows
                ],
                "memory": memory,
            },
            indent=1,
        )
    )
    print(f"\nwritten: {RESULTS / stamp}.md and .json")
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
