"""The fixed workloads: each sample does its untimed set-up, times one thing, checks it.

A sample returns the seconds it measured, or raises ``Failed`` when the engine's
answer was wrong (exit code, output bytes, checksum): a fast wrong answer is
not a result.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engines import Engine, Failed, cpu_ticks

IMAGE = "berth-bench-busybox:latest"
LABEL = "berth-bench=1"

#: pid 1 that exits at once on SIGTERM (a trap), and one that ignores it (sh as pid 1).
TRAPS_TERM = "trap 'exit 0' TERM; sleep 3600 & wait"
IGNORES_TERM = "sleep 3600 & wait"

LOG_MB = 50
#: ingestion: the length of a long line (newline included), of a partial write, and how many
BIG_LINE = 1_000_000
PARTIAL = 10_000
PARTIALS = 2_000
CP_MB = 100
#: files of 4 to 400 bytes in 100 directories, copied in by the second cp workload
SMALL_FILES = 10_000
PS_CONTAINERS = 200
PARALLEL = 10


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _log_lines(mb: int) -> tuple[str, bytes]:
    """An awk program printing *mb* MB of numbered 100-byte lines, and the bytes it prints."""
    n = mb * 10_000
    expected = b"".join(b"%099d\n" % i for i in range(n))
    return f'BEGIN{{for(i=0;i<{n};i++) printf "%099d\\n", i}}', expected


@dataclass
class Workload:
    """*sample* runs once per round per engine; *setup*/*teardown* once per engine.

    A sample returns seconds (``unit="ms"``, shown in ms) or a fraction of one CPU core
    (``unit="%"``, shown in %). A workload with *also* names further rows: its sample
    returns a tuple, the main figure first, then one per name in *also*.
    """

    name: str
    sample: Callable[[Engine], float | tuple[float, ...]]
    rounds: int | None = None  # at most this many rounds (slow workloads)
    setup: Callable[[Engine], None] = lambda e: None
    teardown: Callable[[Engine], None] = lambda e: None
    note: str = ""
    unit: str = "ms"
    also: tuple[str, ...] = ()


@dataclass
class State:
    """Per-engine objects a workload's set-up made (container ids, temp files)."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    serial: Iterator[int] = field(default_factory=itertools.count)


def _rm(e: Engine, ids: list[str]) -> None:
    for i in range(0, len(ids), 50):
        e.ok("rm", "-f", *ids[i : i + 50])


def all_workloads(tmp: Path) -> list[Workload]:
    st = State()

    def run_true(*extra: str) -> Callable[[Engine], float]:
        def sample(e: Engine) -> float:
            r = e.ok("run", "--rm", *extra, IMAGE, "true")
            _expect(r.stdout == b"" and r.stderr == b"", f"unexpected output {r.stdout[:80]!r}")
            return r.seconds

        return sample

    def run_echo(e: Engine) -> float:
        r = e.ok("run", "--rm", IMAGE, "echo", "hello")
        _expect(r.stdout == b"hello\n", f"stdout {r.stdout[:80]!r}, want 'hello'")
        return r.seconds

    # create / start / rm -f, each timed on its own container.
    pending: dict[str, list[str]] = {}

    def create(e: Engine) -> float:
        r = e.ok("create", "-l", LABEL, IMAGE, "sleep", "600")
        cid = r.stdout.decode().strip()
        _expect(len(cid) == 64, f"create printed {r.stdout[:80]!r}")
        pending.setdefault(e.name, []).append(cid)
        return r.seconds

    def start(e: Engine) -> float:
        cid = e.out("create", "-l", LABEL, IMAGE, "sleep", "600")
        pending.setdefault(e.name, []).append(cid)
        r = e.ok("start", cid)
        _expect(e.out("inspect", "-f", "{{.State.Running}}", cid) == "true", "not running")
        return r.seconds

    def rm_f(e: Engine) -> float:
        cid = e.out("run", "-d", "-l", LABEL, IMAGE, "sleep", "600")
        r = e.ok("rm", "-f", cid)
        _expect(e.timed("inspect", cid).returncode != 0, "still there after rm -f")
        return r.seconds

    def drop_pending(e: Engine) -> None:
        _rm(e, pending.pop(e.name, []))

    # exec into one running container
    def run_sleeper(e: Engine) -> None:
        st.ids[e.name] = [e.out("run", "-d", "-l", LABEL, IMAGE, "sleep", "3600")]

    def rm_kept(e: Engine) -> None:
        _rm(e, st.ids.pop(e.name, []))

    def exec_true(e: Engine) -> float:
        r = e.ok("exec", st.ids[e.name][0], "true")
        _expect(r.stdout == b"", "exec printed output")
        return r.seconds

    def stop(script: str, want_exit: int) -> Callable[[Engine], float]:
        def sample(e: Engine) -> float:
            cid = e.out("run", "-d", "-l", LABEL, IMAGE, "sh", "-c", script)
            try:
                r = e.ok("stop", "-t", "1", cid)
                state = json.loads(e.out("inspect", "-f", "{{json .State}}", cid))
                _expect(not state["Running"], "still running after stop")
                _expect(
                    state["ExitCode"] == want_exit,
                    f"exit code {state['ExitCode']}, want {want_exit}",
                )
                return r.seconds
            finally:
                e.ok("rm", "-f", cid)

        return sample

    # ps / inspect with many containers present
    def create_many(e: Engine) -> None:
        if f"many-{e.name}" not in st.ids:  # shared by the ps and inspect workloads
            ids = [e.out("create", "-l", LABEL, IMAGE, "true") for _ in range(PS_CONTAINERS)]
            st.ids[f"many-{e.name}"] = ids

    def rm_many(e: Engine) -> None:
        _rm(e, st.ids.pop(f"many-{e.name}", []))

    def ps_a(e: Engine) -> float:
        r = e.ok("ps", "-a", "-q", "--no-trunc", "--filter", "label=" + LABEL)
        got = set(r.stdout.decode().split())
        _expect(got == set(st.ids[f"many-{e.name}"]), f"ps -a listed {len(got)} of {PS_CONTAINERS}")
        return r.seconds

    def ps_a_table(e: Engine) -> float:
        r = e.ok("ps", "-a")
        _expect(r.stdout.count(b"\n") >= PS_CONTAINERS + 1, "ps -a: too few lines")
        return r.seconds

    def inspect_all(e: Engine) -> float:
        ids = st.ids[f"many-{e.name}"]
        r = e.ok("inspect", *ids)
        got = [c["Id"] for c in json.loads(r.stdout)]
        _expect(got == ids, "inspect: wrong or missing containers")
        return r.seconds

    # 50 MB of logs
    script, expected_log = _log_lines(LOG_MB)
    expected_tail = b"".join(expected_log.splitlines(keepends=True)[-10:])

    def write_logs(e: Engine) -> None:
        if f"log-{e.name}" not in st.ids:  # shared by logs and logs --tail
            cid = e.out("run", "-d", "-l", LABEL, IMAGE, "awk", script)
            st.ids[f"log-{e.name}"] = [cid]
            _expect(e.out("wait", cid) == "0", "log writer failed")

    # Log ingestion (issue 17): a container writes to stdout, run -d then wait; the daemon's
    # CPU seconds per MB logged are the second figure.
    ingest_lines = LOG_MB * 1_000_000 // 41
    short_lines = f'BEGIN{{for(i=0;i<{ingest_lines};i++) printf "%040d\\n", i}}'
    long_lines = (
        f"l=$(head -c {BIG_LINE - 1} /dev/zero | tr '\\0' x); "
        f"for i in $(seq {LOG_MB}); do echo $l; done"
    )
    partials = (
        f"s=$(head -c {PARTIAL} /dev/zero | tr '\\0' y); i=0; "
        f"while [ $i -lt {PARTIALS} ]; do printf %s $s; usleep 1000; i=$((i+1)); done"
    )

    def ingestion(argv: list[str], logged: int) -> Callable[[Engine], tuple[float, float]]:
        def sample(e: Engine) -> tuple[float, float]:
            daemon = e.processes().daemon
            cpu = cpu_ticks(daemon)
            start = time.perf_counter()
            cid = e.out("run", "-d", "-l", LABEL, IMAGE, *argv)
            _expect(e.out("wait", cid) == "0", "log writer failed")
            took = time.perf_counter() - start
            cpu = cpu_ticks(daemon) - cpu
            try:
                size = len(e.ok("logs", cid).stdout)
                _expect(size == logged, f"logs gave {size} bytes, not {logged}")
            finally:
                _rm(e, [cid])
            return took, cpu / os.sysconf("SC_CLK_TCK") / (logged / 1e6)

        return sample

    def ingest(name: str, argv: list[str], logged: int) -> Workload:
        return Workload(
            f"log ingestion ({name})",
            ingestion(argv, logged),
            rounds=5,
            also=(f"log ingestion ({name}): daemon CPU ms per MB",),
        )

    def rm_logger(e: Engine) -> None:
        _rm(e, st.ids.pop(f"log-{e.name}", []))

    def logs(e: Engine) -> float:
        r = e.ok("logs", st.ids[f"log-{e.name}"][0])
        _expect(len(r.stdout) == len(expected_log), f"logs gave {len(r.stdout)} bytes")
        _expect(_sha256(r.stdout) == _sha256(expected_log), "logs: checksum differs")
        return r.seconds

    def logs_tail(e: Engine) -> float:
        r = e.ok("logs", "--tail", "10", st.ids[f"log-{e.name}"][0])
        _expect(r.stdout == expected_tail, f"logs --tail 10 gave {r.stdout[-200:]!r}")
        return r.seconds

    # docker cp of a 100 MB file, in and out
    def cp_setup(e: Engine) -> None:
        src = tmp / "cp-src.bin"
        if not src.exists():
            with src.open("wb") as f:
                block = hashlib.sha256(b"berth").digest() * (1 << 15)  # 1 MiB
                for i in range(CP_MB):
                    f.write(block[i:] + block[:i])
            st.digests["src"] = _sha256(src.read_bytes())
        st.files["src"] = src
        if f"cp-{e.name}" not in st.ids:  # shared by cp in and cp out
            cid = e.out("run", "-d", "-l", LABEL, IMAGE, "sleep", "3600")
            st.ids[f"cp-{e.name}"] = [cid]
            e.ok("cp", str(src), f"{cid}:/tmp/out.bin")

    def cp_teardown(e: Engine) -> None:
        _rm(e, st.ids.pop(f"cp-{e.name}", []))

    def container_sha(e: Engine, path: str) -> str:
        r = e.ok("exec", st.ids[f"cp-{e.name}"][0], "sha256sum", path)
        return r.stdout.decode().split()[0]

    def cp_in(e: Engine) -> float:
        cid = st.ids[f"cp-{e.name}"][0]
        e.ok("exec", cid, "rm", "-f", "/tmp/in.bin")
        r = e.ok("cp", str(st.files["src"]), f"{cid}:/tmp/in.bin")
        _expect(container_sha(e, "/tmp/in.bin") == st.digests["src"], "cp in: checksum differs")
        return r.seconds

    def small_files(e: Engine) -> None:
        src = tmp / "cp-small"
        if not src.exists():
            for d in range(SMALL_FILES // 100):
                sub = src / f"d{d:03d}"
                sub.mkdir(parents=True)
                for f in range(100):
                    (sub / f"f{f:03d}").write_bytes(b"%d %d\n" % (d, f) * (1 + f % 50))
            listing = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
            st.digests["small"] = _sha256("\n".join(listing).encode())
        st.files["small"] = src
        cp_setup(e)

    def cp_in_small(e: Engine) -> float:
        # A new place each time, nothing deleted before: on an ext4 without a journal
        # (this VM's root) a file created where thousands were just deleted costs 5-20
        # times more, the kernel stepping over each recently freed inode (ialloc.c's
        # recently_deleted), for either engine. Removing the last copy first measured that.
        cid = st.ids[f"cp-{e.name}"][0]
        dest = f"/tmp/small-{next(st.serial)}"
        r = e.ok("cp", str(st.files["small"]), f"{cid}:{dest}")
        listing = e.ok("exec", cid, "sh", "-c", f"cd {dest} && find . -type f | sort")
        names = "\n".join(line[2:] for line in listing.stdout.decode().split())
        _expect(_sha256(names.encode()) == st.digests["small"], "cp in: files differ")
        return r.seconds

    def cp_out(e: Engine) -> float:
        cid = st.ids[f"cp-{e.name}"][0]
        with tempfile.TemporaryDirectory(dir=tmp) as d:
            dest = Path(d) / "out.bin"
            r = e.ok("cp", f"{cid}:/tmp/out.bin", str(dest))
            _expect(_sha256(dest.read_bytes()) == st.digests["src"], "cp out: checksum differs")
        return r.seconds

    # 10 docker run --rm at once
    def parallel_runs(e: Engine) -> float:
        errors: list[str] = []

        def one() -> None:
            try:
                run_true()(e)
            except Failed as f:
                errors.append(str(f))

        threads = [threading.Thread(target=one) for _ in range(PARALLEL)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        _expect(not errors, "; ".join(errors[:2]))
        return elapsed

    return [
        Workload("run --rm true", run_true()),
        Workload("run --rm --network none true", run_true("--network", "none")),
        Workload("run --rm echo hello", run_echo),
        Workload("create", create, teardown=drop_pending),
        Workload("start", start, teardown=drop_pending),
        Workload("rm -f (running)", rm_f),
        Workload("exec true", exec_true, setup=run_sleeper, teardown=rm_kept),
        Workload("stop -t 1 (traps TERM)", stop(TRAPS_TERM, 0)),
        Workload("stop -t 1 (ignores TERM)", stop(IGNORES_TERM, 137)),
        Workload(f"ps -a -q ({PS_CONTAINERS} containers)", ps_a, setup=create_many),
        Workload(f"ps -a ({PS_CONTAINERS} containers)", ps_a_table, setup=create_many),
        Workload(
            f"inspect ({PS_CONTAINERS} containers)",
            inspect_all,
            setup=create_many,
            teardown=rm_many,
        ),
        ingest(f"{LOG_MB} MB of 41-byte lines", ["awk", short_lines], ingest_lines * 41),
        ingest(f"{LOG_MB} lines of 1 MB", ["sh", "-c", long_lines], LOG_MB * BIG_LINE),
        ingest(
            f"{PARTIAL // 1000} KB without a newline every 1 ms, {PARTIALS} times",
            ["sh", "-c", partials],
            PARTIAL * PARTIALS,
        ),
        Workload(f"logs ({LOG_MB} MB)", logs, rounds=7, setup=write_logs),
        Workload(f"logs --tail 10 ({LOG_MB} MB)", logs_tail, setup=write_logs, teardown=rm_logger),
        Workload(f"cp in ({CP_MB} MB)", cp_in, rounds=7, setup=cp_setup),
        Workload(f"cp in ({SMALL_FILES:,} small files)", cp_in_small, rounds=7, setup=small_files),
        Workload(f"cp out ({CP_MB} MB)", cp_out, rounds=7, setup=cp_setup, teardown=cp_teardown),
        Workload(f"{PARALLEL} x run --rm true in parallel", parallel_runs, rounds=10),
    ]
