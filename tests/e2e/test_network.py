"""Networking: the default bridge, published ports, user-defined networks with their DNS,
connect/disconnect, masquerade and DNS forwarding — with the docker CLI and docker-py.

Traffic stays on this machine: tests reach containers through 127.0.0.1, published ports
and the addresses of berth's own networks; outbound traffic goes to a network namespace
the test makes, and DNS forwarding to a resolver the test runs on a loopback address.
No DNS lookup is made from a container on the default bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import BUSYBOX, Berthd, running_berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect
from tests.e2e.conftest import Owned

#: a container that serves "ok-<port>" over HTTP on each port given, and sleeps
WWW = (
    "mkdir -p /www && for p in {ports}; do mkdir -p /www/$p && echo ok-$p > /www/$p/index.html"
    " && httpd -p $p -h /www/$p; done; exec sleep 300"
)


# -- helpers ----------------------------------------------------------------------------
def www(*ports: int) -> list[str]:
    return ["sh", "-c", WWW.format(ports=" ".join(str(p) for p in ports))]


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A host port nothing holds now (in the kernel's ephemeral range's complement)."""
    for _ in range(100):
        port = random.randint(20000, 29999)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def can_bind(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def http_get(host: str, port: int, path: str = "/index.html", timeout: float = 5) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode(errors="replace").partition("\r\n\r\n")[2]


def wait_http(host: str, port: int) -> str:
    def get() -> str | None:
        try:
            return http_get(host, port, timeout=2)
        except OSError:
            return None

    body = wait_for(get, 20, f"HTTP on {host}:{port}")
    assert body is not None
    return body


def nft_table(d: Berthd) -> str:
    return run(["nft", "list", "table", "ip", d.firewall_table]).stdout


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def api(d: Berthd, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    status, _, out = d.request(method, path, raw, headers)
    return status, json.loads(out) if out.strip() else None


def spare_subnet() -> ipaddress.IPv4Network:
    """A /24 outside berth's default pools that no host route or address uses."""
    routes = run(["ip", "-4", "route"]).stdout
    used = [
        ipaddress.ip_network(w, strict=False) for w in re.findall(r"\d+\.\d+\.\d+\.\d+/\d+", routes)
    ]
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(212, 215)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net  # type: ignore[return-value]
    raise AssertionError("no spare subnet")


def events(d: Berthd, since: float, *filters: str) -> list[dict[str, Any]]:
    until = f"{time.time() + 0.001:.6f}"
    args = ["events", "--since", f"{since:.6f}", "--until", until, "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    out = d.docker(*args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def exec_out(d: Berthd, ref: str, *cmd: str) -> str:
    return d.docker("exec", ref, *cmd).stdout


def inet(text: str) -> list[str]:
    """The IPv4 address/prefix pairs in ``ip addr`` output."""
    return re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", text)


@pytest.fixture
def networks(berthd: Berthd, owned: Owned) -> Iterator[list[str]]:
    """Networks a test made on the session daemon: removed after its containers."""
    made: list[str] = []
    yield made
    owned.release(berthd)
    owned.containers.clear()
    for name in made:
        berthd.docker("network", "rm", name, check=False)


def make_network(d: Berthd, networks: list[str], *args: str) -> tuple[str, dict[str, Any]]:
    name = unique_name("net")
    networks.append(name)
    d.docker("network", "create", *args, name)
    return name, json.loads(d.docker("network", "inspect", name).stdout)[0]


# -- the default bridge -----------------------------------------------------------------
def test_predefined_networks_and_the_default_bridge(berthd: Berthd) -> None:
    out = berthd.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout
    rows = set(out.splitlines())
    assert {"bridge bridge local", "host host local", "none null local"} <= rows
    bridge = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]
    [cfg] = bridge["IPAM"]["Config"]
    subnet = ipaddress.ip_network(cfg["Subnet"])
    assert not subnet.overlaps(ipaddress.ip_network("172.17.0.0/16"))  # docker0's
    assert ipaddress.ip_address(cfg["Gateway"]) in subnet
    assert bridge["Driver"] == "bridge" and bridge["Scope"] == "local"
    assert bridge["Options"]["com.docker.network.bridge.name"] == berthd.bridge
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    host_addrs = run(["ip", "-4", "addr", "show", "dev", berthd.bridge]).stdout
    assert f"{cfg['Gateway']}/{subnet.prefixlen}" in inet(host_addrs)
    # the predefined ones cannot go
    status, body = api(berthd, "DELETE", "/networks/bridge")
    assert status == 403 and "pre-defined network" in body["message"]


def test_container_on_the_default_bridge(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("dflt")
    cleanup.append(name)
    berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "300")
    ns = inspect(berthd, name)["NetworkSettings"]
    bridge = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]
    [cfg] = bridge["IPAM"]["Config"]
    subnet = ipaddress.ip_network(cfg["Subnet"])
    ip = ns["IPAddress"]
    assert ipaddress.ip_address(ip) in subnet
    assert ns["Gateway"] == cfg["Gateway"] and ns["IPPrefixLen"] == subnet.prefixlen
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", ns["MacAddress"])
    ep = ns["Networks"]["bridge"]
    assert ep["NetworkID"] == bridge["Id"]
    assert re.fullmatch(r"[0-9a-f]{64}", ep["EndpointID"]) and ep["EndpointID"] == ns["EndpointID"]
    assert (ep["IPAddress"], ep["Gateway"], ep["MacAddress"]) == (
        ip,
        ns["Gateway"],
        ns["MacAddress"],
    )
    assert ns["SandboxKey"]

    addr = exec_out(berthd, name, "ip", "addr", "show", "eth0")
    assert inet(addr) == [f"{ip}/{subnet.prefixlen}"]
    assert f"link/ether {ns['MacAddress']}" in addr
    route = exec_out(berthd, name, "ip", "route")
    assert f"default via {cfg['Gateway']} dev eth0" in route
    hosts = exec_out(berthd, name, "cat", "/etc/hosts")
    cid = inspect(berthd, name)["Id"]
    assert f"{ip}\t{cid[:12]}" in hosts
    # the network's view lists the endpoint
    bridge = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]
    assert bridge["Containers"][cid]["IPv4Address"] == f"{ip}/{subnet.prefixlen}"
    assert bridge["Containers"][cid]["EndpointID"] == ep["EndpointID"]
    # the host reaches the container's address directly
    gw = cfg["Gateway"]
    ping = run([BUSYBOX, "ping", "-c1", "-W2", ip])
    assert ping.returncode == 0, ping.stdout
    berthd.docker("stop", "-t", "0", name)
    stopped = inspect(berthd, name)["NetworkSettings"]
    assert stopped["IPAddress"] == "" and stopped["Networks"]["bridge"]["EndpointID"] == ""
    assert gw  # the gateway stays the bridge's


