"""berthd killed in the middle of work: what containerd, the kernel and the disk
hold afterwards must match what berthd says, and nothing may be left over."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from berth.runtime import _strays
from berth.runtime.supervisor import Supervisor
from berth.testing import DOCKER, Berthd, inspect_container, running_berthd

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


def _shim_sockets(d: Berthd, ids: set[str]) -> set[str]:
    """Which of *ids* have a shim socket (a killed shim leaves its socket behind)."""
    socket = Supervisor(d.data_root, d.exec_root).socket
    return {cid for cid in ids if os.path.exists(_strays.shim_socket(socket, NAMESPACE, cid))}


def _assert_consistent(d: Berthd, parent: str, seen: set[str]) -> set[str]:
    """Every trace in containerd and the kernel belongs to a running container: tasks,
    containerd records, shims, cgroups (under this daemon's own parent), FIFOs, mounts,
    and the shim sockets of the containers in *seen*."""
    containers = _containers(d)
    for cid, c in containers.items():
        st = c["State"]
        assert st["Status"] in ("created", "running", "exited"), (cid, st)
        assert not st["Dead"] and not st["Restarting"], (cid, st)
        if st["Running"]:
            assert Path(f"/proc/{st['Pid']}").exists(), (cid, st)
    running = {cid for cid, c in containers.items() if c["State"]["Running"]}
    _settle(lambda: _ctr(d, "tasks", "ls", "-q") == running, "tasks of the removed to go")
    assert _ctr(d, "tasks", "ls", "-q") == running
    assert _ctr(d, "containers", "ls", "-q") == running
    _settle(lambda: _shims(d) == running, "shims to exit")  # they go after their task
    assert _shims(d) == running
    assert _cgroups_under(parent) == running
    seen |= set(containers)
    assert _shim_sockets(d, seen) == running
    assert _fifo_dirs(d) <= running
    assert len(_overlay_mounts(d)) == len(running)
    return running


def _cgroups_under(parent: str) -> set[str]:
    return {p.name for p in Path("/sys/fs/cgroup").glob(f"*{parent}/*") if p.is_dir()}


@contextlib.contextmanager
def _cgroup_parent(tag: str) -> Iterator[str]:
    """A cgroup parent of the test's own, so that only its daemon's containers are seen
    there (other daemons may run beside it), removed afterwards."""
    parent = f"/berth-{tag}-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        yield parent
    finally:
        for cg in Path("/sys/fs/cgroup").glob(f"*{parent}"):
            with contextlib.suppress(OSError):
                cg.rmdir()


@pytest.mark.parametrize("live_restore", [True, False], ids=["live-restore", "stop-all"])
def test_sigkill_in_a_burst_of_run_and_rm_leaves_nothing_behind(
    busybox_tar: Path, live_restore: bool
) -> None:
    with (
        _cgroup_parent("burst") as parent,
        running_berthd(
            ["--cgroup-parent", parent, *(["--live-restore"] if live_restore else [])]
        ) as d,
    ):
        seen: set[str] = set()
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
            running = _assert_consistent(d, parent, seen)
            if not live_restore:
                assert running == set()
                d.docker("start", *old)  # running again for the next round
                continue
            assert running >= old, f"round {round_}: containers that ran before are gone"
            # The adopted containers still work.
            some = sorted(running)[0]
            assert d.docker("exec", some, "echo", "ok").stdout == "ok\n"
        d.docker("rm", "-f", *_containers(d))
        assert _assert_consistent(d, parent, seen) == set()


# -- SIGKILL at random moments of a mixed burst, many times ---------------------------

#: Kills of the burst test; CI runs the default, a soak can ask for more.
CRASH_ROUNDS = int(os.environ.get("BERTH_CRASH_ROUNDS", "25"))


@dataclass
class _Op:
    """One docker CLI call of a burst and what its success promises after the restart."""

    kind: str  # create, run, start, exec, stop, rm
    target: str
    proc: subprocess.Popen[str]
    out: str = ""
    acked: bool = False


def _launch(d: Berthd, kind: str, target: str, *args: str) -> _Op:
    proc = subprocess.Popen(
        [DOCKER, *args],
        env=d.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return _Op(kind, target, proc)


def _burst(d: Berthd, rng: random.Random, label: str, old: list[str], pool: list[str]) -> list[_Op]:
    """create, run, start, exec, stop and rm at once; each pool container is the target of
    at most one of them, so that every acknowledged call says what must be true after."""
    ops: list[_Op] = []
    for _ in range(rng.randint(1, 3)):
        ops.append(_launch(d, "create", "", "create", "--label", label, "busybox", "sleep", "300"))
    for _ in range(rng.randint(1, 3)):
        ops.append(_launch(d, "run", "", "run", "-d", "--label", label, "busybox", "sleep", "300"))
    for c in rng.sample(old, k=rng.randint(1, len(old))):
        ops.append(_launch(d, "exec", c, "exec", c, "echo", "ok"))
    for c in rng.sample(pool, k=min(len(pool), rng.randint(0, 5))):
        kind = rng.choice(("start", "stop", "rm"))
        args = {"start": ("start", c), "stop": ("stop", "-t", "1", c), "rm": ("rm", "-f", c)}
        ops.append(_launch(d, kind, c, *args[kind]))
    return ops


def _restart_and_check(
    d: Berthd, parent: str, seen: set[str], ops: list[_Op], pids: dict[str, int], round_: int
) -> float:
    """Start berthd again; check every promise of the acknowledged calls, the running
    containers' PIDs, and that nothing is left that no container owns."""
    t0 = time.monotonic()
    d.start(timeout=60)
    restart_s = time.monotonic() - t0
    where = f"round {round_}"
    listed = d.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.split("\n")
    pairs = [line.split() for line in listed if line.strip()]
    ids = [p[0] for p in pairs]
    assert len(ids) == len(set(ids)), f"{where}: a container is listed twice: {ids}"
    names = [p[1] for p in pairs]
    assert len(names) == len(set(names)), f"{where}: a name is listed twice: {names}"
    containers = _containers(d)
    assert set(containers) == set(ids)
    for cid, pid in pids.items():
        st = containers[cid]["State"]
        assert st["Running"] and st["Pid"] == pid, f"{where}: {cid[:12]} ran as {pid}: {st}"
    for op in ops:
        if not op.acked:
            continue
        if op.kind == "create":
            assert op.out in containers, f"{where}: acknowledged create {op.out[:12]} is gone"
        elif op.kind in ("run", "start"):
            cid = op.out if op.kind == "run" else op.target
            assert cid in containers, f"{where}: acknowledged {op.kind} {cid[:12]} is gone"
            assert containers[cid]["State"]["Running"], f"{where}: {op.kind} {cid[:12]} stopped"
        elif op.kind == "stop":
            st = containers[op.target]["State"]
            assert not st["Running"], f"{where}: acknowledged stop of {op.target[:12]}: {st}"
        elif op.kind == "rm":
            assert op.target not in containers, f"{where}: removed {op.target[:12]} is back"
    _assert_consistent(d, parent, seen)
    return restart_s


def test_sigkill_at_random_points_of_a_burst_never_loses_a_live_container(
    busybox_tar: Path,
) -> None:
    seed = int(os.environ.get("BERTH_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    label = f"crash-burst-{seed}"
    restarts: list[float] = []
    seen: set[str] = set()
    try:
        with (
            _cgroup_parent("random") as parent,
            running_berthd(["--live-restore", "--cgroup-parent", parent]) as d,
        ):
            d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
            old = [
                d.docker("run", "-d", "--label", label, "busybox", "sleep", "600").stdout.strip()
                for _ in range(3)
            ]
            pids = {c: inspect_container(d, c)["State"]["Pid"] for c in old}
            pool: list[str] = []
            for round_ in range(CRASH_ROUNDS):
                ops = _burst(d, rng, label, old, pool)
                time.sleep(rng.uniform(0.0, 0.8))
                d.kill()
                for op in ops:
                    out, _ = op.proc.communicate(timeout=60)
                    op.out = out.strip()
                    op.acked = op.proc.returncode == 0
                try:
                    restarts.append(_restart_and_check(d, parent, seen, ops, pids, round_))
                except AssertionError as e:
                    tail = "\n".join(d.log().splitlines()[-40:])
                    raise AssertionError(f"{e}\nseed {seed}; berthd log tail:\n{tail}") from None
                listed = d.docker("ps", "-aq", "--no-trunc").stdout.split()
                pool = [c for c in listed if c not in pids]
                if len(pool) > 10:  # keep the daemon small: the oldest go
                    d.docker("rm", "-f", *pool[10:])
                    pool = pool[:10]
            d.docker("rm", "-f", *d.docker("ps", "-aq").stdout.split())
            assert _assert_consistent(d, parent, seen) == set()
    finally:
        print(
            f"\ncrash burst: seed {seed}, {len(restarts)} kills and restarts, slowest restart "
            f"{max(restarts, default=0):.2f} s, median "
            f"{sorted(restarts)[len(restarts) // 2] if restarts else 0:.2f} s"
        )
