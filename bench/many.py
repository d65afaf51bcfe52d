"""Many created containers: ``docker ps -a``, ``ps`` with a filter, ``inspect`` of one,
``container prune``, and the daemon's restart (time until it answers, RSS after), with N
containers, N growing (default 1,000 then 10,000).

    .venv/bin/python bench/many.py                         # berthd alone (starts its own)
    .venv/bin/python bench/many.py --dockerd               # and a dockerd it starts beside

The dockerd reference is started by this script on temp paths (as bench/README.md starts
one, off the host's network) because it has to be restarted; its version is whatever
``dockerd`` is on PATH. Containers are created through the API, 8 at a time (that is set-up,
not timed), each labelled ``berth-bench=1`` and every other one ``berth-bench-half=1`` (what
the filtered ``ps`` asks for). CLI commands are timed as a user sees them, start-up
included; medians of --rounds. ``GET /containers/json?all=1`` is the listing without the
CLI, which spends more on decoding and printing 1,000 rows than berthd on answering. The
per-container RSS is the daemon's growth from before the first container to after the last,
over N. Nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engines import Engine, memory_kib
from workloads import IMAGE, LABEL

from berth.testing import Berthd, UnixHTTPConnection, busybox_rootfs_tar, running_berthd

HALF = "berth-bench-half=1"


class Daemon:
    """An engine this script can restart: ``restart()`` returns seconds until ``_ping``."""

    engine: Engine

    def restart(self) -> float:
        raise NotImplementedError

    def pid(self) -> int:
        return self.engine.processes().daemon


class Berth(Daemon):
    def __init__(self, d: Berthd) -> None:
        self.d = d
        self.engine = Engine("berth", d.host)

    def restart(self) -> float:
        self.d.stop()
        start = time.perf_counter()
        self.d.start(timeout=600)
        return time.perf_counter() - start


class Dockerd(Daemon):
    """dockerd on temp paths, off the host's network (see bench/README.md)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.engine = Engine("dockerd", f"unix://{self.sock}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> float:
        args = [
            "dockerd", "-H", self.engine.host, "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
            "--bridge", "none", "--iptables=false", "--ip6tables=false",
            "--ip-forward=false", "--ip-masq=false",
        ]  # fmt: skip
        log = open(self.root / "log", "ab")  # noqa: SIM115 - the process owns it
        start = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        while not _answers(self.sock):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited; see {self.root / 'log'}")
            time.sleep(0.02)
        return time.perf_counter() - start

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
            self.proc = None

    def restart(self) -> float:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount = line.split()[4]
            if mount.startswith(str(self.root)):
                subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _answers(sock: Path) -> bool:
    conn = UnixHTTPConnection(str(sock), timeout=2)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def create(e: Engine, n: int) -> None:
    """*n* containers through the API, 8 connections at once (untimed set-up)."""
    sock = e.host.removeprefix("unix://")

    def batch(count: int, first: int) -> None:
        conn = UnixHTTPConnection(sock, timeout=120)
        try:
            for i in range(first, first + count):
                labels = {"berth-bench": "1", **({"berth-bench-half": "1"} if i % 2 else {})}
                body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "Labels": labels})
                conn.request(
                    "POST", "/containers/create", body, {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"create: {resp.status} {data[:200]!r}")
        finally:
            conn.close()

    per = (n + 7) // 8
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: batch(min(per, n - k * per), k * per), range(8)))


def timed(e: Engine, rounds: int, *args: str) -> tuple[float, bytes]:
    samples = []
    out = b""
    for _ in range(rounds):
        r = e.ok(*args)
        samples.append(r.seconds)
        out = r.stdout
    return statistics.median(samples), out


def api_list(e: Engine, rounds: int) -> float:
    """The engine's own share of ``ps -a``: the listing's request and whole answer on one
    connection, without the CLI (which decodes and formats every row itself)."""
    conn = UnixHTTPConnection(e.host.removeprefix("unix://"), timeout=120)
    samples = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            conn.request("GET", "/containers/json?all=1")
            resp = conn.getresponse()
            resp.read()
            samples.append(time.perf_counter() - start)
            if resp.status != 200:
                raise RuntimeError(f"GET /containers/json: {resp.status}")
    finally:
        conn.close()
    return statistics.median(samples)


