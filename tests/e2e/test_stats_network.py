"""``docker stats`` and ``GET /containers/{id}/stats``: the ``networks`` section, as dockerd
sends it for a container with a network namespace of its own, and leaves out for ``none``."""

from __future__ import annotations

import json

from berth.testing import Berthd, unique_name
from berth.testing import inspect_container as inspect

COUNTERS = [
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
]


def one_shot(d: Berthd, cid: str) -> dict[str, object]:
    status, _, body = d.request("GET", f"/containers/{cid}/stats?stream=false&one-shot=true")
    assert status == 200, body
    out: dict[str, object] = json.loads(body)
    return out


def test_stats_count_the_traffic_of_a_bridged_container(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("netstats")
    cleanup.append(name)
    cid = berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "300").stdout.strip()
    gateway = inspect(berthd, cid)["NetworkSettings"]["Gateway"]
    assert gateway
    berthd.docker("exec", cid, "ping", "-c", "3", "-i", "0.2", "-W", "2", gateway)

    net_io = berthd.docker("stats", "--no-stream", "--format", "{{.NetIO}}", cid).stdout.strip()
    assert net_io and net_io != "0B / 0B"

    stats = one_shot(berthd, cid)
    assert list(stats)[-1] == "networks"  # after name and id, as dockerd's StatsJSON
    networks = stats["networks"]
    assert isinstance(networks, dict) and list(networks) == ["eth0"]
    eth0 = networks["eth0"]
    assert list(eth0) == COUNTERS
    # three echo replies (and the ARP exchange) in, three requests out
    assert eth0["rx_packets"] >= 3 and eth0["tx_packets"] >= 3
    assert eth0["rx_bytes"] >= 3 * 84 and eth0["tx_bytes"] >= 3 * 84  # 84-byte IP packets

    # the stream's samples carry it too, and a stopped container's has none
    status, _, body = berthd.request("GET", f"/containers/{cid}/stats?stream=false")
    assert status == 200 and json.loads(body)["networks"]["eth0"]["rx_packets"] >= 3
    berthd.docker("stop", "-t", "0", cid)
    assert "networks" not in one_shot(berthd, cid)


def test_stats_have_no_networks_without_a_network_of_berths(
    berthd: Berthd, cleanup: list[str]
) -> None:
    name = unique_name("nonet")
    cleanup.append(name)
    cid = berthd.docker(
        "run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "300"
    ).stdout.strip()
    # traffic on its loopback is no interface of a network
    berthd.docker("exec", cid, "ping", "-c", "2", "-i", "0.2", "-W", "2", "127.0.0.1")
    stats = one_shot(berthd, cid)
    assert stats["read"] != "0001-01-01T00:00:00Z"  # a sample of the running container
    assert "networks" not in stats
    net_io = berthd.docker("stats", "--no-stream", "--format", "{{.NetIO}}", cid).stdout.strip()
    assert net_io == "0B / 0B"
