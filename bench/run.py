"""Time docker-CLI workloads against berthd and, optionally, a reference engine.

    .venv/bin/python bench/run.py                       # starts its own berthd
    .venv/bin/python bench/run.py --berth unix:///run/berth.sock
    .venv/bin/python bench/run.py --reference unix:///var/run/docker.sock

Each workload runs ``--rounds`` times per engine (engines interleaved, so both
see the same machine load); the table shows medians and berth/reference ratios.
Nothing here asserts a duration: this is for people, not for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from berth.testing import DOCKER, busybox_rootfs_tar, running_berthd

IMAGE = "berth-bench-busybox:latest"


@dataclass
class Engine:
    name: str
    host: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            [DOCKER, *args], env=self.env(), input=stdin, capture_output=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)}: {proc.stderr.decode()}")
        return proc.stdout.decode()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Workload:
    name: str
    setup: Callable[[Engine], None]
    run: Callable[[Engine], object]
    teardown: Callable[[Engine], None]


def _noop(_: Engine) -> None:
    return None


def workloads(tar: Path, n_containers: int) -> list[Workload]:
    created: dict[str, list[str]] = {}

    def create_many(e: Engine) -> None:
        ids = [
            e.docker("create", "-l", "bench=1", IMAGE, "true").strip() for _ in range(n_containers)
        ]
        created[e.name] = ids

    def rm_many(e: Engine) -> None:
        ids = created.pop(e.name, [])
        if ids:
            e.docker("rm", *ids)

    def create_rm(e: Engine) -> None:
        cid = e.docker("create", IMAGE, "true").strip()
        e.docker("rm", cid)

    def import_rmi(e: Engine) -> None:
        e.docker("import", str(tar), "berth-bench-import:1")
        e.docker("rmi", "berth-bench-import:1")

    kept: dict[str, str] = {}

    def run_logger(e: Engine) -> None:
        script = 'BEGIN{for(i=0;i<100000;i++) printf "%099d\\n", i}'
        kept[e.name] = e.docker("run", "-d", IMAGE, "awk", script).strip()
        e.docker("wait", kept[e.name])

    def run_sleeper(e: Engine) -> None:
        kept[e.name] = e.docker("run", "-d", IMAGE, "sleep", "600").strip()

    def rm_kept(e: Engine) -> None:
        e.docker("rm", "-f", kept.pop(e.name))

    big = tar.parent / "cp-100M"

    def created_with_big(e: Engine) -> None:
        if not big.exists():
            big.write_bytes(os.urandom(100 << 20))
        kept[e.name] = e.docker("create", IMAGE, "true").strip()
        e.docker("cp", str(big), f"{kept[e.name]}:/big")

    return [
        Workload("version", _noop, lambda e: e.docker("version"), _noop),
        Workload("logs (10 MB)", run_logger, lambda e: e.docker("logs", kept[e.name]), rm_kept),
        Workload(
            "exec true", run_sleeper, lambda e: e.docker("exec", kept[e.name], "true"), rm_kept
        ),
        Workload("run --rm true", _noop, lambda e: e.docker("run", "--rm", IMAGE, "true"), _noop),
        Workload(
            "run --rm echo (output)",
            _noop,
            lambda e: e.docker("run", "--rm", IMAGE, "echo", "hello"),
            _noop,
        ),
        Workload("create + rm", _noop, create_rm, _noop),
        Workload(
            f"ps -a ({n_containers} containers)",
            create_many,
            lambda e: e.docker("ps", "-a"),
            rm_many,
        ),
        Workload(
            f"inspect ({n_containers} containers)",
            create_many,
            lambda e: e.docker("inspect", *created[e.name]),
            rm_many,
        ),
        Workload(
            "cp in (100 MB, stopped)",
            created_with_big,
            lambda e: e.docker("cp", str(big), f"{kept[e.name]}:/big"),
            rm_kept,
        ),
        Workload(
            "cp out (100 MB, stopped)",
            created_with_big,
            lambda e: e.docker("cp", f"{kept[e.name]}:/big", str(tar.parent / f"out-{e.name}")),
            rm_kept,
        ),
        Workload("images", _noop, lambda e: e.docker("images"), _noop),
        Workload("import + rmi (2 MB)", _noop, import_rmi, _noop),
    ]


@contextlib.contextmanager
def own_berthd() -> Iterator[str]:
    with running_berthd() as d:
        yield d.host


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--berth", help="berthd socket (default: start one on temp paths)")
    p.add_argument("--reference", help="a reference engine's socket, e.g. dockerd's")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--containers", type=int, default=50)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tar = busybox_rootfs_tar(Path(tmp) / "busybox.tar")
        berth_host = args.berth or stack.enter_context(own_berthd())
        engines = [Engine("berth", berth_host)]
        if args.reference:
            engines.append(Engine("reference", args.reference))
        for e in engines:
            e.docker("import", "--change", 'CMD ["sh"]', str(tar), IMAGE)
        rows = []
        try:
            for w in workloads(tar, args.containers):
                samples: dict[str, list[float]] = {e.name: [] for e in engines}
                for e in engines:
                    w.setup(e)
                try:
                    for _ in range(args.rounds):
                        for e in engines:
                            samples[e.name].append(timed(functools.partial(w.run, e)))
                finally:
                    for e in engines:
                        w.teardown(e)
                rows.append((w.name, {k: statistics.median(v) for k, v in samples.items()}))
        finally:
            for e in engines:
                with contextlib.suppress(RuntimeError):
                    e.docker("rmi", IMAGE)

    header = f"{'workload':32} {'berth ms':>10}"
    if args.reference:
        header += f" {'reference ms':>13} {'ratio':>7}"
    print(header)
    for name, med in rows:
        line = f"{name:32} {med['berth'] * 1000:10.1f}"
        if args.reference:
            ref = med["reference"]
            line += f" {ref * 1000:13.1f} {med['berth'] / ref:7.2f}"
        print(line)
    print(f"(medians of {args.rounds} rounds; each includes the docker CLI's own start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