# -- published ports --------------------------------------------------------------------
def test_published_tcp_ports(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("pub")
    cleanup.append(name)
    p_any, p_lo = free_port(), free_port()
    lo_range = free_port()
    while not can_bind(lo_range + 1):
        lo_range = free_port()
    berthd.docker(
        "run", "-d", "--name", name,
        "-p", f"{p_any}:80",
        "-p", f"127.0.0.1:{p_lo}:80",
        "-p", "80",
        "-p", f"{lo_range}-{lo_range + 1}:81-82",
        "busybox", *www(80, 81, 82),
    )  # fmt: skip
    ports = inspect(berthd, name)["NetworkSettings"]["Ports"]
    eph = [b for b in ports["80/tcp"] if b["HostPort"] not in (str(p_any), str(p_lo))]
    assert len(eph) == 1 and eph[0]["HostIp"] == "0.0.0.0"
    p_eph = int(eph[0]["HostPort"])
    assert {(b["HostIp"], b["HostPort"]) for b in ports["80/tcp"]} == {
        ("0.0.0.0", str(p_any)), ("127.0.0.1", str(p_lo)), ("0.0.0.0", str(p_eph))
    }  # fmt: skip
    assert ports["81/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(lo_range)}]
    assert ports["82/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(lo_range + 1)}]
    listed = set(berthd.docker("port", name).stdout.splitlines())
    assert {
        f"80/tcp -> 0.0.0.0:{p_any}",
        f"80/tcp -> 127.0.0.1:{p_lo}",
        f"80/tcp -> 0.0.0.0:{p_eph}",
        f"81/tcp -> 0.0.0.0:{lo_range}",
        f"82/tcp -> 0.0.0.0:{lo_range + 1}",
    } <= listed
    assert berthd.docker("port", name, "81/tcp").stdout.strip() == f"0.0.0.0:{lo_range}"

    gw = inspect(berthd, name)["NetworkSettings"]["Gateway"]
    assert wait_http("127.0.0.1", p_any) == "ok-80\n"
    assert http_get(gw, p_any) == "ok-80\n"  # the host's address on the bridge
    assert http_get("127.0.0.1", p_lo) == "ok-80\n"
    assert http_get("127.0.0.1", p_eph) == "ok-80\n"
    assert http_get("127.0.0.1", lo_range) == "ok-81\n"
    assert http_get(gw, lo_range + 1) == "ok-82\n"
    with pytest.raises(OSError):  # published on 127.0.0.1 only
        http_get(gw, p_lo, timeout=2)

    # stopped: every host port is free again and no rule is left
    berthd.docker("stop", "-t", "0", name)
    for p in (p_any, p_lo, p_eph, lo_range, lo_range + 1):
        assert can_bind(p), p
    table = nft_table(berthd)
    for p in (p_any, p_lo, p_eph, lo_range):
        assert f" {p} :" not in table, table
    assert inspect(berthd, name)["NetworkSettings"]["Ports"] == {}
    with pytest.raises(OSError):
        http_get("127.0.0.1", p_any, timeout=2)

    # started again: the fixed ports are back
    berthd.docker("start", name)
    assert wait_http("127.0.0.1", p_any) == "ok-80\n"
    assert http_get("127.0.0.1", p_lo) == "ok-80\n"
    assert not can_bind(p_any)
    assert f"tcp . {p_any} :" in nft_table(berthd)


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(512)
    s.sendto(b"echo:" + data, peer)
"""


@contextlib.contextmanager
def udp_echo_in(sandbox: str, port: int) -> Iterator[None]:
    """A UDP echo server in a container's network namespace (busybox has none)."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def udp_ask(host: str, port: int, msg: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(msg, (host, port))
        return s.recvfrom(512)[0]


def test_published_udp_port(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("udp")
    cleanup.append(name)
    port = free_port(socket.SOCK_DGRAM)
    berthd.docker("run", "-d", "--name", name, "-p", f"{port}:81/udp", "busybox", "sleep", "300")
    info = inspect(berthd, name)
    assert info["NetworkSettings"]["Ports"]["81/udp"] == [
        {"HostIp": "0.0.0.0", "HostPort": str(port)}
    ]
    assert berthd.docker("port", name).stdout.strip() == f"81/udp -> 0.0.0.0:{port}"
    assert not can_bind(port, socket.SOCK_DGRAM)  # held for the container
    with udp_echo_in(info["NetworkSettings"]["SandboxKey"], 81):
        assert udp_ask("127.0.0.1", port, b"one") == b"echo:one"
        assert udp_ask(info["NetworkSettings"]["Gateway"], port, b"two") == b"echo:two"
    berthd.docker("rm", "-f", name)
    assert can_bind(port, socket.SOCK_DGRAM)
    assert f"udp . {port} :" not in nft_table(berthd)


def test_publish_all_exposed_ports(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("pall")
    cleanup.append(name)
    berthd.docker(
        "run", "-d", "--name", name, "-P", "--expose", "90", "--expose", "91/udp",
        "busybox", *www(90),
    )  # fmt: skip
    ports = inspect(berthd, name)["NetworkSettings"]["Ports"]
    assert set(ports) == {"90/tcp", "91/udp"}
    [tcp] = ports["90/tcp"]
    [udp] = ports["91/udp"]
    assert tcp["HostIp"] == udp["HostIp"] == "0.0.0.0"
    assert int(tcp["HostPort"]) > 0 and int(udp["HostPort"]) > 0
    listed = berthd.docker("port", name).stdout.splitlines()
    assert sorted(listed) == sorted(
        [f"90/tcp -> 0.0.0.0:{tcp['HostPort']}", f"91/udp -> 0.0.0.0:{udp['HostPort']}"]
    )
    assert wait_http("127.0.0.1", int(tcp["HostPort"])) == "ok-90\n"


def test_port_in_use_fails_the_start_and_leaves_nothing(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("busy")
    cleanup.append(name)
    other, taken = free_port(), free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", taken))
    holder.listen()
    try:
        proc = berthd.docker(
            "run", "-d", "--name", name, "-p", f"{other}:80", "-p", f"{taken}:80",
            "busybox", *www(80), check=False,
        )  # fmt: skip
        assert proc.returncode == 125, proc.stderr
        # dockerd: "failed to bind host port for 0.0.0.0:<port>:<ip>:80/tcp: address already in use"
        assert f"0.0.0.0:{taken}" in proc.stderr and "address already in use" in proc.stderr
        state = inspect(berthd, name)["State"]
        assert not state["Running"] and state["Status"] == "created"
        assert "address already in use" in state["Error"]
        # nothing half set up: no rule for either port, the other port free, no endpoint
        table = nft_table(berthd)
        assert f" {other} :" not in table and f" {taken} :" not in table, table
        assert can_bind(other)
        ns = inspect(berthd, name)["NetworkSettings"]
        assert ns["IPAddress"] == "" and ns["Ports"] in ({}, None)
        cid = inspect(berthd, name)["Id"]
        bridge = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]
        assert cid not in bridge["Containers"]
    finally:
        holder.close()
    # once the port is free the same container starts and serves
    berthd.docker("start", name)
    assert wait_http("127.0.0.1", taken) == "ok-80\n"
    assert http_get("127.0.0.1", other) == "ok-80\n"


# -- user-defined networks --------------------------------------------------------------
def test_user_network_create_inspect_ls_rm(berthd: Berthd, networks: list[str]) -> None:
    since = time.time()
    subnet = spare_subnet()
    hosts = list(subnet.hosts())
    gateway, rng = str(hosts[-1]), f"{subnet.network_address + 128}/25"
    bridge_dev = "bn" + secrets.token_hex(4)
    label = unique_name("lbl")
    name, net = make_network(
        berthd, networks,
        "--driver", "bridge",
        "--subnet", str(subnet), "--gateway", gateway, "--ip-range", rng,
        "--label", f"{label}=yes", "--attachable",
        "--opt", f"com.docker.network.bridge.name={bridge_dev}",
    )  # fmt: skip
    assert net["Name"] == name and net["Driver"] == "bridge" and net["Scope"] == "local"
    assert re.fullmatch(r"[0-9a-f]{64}", net["Id"])
    assert net["IPAM"]["Config"] == [{"Subnet": str(subnet), "IPRange": rng, "Gateway": gateway}]
    assert net["Labels"] == {label: "yes"}
    assert net["Options"] == {"com.docker.network.bridge.name": bridge_dev}
    assert net["Attachable"] is True and net["Internal"] is False
    assert net["Containers"] == {}
    dev = run(["ip", "-4", "addr", "show", "dev", bridge_dev])
    assert dev.returncode == 0 and f"{gateway}/24" in inet(dev.stdout)

    # ls and its filters
    assert berthd.docker(
        "network", "ls", "-q", "--no-trunc", "--filter", f"label={label}"
    ).stdout.split() == [net["Id"]]
    assert berthd.docker(
        "network", "ls", "--format", "{{.Name}}", "--filter", f"name={name}"
    ).stdout.split() == [name]
    assert (
        name
        not in berthd.docker(
            "network", "ls", "--format", "{{.Name}}", "--filter", "type=builtin"
        ).stdout.split()
    )
    assert (
        berthd.docker("network", "ls", "--format", "{{.Name}}", "--filter", "type=builtin")
        .stdout.split()
        .count("bridge")
        == 1
    )
    assert (
        name
        in berthd.docker(
            "network", "ls", "--format", "{{.Name}}", "--filter", "driver=bridge"
        ).stdout.split()
    )
    assert (
        berthd.docker("network", "inspect", "-f", "{{.Name}}", net["Id"][:12]).stdout.strip()
        == name
    )

    # the same name again: 409; an overlapping subnet: 400 naming the network that has it
    status, body = api(berthd, "POST", "/networks/create", {"Name": name})
    assert status == 409 and body["message"] == f"network with name {name} already exists"
    proc = berthd.docker("network", "create", name, check=False)
    assert proc.returncode != 0 and f"network with name {name} already exists" in proc.stderr
    inner = f"{subnet.network_address + 64}/26"
    status, body = api(
        berthd, "POST", "/networks/create",
        {"Name": unique_name("ovl"), "IPAM": {"Config": [{"Subnet": inner}]}},
    )  # fmt: skip
    assert status == 400 and name in body["message"] and "overlap" in body["message"], body
    status, body = api(
        berthd, "POST", "/networks/create",
        {"Name": unique_name("gw"), "IPAM": {"Config": [{"Subnet": str(spare_subnet()), "Gateway": "10.1.2.3"}]}},
    )  # fmt: skip
    assert status == 400, body

    berthd.docker("network", "rm", name)
    assert name not in berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert run(["ip", "link", "show", bridge_dev]).returncode != 0
    status, body = api(berthd, "GET", f"/networks/{name}")
    assert status == 404 and body["message"] == f"network {name} not found"
    seen = [
        (e["Action"], e["Actor"]["Attributes"]["name"])
        for e in events(berthd, since, "type=network", f"network={net['Id']}")
    ]
    assert seen == [("create", name), ("destroy", name)]
    for e in events(berthd, since, "type=network", f"network={net['Id']}"):
        assert e["Actor"]["ID"] == net["Id"] and e["Actor"]["Attributes"]["type"] == "bridge"


def test_network_prune(berthd: Berthd, networks: list[str], cleanup: list[str]) -> None:
    label = unique_name("prune")
    unused, _ = make_network(berthd, networks, "--label", label)
    used, _ = make_network(berthd, networks, "--label", label)
    kept, _ = make_network(berthd, networks)
    holder = unique_name("holder")
    cleanup.append(holder)
    berthd.docker("run", "-d", "--name", holder, "--network", used, "busybox", "sleep", "300")
    assert berthd.docker(
        "network", "ls", "-q", "--filter", "dangling=true", "--filter", f"label={label}"
    ).stdout.split() == [
        json.loads(berthd.docker("network", "inspect", unused).stdout)[0]["Id"][:12]
    ]
    out = berthd.docker("network", "prune", "-f", "--filter", f"label={label}").stdout
    assert unused in out and used not in out and kept not in out
    names = berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert unused not in names and used in names and kept in names


def test_rm_of_a_network_in_use_is_refused(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    name, net = make_network(berthd, networks)
    c = unique_name("inuse")
    cleanup.append(c)
    berthd.docker("run", "-d", "--name", c, "--network", name, "busybox", "sleep", "300")
    status, body = api(berthd, "DELETE", f"/networks/{name}")
    # dockerd: "error while removing network: network <name> has active endpoints (...)"
    assert status == 403 and "has active endpoints" in body["message"] and name in body["message"]
    proc = berthd.docker("network", "rm", name, check=False)
    assert proc.returncode != 0 and "has active endpoints" in proc.stderr
    assert json.loads(berthd.docker("network", "inspect", name).stdout)[0]["Id"] == net["Id"]
    # a stopped container holds no endpoint
    berthd.docker("stop", "-t", "0", c)
    berthd.docker("network", "rm", name)


def test_name_resolution_and_isolation(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    net_a, info_a = make_network(berthd, networks)
    net_b, _ = make_network(berthd, networks)
    target, client, stranger = unique_name("tgt"), unique_name("cli"), unique_name("far")
    cleanup += [target, client, stranger]
    berthd.docker(
        "run",
        "-d",
        "--name",
        target,
        "--network",
        net_a,
        "--network-alias",
        "svc-a",
        "busybox",
        *www(80),
    )
    berthd.docker("run", "-d", "--name", client, "--network", net_a, "busybox", "sleep", "300")
    berthd.docker("run", "-d", "--name", stranger, "--network", net_b, "busybox", "sleep", "300")
    t = inspect(berthd, target)
    ip = t["NetworkSettings"]["Networks"][net_a]["IPAddress"]
    short = t["Id"][:12]
    ep = t["NetworkSettings"]["Networks"][net_a]
    assert ep["Aliases"] == ["svc-a"] or "svc-a" in (ep["Aliases"] or [])
    assert {target, "svc-a", short} <= set(ep["DNSNames"])

    gateway = info_a["IPAM"]["Config"][0]["Gateway"]
    resolv = exec_out(berthd, client, "cat", "/etc/resolv.conf")
    assert re.findall(r"^nameserver (\S+)", resolv, re.M) == [gateway]
    for q in (target, "svc-a", short, f"{target}.{net_a}"):
        out = exec_out(berthd, client, "nslookup", q)
        assert re.search(rf"Address: {re.escape(ip)}$", out, re.M), (q, out)
    ping = berthd.docker("exec", client, "ping", "-c1", "-W2", target, check=False)
    assert ping.returncode == 0 and f"({ip})" in ping.stdout
    assert (
        berthd.docker("exec", client, "wget", "-qO-", "http://svc-a/index.html").stdout == "ok-80\n"
    )
    # reverse lookup gives the container's name on the network
    rev = exec_out(berthd, client, "nslookup", ip)
    assert f"{target}.{net_a}" in rev

    # another network: neither the name nor the address
    far = berthd.docker("exec", stranger, "timeout", "2", "nslookup", target, check=False)
    assert ip not in far.stdout
    assert berthd.docker("exec", stranger, "ping", "-c1", "-W1", ip, check=False).returncode != 0
    assert (
        berthd.docker(
            "exec", stranger, "timeout", "2", "wget", "-qO-", f"http://{ip}/index.html", check=False
        ).returncode
        != 0
    )


def test_internal_network_has_no_way_out(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    name, net = make_network(berthd, networks, "--internal")
    assert net["Internal"] is True
    a, b = unique_name("in1"), unique_name("in2")
    cleanup += [a, b]
    berthd.docker("run", "-d", "--name", a, "--network", name, "busybox", "sleep", "300")
    berthd.docker("run", "-d", "--name", b, "--network", name, "busybox", "sleep", "300")
    routes = exec_out(berthd, a, "ip", "route")
    assert "default" not in routes and net["IPAM"]["Config"][0]["Subnet"] in routes
    ip_b = inspect(berthd, b)["NetworkSettings"]["Networks"][name]["IPAddress"]
    assert inspect(berthd, a)["NetworkSettings"]["Networks"][name]["Gateway"] == ""
    assert berthd.docker("exec", a, "ping", "-c1", "-W2", ip_b, check=False).returncode == 0
    # the host's address on the bridge is not a way out either
    gw = net["IPAM"]["Config"][0]["Gateway"]
    bridge_gw = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]["IPAM"][
        "Config"
    ][0]["Gateway"]
    assert berthd.docker("exec", a, "ping", "-c1", "-W1", bridge_gw, check=False).returncode != 0
    assert gw


def test_static_ip_mac_and_resolution_files(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    subnet = spare_subnet()
    name, _ = make_network(berthd, networks, "--subnet", str(subnet))
    c = unique_name("static")
    cleanup.append(c)
    ip = str(subnet.network_address + 77)
    mac = "02:11:22:33:44:55"
    berthd.docker(
        "run", "-d", "--name", c, "--network", name, "--ip", ip, "--mac-address", mac,
        "--hostname", "myhost", "--domainname", "example.test",
        "--add-host", "extra:1.2.3.4", "--add-host", "hgw:host-gateway",
        "--dns-search", "search.test", "--dns-option", "ndots:3",
        "busybox", "sleep", "300",
    )  # fmt: skip
    ep = inspect(berthd, c)["NetworkSettings"]["Networks"][name]
    assert ep["IPAddress"] == ip and ep["MacAddress"] == mac
    assert ep["IPAMConfig"]["IPv4Address"] == ip
    addr = exec_out(berthd, c, "ip", "addr", "show", "eth0")
    assert inet(addr) == [f"{ip}/24"] and f"link/ether {mac}" in addr
    assert exec_out(berthd, c, "hostname").strip() == "myhost"
    hosts = exec_out(berthd, c, "cat", "/etc/hosts")
    assert re.search(rf"^{re.escape(ip)}\s.*\bmyhost\b", hosts, re.M), hosts
    assert re.search(r"^1\.2\.3\.4\s+extra$", hosts, re.M), hosts
    bridge_gw = json.loads(berthd.docker("network", "inspect", "bridge").stdout)[0]["IPAM"][
        "Config"
    ][0]["Gateway"]
    assert re.search(rf"^{re.escape(bridge_gw)}\s+hgw$", hosts, re.M), (
        hosts
    )  # dockerd: the default bridge's gateway
    resolv = exec_out(berthd, c, "cat", "/etc/resolv.conf")
    assert re.search(r"^search search\.test$", resolv, re.M), resolv
    assert re.search(r"^options ndots:3$", resolv, re.M), resolv
    # the address is taken while the container runs
    other = unique_name("dup")
    cleanup.append(other)
    proc = berthd.docker(
        "run", "-d", "--name", other, "--network", name, "--ip", ip, "busybox", "true", check=False
    )
    assert proc.returncode != 0 and "Address already in use" in proc.stderr  # as dockerd


def test_domainname_gives_the_fqdn_in_hosts(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    name, _ = make_network(berthd, networks)
    c = unique_name("fqdn")
    cleanup.append(c)
    berthd.docker("run", "-d", "--name", c, "--network", name, "--hostname", "myhost",
                  "--domainname", "example.test", "busybox", "sleep", "300")  # fmt: skip
    ip = inspect(berthd, c)["NetworkSettings"]["Networks"][name]["IPAddress"]
    hosts = exec_out(berthd, c, "cat", "/etc/hosts")
    assert f"{ip}\tmyhost.example.test myhost\n" in hosts, hosts


def test_bad_static_addresses_are_refused(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    subnet = spare_subnet()
    name, _ = make_network(berthd, networks, "--subnet", str(subnet))
    auto, _ = make_network(berthd, networks)
    outside = str(ipaddress.ip_network(spare_subnet()).network_address + 5)
    c = unique_name("badip")
    cleanup.append(c)

    def create(net: str, ip: str) -> tuple[int, Any]:
        return api(berthd, "POST", f"/containers/create?name={c}", {
            "Image": "busybox", "Cmd": ["true"],
            "HostConfig": {"NetworkMode": net},
            "NetworkingConfig": {"EndpointsConfig": {net: {"IPAMConfig": {"IPv4Address": ip}}}},
        })  # fmt: skip

    status, body = create(name, outside)
    assert (
        status == 400
        and f"no configured subnet or ip-range contain the IP address {outside}" in body["message"]
    )
    status, body = create("bridge", str(subnet.network_address + 5))
    assert (
        status == 400
        and "user specified IP address is supported on user defined networks only"
        in body["message"]
    )
    status, body = create(auto, str(subnet.network_address + 5))
    assert status == 400 and "user configured subnets" in body["message"], body
    status, body = create(name, "300.1.1.1")
    assert status == 400 and "300.1.1.1" in body["message"]
    proc = berthd.docker(
        "run", "--rm", "--network", name, "--ip", outside, "busybox", "true", check=False
    )
    assert (
        proc.returncode == 125
        and "no configured subnet or ip-range contain the IP address" in proc.stderr
    )
    proc = berthd.docker(
        "run", "--rm", "--ip", str(subnet.network_address + 5), "busybox", "true", check=False
    )
    assert (
        proc.returncode == 125
        and "user specified IP address is supported on user defined networks only" in proc.stderr
    )
    # (the CLI refuses an alias on the default bridge itself; the API is asked directly)
    status, body = api(berthd, "POST", f"/containers/create?name={c}", {
        "Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "bridge"},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}},
    })  # fmt: skip
    assert status == 400, body
    assert (
        "network-scoped alias is supported only for containers in user defined networks"
        in body["message"]
    )
    status, _ = api(berthd, "GET", f"/containers/{c}/json")
    assert status == 404


def test_connect_and_disconnect_a_running_container(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    name, net = make_network(berthd, networks)
    c, peer = unique_name("roam"), unique_name("peer")
    cleanup += [c, peer]
    berthd.docker("run", "-d", "--name", c, "busybox", *www(80))
    berthd.docker("run", "-d", "--name", peer, "--network", name, "busybox", "sleep", "300")
    cid = inspect(berthd, c)["Id"]
    since = time.time()
    berthd.docker("network", "connect", "--alias", "roamer", name, c)
    ep = inspect(berthd, c)["NetworkSettings"]["Networks"][name]
    assert ep["NetworkID"] == net["Id"] and ep["IPAddress"] and ep["EndpointID"]
    assert "roamer" in (ep["Aliases"] or [])
    addr = exec_out(berthd, c, "ip", "addr", "show", "eth1")
    assert inet(addr) == [f"{ep['IPAddress']}/{ep['IPPrefixLen']}"]
    assert f"link/ether {ep['MacAddress']}" in addr
    # still on the default bridge with its default route there
    bridge_gw = inspect(berthd, c)["NetworkSettings"]["Networks"]["bridge"]["Gateway"]
    assert f"default via {bridge_gw} dev eth0" in exec_out(berthd, c, "ip", "route")
    # the other side resolves and reaches it
    for q in (c, "roamer"):
        out = exec_out(berthd, peer, "nslookup", q)
        assert re.search(rf"Address: {re.escape(ep['IPAddress'])}$", out, re.M), (q, out)
    assert (
        berthd.docker("exec", peer, "wget", "-qO-", "http://roamer/index.html").stdout == "ok-80\n"
    )
    assert cid in json.loads(berthd.docker("network", "inspect", name).stdout)[0]["Containers"]
    # twice: refused
    proc = berthd.docker("network", "connect", name, c, check=False)
    assert proc.returncode != 0 and "already exists in network" in proc.stderr

    berthd.docker("network", "disconnect", name, c)
    assert name not in inspect(berthd, c)["NetworkSettings"]["Networks"]
    assert berthd.docker("exec", c, "ip", "addr", "show", "eth1", check=False).returncode != 0
    assert cid not in json.loads(berthd.docker("network", "inspect", name).stdout)[0]["Containers"]
    assert (
        berthd.docker(
            "exec",
            peer,
            "timeout",
            "3",
            "wget",
            "-qO-",
            f"http://{ep['IPAddress']}/index.html",
            check=False,
        ).returncode
        != 0
    )
    proc = berthd.docker("network", "disconnect", name, c, check=False)
    assert proc.returncode != 0 and "is not connected to network" in proc.stderr

    seen = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("container"))
            for e in events(berthd, since, "type=network", f"network={net['Id']}")]  # fmt: skip
    assert seen == [("connect", net["Id"], cid), ("disconnect", net["Id"], cid)]


def test_connect_a_stopped_container_takes_effect_at_start(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    name, _ = make_network(berthd, networks)
    c = unique_name("later")
    cleanup.append(c)
    berthd.docker("create", "--name", c, "--network", name, "busybox", "sleep", "300")
    other, _ = make_network(berthd, networks)
    berthd.docker("network", "connect", other, c)
    assert set(inspect(berthd, c)["NetworkSettings"]["Networks"]) == {name, other}
    berthd.docker("start", c)
    nets = inspect(berthd, c)["NetworkSettings"]["Networks"]
    assert nets[name]["IPAddress"] and nets[other]["IPAddress"]
    addrs = exec_out(berthd, c, "ip", "addr")
    assert f"{nets[name]['IPAddress']}/" in addrs and f"{nets[other]['IPAddress']}/" in addrs


def test_a_name_on_two_shared_networks_answers_with_the_asking_network_address(
    berthd: Berthd, networks: list[str], cleanup: list[str]
) -> None:
    """libnetwork's ResolveName: the first network (the one the query came in on) with
    the name answers alone, not every network both containers share."""
    na, _ = make_network(berthd, networks)
    nb, _ = make_network(berthd, networks)
    srv, client = unique_name("srv2"), unique_name("cli2")
    cleanup += [srv, client]
    for c in (srv, client):
        berthd.docker("run", "-d", "--name", c, "--network", na, "busybox", "sleep", "300")
        berthd.docker("network", "connect", nb, c)
    nets = inspect(berthd, srv)["NetworkSettings"]["Networks"]
    cnets = inspect(berthd, client)["NetworkSettings"]["Networks"]
    for asked, other in ((na, nb), (nb, na)):
        out = exec_out(berthd, client, "nslookup", srv, cnets[asked]["Gateway"])
        assert nets[asked]["IPAddress"] in out and nets[other]["IPAddress"] not in out, out


# -- outbound -------------------------------------------------------------------------------
@pytest.fixture
def outside() -> Iterator[tuple[str, str, str]]:
    """A network namespace standing for the outside world: a veth to the host with
    10.199.x.y/30 (host side .1, inside .2) and a route back to the host."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"berth-out-{tag}", f"bo{tag}h", f"bo{tag}n"
    routes = run(["ip", "-4", "route"]).stdout
    while True:
        base = ipaddress.ip_address(
            f"10.199.{random.randint(0, 255)}.{random.randrange(0, 256, 4)}"
        )
        if str(base).rsplit(".", 1)[0] + "." not in routes:
            break
    host_ip, ns_ip = str(base + 1), str(base + 2)

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", host_ip)
        yield ns, host_ip, ns_ip
    finally:
        run(["ip", "netns", "del", ns])
        run(["ip", "link", "del", host_if])


PEER_PRINTER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
s.settimeout(30)
print("ready", flush=True)
c, peer = s.accept()
c.settimeout(10)
data = c.recv(100)
c.sendall(b"pong\\n")
c.close()
print(peer[0], data.decode().strip(), flush=True)
"""


@pytest.mark.parametrize("where", ["bridge", "user"])
def test_outbound_traffic_is_masqueraded(
    berthd: Berthd, networks: list[str], outside: tuple[str, str, str], where: str
) -> None:
    ns, host_ip, ns_ip = outside
    net = "bridge" if where == "bridge" else make_network(berthd, networks)[0]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PEER_PRINTER, ns_ip, "9999"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        out = berthd.docker(
            "run", "--rm", "--network", net, "busybox",
            "sh", "-c", f"echo ping-{where} | nc {ns_ip} 9999",
        ).stdout  # fmt: skip
        assert out == "pong\n"
        seen = listener.stdout.readline().split()
        # the listener sees the host's address, not the container's: masquerade
        assert seen == [host_ip, f"ping-{where}"]
    finally:
        listener.kill()
        listener.wait()
        if listener.stdout is not None:
            listener.stdout.close()


# -- DNS forwarding -----------------------------------------------------------------------
class FakeDNS:
    """A UDP DNS server on a loopback address: ``example.test`` has an A record, every
    other name is NXDOMAIN; the questions are kept."""

    def __init__(self, address: str, answer: str) -> None:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self.questions: list[str] = []
        self._stop = threading.Event()

        def serve() -> None:
            while not self._stop.is_set():
                try:
                    data, peer = self.sock.recvfrom(4096)
                except (TimeoutError, OSError):
                    continue
                q = dns.message.from_wire(data)
                question = q.question[0]
                self.questions.append(f"{question.name} {dns.rdatatype.to_text(question.rdtype)}")
                r = dns.message.make_response(q)
                if str(question.name).lower() == "example.test.":
                    if question.rdtype == dns.rdatatype.A:
                        r.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", answer))
                else:
                    r.set_rcode(dns.rcode.NXDOMAIN)
                with contextlib.suppress(OSError):
                    self.sock.sendto(r.to_wire(), peer)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


def test_dns_is_forwarded_to_the_daemons_servers(busybox_tar: Path) -> None:
    server = FakeDNS("127.0.0.77", "10.199.77.77")
    try:
        with running_berthd(["--dns", "127.0.0.77"]) as d:
            d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
            net = unique_name("fwd")
            d.docker("network", "create", net)
            c = unique_name("asker")
            out = d.docker(
                "run", "--rm", "--name", c, "--network", net, "busybox", "nslookup", "example.test"
            ).stdout
            assert re.search(r"^Address: 10\.199\.77\.77$", out, re.M), out
            assert "example.test. A" in server.questions
            # the network's own names are answered by berth, not forwarded
            d.docker("run", "-d", "--name", c, "--network", net, "busybox", "sleep", "300")
            asked = len(server.questions)
            out = d.docker(
                "run", "--rm", "--network", net, "busybox", "nslookup", "-type=a", c
            ).stdout
            ip = inspect(d, c)["NetworkSettings"]["Networks"][net]["IPAddress"]
            assert re.search(rf"^Address: {re.escape(ip)}$", out, re.M), out
            assert not [q for q in server.questions[asked:] if q.startswith(c)]
            proc = d.docker(
                "run", "--rm", "--network", net, "busybox", "nslookup", "nowhere.test", check=False
            )
            assert "10.199.77.77" not in proc.stdout and "nowhere.test. A" in server.questions
            d.docker("rm", "-f", c)
            d.docker("network", "rm", net)
    finally:
        server.close()


# -- docker-py ------------------------------------------------------------------------------
def test_docker_py_networks(berthd: Berthd, networks: list[str], cleanup: list[str]) -> None:
    client = berthd.client()
    try:
        name = unique_name("py")
        networks.append(name)
        label = unique_name("pylabel")
        net = client.networks.create(
            name, driver="bridge", labels={label: "1"}, check_duplicate=True
        )
        assert net.name == name and net.attrs["Labels"] == {label: "1"}
        assert [n.id for n in client.networks.list(names=[name])] == [net.id]
        assert [n.id for n in client.networks.list(filters={"label": label})] == [net.id]
        assert client.networks.get(net.id[:12]).name == name
        assert {"bridge", "host", "none"} <= {n.name for n in client.networks.list()}

        c = unique_name("pyweb")
        cleanup.append(c)
        container = client.containers.run(
            "busybox", www(80), name=c, detach=True, ports={"80/tcp": None}
        )
        container.reload()
        [binding] = container.attrs["NetworkSettings"]["Ports"]["80/tcp"]
        assert binding["HostIp"] == "0.0.0.0" and int(binding["HostPort"]) > 0
        assert container.ports["80/tcp"][0]["HostPort"] == binding["HostPort"]
        assert wait_http("127.0.0.1", int(binding["HostPort"])) == "ok-80\n"

        net.connect(container, aliases=["py-alias"])
        container.reload()
        ep = container.attrs["NetworkSettings"]["Networks"][name]
        assert "py-alias" in ep["Aliases"] and ep["IPAddress"]
        net.reload()
        assert [ct.id for ct in net.containers] == [container.id]
        out = client.containers.run(
            "busybox", ["nslookup", "py-alias"], network=name, remove=True
        ).decode()
        assert f"Address: {ep['IPAddress']}" in out
        net.disconnect(container)
        net.reload()
        assert net.containers == []
        container.remove(force=True)
        net.remove()
        with pytest.raises(Exception, match="not found"):
            client.networks.get(name)
    finally:
        client.close()


def test_daemons_started_together_get_different_default_subnets() -> None:
    """Two berthds with their own bridges, started at once (as concurrent test runs do):
    each default bridge must get a subnet of its own, or the host routes one's traffic to
    the other's bridge."""
    for _ in range(3):  # a race: any round of three that collides shows it
        subnets = _default_subnets_of_two_daemons_started_together()
        assert subnets[0] != subnets[1], subnets


def _default_subnets_of_two_daemons_started_together() -> dict[int, str]:
    stack = contextlib.ExitStack()
    found: dict[int, str] = {}
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            d = stack.enter_context(running_berthd())
            bridge = json.loads(d.docker("network", "inspect", "bridge").stdout)[0]
            found[i] = bridge["IPAM"]["Config"][0]["Subnet"]
        except BaseException as e:  # reported below
            errors.append(e)

    with stack:
        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    return found
