"""``docker stats``: containerd's cgroup v1 metrics → the Engine API's stats object."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from berth import errdefs
from berth.container.container import Container
from berth.daemon.stats import (
    BLKIO_KEYS,
    MEMORY_STAT_KEYS,
    NETWORK_KEYS,
    Counters,
    Sampler,
    engine_sample,
    namespace_counters,
    network_counters,
    parse_net_dev,
    system_cpu,
    with_previous,
)
from berth.types.container import Config, HostConfig
from berth.utils.timefmt import ZERO_TIME, parse_rfc3339
from tests.unit.daemonharness import PROGRAMS, Harness, rootfs_tar
from tests.unit.fakeruntime import FakeRuntime

GIB = 1 << 30
UNLIMITED = 9223372036854771712  # what cgroup v1 reports for no limit

#: Metrics of a busy busybox under ``--memory 64m``, as berth's runtime returned them:
#: int64 as strings, zero fields left out, an all-empty blkio as {}.
METRICS: dict[str, Any] = {
    "pids": {"current": "1"},
    "cpu": {
        "usage": {
            "total": "2491502889",
            "user": "2480000000",
            "per_cpu": ["24913651", "2466589238"],
        },
        "throttling": {},
    },
    "memory": {
        "rss": "57344",
        "pg_pg_in": "780",
        "pg_pg_out": "766",
        "pg_fault": "1062",
        "inactive_anon": "53248",
        "active_anon": "4096",
        "hierarchical_memory_limit": "67108864",
        "hierarchical_swap_limit": "134217728",
        "total_rss": "57344",
        "total_pg_pg_in": "780",
        "total_pg_pg_out": "766",
        "total_pg_fault": "1062",
        "total_inactive_anon": "53248",
        "total_active_anon": "4096",
        "usage": {"limit": "67108864", "usage": "790528", "max": "3805184"},
        "swap": {"limit": "134217728", "usage": "790528", "max": "3805184"},
        "kernel": {"limit": str(UNLIMITED), "usage": "286720", "max": "593920"},
        "kernel_tcp": {"limit": str(UNLIMITED)},
    },
    "blkio": {},
    "memory_oom_control": {},
}

PROC_STAT = """\
cpu  2000 10 500 300000 40 0 25 7 0 0
cpu0 1000 5 250 150000 20 0 12 3 0 0
cpu1 1000 5 250 150000 20 0 13 4 0 0
intr 123456 0 0
ctxt 98765
btime 1700000000
"""

TOP_KEYS = [
    "read",
    "preread",
    "pids_stats",
    "blkio_stats",
    "num_procs",
    "storage_stats",
    "cpu_stats",
    "precpu_stats",
    "memory_stats",
    "name",
    "id",
]


def sample(metrics: Mapping[str, Any], machine_memory: int = 16 * GIB) -> dict[str, Any]:
    return engine_sample(
        metrics,
        read_ns=1_700_000_000_123_456_789,
        system_usage=3_025_750_000_000,
        online_cpus=2,
        machine_memory=machine_memory,
    )


# -- /proc/stat ------------------------------------------------------------------------------
def test_system_cpu_sums_seven_fields_in_nanoseconds_and_counts_cpus() -> None:
    # user+nice+system+idle+iowait+irq+softirq (not steal), at 100 ticks a second
    assert system_cpu(PROC_STAT) == ((2000 + 10 + 500 + 300000 + 40 + 0 + 25) * 10_000_000, 2)


def test_system_cpu_rejects_a_short_cpu_line() -> None:
    with pytest.raises(ValueError):
        system_cpu("cpu  1 2 3\n")


def test_system_cpu_of_the_real_host() -> None:
    with open("/proc/stat") as f:
        usage, online = system_cpu(f.read())
    assert usage > 0 and online >= 1


# -- one sample ------------------------------------------------------------------------------
def test_sample_of_a_running_container_maps_as_moby() -> None:
    s = sample(METRICS)
    assert s["read"] == "2023-11-14T22:13:20.123456789Z"
    assert s["pids_stats"] == {"current": 1}
    # blkio present but empty: every list is [] (Go's non-nil, zero-length slices)
    assert s["blkio_stats"] == {key: [] for key in BLKIO_KEYS}
    assert s["num_procs"] == 0 and s["storage_stats"] == {}
    assert s["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 2491502889,
            "percpu_usage": [24913651, 2466589238],
            "usage_in_kernelmode": 0,
            "usage_in_usermode": 2480000000,
        },
        "system_cpu_usage": 3_025_750_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    mem = s["memory_stats"]
    assert list(mem) == ["usage", "max_usage", "stats", "limit"]  # failcnt 0: left out
    assert mem["usage"] == 790528 and mem["max_usage"] == 3805184 and mem["limit"] == 64 << 20
    stats = mem["stats"]
    assert list(stats) == sorted(MEMORY_STAT_KEYS)  # all 32 keys, zeros included, sorted
    assert len(stats) == 32
    assert stats["pgpgin"] == 780 and stats["total_pgfault"] == 1062
    assert stats["hierarchical_memsw_limit"] == 134217728
    assert stats["cache"] == 0 and stats["total_inactive_file"] == 0
    assert all(isinstance(v, int) for v in stats.values())


def test_unlimited_memory_is_capped_at_the_hosts() -> None:
    metrics = copy.deepcopy(METRICS)
    metrics["memory"]["usage"]["limit"] = str(UNLIMITED)
    assert sample(metrics, machine_memory=8 * GIB)["memory_stats"]["limit"] == 8 * GIB
    # an unknown host size leaves the kernel's number
    assert sample(metrics, machine_memory=0)["memory_stats"]["limit"] == UNLIMITED


def test_blkio_entries_and_throttling() -> None:
    metrics = copy.deepcopy(METRICS)
    metrics["blkio"] = {
        "io_service_bytes_recursive": [
            {"major": "8", "op": "Read", "value": "4096"},
            {"major": "8", "minor": "16", "op": "Write", "device": "/dev/sdb"},
        ],
        "io_queued_recursive": [{"major": "8", "op": "Total"}],
    }
    metrics["cpu"]["throttling"] = {"periods": "10", "throttled_periods": "3"}
    s = sample(metrics)
    blkio = s["blkio_stats"]
    assert list(blkio) == list(BLKIO_KEYS)
    assert blkio["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 16, "op": "Write", "value": 0},
    ]
    assert blkio["io_queue_recursive"] == [{"major": 8, "minor": 0, "op": "Total", "value": 0}]
    assert blkio["sectors_recursive"] == []
    assert s["cpu_stats"]["throttling_data"] == {
        "periods": 10,
        "throttled_periods": 3,
        "throttled_time": 0,
    }


def test_missing_sections_keep_gos_zero_values() -> None:
    s = sample({})
    assert s["pids_stats"] == {}
    assert s["blkio_stats"] == dict.fromkeys(BLKIO_KEYS)  # nil slices: null
    assert s["memory_stats"] == {}
    # the host's numbers are added to every sample read
    assert s["cpu_stats"] == {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": 3_025_750_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def test_memory_without_usage_has_only_the_raw_stats() -> None:
    s = sample({"memory": {"cache": "8192"}, "cpu": {"usage": {}}})
    assert list(s["memory_stats"]) == ["stats"]
    assert s["memory_stats"]["stats"]["cache"] == 8192
    assert "percpu_usage" not in s["cpu_stats"]["cpu_usage"]


def test_json_shape_of_the_full_object() -> None:
    first = sample(METRICS)
    obj = with_previous(sample(METRICS), first, "/busy", "c" * 64)
    assert list(obj) == TOP_KEYS
    assert "networks" not in obj
    assert obj["preread"] == first["read"] and obj["precpu_stats"] == first["cpu_stats"]
    decoded = msgspec.json.decode(msgspec.json.encode(obj))
    assert decoded == obj
    fresh = with_previous(first, None, "/busy", "c" * 64)
    assert fresh["preread"] == ZERO_TIME
    assert fresh["precpu_stats"] == {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


# -- the sampler ------------------------------------------------------------------------------
class Probe:
    """A container as the sampler sees it: its name and metrics, or gone."""

    def __init__(self) -> None:
        self.state: tuple[str, Mapping[str, Any] | None] | None = ("/busy", METRICS)

    def __call__(self) -> tuple[str, Mapping[str, Any] | None] | None:
        return self.state


def test_sampler_carries_the_previous_sample() -> None:
    probe = Probe()
    sampler = Sampler("c" * 64, "/busy", probe, 16 * GIB, proc_stat=lambda: PROC_STAT)
    one = sampler.sample()
    two = sampler.sample()
    assert one is not None and two is not None
    assert one["preread"] == ZERO_TIME and one["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert two["preread"] == one["read"]
    assert parse_rfc3339(two["read"]) >= parse_rfc3339(one["read"])
    assert two["precpu_stats"] == one["cpu_stats"]
    assert two["name"] == "/busy" and two["id"] == "c" * 64

    probe.state = ("/renamed", None)  # stopped (and renamed): zeroed, like moby's collector
    three = sampler.sample()
    assert three is not None
    assert three["read"] == ZERO_TIME and three["preread"] == two["read"]
    assert three["precpu_stats"] == two["cpu_stats"]
    assert three["memory_stats"] == {} and three["pids_stats"] == {}
    assert three["blkio_stats"] == dict.fromkeys(BLKIO_KEYS)
    assert three["name"] == "/renamed"

    probe.state = None  # removed: the stream ends
    assert sampler.sample() is None


def test_sampler_empty_is_dockerds_answer_for_a_stopped_container() -> None:
    sampler = Sampler("c" * 64, "/busy", Probe(), 16 * GIB, proc_stat=lambda: PROC_STAT)
    empty = sampler.empty()
    assert list(empty) == TOP_KEYS
    assert empty["read"] == empty["preread"] == ZERO_TIME
    assert "system_cpu_usage" not in empty["cpu_stats"]


def test_sampler_without_proc_stat_gives_a_zeroed_sample() -> None:
    def broken() -> str:
        raise OSError("no /proc")

    sampler = Sampler("c" * 64, "/busy", Probe(), 16 * GIB, proc_stat=broken)
    out = sampler.sample()
    assert out is not None and out["read"] == ZERO_TIME


# -- the daemon ------------------------------------------------------------------------------
@pytest.fixture
def h() -> Iterator[Harness]:
    root = Path(tempfile.mkdtemp(prefix="berth-stats-"))
    fake = FakeRuntime(PROGRAMS)
    try:
        harness = Harness(root, fake, rootfs_tar(root / "rootfs.tar"))
        try:
            yield harness
        finally:
            harness.close()
    finally:
        fake.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def test_daemon_samples_a_running_container_until_it_is_removed(h: Harness) -> None:
    c = h.run_container("server", name="busy")
    h.fake.metrics[c.id] = METRICS
    sampler = h.d.container_stats("busy")
    live = sampler.sample()
    assert live is not None
    assert live["id"] == c.id and live["name"] == "/busy"
    assert live["pids_stats"] == {"current": 1}
    assert live["memory_stats"]["limit"] == 64 << 20
    assert live["cpu_stats"]["system_cpu_usage"] > 0 and live["cpu_stats"]["online_cpus"] >= 1
    again = sampler.sample()
    assert again is not None and again["preread"] == live["read"]

    h.fake.exit(c.id, 0)
    h.wait_exited(c)
    stopped = sampler.sample()
    assert stopped is not None and stopped["read"] == ZERO_TIME
    assert stopped["precpu_stats"] == again["cpu_stats"]

    h.d.remove_container(c.id, False, False, False)
    assert sampler.sample() is None
    past, sub = h.d.events.subscribe(lambda m: True, lambda: None, 0)
    h.d.events.unsubscribe(sub)
    assert [m.action for m in past if m.actor_id == c.id] == ["create", "start", "die", "destroy"]


def test_daemon_stats_of_an_unknown_container_is_not_found(h: Harness) -> None:
    with pytest.raises(errdefs.NotFound):
        h.d.container_stats("nothing-like-this")


# -- networks ----------------------------------------------------------------------------------
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     336       4    0    0    0     0          0         0      336       4    0    0    0     0       0          0
  eth0:    2046      23    1    2    0     0          0         0     1174      13    3    4    0     0       0          0
  eth1: 18446744073709551615 7 0 0 0 0 0 0 9 8 0 0 0 0 0 0
"""

