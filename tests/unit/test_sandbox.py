"""berth.network.sandbox against the real kernel: namespaces, a bridge and veth pairs.

Every device, mount and file a test makes has a unique name and goes in a fixture's
finalizer, even when the test fails; devices the host had before are never touched.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from berth import errdefs
from berth.network import sandbox as sb

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netlink, mounts)")

BUSYBOX = "/bin/busybox"


def _free_subnets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """A /24 and a /64 that nothing on the host uses, so the test never reaches outside."""
    host = sb.host_networks()
    while True:
        v4 = ipaddress.IPv4Network(f"10.{random.randrange(200, 250)}.{random.randrange(256)}.0/24")
        v6 = ipaddress.IPv6Network(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:7::/64")
        if not any(v4.overlaps(n) or v6.overlaps(n) for n in host):  # type: ignore[arg-type]
            return v4, v6


def _bridged_traffic_dropped() -> bool:
    """Whether the host filters bridged traffic through a FORWARD chain whose policy is
    DROP (dockerd's, with bridge-nf-call-iptables=1): then only the bridge's own address
    answers; berthd accepts its bridges there itself, these test bridges are no one's."""
    try:
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() != "1":
            return False
    except OSError:
        return False
    rules = subprocess.run(
        ["iptables", "-S", "FORWARD"], check=False, capture_output=True, text=True
    )
    return "-P FORWARD DROP" in rules.stdout


def _host_mac_name() -> str:
    return "02:42:" + ":".join(secrets.token_hex(1) for _ in range(4))


def _run_in(path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv], check=False, capture_output=True, text=True, timeout=10
    )


def _ip_json(path: str, *argv: str) -> list[dict[str, object]]:
    out = _run_in(path, "ip", "-j", *argv)
    assert out.returncode == 0, out.stderr
    data: list[dict[str, object]] = json.loads(out.stdout or "[]")
    return data


def _host_link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.fixture
def bridge() -> Iterator[str]:
    name = "btst" + secrets.token_hex(3)
    try:
        yield name
    finally:
        sb.delete_bridge(name)
        assert not _host_link_exists(name)


@pytest.fixture
def nsdir(tmp_path: Path) -> Iterator[Path]:
    made = tmp_path / "netns"
    made.mkdir()
    try:
        yield made
    finally:
        for entry in made.iterdir():
            sb.remove_netns(str(entry))
        leftovers = [e.name for e in made.iterdir()]
        with open("/proc/self/mountinfo") as f:
            mounts = [line for line in f if str(made) in line]
        assert leftovers == [] and mounts == []


@pytest.fixture
def host_veths() -> Iterator[list[str]]:
    """Host veth names a test hands out; any still there at the end is removed."""
    names: list[str] = []
    try:
        yield names
    finally:
        with IPRoute() as ipr:
            for name in names:
                try:
                    ipr.link("del", ifname=name)
                except NetlinkError as exc:
                    assert exc.code == errno.ENODEV


