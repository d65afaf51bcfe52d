"""Issue 15's ``docker build`` figures: a 10-step, two-stage Dockerfile, cold and cached.

The context (made once, from a seed): 1,000 files of 20 KiB of random bytes (20 MB) under
``data/`` and this Dockerfile::

    FROM berth-bench-busybox:latest AS base
    ENV APP=/app BENCH=1
    COPY data/ /app/data/
    RUN cat /app/data/* | sha256sum > /app/sum
    RUN mkdir -p /app/out && cp /app/sum /app/out/
    RUN ls /app/data | wc -l > /app/out/count
    RUN echo built > /app/out/marker
    FROM berth-bench-busybox:latest
    COPY --from=base /app/out /out
    CMD ["cat", "/out/marker"]

Both engines build with the classic builder (``DOCKER_BUILDKIT=0``). ``build (10 steps,
cold)`` times ``docker build --no-cache`` of a context the engine has not seen (the
Dockerfile's mtime moves before each sample, so the CLI's tar differs); ``build (10
steps, cached)`` times the same build with its cache filled (set-up: one untimed build),
every step answered from the cache. Untimed after each sample: the image's ``/out/sum``
and ``/out/count`` must be the context's, and (cached) every step but the two FROMs must
say ``Using cache``; the build's images are removed after a cold sample and at the end
(``image prune`` of the engine's dangling images: a bench engine holds nothing else).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

from engines import Engine, Failed
from workloads import IMAGE, Workload

BUILD_TAG = "berth-bench-build:latest"
FILES, FILE_SIZE = 1000, 20 << 10
DOCKERFILE = f"""\
FROM {IMAGE} AS base
ENV APP=/app BENCH=1
COPY data/ /app/data/
RUN cat /app/data/* | sha256sum > /app/sum
RUN mkdir -p /app/out && cp /app/sum /app/out/
RUN ls /app/data | wc -l > /app/out/count
RUN echo built > /app/out/marker
FROM {IMAGE}
COPY --from=base /app/out /out
CMD ["cat", "/out/marker"]
"""
STEPS = 10


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def _context(root: Path, seed: int) -> str:
    """Write the context under *root* (once); the sha256sum line its RUN must compute."""
    data = root / "data"
    rng = random.Random(seed)
    whole = hashlib.sha256()
    if not (root / "Dockerfile").exists():
        data.mkdir(parents=True)
        for i in range(FILES):
            (data / f"f{i:04d}").write_bytes(rng.randbytes(FILE_SIZE))
        (root / "Dockerfile").write_text(DOCKERFILE)
    # `cat /app/data/*` reads the files in the shell's glob order: byte order of names
    for name in sorted(os.listdir(data)):
        whole.update((data / name).read_bytes())
    return f"{whole.hexdigest()}  -"


def build_workloads(tmp: Path, seed: int = 13) -> list[Workload]:
    ctx = tmp / "build-context"
    expected: dict[str, str] = {}

    def env_build(e: Engine, *flags: str) -> bytes:
        r = e.ok("build", *flags, "-t", BUILD_TAG, str(ctx))
        return r.stdout

    def check(e: Engine) -> None:
        out = e.out("run", "--rm", BUILD_TAG, "sh", "-c", "cat /out/sum /out/count")
        _expect(
            out.splitlines() == [expected["sum"], str(FILES)],
            f"the built image's files are not the context's: {out[:120]!r}",
        )

    def clean(e: Engine) -> None:
        e.timed("rmi", BUILD_TAG)
        e.timed("image", "prune", "-f")

    def setup_cold(e: Engine) -> None:
        ctx.mkdir(parents=True, exist_ok=True)
        expected["sum"] = _context(ctx, seed)
        os.environ["DOCKER_BUILDKIT"] = "0"  # engines copy os.environ for every command

    def cold(e: Engine) -> float:
        # A new mtime on the Dockerfile makes the CLI's context tar new bytes: berthd
        # cannot reuse an unpacked copy of it either, so both engines start from nothing.
        stamp = time.time()
        os.utime(ctx / "Dockerfile", (stamp, stamp))
        r = e.ok("build", "--no-cache", "-t", BUILD_TAG, str(ctx))
        steps = [line for line in r.stdout.decode().splitlines() if line.startswith("Step ")]
        _expect(len(steps) == STEPS, f"cold build: {len(steps)} steps, not {STEPS}")
        check(e)
        clean(e)
        return r.seconds

    def setup_cached(e: Engine) -> None:
        setup_cold(e)
        env_build(e)

    def cached(e: Engine) -> float:
        r = e.ok("build", "-t", BUILD_TAG, str(ctx))
        out = r.stdout.decode()
        hits = out.count("Using cache")
        _expect(hits == STEPS - 2, f"cached build: {hits} steps from the cache, not {STEPS - 2}")
        check(e)
        return r.seconds

    return [
        Workload("build (10 steps, cold)", cold, rounds=7, setup=setup_cold, teardown=clean),
        Workload("build (10 steps, cached)", cached, rounds=7, setup=setup_cached, teardown=clean),
    ]