ETH0 = {
    "rx_bytes": 2046,
    "rx_packets": 23,
    "rx_errors": 1,
    "rx_dropped": 2,
    "tx_bytes": 1174,
    "tx_packets": 13,
    "tx_errors": 3,
    "tx_dropped": 4,
}


def test_parse_net_dev_maps_the_columns_and_leaves_out_loopback() -> None:
    out = parse_net_dev(NET_DEV)
    assert list(out) == ["eth0", "eth1"]
    assert out["eth0"] == ETH0 and list(out["eth0"]) == list(NETWORK_KEYS)
    assert out["eth1"]["rx_bytes"] == 2**64 - 1  # uint64, as Go's
    assert out["eth1"]["tx_packets"] == 8
    assert parse_net_dev("") == {} and parse_net_dev(NET_DEV.splitlines()[0]) == {}


def test_namespace_counters_through_a_process_in_the_namespace() -> None:
    # this process is in the namespace at /proc/self/ns/net: its counters, lo left out
    out = namespace_counters(os.getpid(), "/proc/self/ns/net")
    assert out is not None and "lo" not in out
    with open("/proc/self/net/dev") as f:
        assert out == parse_net_dev(f.read())


def test_namespace_counters_refuse_a_process_of_another_namespace(tmp_path: Path) -> None:
    not_a_namespace = tmp_path / "ns"
    not_a_namespace.write_text("")
    assert namespace_counters(os.getpid(), str(not_a_namespace)) is None
    assert namespace_counters(os.getpid(), str(tmp_path / "gone")) is None
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert namespace_counters(gone.pid, "/proc/self/ns/net") is None  # reaped: no /proc entry