def measure(d: Daemon, n: int, have: int, rounds: int) -> dict[str, float]:
    e = d.engine
    create(e, n - have)
    time.sleep(1)
    rss_kib = memory_kib(d.pid())[0]
    out: dict[str, float] = {"rss_mb": rss_kib / 1024}
    out["ps -a"], listing = timed(e, rounds, "ps", "-a")
    listed = listing.count(b"\n") - 1  # under the header
    if listed != n:
        raise RuntimeError(f"ps -a listed {listed}, not {n}")
    out["GET /containers/json?all=1"] = api_list(e, rounds)
    out["ps -a --filter label"], listing = timed(
        e, rounds, "ps", "-a", "-q", "--filter", f"label={HALF}"
    )
    if len(listing.split()) != n // 2:
        raise RuntimeError(f"ps --filter listed {len(listing.split())}, not {n // 2}")
    one = e.out("ps", "-a", "-q", "-l")
    out["inspect (one)"], _ = timed(e, rounds, "inspect", one)
    out["restart (until it answers)"] = d.restart()
    time.sleep(2)
    out["rss_after_restart_mb"] = memory_kib(d.pid())[0] / 1024
    return out


def prune(d: Daemon) -> float:
    r = d.engine.ok("container", "prune", "-f", "--filter", f"label={LABEL}")
    left = d.engine.out("ps", "-a", "-q", "--filter", f"label={LABEL}")
    if left:
        raise RuntimeError(f"prune left {len(left.split())} containers")
    return r.seconds


def run(d: Daemon, sizes: list[int], rounds: int, tar: Path) -> dict[int, dict[str, float]]:
    e = d.engine
    e.ok("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
    base = memory_kib(d.pid())[0] / 1024
    results: dict[int, dict[str, float]] = {}
    for n in sizes:
        r = measure(d, n, 0, rounds)
        r["rss_per_container_kb"] = (r["rss_mb"] - base) * 1024 / n
        r["container prune"] = prune(d)
        results[n] = r
        print(e.name, n, json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)
    e.ok("rmi", IMAGE)
    return results


@contextlib.contextmanager
def berth() -> Iterator[Berth]:
    with running_berthd() as d:
        yield Berth(d)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1000,10000", help="numbers of containers (1000,10000)")
    p.add_argument("--rounds", type=int, default=5, help="samples of each CLI command (5)")
    p.add_argument("--dockerd", action="store_true", help="also a dockerd started here")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmpdir:
        tar = busybox_rootfs_tar(Path(tmpdir) / "busybox.tar")
        with berth() as b:
            results["berth"] = run(b, sizes, args.rounds, tar)
        if args.dockerd:
            ref = Dockerd(Path(tempfile.mkdtemp(prefix="berth-bench-dockerd-")))
            try:
                results["dockerd"] = run(ref, sizes, args.rounds, tar)
            finally:
                ref.close()
    keys = [
        "ps -a", "GET /containers/json?all=1", "ps -a --filter label", "inspect (one)",
        "container prune",
        "restart (until it answers)", "rss_mb", "rss_after_restart_mb", "rss_per_container_kb",
    ]  # fmt: skip
    engines = list(results)
    print("\nms for commands, MB / KB for memory; ratio = berth / dockerd\n")
    header = ["figure", *(f"{e} {n:,}" for n in sizes for e in engines)]
    if "dockerd" in results:
        header += [f"ratio {n:,}" for n in sizes]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in keys:
        scale = 1000 if key not in ("rss_mb", "rss_after_restart_mb", "rss_per_container_kb") else 1
        row = [key, *(f"{results[e][n][key] * scale:.1f}" for n in sizes for e in engines)]
        if "dockerd" in results:
            row += [f"{results['berth'][n][key] / results['dockerd'][n][key]:.2f}" for n in sizes]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    os.environ.pop("DOCKER_CONTEXT", None)
    sys.exit(main())