def test_two_namespaces_on_a_bridge(bridge: str, nsdir: Path, host_veths: list[str]) -> None:
    v4, v6 = _free_subnets()
    gw4, gw6 = v4.network_address + 1, v6.network_address + 1
    index = sb.ensure_bridge(bridge, [f"{gw4}/24", f"{gw6}/64"])
    assert index > 0
    ifaces = {}
    for n, label in enumerate("ab", start=2):
        path = str(nsdir / label)
        sb.create_netns(path)
        assert sb.netns_exists(path) and _mounted(path)
        host_veths.append(sb.veth_name())
        iface = sb.Interface(
            bridge=bridge,
            host_name=host_veths[-1],
            name="eth0",
            mac=_host_mac_name(),
            ipv4=f"{v4.network_address + n}/24",
            ipv6=f"{v6.network_address + n}/64",
            gateway4=str(gw4),
            gateway6=str(gw6),
            mtu=1450,
        )
        sb.attach(path, iface)
        ifaces[label] = (path, iface)

    path_a, a = ifaces["a"]
    path_b, b = ifaces["b"]

    # inside: name, MAC, MTU, addresses, up, default routes; lo up
    links = {link["ifname"]: link for link in _ip_json(path_a, "link")}
    assert set(links) == {"lo", "eth0"}
    assert links["eth0"]["address"] == a.mac and links["eth0"]["mtu"] == 1450
    assert "UP" in links["eth0"]["flags"] and "UP" in links["lo"]["flags"]  # type: ignore[operator]
    infos = {
        f"{x['local']}/{x['prefixlen']}": x
        for link in _ip_json(path_a, "addr", "show", "eth0")
        for x in link["addr_info"]  # type: ignore[attr-defined]
        if x["scope"] == "global"
    }
    assert set(infos) == {a.ipv4, a.ipv6}
    assert infos[a.ipv4]["broadcast"] == str(v4.broadcast_address)  # as `ip addr add ... brd +`
    assert infos[a.ipv6].get("nodad") is True  # usable at once, no duplicate detection
    (route4,) = _ip_json(path_a, "-4", "route", "show", "default")
    assert route4["gateway"] == str(gw4) and route4["dev"] == "eth0"
    (route6,) = _ip_json(path_a, "-6", "route", "show", "default")
    assert route6["gateway"] == str(gw6)

    # host end: a port of the bridge, hairpin on, up
    host = a.host_name
    assert os.path.realpath(f"/sys/class/net/{host}/master").endswith("/" + bridge)
    assert Path(f"/sys/class/net/{host}/brport/hairpin_mode").read_text().strip() == "1"
    assert int(Path(f"/sys/class/net/{host}/flags").read_text(), 16) & 1

    before = sb.interface_stats(path_a)
    assert set(before) == {"eth0"} and set(before["eth0"]) == set(sb.STAT_KEYS)
    targets = [str(gw4), str(gw6)]
    if not _bridged_traffic_dropped():
        targets += [b.ipv4.split("/")[0], b.ipv6.split("/")[0]]
    for target in targets:
        ping = _run_in(path_a, BUSYBOX, "ping", "-c1", "-W1", target)
        assert ping.returncode == 0, (target, ping.stdout, ping.stderr)
    after = sb.interface_stats(path_a)["eth0"]
    for key in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes"):
        assert after[key] > before["eth0"][key], key

    # detach takes the pair along; a second detach and a missing namespace are fine
    sb.detach(path_a, "eth0")
    assert sb.interface_stats(path_a) == {}
    assert not _host_link_exists(a.host_name)
    sb.detach(path_a, "eth0")
    sb.detach(str(nsdir / "never"), "eth0")

    # removing the namespace unmounts and unlinks; B's veth dies with it, as soon as the
    # kernel's cleanup worker gets to the namespace (asynchronously)
    sb.remove_netns(path_b)
    assert not sb.netns_exists(path_b) and not _mounted(path_b)
    assert not os.path.exists(path_b)
    deadline = time.monotonic() + 10
    while _host_link_exists(b.host_name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _host_link_exists(b.host_name)
    sb.remove_netns(path_b)


def test_ensure_bridge_is_idempotent_and_keeps_addresses(bridge: str) -> None:
    v4, v6 = _free_subnets()
    first = f"{v4.network_address + 1}/24"
    index = sb.ensure_bridge(bridge, [first], mtu=1400)
    assert sb.ensure_bridge(bridge, [first], mtu=1400) == index
    assert [a for a in sb.bridge_addresses(bridge) if ":" not in a] == [first]
    assert Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").read_text().strip() == "1"
    assert Path(f"/sys/class/net/{bridge}/mtu").read_text().strip() == "1400"
    assert int(Path(f"/sys/class/net/{bridge}/flags").read_text(), 16) & 1
    assert sb.ensure_bridge(bridge, [first], mtu=1450) == index  # an existing bridge's MTU
    assert Path(f"/sys/class/net/{bridge}/mtu").read_text().strip() == "1450"

    second = f"{v6.network_address + 1}/64"
    assert sb.ensure_bridge(bridge, [second], mtu=1400) == index
    got = sb.bridge_addresses(bridge)
    assert first in got and second in got
    assert Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").read_text().strip() == "0"
    assert v4 in sb.host_networks() and v6 in sb.host_networks()

    sb.delete_bridge(bridge)
    assert sb.bridge_addresses(bridge) == []
    sb.delete_bridge(bridge)


def test_host_networks_leave_out_defaults_and_link_local() -> None:
    for net in sb.host_networks():
        assert net.prefixlen > 0 and not net.is_link_local and not net.is_loopback


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a b", "a:b", ".."])
def test_bad_names_are_invalid(name: str, nsdir: Path) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        sb.ensure_bridge(name, [])
    with pytest.raises(errdefs.InvalidParameter):
        sb.delete_bridge(name)
    with pytest.raises(errdefs.InvalidParameter):
        sb.detach(str(nsdir / "x"), name)
    with pytest.raises(errdefs.InvalidParameter):
        sb.attach(str(nsdir / "x"), sb.Interface("btstnone", "vethnone", name, _host_mac_name()))


@pytest.mark.parametrize(
    "change",
    [
        {"mac": "03:42:00:00:00:01"},  # multicast
        {"mac": "02:42:00:00:00"},
        {"ipv4": "10.0.0.300/24"},
        {"ipv4": "fd00::2/64"},
        {"ipv4": "10.0.0.2"},  # no prefix length
        {"ipv6": "10.0.0.2/24"},
        {"gateway4": "fd00::1"},
        {"mtu": 10},
    ],
)
def test_bad_interfaces_are_invalid(change: dict[str, object], nsdir: Path) -> None:
    fields: dict[str, object] = {
        "bridge": "btstnone",
        "host_name": "vethnone",
        "name": "eth0",
        "mac": "02:42:0a:00:00:02",
    }
    fields.update(change)
    with pytest.raises(errdefs.InvalidParameter):
        sb.attach(str(nsdir / "x"), sb.Interface(**fields))  # type: ignore[arg-type]


def test_a_failed_attach_leaves_nothing(bridge: str, nsdir: Path, host_veths: list[str]) -> None:
    v4, _ = _free_subnets()
    sb.ensure_bridge(bridge, [f"{v4.network_address + 1}/24"])
    path = str(nsdir / "a")
    sb.create_netns(path)
    host_veths.extend([sb.veth_name(), sb.veth_name(), sb.veth_name()])
    ok = sb.Interface(
        bridge, host_veths[0], "eth0", _host_mac_name(), f"{v4.network_address + 2}/24"
    )
    sb.attach(path, ok)

    # the name is taken inside: the kernel refuses the pair, nothing was made
    with pytest.raises(errdefs.System, match="eth0"):
        sb.attach(path, sb.Interface(bridge, host_veths[1], "eth0", _host_mac_name()))
    assert not _host_link_exists(host_veths[1])

    # the pair is made, then the route fails (gateway off-link): the pair goes again
    bad = sb.Interface(
        bridge,
        host_veths[2],
        "eth1",
        _host_mac_name(),
        f"{v4.network_address + 3}/24",
        gateway4="198.51.100.1",
    )
    assert not any(ipaddress.ip_address(bad.gateway4) in n for n in sb.host_networks())
    with pytest.raises(errdefs.System, match="eth1"):
        sb.attach(path, bad)
    assert not _host_link_exists(host_veths[2])
    assert set(sb.interface_stats(path)) == {"eth0"}

    with pytest.raises(errdefs.NotFound):
        sb.attach(path, sb.Interface("btstnone", host_veths[1], "eth2", _host_mac_name()))
    with pytest.raises(errdefs.System, match="never"):
        sb.attach(str(nsdir / "never"), ok)


def test_namespace_files(nsdir: Path) -> None:
    plain = nsdir / "plain"
    plain.write_text("")
    assert not sb.netns_exists(str(plain)) and not sb.netns_exists(str(nsdir / "none"))
    path = str(nsdir / "a")
    sb.create_netns(path)
    with pytest.raises(errdefs.Conflict):
        sb.create_netns(path)
    with pytest.raises(errdefs.System, match="nodir"):
        sb.create_netns(str(nsdir / "nodir" / "a"))
    sb.remove_netns(str(plain))  # a file left by a crash goes too
    assert not plain.exists()
    sb.remove_netns(path)
    sb.remove_netns(str(nsdir / "none"))
    assert not _mounted(path)
    with pytest.raises(errdefs.System, match="a"):
        sb.interface_stats(path)


def test_delete_bridge_refuses_other_devices(host_veths: list[str]) -> None:
    name = sb.veth_name()
    host_veths.extend([name, "vp" + secrets.token_hex(4)])
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": host_veths[1]})
    with pytest.raises(errdefs.Conflict):
        sb.delete_bridge(name)
    assert _host_link_exists(name)
    with pytest.raises(errdefs.Conflict):
        sb.ensure_bridge(name, [])


def test_enable_forwarding_leaves_an_enabled_host_alone() -> None:
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        pytest.skip("forwarding is off here; this test does not turn on host settings")
    sb.enable_forwarding()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"


def test_many_threads_at_once(bridge: str, nsdir: Path, host_veths: list[str]) -> None:
    v4, _ = _free_subnets()
    sb.ensure_bridge(bridge, [f"{v4.network_address + 1}/24"])
    host_veths.extend(sb.veth_name() for _ in range(8))

    def one(n: int) -> dict[str, dict[str, int]]:
        path = str(nsdir / f"c{n}")
        sb.create_netns(path)
        mac, addr = _host_mac_name(), f"{v4.network_address + 10 + n}/24"
        sb.attach(path, sb.Interface(bridge, host_veths[n], "eth0", mac, addr))
        return sb.interface_stats(path)

    with ThreadPoolExecutor(8) as pool:
        stats = list(pool.map(one, range(8)))
    assert all(set(s) == {"eth0"} for s in stats)
    peer = v4.network_address + (1 if _bridged_traffic_dropped() else 17)
    ping = _run_in(str(nsdir / "c0"), BUSYBOX, "ping", "-c1", "-W1", str(peer))
    assert ping.returncode == 0, ping.stdout
