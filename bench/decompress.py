"""Layer decompression throughput: unpigz, worker thread and in-thread gzip, and zstd.

Builds a ~100 MB layer tar (random files, which do not compress, between text files, which
do), compresses it once with gzip -6 and zstd -3, then times, alternating the ways round by
round, ``apply_layer`` (decompress + tar parse + sha256 + file writes, what a pull does per
layer) and ``digest_stream`` (decompress + sha256 only) on it.  Prints MB/s of the plain tar
(and of the compressed input), median and best of the rounds, and the CPU time spent.

    .venv/bin/python bench/decompress.py [--rounds 5] [--size-mb 100]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from berth.archive import _compress, apply_layer, digest_stream


def build_layer(size: int) -> bytes:
    """About 20% random bytes (binaries that do not compress) and 80% text of random words
    from a small vocabulary (compresses about 3x); gzip -6 takes it to about 45%, as it
    does a typical distribution base layer."""
    rng = random.Random(13)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    vocab = [bytes(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(500)]
    words = rng.choices(vocab, k=600_000)
    text = b"\n".join(b" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        i = 0
        while total < size:
            if i % 4 == 0:
                data = rng.randbytes(rng.randint(16 << 10, 160 << 10))
            else:
                start = rng.randrange(len(text) - (200 << 10))
                data = text[start : start + rng.randint(8 << 10, 200 << 10)]
            info = tarfile.TarInfo(f"usr/share/f{i // 100}/file{i}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            total += len(data)
            i += 1
    return buf.getvalue()


def force(method: str) -> None:
    """Make apply_layer's decompress take *method* for gzip."""
    _compress.default_gzip_method = lambda environ=None: method


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (unpigz), all threads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_apply(packed: bytes, workdir: Path) -> tuple[float, float]:
    target = workdir / "target"
    target.mkdir()
    cpu, start = cpu_seconds(), time.perf_counter()
    apply_layer(io.BytesIO(packed), str(target), "overlay")
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    shutil.rmtree(target)
    return elapsed, cpu


def time_digest(packed: bytes, _: Path) -> tuple[float, float]:
    cpu, start = cpu_seconds(), time.perf_counter()
    digest_stream(io.BytesIO(packed))
    return time.perf_counter() - start, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()

    tar = build_layer(args.size_mb << 20)
    gz = gzip.compress(tar, compresslevel=6)
    zst = zstandard.ZstdCompressor(level=3).compress(tar)
    mb = len(tar) / 1e6
    print(f"layer: {mb:.1f} MB tar, gzip -6 {len(gz) / 1e6:.1f} MB, zstd -3 {len(zst) / 1e6:.1f}")
    print(f"unpigz: {shutil.which('unpigz')}, cpus: {os.cpu_count()}")

    ways: list[tuple[str, str, bytes]] = [
        ("gzip unpigz", "unpigz", gz),
        ("gzip thread", "thread", gz),
        ("gzip inline (before)", "inline", gz),
        ("zstd thread", "thread", zst),
    ]
    timers: list[tuple[str, Callable[[bytes, Path], tuple[float, float]]]] = [
        ("apply_layer", time_apply),
        ("digest_stream", time_digest),
    ]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-decompress-", dir="/var/tmp") as tmp:
        for _ in range(args.rounds):
            for name, method, packed in ways:
                force(method)
                for what, timer in timers:
                    samples.setdefault((what, name), []).append(timer(packed, Path(tmp)))
    print(
        f"\nMB/s of the plain tar (of the compressed input), median and best of {args.rounds};"
        " CPU seconds per layer (all threads and unpigz), median"
    )
    for what, _ in timers:
        print(f"\n{what}")
        for name, _, packed in ways:
            walls = [wall for wall, _ in samples[(what, name)]]
            t, best = statistics.median(walls), min(walls)
            cpu = statistics.median(c for _, c in samples[(what, name)])
            print(
                f"  {name:22} {mb / t:6.1f} MB/s ({len(packed) / 1e6 / t:5.1f} in)"
                f"   best {mb / best:6.1f} MB/s ({len(packed) / 1e6 / best:5.1f} in)"
                f"   cpu {cpu:5.2f} s"
            )


if __name__ == "__main__":
    main()
