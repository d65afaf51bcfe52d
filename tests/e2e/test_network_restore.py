"""Networks, addresses and published ports across berthd restarts (SIGTERM and SIGKILL),
with and without --live-restore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, running_berthd, unique_name
from berth.testing import inspect_container as inspect
from tests.e2e.test_network import can_bind, free_port, http_get, nft_table, wait_http, www


def network(d: Berthd, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(d.docker("network", "inspect", name).stdout)[0]
    return found


@pytest.fixture
def live_berthd(busybox_tar: Path) -> Iterator[Berthd]:
    with running_berthd(["--live-restore"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d
        # a live-restore daemon leaves its containers running at SIGTERM: remove them first
        ids = d.docker("ps", "-aq").stdout.split()
        if ids:
            d.docker("rm", "-f", *ids)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_live_restore_keeps_address_and_published_port(live_berthd: Berthd, how: str) -> None:
    d = live_berthd
    net = unique_name("keep")
    d.docker("network", "create", net)
    net_id = network(d, net)["Id"]
    c = unique_name("web")
    port = free_port()
    d.docker("run", "-d", "--name", c, "--network", net, "-p", f"{port}:80", "busybox", *www(80))
    before = inspect(d, c)
    ep = before["NetworkSettings"]["Networks"][net]
    assert wait_http("127.0.0.1", port) == "ok-80\n"

    if how == "sigterm":
        assert d.stop() == 0
    else:
        d.kill()
    # the container goes on serving while berthd is away
    assert http_get("127.0.0.1", port) == "ok-80\n"
    d.start()

    after = inspect(d, c)
    assert after["State"]["Running"] and after["State"]["Pid"] == before["State"]["Pid"]
    ep2 = after["NetworkSettings"]["Networks"][net]
    for key in ("IPAddress", "MacAddress", "EndpointID", "NetworkID", "Gateway"):
        assert ep2[key] == ep[key], key
    assert after["NetworkSettings"]["Ports"] == before["NetworkSettings"]["Ports"]
    assert network(d, net)["Id"] == net_id
    assert before["Id"] in network(d, net)["Containers"]
    assert wait_http("127.0.0.1", port) == "ok-80\n"
    assert not can_bind(port)  # still held for the container
    assert f"tcp . {port} :" in nft_table(d)

    # nothing is handed out twice: a new container gets another address, the port is taken
    other = unique_name("new")
    d.docker("run", "-d", "--name", other, "--network", net, "busybox", "sleep", "300")
    assert inspect(d, other)["NetworkSettings"]["Networks"][net]["IPAddress"] != ep["IPAddress"]
    proc = d.docker("run", "-d", "--name", unique_name("clash"), "-p", f"{port}:80", "busybox",
                    "sleep", "300", check=False)  # fmt: skip
    assert proc.returncode == 125
    assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in proc.stderr  # dockerd's

    # the name resolution of the network came back with it
    out = d.docker("exec", other, "nslookup", c).stdout
    assert f"Address: {ep['IPAddress']}" in out, out

    # and stopping it afterwards gives everything back
    d.docker("rm", "-f", c)
    assert can_bind(port)
    assert f"tcp . {port} :" not in nft_table(d)


def test_without_live_restore_containers_stop_and_release(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    net = unique_name("keep")
    d.docker("network", "create", "--label", "kept=yes", net)
    before = network(d, net)
    c = unique_name("web")
    port = free_port()
    d.docker("run", "-d", "--name", c, "--network", net, "-p", f"{port}:80", "--stop-timeout", "1",
             "busybox", *www(80))  # fmt: skip
    ip = inspect(d, c)["NetworkSettings"]["Networks"][net]["IPAddress"]
    assert wait_http("127.0.0.1", port) == "ok-80\n"

    assert d.stop() == 0
    d.start()
    st = inspect(d, c)
    assert not st["State"]["Running"] and st["State"]["Status"] == "exited"
    assert st["NetworkSettings"]["Networks"][net]["IPAddress"] == ""
    assert st["NetworkSettings"]["Ports"] in ({}, None)
    assert can_bind(port)
    assert f" {port} :" not in nft_table(d)
    after = network(d, net)
    assert (after["Id"], after["Labels"], after["IPAM"]["Config"]) == (
        before["Id"], before["Labels"], before["IPAM"]["Config"]
    )  # fmt: skip
    assert after["Containers"] == {}
    # the network can be used again, and the container starts with its port
    d.docker("start", c)
    assert wait_http("127.0.0.1", port) == "ok-80\n"
    assert inspect(d, c)["NetworkSettings"]["Networks"][net]["IPAddress"] == ip
    d.docker("rm", "-f", c)
    d.docker("network", "rm", net)


def test_a_killed_daemon_without_live_restore_releases_on_restart(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    net = unique_name("kill")
    d.docker("network", "create", net)
    net_id = network(d, net)["Id"]
    c = unique_name("web")
    port = free_port()
    d.docker("run", "-d", "--name", c, "--network", net, "-p", f"{port}:80", "busybox", *www(80))
    assert wait_http("127.0.0.1", port) == "ok-80\n"
    d.kill()
    d.start()
    # without live restore the container is stopped at start-up, and all of it let go
    st = inspect(d, c)["State"]
    assert not st["Running"]
    assert can_bind(port)
    assert f" {port} :" not in nft_table(d)
    assert network(d, net)["Id"] == net_id
    assert network(d, net)["Containers"] == {}
    d.docker("rm", "-f", c)
    d.docker("network", "rm", net)
