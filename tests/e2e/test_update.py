"""``docker update`` with the real CLI: the new limits reach the container's cgroup at once
(read from inside it), ``docker inspect`` shows them, they hold across ``docker restart``
and a berthd restart, a stopped container gets them at its next start, and bad values
get dockerd's answers."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from berth.testing import Berthd, inspect_container, unique_name, wait_for

MB = 1024 * 1024

#: The cgroup files as the container sees them (cgroup v1, the host's hierarchy).
FILES = {
    "memory": "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "memsw": "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
    "quota": "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    "period": "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    "shares": "/sys/fs/cgroup/cpu/cpu.shares",
    "cpuset": "/sys/fs/cgroup/cpuset/cpuset.cpus",
    "pids": "/sys/fs/cgroup/pids/pids.max",
}
#: Where the block devices use no CFQ/BFQ scheduler the blkio controller has no weight.
HAS_BLKIO_WEIGHT = os.path.exists("/sys/fs/cgroup/blkio/blkio.weight")
BLKIO_WARNING = (
    "Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded."
)

UPDATE = [
    "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5", "--cpu-shares", "512",
    "--cpuset-cpus", "0", "--pids-limit", "100", "--blkio-weight", "300",
    "--restart", "on-failure:3",
]  # fmt: skip
UPDATED = {
    "memory": str(64 * MB),
    "memsw": str(128 * MB),
    "quota": "50000",
    "period": "100000",
    "shares": "512",
    "cpuset": "0",
    "pids": "100",
}

pytestmark = pytest.mark.skipif(
    os.path.exists("/sys/fs/cgroup/cgroup.controllers"), reason="reads cgroup v1 files"
)


def cgroup(d: Berthd, ref: str) -> dict[str, str]:
    """The limits the container's own cgroup files show, read inside it."""
    files = dict(FILES)
    if HAS_BLKIO_WEIGHT:
        files["blkio"] = "/sys/fs/cgroup/blkio/blkio.weight"
    out = d.docker("exec", ref, "cat", *files.values()).stdout.split()
    return dict(zip(files, out, strict=True))


def host_config(d: Berthd, ref: str) -> dict[str, object]:
    hc = inspect_container(d, ref)["HostConfig"]
    keys = (
        "Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpusetCpus", "PidsLimit",
        "BlkioWeight", "RestartPolicy",
    )  # fmt: skip
    return {k: hc[k] for k in keys}


EXPECTED_HC = {
    "Memory": 64 * MB,
    "MemorySwap": 128 * MB,
    "NanoCpus": 500_000_000,
    "CpuShares": 512,
    "CpusetCpus": "0",
    "PidsLimit": 100,
    "BlkioWeight": 300 if HAS_BLKIO_WEIGHT else 0,
    "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
}


def expected_cgroup() -> dict[str, str]:
    return {**UPDATED, "blkio": "300"} if HAS_BLKIO_WEIGHT else UPDATED


def check_update_output(proc: subprocess.CompletedProcess[str], name: str) -> None:
    out = proc.stdout + proc.stderr
    assert name in out.splitlines()
    if HAS_BLKIO_WEIGHT:
        assert "does not support" not in out
    else:
        assert BLKIO_WARNING in out  # the response's Warnings, printed by the CLI


def test_update_running_container(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("upd")
    cleanup.append(name)
    berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "600")
    before = cgroup(berthd, name)
    assert before["shares"] == "1024" and before["quota"] == "-1" and before["pids"] == "max"

    check_update_output(berthd.docker("update", *UPDATE, name), name)

    assert cgroup(berthd, name) == expected_cgroup()  # at once, no restart
    assert host_config(berthd, name) == EXPECTED_HC
    pid = inspect_container(berthd, name)["State"]["Pid"]
    assert pid > 0

    berthd.docker("restart", "-t", "0", name)
    assert inspect_container(berthd, name)["State"]["Pid"] != pid
    assert cgroup(berthd, name) == expected_cgroup()
    assert host_config(berthd, name) == EXPECTED_HC

    # "unlimited" PIDs: 0 or -1
    berthd.docker("update", "--pids-limit", "-1", name)
    assert cgroup(berthd, name)["pids"] == "max"
    assert inspect_container(berthd, name)["HostConfig"]["PidsLimit"] == 0


