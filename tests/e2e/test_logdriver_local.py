"""The ``local`` log driver: moby's framed-protobuf files under ``local-logs/``, rotated and
compressed by default, read back by ``docker logs`` (tail, since, follow, timestamps)."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect

COUNT = 300
LOOP = f'i=0; while [ $i -lt {COUNT} ]; do echo "line $i"; i=$((i+1)); done'


def frames(data: bytes) -> list[bytes]:
    """The protobuf bodies of a local-driver file, checking both length words of each frame."""
    out = []
    i = 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        assert struct.unpack_from(">I", data, i + 4 + n) == (n,)
        out.append(data[i + 4 : i + 4 + n])
        i += 8 + n
    return out


def log_dir(berthd: Berthd, cid: str) -> Path:
    return berthd.data_root / "containers" / cid / "local-logs"


def test_local_driver_writes_its_own_format(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("local-fmt")
    cleanup.append(name)
    berthd.docker(
        "run", "--log-driver", "local", "--name", name, "busybox",
        "sh", "-c", "echo out; echo err >&2; printf tail",
    )  # fmt: skip
    info = inspect(berthd, name)
    cid = info["Id"]
    assert info["HostConfig"]["LogConfig"]["Type"] == "local"
    assert info["LogPath"] == ""  # moby does not expose the local driver's file
    root = berthd.data_root / "containers" / cid
    assert not (root / f"{cid}-json.log").exists()
    bodies = frames((log_dir(berthd, cid) / "container.log").read_bytes())
    assert len(bodies) == 3
    # LogEntry: source = 1, time_nano = 2, line = 3 (without the newline)
    assert any(b.startswith(b"\x0a\x06stdout\x10") and b.endswith(b"\x1a\x03out") for b in bodies)
    assert any(b.startswith(b"\x0a\x06stderr") for b in bodies)
    proc = berthd.docker("logs", name)
    assert proc.stdout == "out\ntail" and proc.stderr == "err\n"
    stamped = berthd.docker("logs", "-t", "--tail", "1", name).stdout
    assert stamped.endswith(" tail") and stamped[:4].isdigit()


def test_local_driver_rotates_compresses_and_reads_back(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("local-rot")
    cleanup.append(name)
    berthd.docker(
        "run", "--log-driver", "local", "--log-opt", "max-size=1k", "--log-opt", "max-file=3",
        "--name", name, "busybox", "sh", "-c", LOOP,
    )  # fmt: skip
    cid = inspect(berthd, name)["Id"]
    d = log_dir(berthd, cid)
    # compression is on by default; rotated files are gzipped in the background
    wait_for(
        lambda: (
            sorted(p.name for p in d.iterdir())
            == ["container.log", "container.log.1.gz", "container.log.2.gz"]
        ),
        what="two compressed rotated files",
    )
    with gzip.open(d / "container.log.1.gz") as f:
        assert frames(f.read())
    lines = berthd.docker("logs", name).stdout.splitlines()
    first = int(lines[0].split()[1])
    assert first > 0  # the oldest rotated out
    assert lines == [f"line {i}" for i in range(first, COUNT)]
    tail = berthd.docker("logs", "--tail", "4", name).stdout.splitlines()
    assert tail == [f"line {i}" for i in range(COUNT - 4, COUNT)]
    stamped = berthd.docker("logs", "-t", name).stdout.splitlines()
    mid = len(stamped) // 2
    since = stamped[mid].split()[0]
    got = berthd.docker("logs", "--since", since, name).stdout.splitlines()
    # --since keeps messages at or after it; neighbours may share the timestamp
    assert got[-1] == f"line {COUNT - 1}" and f"line {first + mid}" in got
    assert len(got) <= len(stamped) - mid + sum(1 for s in stamped if s.split()[0] == since)
    until = berthd.docker("logs", "--until", since, name).stdout.splitlines()
    assert until[0] == f"line {first}" and f"line {first + mid}" in until


def test_local_driver_follow(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("local-follow")
    cleanup.append(name)
    gate = "while [ ! -e /tmp/go ]; do sleep 0.05; done"
    berthd.docker(
        "run", "-d", "--log-driver", "local", "--log-opt", "max-size=4k", "--name", name,
        "busybox", "sh", "-c", f"echo ready; {gate}; {LOOP}",
    )  # fmt: skip
    with subprocess.Popen(
        [DOCKER, "logs", "-f", name],
        env=berthd.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline() == "ready\n"
            # everything after this is written while the follower waits, across two rotations
            # (fewer than max-file keeps, so a slow follower cannot miss a file); -d: the
            # container exits right after, and with it goes the exec a client would inspect
            berthd.docker("exec", "-d", name, "touch", "/tmp/go")
            out, _ = follower.communicate(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
    assert out.splitlines() == [f"line {i}" for i in range(COUNT)]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["max-file=1"], "compression cannot be enabled when max file count is 1"),
        (["bogus=1"], "unknown log opt 'bogus' for log driver local"),
        (["max-size=lots"], "invalid value for max-size"),
        (["compress=maybe"], "invalid boolean value for compress"),
        (["max-file=-2", "compress=false"], "max-file must not be negative"),
    ],
)
def test_local_driver_refuses_bad_options(
    berthd: Berthd, cleanup: list[str], opts: list[str], message: str
) -> None:
    name = unique_name("local-bad")
    cleanup.append(name)
    args = [a for o in opts for a in ("--log-opt", o)]
    proc = berthd.docker(
        "create", "--log-driver", "local", *args, "--name", name, "busybox", check=False
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert berthd.docker("ps", "-aq", "--filter", f"name={name}").stdout == ""


def test_local_driver_accepts_rotation_off(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("local-norot")
    cleanup.append(name)
    berthd.docker(
        "run", "--log-driver", "local", "--log-opt", "max-file=1", "--log-opt", "compress=false",
        "--name", name, "busybox", "echo", "hi",
    )  # fmt: skip
    assert berthd.docker("logs", name).stdout == "hi\n"
