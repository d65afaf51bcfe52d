"""Time docker-CLI workloads against berthd and, side by side, a reference engine.

    make bench                                          # berthd only (starts its own)
    .venv/bin/python bench/run.py --reference unix:///tmp/ref/docker.sock
    .venv/bin/python bench/run.py --berth unix:///run/berth.sock --only 'run --rm'
    .venv/bin/python bench/run.py --reference unix:///tmp/ref/docker.sock --only pull --only push

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
import hashlib
import io
import itertools
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build import build_workloads
from commit import commit_workloads
from disk import disk_workloads
from engines import Engine, Failed, Result, Unavailable, cpu_ticks, memory_kib
from registry import CACHE, RegistryBench
from save import save_workloads
from workloads import IMAGE, LABEL, Workload, _rm, all_workloads

from berth.testing import busybox_rootfs_tar, running_berthd

RESULTS = Path(__file__).parent / "results"
MEMORY_CONTAINERS = 10

#: numbers of published ports of the ``-p`` workloads
PUBLISHED = (1, 10, 100)
#: first container port they publish (each on an ephemeral host port of 127.0.0.1)
FIRST_PORT = 10000

#: every volume the bench names starts with this (and carries LABEL where it can)
VOLUME_PREFIX = "berth-bench-"
#: the image whose ``VOLUME /data`` holds COPYUP_MB MB, copied into each new anonymous volume
COPYUP_IMAGE = "berth-bench-copyup:latest"
COPYUP_MB = 50
LS_VOLUMES = 500
#: containers probed by ``--health-cmd true --health-interval 1s`` while CPU is measured
HEALTH_CONTAINERS = 50
#: seconds over which the engine's CPU time is measured, once all of them are healthy
CPU_WINDOW = 20.0


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


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def quiet(r: Result) -> float:
    """The seconds of a command that must print nothing."""
    expect(r.stdout == b"" and r.stderr == b"", f"unexpected output {(r.stdout + r.stderr)[:80]!r}")
    return r.seconds


def rm_volumes(e: Engine, names: list[str]) -> None:
    for i in range(0, len(names), 50):
        e.ok("volume", "rm", *names[i : i + 50])


def copyup_tar(path: Path) -> tuple[Path, str]:
    """busybox plus ``/data/blob`` (COPYUP_MB MB) and ``/data/owned`` (1000:1000, 0600);
    the image imported from it declares ``VOLUME /data``. Returns the tar and the blob's
    sha256."""
    block = hashlib.sha256(b"berth copy-up").digest() * (1 << 15)  # 1 MiB
    blob = b"".join(block[i:] + block[:i] for i in range(COPYUP_MB))
    busybox_rootfs_tar(path)
    with tarfile.open(path, "a") as tf:
        info = tarfile.TarInfo("data")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tf.addfile(info)
        for name, data, mode, owner in (("blob", blob, 0o644, 0), ("owned", b"x\n", 0o600, 1000)):
            info = tarfile.TarInfo(f"data/{name}")
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            info.uid = info.gid = owner
            tf.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(blob).hexdigest()


def volume_workloads(tmp: Path) -> list[Workload]:
    """Issue 12's volume figures: ``run --rm -v vol:/data`` with a new and with an existing
    named volume, ``run --rm`` of an image whose ``VOLUME /data`` is copied up into a new
    anonymous volume, and ``volume ls`` with LS_VOLUMES volumes present."""
    tag = f"{os.getpid()}-"
    serial = itertools.count()
    made: dict[str, set[str]] = {}  # per engine: named volumes a run created (no label)
    existing: dict[str, str] = {}
    listed: dict[str, list[str]] = {}
    copyup: dict[str, str] = {}

    def inspect_name(e: Engine, name: str) -> str:
        return e.out("volume", "inspect", "-f", "{{.Name}}", name)

    def new_volume(e: Engine) -> float:
        name = f"{VOLUME_PREFIX}new-{tag}{next(serial)}"
        made.setdefault(e.name, set()).add(name)
        seconds = quiet(e.ok("run", "--rm", "-l", LABEL, "-v", f"{name}:/data", IMAGE, "true"))
        expect(inspect_name(e, name) == name, f"run did not create the volume {name}")
        e.ok("volume", "rm", name)
        made[e.name].discard(name)
        return seconds

    def drop_made(e: Engine) -> None:
        rm_volumes(e, sorted(made.pop(e.name, set())))

    def create_existing(e: Engine) -> None:
        existing[e.name] = e.out(
            "volume", "create", "--label", LABEL, f"{VOLUME_PREFIX}existing-{tag}{e.name}"
        )

    def existing_volume(e: Engine) -> float:
        name = existing[e.name]
        seconds = quiet(e.ok("run", "--rm", "-l", LABEL, "-v", f"{name}:/data", IMAGE, "true"))
        expect(inspect_name(e, name) == name, f"the volume {name} is gone after run --rm")
        return seconds

    def drop_existing(e: Engine) -> None:
        if e.name in existing:
            e.ok("volume", "rm", existing.pop(e.name))

    def import_copyup(e: Engine) -> None:
        if "tar" not in copyup:
            tar, copyup["sha"] = copyup_tar(tmp / "copyup.tar")
            copyup["tar"] = str(tar)
        changes = ('CMD ["sh"]', "VOLUME /data", f"LABEL {LABEL}")
        e.ok("import", *(a for c in changes for a in ("--change", c)), copyup["tar"], COPYUP_IMAGE)
        # What the timed runs copy, checked once: /data is a mount holding the image's bytes,
        # owner and mode kept.
        script = (
            'grep -q " /data " /proc/mounts && sha256sum /data/blob'
            ' && stat -c "%u:%g %a" /data/owned'
        )
        got = e.out("run", "--rm", "-l", LABEL, COPYUP_IMAGE, "sh", "-c", script)
        want = f"{copyup['sha']}  /data/blob\n1000:1000 600"
        expect(got == want, f"the new volume holds {got[:200]!r}, want {want!r}")

    def run_copyup(e: Engine) -> float:
        since = time.time()
        r = e.ok("run", "--rm", "-l", LABEL, COPYUP_IMAGE, "true")
        until = time.time()
        seconds = quiet(r)
        events = e.out(
            "events", "--since", f"{since:.6f}", "--until", f"{until:.6f}",
            "--filter", "type=volume", "--format", "{{.Action}} {{.Actor.ID}}",
        )  # fmt: skip
        pairs = [line.split() for line in events.splitlines()]
        created = [p[1] for p in pairs if p[0] == "create"]
        expect(len(created) == 1, f"volume events {events[:300]!r}: want one new volume")
        expect(["mount", created[0]] in pairs, f"volume events {events[:300]!r}: not mounted")
        # --rm removes the anonymous volume; should that finish after the CLI returns, wait
        # for it, untimed, so that it neither leaks nor is removed during the next sample.
        deadline = time.monotonic() + 30
        while e.timed("volume", "inspect", created[0]).returncode == 0:
            expect(time.monotonic() < deadline, f"volume {created[0]} left by run --rm")
            time.sleep(0.05)
        return seconds

    def drop_copyup(e: Engine) -> None:
        e.ok("rmi", COPYUP_IMAGE)

    def create_listed(e: Engine) -> None:
        names = [f"{VOLUME_PREFIX}ls-{tag}{i:03d}" for i in range(LS_VOLUMES)]
        listed[e.name] = []

        def one(name: str) -> None:
            expect(e.out("volume", "create", "--label", LABEL, name) == name, f"create {name}")
            listed[e.name].append(name)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))

    def volume_ls(e: Engine) -> float:
        r = e.ok("volume", "ls")
        lines = r.stdout.decode().splitlines()
        expect(
            bool(lines) and lines[0].split() == ["DRIVER", "VOLUME", "NAME"], f"header {lines[:1]}"
        )
        shown = {line.split()[-1] for line in lines[1:]}
        missing = set(listed[e.name]) - shown
        expect(not missing, f"volume ls lacks {len(missing)} of {LS_VOLUMES}")
        return r.seconds

    def drop_listed(e: Engine) -> None:
        rm_volumes(e, listed.pop(e.name, []))

    return [
        Workload("run --rm -v vol:/data true (new volume)", new_volume, teardown=drop_made),
        Workload(
            "run --rm -v vol:/data true (existing volume)",
            existing_volume,
            setup=create_existing,
            teardown=drop_existing,
        ),
        Workload(
            f"run --rm true, VOLUME copy-up of {COPYUP_MB} MB",
            run_copyup,
            rounds=10,
            setup=import_copyup,
            teardown=drop_copyup,
        ),
        Workload(
            f"volume ls ({LS_VOLUMES} volumes)",
            volume_ls,
            setup=create_listed,
            teardown=drop_listed,
        ),
    ]


def health_workloads() -> list[Workload]:
    """CPU of the engine while HEALTH_CONTAINERS containers are probed every second: the
    containers are started (untimed) for each sample and stopped after it, so only one
    engine's probes run at a time; the CPU seconds of the daemon, its containerd and the
    shims (with the runc and probe processes they reap) over CPU_WINDOW s, as a fraction
    of one core."""
    ids: dict[str, list[str]] = {}
    flags = ("--health-cmd", "true", "--health-interval", "1s")

    def create(e: Engine) -> None:
        ids[e.name] = [
            e.out("create", "-l", LABEL, *flags, IMAGE, "sleep", "3600")
            for _ in range(HEALTH_CONTAINERS)
        ]

    def healths(e: Engine) -> list[dict[str, Any]]:
        out = e.out("inspect", "-f", "{{json .State.Health}}", *ids[e.name])
        return [json.loads(line) for line in out.splitlines()]

    def measure(e: Engine) -> tuple[float, float, float]:
        try:
            procs = e.processes()
        except (RuntimeError, OSError) as err:
            raise Failed(f"the engine's processes are not found: {err}") from err
        expect(procs.containerd is not None, f"no containerd under the daemon {procs.daemon}")
        groups = [[procs.daemon], [procs.containerd or 0], procs.shims]
        before = [sum(cpu_ticks(p) for p in g) for g in groups]
        start = time.perf_counter()
        time.sleep(CPU_WINDOW)
        after = [sum(cpu_ticks(p) for p in g) for g in groups]
        wall = time.perf_counter() - start
        used = [
            (a - b) / os.sysconf("SC_CLK_TCK") / wall for a, b in zip(after, before, strict=True)
        ]
        return used[0], used[0] + used[1], sum(used)

    def sample(e: Engine) -> tuple[float, float, float]:
        e.ok("start", *ids[e.name])
        try:
            deadline = time.monotonic() + 60
            while True:
                status = [h["Status"] if h else None for h in healths(e)]
                if all(s == "healthy" for s in status):
                    break
                expect(time.monotonic() < deadline, f"not healthy after 60 s: {status[:5]}")
                time.sleep(0.5)
            time.sleep(2)
            figures = measure(e)
            end = datetime.datetime.now(datetime.UTC)
            for h in healths(e):
                expect(h["Status"] == "healthy" and h["FailingStreak"] == 0, f"health {h}")
                log = h["Log"] or []
                expect(all(r["ExitCode"] == 0 for r in log), f"a probe failed: {log}")
                last = datetime.datetime.fromisoformat(log[-1]["End"]) if log else None
                expect(
                    last is not None and (end - last).total_seconds() < 3,
                    f"no probe in the last 3 s of the window: {log[-1:]}",
                )
            return figures
        finally:
            e.ok("stop", "-t", "0", *ids[e.name])

    def remove(e: Engine) -> None:
        _rm(e, ids.pop(e.name, []))

    name = f"{HEALTH_CONTAINERS} containers probed every 1 s: CPU % of one core"
    return [
        Workload(
            f"{name}, daemon",
            sample,
            rounds=7,
            setup=create,
            teardown=remove,
            unit="%",
            also=(f"{name}, daemon + containerd", f"{name}, with shims"),
        )
    ]


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
    unavailable: dict[str, str] = field(default_factory=dict)  # engine → why: shown as n/a
    unit: str = "ms"

    def stats(self, engine: str) -> dict[str, float] | None:
        s = self.samples.get(engine)
        if engine in self.failures or engine in self.unavailable or not s:
            return None
        return {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s)}


def run_workload(w: Workload, engines: list[Engine], rounds: int) -> list[Row]:
    """The workload's row, and one more per name in ``w.also`` (same samples' figures)."""
    rows = [Row(n, {e.name: [] for e in engines}, unit=w.unit) for n in (w.name, *w.also)]
    row = rows[0]  # failures are recorded here and copied to the others at the end
    live = []
    for e in engines:
        try:
            w.setup(e)
            live.append(e)
        except Unavailable as u:
            row.unavailable[e.name] = str(u)
        except Failed as f:
            row.failures[e.name] = f"set-up: {f}"
    try:
        for _ in range(min(rounds, w.rounds or rounds)):
            for e in live:
                if e.name in row.failures or e.name in row.unavailable:
                    continue
                try:
                    got = w.sample(e)
                except Unavailable as u:
                    row.unavailable[e.name] = str(u)
                    continue
                except Failed as f:
                    row.failures[e.name] = str(f)
                    continue
                figures = got if isinstance(got, tuple) else (got,)
                for r, v in zip(rows, figures, strict=True):
                    r.samples[e.name].append(v)
    finally:
        for e in live:
            try:
                w.teardown(e)
            except Failed as f:
                row.failures.setdefault(e.name, f"tear-down: {f}")
    for r in rows[1:]:
        r.failures.update(row.failures)
        r.unavailable.update(row.unavailable)
    return rows


def remove_leftovers(e: Engine) -> None:
    """The bench's containers (with their anonymous volumes), its volumes: those with its
    label and those named with its prefix (made by ``-v name:/data``), and its images."""
    ids = e.out("ps", "-aq", "--filter", "label=" + LABEL).split()
    if ids:
        e.ok("rm", "-f", "-v", *ids)
    names = set(e.out("volume", "ls", "-q", "--filter", "label=" + LABEL).split())
    names |= {
        n
        for n in e.out("volume", "ls", "-q", "--filter", "name=" + VOLUME_PREFIX).split()
        if n.startswith(VOLUME_PREFIX)
    }
    if names:
        rm_volumes(e, sorted(names))
    if e.out("images", "-q", COPYUP_IMAGE):
        e.ok("rmi", COPYUP_IMAGE)


#: how long an engine is left alone before its idle memory is read (the idle row and the one
#: after the workloads): berthd returns free heap pages every 10 s, Go every few minutes
SETTLE = 15.0


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

    time.sleep(SETTLE)  # as before the after-workloads row: a daemon left alone
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


def figure(v: float, unit: str) -> str:
    """Seconds in ms, or a fraction of one core in % (the CPU rows)."""
    return f"{v * 100:.1f}%" if unit == "%" else ms(v)


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
            if s:
                cells += [figure(s[k], row.unit) for k in ("median", "min", "max")]
            else:
                cells += ["n/a" if e.name in row.unavailable else "FAILED", "", ""]
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
        ("after_daemon_rss", "daemon RSS, idle after the workloads"),
    ]
    lines = ["| memory (MiB) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in keys:
        if all(key in mem[n] for n in names):
            cells = " | ".join(f"{mem[n][key]:.1f}" for n in names)
            lines.append(f"| {label} | {cells} |")
    return lines


@contextlib.contextmanager
def berth_engine(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    with running_berthd() as d:
        yield d.host


def _selects(only: str, name: str) -> bool:
    return only[1:] == name if only.startswith("=") else only in name


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
    p.add_argument(
        "--only",
        action="append",
        help="run workloads whose name contains this (=NAME: whose name is NAME)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--memory", action="store_true", help="measure memory even with --only")
    p.add_argument(
        "--cache", type=Path, default=CACHE, help="where the registry image is kept between runs"
    )
    p.add_argument("--seed", type=int, default=13, help="seed of the registry image's content")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmpdir, contextlib.ExitStack() as st:
        tmp = Path(tmpdir)
        tar = busybox_rootfs_tar(tmp / "busybox.tar")
        engines = [Engine("berth", st.enter_context(berth_engine(args.berth)))]
        registry = st.enter_context(RegistryBench(tmp, args.cache, args.seed))
        if args.reference:
            engines.append(Engine("reference", args.reference))
        versions = {e.name: describe(e) for e in engines}
        for e in engines:
            e.ok("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
        rows: list[Row] = []
        memory: dict[str, dict[str, float]] = {}
        try:
            if not args.no_memory and (args.memory or not args.only):
                memory = {e.name: engine_memory(e) for e in engines}
            workloads = [
                *all_workloads(tmp),
                *bridge_workloads(),
                *volume_workloads(tmp),
                *health_workloads(),
                *registry.workloads(),
                *disk_workloads(tmp),
                *save_workloads(tmp, args.cache, args.seed),
                *commit_workloads(),
                *build_workloads(tmp, args.seed),
            ]
            for w in workloads:
                if args.only and not any(_selects(o, w.name) for o in args.only):
                    continue
                done = run_workload(w, engines, args.rounds)
                rows += done
                print("\n".join(table(done, engines)[2:]), flush=True)
        finally:
            for e in engines:
                with contextlib.suppress(Failed):
                    remove_leftovers(e)
                    e.ok("rmi", IMAGE)
                with contextlib.suppress(Failed):
                    registry.remove_images(e)
        if memory:  # where each daemon settles once what the workloads made is gone
            time.sleep(SETTLE)
            for e in engines:
                memory[e.name]["after_daemon_rss"] = memory_kib(e.processes().daemon)[0] / 1024

    lines = [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores; " + ", ".join(f"{n} {v}" for n, v in versions.items()),
        "",
        f"Times in ms (docker CLI start-up included), CPU in % of one core, up to "
        f"{args.rounds} samples per engine. {registry.describe()}".rstrip(),
        "",
        *table(rows, engines),
    ]
    if memory:
        lines += ["", *memory_table(memory)]
    for row in rows:
        for name, why in row.failures.items():
            lines.append(f"\nFAILED {row.name} on {name}: {why}")
        for name, why in row.unavailable.items():
            lines.append(f"\nn/a {row.name} on {name}: {why}")
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
                        "unavailable": r.unavailable,
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