def _container(cid: str, mode: str, sandbox_key: str = "", pid: int = 0) -> Container:
    return cast(
        Container,
        SimpleNamespace(
            id=cid,
            host_config=SimpleNamespace(network_mode=mode),
            record=SimpleNamespace(network_settings=SimpleNamespace(sandbox_key=sandbox_key)),
            state=SimpleNamespace(pid=pid),
        ),
    )


class Netlink:
    """The controller's ``interface_stats`` as the fallback sees it."""

    def __init__(self, answer: Counters | None = None) -> None:
        self.calls: list[str] = []
        self.answer = answer if answer is not None else {"eth0": dict(ETH0)}

    def __call__(self, container_id: str) -> Counters:
        self.calls.append(container_id)
        return self.answer


def test_network_counters_only_for_a_namespace_made_by_berth() -> None:
    netlink = Netlink()
    for mode in ("host", "none"):  # no sandbox of berth's: nothing to report, nothing asked
        assert network_counters(_container("a" * 64, mode), lambda _: None, netlink) == {}
    assert netlink.calls == []


def test_network_counters_read_through_the_process_when_it_is_in_the_namespace() -> None:
    netlink = Netlink()
    me = _container("a" * 64, "bridge", "/proc/self/ns/net", os.getpid())
    with open("/proc/self/net/dev") as f:
        assert network_counters(me, lambda _: None, netlink) == parse_net_dev(f.read())
    assert netlink.calls == []