def test_update_stopped_container_applies_at_start(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("upd")
    cleanup.append(name)
    berthd.docker("create", "--name", name, "busybox", "sleep", "600")
    check_update_output(berthd.docker("update", *UPDATE, name), name)
    assert host_config(berthd, name) == EXPECTED_HC
    berthd.docker("start", name)
    assert cgroup(berthd, name) == expected_cgroup()


def test_update_survives_a_berthd_restart(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    d.docker("run", "-d", "--name", "kept", "busybox", "sleep", "600")
    d.docker("update", *UPDATE, "kept")
    cid = d.docker("inspect", "-f", "{{.Id}}", "kept").stdout.strip()
    saved = json.loads((d.data_root / "containers" / cid / "hostconfig.json").read_text())
    assert (saved["Memory"], saved["NanoCpus"], saved["PidsLimit"]) == (64 * MB, 500_000_000, 100)
    assert d.stop() == 0
    d.start()
    assert host_config(d, "kept") == EXPECTED_HC
    d.docker("start", "kept")
    assert cgroup(d, "kept") == expected_cgroup()
    d.docker("rm", "-f", "kept")


def test_new_restart_policy_holds_at_the_next_exit(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("upd")
    cleanup.append(name)
    berthd.docker(
        "run", "-d", "--name", name, "busybox",
        "sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.05; done; rm /tmp/die; exit 3",
    )  # fmt: skip
    berthd.docker("update", "--restart", "always", name)
    # Detached: the container exits ~50 ms after the touch, and its exit takes its exec
    # instances along (as moby's Cleanup does), so an attached exec's closing inspect for
    # the exit code could find none ("No such exec instance") on a slow machine.
    berthd.docker("exec", "-d", name, "touch", "/tmp/die")
    state = wait_for(
        lambda: (
            (s := inspect_container(berthd, name))["RestartCount"] == 1
            and s["State"]["Running"]
            and not s["State"]["Restarting"]
            and s
        ),
        what="the restart the new policy asks for",
    )
    assert state["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "4m"], "Error response from daemon: Minimum memory limit allowed is 6MB"),
        (
            ["--memory", "64m", "--memory-swap", "32m"],
            "Error response from daemon: Minimum memoryswap limit should be larger than memory "
            "limit, see usage",
        ),
        (
            ["--cpus", "0.5", "--cpu-quota", "50000"],
            "Error response from daemon: Conflicting options: Nano CPUs and CPU Quota cannot "
            "both be set",
        ),
        (
            ["--cpus", "0.5", "--cpu-period", "50000"],
            "Error response from daemon: Conflicting options: Nano CPUs and CPU Period cannot "
            "both be set",
        ),
        (["--cpus", "64"], "Error response from daemon: range of CPUs is from 0.01 to"),
        (
            ["--cpu-quota", "500"],
            "Error response from daemon: CPU cfs quota can not be less than 1ms (i.e. 1000)",
        ),
        # dockerd: "Requested CPUs are not available - requested 4096, available: 0-1"
        (["--cpuset-cpus", "4096"], "Error response from daemon: Requested CPU"),
        (
            ["--memory-reservation", "1m"],
            "Error response from daemon: Minimum memory reservation allowed is 6MB",
        ),
        (
            ["--restart", "always:3"],
            "Error response from daemon: invalid restart policy: maximum retry count can only be "
            "used with 'on-failure'",
        ),
    ],
)
def test_refused(berthd: Berthd, cleanup: list[str], args: list[str], message: str) -> None:
    name = unique_name("upd")
    cleanup.append(name)
    berthd.docker("create", "--name", name, "busybox", "sleep", "600")
    before = inspect_container(berthd, name)["HostConfig"]
    proc = berthd.docker("update", *args, name, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr
    assert inspect_container(berthd, name)["HostConfig"] == before
    status, _, body = berthd.request(
        "POST", f"/containers/{name}/update", b'{"Memory": 1048576}',
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert (status, json.loads(body)) == (400, {"message": "Minimum memory limit allowed is 6MB"})


def test_conflicts_with_the_containers_own_settings(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("upd")
    cleanup.append(name)
    cid = berthd.docker(
        "run", "-d", "--rm", "--name", name, "--cpu-quota", "50000", "busybox", "sleep", "600"
    ).stdout.strip()  # fmt: skip
    for args, message in (
        (
            ["--restart", "always"],
            "Restart policy cannot be updated because AutoRemove is enabled for the container",
        ),
        (["--cpus", "0.5"], "Conflicting options: Nano CPUs cannot be updated as CPU Quota has "
         "already been set"),
        (["--memory", "64m"], "Memory limit should be smaller than already set memoryswap limit, "
         "update the memoryswap at the same time"),
    ):  # fmt: skip
        proc = berthd.docker("update", *args, name, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"Error response from daemon: Cannot update container {cid}: {message}"
        )
    berthd.docker("update", "--restart", "no", name)  # "no" goes with --rm
    status, _, body = berthd.request(
        "POST", f"/containers/{name}/update", b'{"CpuShares": 512}',
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert (status, json.loads(body)) == (200, {"Warnings": None})
    assert cgroup(berthd, name)["shares"] == "512"
    status, _, _ = berthd.request(
        "POST", f"/containers/{name}/update", b'{"RestartPolicy": {"Name": "always"}}',
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 409


def test_missing_container_and_removed_kernel_memory(berthd: Berthd, cleanup: list[str]) -> None:
    proc = berthd.docker("update", "--cpu-shares", "512", "nonesuch-upd", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error response from daemon: No such container: nonesuch-upd"
    name = unique_name("upd")
    cleanup.append(name)
    berthd.docker("create", "--name", name, "busybox", "sleep", "600")
    # KernelMemory left the API in 1.42: the CLI (1.50) sends it, the daemon ignores it.
    berthd.docker("update", "--kernel-memory", "64m", name)
    assert inspect_container(berthd, name)["HostConfig"].get("KernelMemory", 0) == 0
