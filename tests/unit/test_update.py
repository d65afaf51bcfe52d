"""``docker update``: the checks of a request, its merge into a container's HostConfig,
the resources a running task gets, and the operation on a daemon over the fake runtime
(persisted, applied live, rolled back when the runtime refuses)."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.container.container import Container
from berth.daemon.update import live_resources, merge, verify_update
from berth.daemon.validate import SysInfo
from berth.types.container import HostConfig, RestartPolicy, UpdateConfig
from tests.unit.daemonharness import (
    PROGRAMS,
    Harness,
    open_fds_under,
    rootfs_tar,
    wait_until,
)
from tests.unit.fakeruntime import FakeRuntime

MB = 1024 * 1024
ALL = SysInfo()


def request(**fields: Any) -> HostConfig:
    return UpdateConfig(**fields).host_config()


# -- the checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory": 4 * MB}, "Minimum memory limit allowed is 6MB"),
        (
            {"memory": 64 * MB, "memory_swap": 32 * MB},
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            {"nano_cpus": 500_000_000, "cpu_period": 100_000},
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ),
        (
            {"nano_cpus": 500_000_000, "cpu_quota": 50_000},
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ),
        ({"nano_cpus": 1000 * 1_000_000_000}, "range of CPUs is from 0.01 to 2.00"),
        ({"cpu_quota": 500}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
        ({"blkio_weight": 5}, "Range of blkio weight is from 10 to 1000"),
        ({"memory_reservation": MB}, "Minimum memory reservation allowed is 6MB"),
        (
            {"restart_policy": RestartPolicy("always", 3)},
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        ({"restart_policy": RestartPolicy("sometimes")}, "invalid restart policy: unknown policy"),
        ({"cpuset_cpus": "1-0"}, "Invalid value 1-0 for cpuset cpus"),
    ],
)
def test_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        verify_update(request(**fields), 2, ALL)
    assert str(exc.value).startswith(message)


def test_swap_alone_is_an_update() -> None:
    """A create refuses a swap limit without a memory limit; an update takes it (the memory
    limit it goes with is the container's)."""
    hc = request(memory_swap=256 * MB)
    assert verify_update(hc, 2, ALL) == []
    assert hc.memory_swap == 256 * MB


@pytest.mark.parametrize("value", [0, -1, -5])
def test_unlimited_pids_kept_as_zero(value: int) -> None:
    hc = request(pids_limit=value)
    verify_update(hc, 2, ALL)
    assert hc.pids_limit == 0


def test_unsupported_limits_discarded_with_dockerds_warnings() -> None:
    info = SysInfo(blkio_weight=False, swap_limit=False, cpuset=False)
    hc = request(blkio_weight=300, memory=64 * MB, memory_swap=128 * MB, cpuset_cpus="0")
    warnings = verify_update(hc, 2, info)
    assert warnings == [
        "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
        "Memory limited without swap.",
        "Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded.",
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded.",
    ]
    assert (hc.blkio_weight, hc.memory, hc.memory_swap, hc.cpuset_cpus) == (0, 64 * MB, -1, "")


def test_no_cfs_refuses_cpus() -> None:
    with pytest.raises(errdefs.InvalidParameter, match="NanoCPUs can not be set"):
        verify_update(request(nano_cpus=500_000_000), 2, SysInfo(cpu_cfs=False))


# -- the merge ----------------------------------------------------------------------------------
def test_merge_sets_only_what_the_request_sets() -> None:
    current = HostConfig(memory=64 * MB, memory_swap=128 * MB, cpu_shares=1024, pids_limit=50)
    current.restart_policy = RestartPolicy("no")
    update = request(cpu_shares=512, cpuset_cpus="0", restart_policy=RestartPolicy("on-failure", 3))
    merged = merge(current, update)
    assert (merged.memory, merged.memory_swap, merged.cpu_shares, merged.cpuset_cpus) == (
        64 * MB,
        128 * MB,
        512,
        "0",
    )
    assert merged.pids_limit == 50
    assert merged.restart_policy == RestartPolicy("on-failure", 3)
    assert current.cpu_shares == 1024 and current.restart_policy == RestartPolicy("no")
    assert merged.restart_policy is not update.restart_policy


def test_merge_pids_unlimited_and_empty_policy() -> None:
    current = HostConfig(pids_limit=50, restart_policy=RestartPolicy("always"))
    merged = merge(current, request(pids_limit=0))
    assert merged.pids_limit == 0
    assert merged.restart_policy == RestartPolicy("always")


@pytest.mark.parametrize(
    ("current", "fields", "message"),
    [
        (
            {"cpu_period": 100_000},
            {"nano_cpus": 500_000_000},
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        ),
        (
            {"cpu_quota": 50_000},
            {"nano_cpus": 500_000_000},
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        ),
        (
            {"nano_cpus": 500_000_000},
            {"cpu_period": 100_000},
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        ),
        (
            {"nano_cpus": 500_000_000},
            {"cpu_quota": 50_000},
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        ),
        (
            {},  # no limit yet: its swap limit is 0
            {"memory": 64 * MB},
            "Memory limit should be smaller than already set memoryswap limit, update the "
            "memoryswap at the same time",
        ),
        (
            {"memory": 64 * MB, "memory_swap": 128 * MB},
            {"memory": 256 * MB},
            "Memory limit should be smaller than already set memoryswap limit",
        ),
        (
            {"auto_remove": True},
            {"restart_policy": RestartPolicy("always")},
            "Restart policy cannot be updated because AutoRemove is enabled for the container",
        ),
    ],
)
def test_merge_conflicts(current: dict[str, Any], fields: dict[str, Any], message: str) -> None:
    with pytest.raises(errdefs.Conflict) as exc:
        merge(HostConfig(**current), request(**fields))
    assert str(exc.value).startswith(message)


def test_merge_memory_within_swap_and_no_policy_with_auto_remove() -> None:
    current = HostConfig(memory=64 * MB, memory_swap=128 * MB, auto_remove=True)
    merged = merge(current, request(memory=100 * MB, restart_policy=RestartPolicy("no")))
    assert merged.memory == 100 * MB
    assert merged.memory_swap == 128 * MB


# -- what a running task gets ---------------------------------------------------------------------
def test_live_resources_as_the_spec_spells_them() -> None:
    hc = request(
        memory=64 * MB,
        memory_swap=128 * MB,
        nano_cpus=500_000_000,
        cpu_shares=512,
        cpuset_cpus="0",
        pids_limit=100,
        blkio_weight=300,
        memory_swappiness=10,  # not an update's: left out
        oom_kill_disable=True,
    )
    assert live_resources(hc) == {
        "memory": {"limit": 64 * MB, "swap": 128 * MB},
        "cpu": {"shares": 512, "quota": 50_000, "period": 100_000, "cpus": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300},
    }


def test_live_resources_unlimited_pids_and_nothing() -> None:
    assert live_resources(request(pids_limit=0)) == {"pids": {"limit": -1}}
    assert live_resources(request(restart_policy=RestartPolicy("always"))) == {}


# -- on a daemon ----------------------------------------------------------------------------------
@pytest.fixture
def h() -> Iterator[Harness]:
    before = set(threading.enumerate())
    root = Path(tempfile.mkdtemp(prefix="berth-update-"))
    fake = FakeRuntime(PROGRAMS)
    harness = Harness(root, fake, rootfs_tar(root / "rootfs.tar"))
    try:
        yield harness
    finally:
        harness.close()
        fake.shutdown()
        wait_until(lambda: not (set(threading.enumerate()) - before), "the test's threads")
        assert open_fds_under(root) == []
        shutil.rmtree(root, ignore_errors=True)


def on_disk(c: Container) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((c.root / "hostconfig.json").read_text())
    return data


FULL = UpdateConfig(
    memory=64 * MB,
    memory_swap=128 * MB,
    nano_cpus=500_000_000,
    cpu_shares=512,
    cpuset_cpus="0",
    pids_limit=100,
    restart_policy=RestartPolicy("on-failure", 3),
)


def test_update_running(h: Harness) -> None:
    fake: FakeRuntime = h.fake
    c = h.run_container("server")
    assert h.d.update_container(c.id[:12], FULL) == []
    assert fake.updated == [
        (
            c.id,
            {
                "memory": {"limit": 64 * MB, "swap": 128 * MB},
                "cpu": {"shares": 512, "quota": 50_000, "period": 100_000, "cpus": "0"},
                "pids": {"limit": 100},
            },
        )
    ]
    saved = on_disk(c)
    assert (saved["Memory"], saved["MemorySwap"], saved["NanoCpus"]) == (
        64 * MB,
        128 * MB,
        500_000_000,
    )
    assert (saved["CpuShares"], saved["CpusetCpus"], saved["PidsLimit"]) == (512, "0", 100)
    assert saved["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    snap = h.d.view.snapshot().get(c.id)
    assert snap is not None and snap.host_config.memory == 64 * MB
    past, sub = h.d.events.subscribe(lambda m: m.actor_id == c.id, lambda: None, 0)
    h.d.events.unsubscribe(sub)
    assert [m.action for m in past][-1] == "update"


def test_update_stopped_applies_at_start(h: Harness) -> None:
    fake: FakeRuntime = h.fake
    c = h.create("server")
    h.d.update_container(c.id, FULL)
    assert fake.updated == []
    assert on_disk(c)["Memory"] == 64 * MB
    h.d.start_container(c.id)
    assert c.host_config.pids_limit == 100


def test_update_refused_by_the_runtime_rolls_back(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = h.run_container("server")
    before = on_disk(c)

    def refuse(container_id: str, resources: dict[str, Any]) -> None:
        raise errdefs.System("failed to write 4194304 to memory.limit_in_bytes: device busy")

    monkeypatch.setattr(h.fake, "update", refuse)
    with pytest.raises(errdefs.System) as exc:
        h.d.update_container(c.id, UpdateConfig(memory=8 * MB, memory_swap=16 * MB))
    assert str(exc.value) == (
        f"Cannot update container {c.id}: failed to write 4194304 to memory.limit_in_bytes: "
        "device busy"
    )
    assert on_disk(c) == before
    assert c.host_config.memory == 0
    snap = h.d.view.snapshot().get(c.id)
    assert snap is not None and snap.host_config.memory == 0


def test_update_conflicts_name_the_container(h: Harness) -> None:
    c = h.create("server", auto_remove=True)
    with pytest.raises(errdefs.Conflict) as exc:
        h.d.update_container(c.id, UpdateConfig(restart_policy=RestartPolicy("always")))
    assert str(exc.value) == (
        f"Cannot update container {c.id}: Restart policy cannot be updated because AutoRemove "
        "is enabled for the container"
    )
    with pytest.raises(errdefs.InvalidParameter, match="Minimum memory limit allowed is 6MB"):
        h.d.update_container(c.id, UpdateConfig(memory=MB))
    with pytest.raises(errdefs.NotFound):
        h.d.update_container("nonesuch", UpdateConfig(cpu_shares=512))


def test_new_policy_holds_at_the_next_exit(h: Harness) -> None:
    fake: FakeRuntime = h.fake
    c = h.run_container("server")
    h.d.update_container(c.id, UpdateConfig(restart_policy=RestartPolicy("always")))
    assert fake.updated == []  # nothing for the cgroup
    first = c.state.pid
    fake.exit(c.id, 3)
    wait_until(lambda: c.state.running and c.state.pid not in (0, first), "the restart")
    assert c.record.restart_count == 1