def test_network_counters_fall_back_to_netlink_when_the_process_is_elsewhere(
    tmp_path: Path,
) -> None:
    (tmp_path / "ns").write_text("")
    netlink = Netlink()
    for pid in (0, os.getpid()):  # no process yet; one that is not in the namespace
        c = _container("a" * 64, "bridge", str(tmp_path / "ns"), pid)
        assert network_counters(c, lambda _: None, netlink) == {"eth0": ETH0}
    assert netlink.calls == ["a" * 64] * 2


def test_network_counters_of_a_joined_namespace_are_its_owners() -> None:
    owner = _container("b" * 64, "mynet", "/proc/self/ns/net", 4242)
    joined = _container("a" * 64, "container:" + "b" * 64, "", os.getpid())
    by_id = {owner.id: owner}.get
    netlink = Netlink()
    with open("/proc/self/net/dev") as f:
        assert network_counters(joined, by_id, netlink) == parse_net_dev(f.read())
    # through the owner's namespace by netlink when the joined process cannot be read
    joined.state.pid = 0
    assert network_counters(joined, by_id, netlink) == {"eth0": ETH0}
    assert netlink.calls == ["b" * 64]
    # joined to a host (or none) container, or to one that is gone: nothing
    assert network_counters(joined, {owner.id: _container(owner.id, "host")}.get, netlink) == {}
    assert network_counters(joined, lambda _: None, netlink) == {}


