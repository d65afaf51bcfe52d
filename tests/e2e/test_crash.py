"""berthd killed in the middle of work: what containerd, the kernel and the disk
hold afterwards must match what berthd says, and nothing may be left over."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from berth.runtime import _strays
from berth.runtime.supervisor import Supervisor
from berth.testing import DOCKER, Berthd, running_berthd

NAMESPACE = "berth"


def _ctr(d: Berthd, *args: str) -> set[str]:
    socket = Supervisor(d.data_root, d.exec_root).socket
    out = subprocess.run(
        ["ctr", "--address", socket, "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _shims(d: Berthd) -> set[str]:
    """Container IDs of the shims serving this daemon's containerd."""
    socket = Supervisor(d.data_root, d.exec_root).socket
    return {shim.container_id for shim in _strays.shims(socket, NAMESPACE)}


def _settle(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return  # the assertion that follows says what is wrong
        time.sleep(0.05)


def _cgroups() -> set[str]:
    return {p.name for p in Path("/sys/fs/cgroup").glob("*/berth/*") if p.is_dir()}


def _shim_sockets() -> set[str]:
    return (
        set(os.listdir(_strays.SHIM_SOCKET_DIR))
        if os.path.isdir(_strays.SHIM_SOCKET_DIR)
        else set()
    )


def _fifo_dirs(d: Berthd) -> set[str]:
    base = d.exec_root / "containerd"
    return {p.name for p in base.iterdir() if p.is_dir() and len(p.name) == 64}


def _overlay_mounts(d: Berthd) -> list[str]:
    return [m for m in d.mounts() if m.endswith("/merged")]


def _containers(d: Berthd) -> dict[str, Any]:
    ids = d.docker("ps", "-aq", "--no-trunc").stdout.split()
    if not ids:
        return {}
    data = json.loads(d.docker("inspect", *ids).stdout)
    return {c["Id"]: c for c in data}


def _assert_consistent(d: Berthd, before: tuple[set[str], set[str]]) -> set[str]:
    """Every trace in containerd and the kernel belongs to a running container."""
    containers = _containers(d)
    for cid, c in containers.items():
        st = c["State"]
        assert st["Status"] in ("created", "running", "exited"), (cid, st)
        assert not st["Dead"] and not st["Restarting"], (cid, st)
        if st["Running"]:
            assert Path(f"/proc/{st['Pid']}").exists(), (cid, st)
    running = {cid for cid, c in containers.items() if c["State"]["Running"]}
    assert _ctr(d, "tasks", "ls", "-q") == running
    assert _ctr(d, "containers", "ls", "-q") == running
    _settle(lambda: _shims(d) == running, "shims to exit")  # they go after their task
    assert _shims(d) == running
    cgroups_before, sockets_before = before
    assert _cgroups() - cgroups_before == running
    assert len(_shim_sockets() - sockets_before) == len(running)  # a killed shim leaves one
    assert _fifo_dirs(d) <= running
    assert len(_overlay_mounts(d)) == len(running)
    return running


@pytest.mark.parametrize("live_restore", [True, False], ids=["live-restore", "stop-all"])
def test_sigkill_in_a_burst_of_run_and_rm_leaves_nothing_behind(
    busybox_tar: Path, live_restore: bool
) -> None:
    before = (_cgroups(), _shim_sockets())
    with running_berthd(["--live-restore"] if live_restore else []) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        old = {
            d.docker("run", "-d", "--name", f"old{i}", "busybox", "sleep", "300").stdout.strip()
            for i in range(4)
        }
        # Killed at different points: in the creates, the starts, the removals.
        for round_, delay in enumerate((0.15, 0.3, 0.6, 1.0)):
            burst = [
                subprocess.Popen(
                    [DOCKER, "run", "-d", "busybox", "sleep", "300"],
                    env=d.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(6)
            ]
            victims = sorted(set(d.docker("ps", "-q", "--no-trunc").stdout.split()) - old)[:3]
            burst += [
                subprocess.Popen(
                    [DOCKER, "rm", "-f", *victims] if victims else ["true"],
                    env=d.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
                subprocess.Popen(
                    [DOCKER, "create", "busybox", "true"],
                    env=d.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            ]
            time.sleep(delay)
            d.kill()
            for p in burst:
                p.wait(timeout=60)
            d.start()
            running = _assert_consistent(d, before)
            if not live_restore:
                assert running == set()
                d.docker("start", *old)  # running again for the next round
                continue
            assert running >= old, f"round {round_}: containers that ran before are gone"
            # The adopted containers still work.
            some = sorted(running)[0]
            assert d.docker("exec", some, "echo", "ok").stdout == "ok\n"
        d.docker("rm", "-f", *_containers(d))
        assert _assert_consistent(d, before) == set()