def test_sampler_adds_networks_last_sorted_and_only_while_running() -> None:
    probe = Probe()
    answer: Counters = {
        "eth1": dict.fromkeys(NETWORK_KEYS, 1),
        "eth0": {**ETH0, "rx_bytes": 7},
        "eth10": {},
    }
    sampler = Sampler(
        "c" * 64, "/busy", probe, 16 * GIB, proc_stat=lambda: PROC_STAT, networks=lambda: answer
    )
    one = sampler.sample()
    assert one is not None
    assert list(one) == [*TOP_KEYS, "networks"]
    nets = one["networks"]
    assert list(nets) == ["eth0", "eth1", "eth10"]  # Go writes a map's keys sorted
    assert nets["eth0"] == {**ETH0, "rx_bytes": 7} and list(nets["eth0"]) == list(NETWORK_KEYS)
    assert nets["eth10"] == dict.fromkeys(NETWORK_KEYS, 0)
    assert msgspec.json.decode(msgspec.json.encode(one)) == one

    answer.clear()  # a namespace without interfaces: dockerd's empty map, left out
    two = sampler.sample()
    assert two is not None and "networks" not in two

    probe.state = ("/busy", None)  # stopped: the zeroed sample has no networks
    answer["eth0"] = dict(ETH0)
    three = sampler.sample()
    assert three is not None and "networks" not in three
    assert "networks" not in sampler.empty()


def test_sampler_without_network_counters_still_samples() -> None:
    def broken() -> Counters:
        raise errdefs.System("interface counters in /run/x: no such namespace")

    sampler = Sampler(
        "c" * 64, "/busy", Probe(), 16 * GIB, proc_stat=lambda: PROC_STAT, networks=broken
    )
    out = sampler.sample()
    assert out is not None and out["read"] != ZERO_TIME and "networks" not in out


def _start(h: Harness, name: str, network_mode: str) -> Container:
    cfg = Config(image="rootfs:latest", cmd=["server"])
    resp = h.d.create_container(name, cfg, HostConfig(network_mode=network_mode), None, "")
    h.d.start_container(resp.Id)
    c = h.d.containers[resp.Id]
    h.fake.metrics[c.id] = METRICS
    return c


def test_daemon_stats_have_the_bridge_interface_and_none_for_host_or_none(h: Harness) -> None:
    bridged = _start(h, "bridged", "")
    joined = _start(h, "joined", "container:bridged")
    isolated = _start(h, "isolated", "none")
    on_host = _start(h, "on-host", "host")

    live = h.d.container_stats("bridged").sample()
    assert live is not None and list(live["networks"]) == ["eth0"]
    eth0 = live["networks"]["eth0"]
    assert list(eth0) == list(NETWORK_KEYS) and all(isinstance(v, int) for v in eth0.values())
    # the fake task is no process in the namespace: counted by netlink in it
    later = h.d.networks.interface_stats(bridged.id)
    assert list(later) == ["eth0"] and all(later["eth0"][k] >= v for k, v in eth0.items())

    shared = h.d.container_stats(joined.id).sample()
    assert shared is not None and list(shared["networks"]) == ["eth0"]
    for c in (isolated, on_host):
        s = h.d.container_stats(c.id).sample()
        assert s is not None and s["read"] != ZERO_TIME and "networks" not in s

    h.fake.exit(bridged.id, 0)
    h.wait_exited(bridged)
    stopped = h.d.container_stats("bridged").sample()
    assert stopped is not None and "networks" not in stopped
