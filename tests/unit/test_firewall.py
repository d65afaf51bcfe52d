"""The firewall's batch text, without a kernel: what a network and a container's ports write,
the v4/v6 split, and that no value can smuggle nft syntax in."""

from __future__ import annotations

from typing import Any

import pytest

from berth import errdefs
from berth.network import firewall as fw
from berth.network.firewall import Firewall, NetworkRules, PortRule

NET = NetworkRules("br-abc", "10.210.0.0/24", "fd00:1::/64")


class FakeNft:
    """Records batches; answers listings with a canned JSON document."""

    def __init__(self, listing: dict[str, Any] | None = None) -> None:
        self.batches: list[str] = []
        self.listing = listing

    def run(self, commands: str, *, handles: bool = False) -> str:
        self.batches.append(commands)
        return ""

    def run_json(self, commands: str) -> Any:
        if self.listing is None:
            raise errdefs.System("nftables: Error: No such file or directory")
        return self.listing

    def close(self) -> None:
        pass


def _firewall(listing: dict[str, Any] | None = None) -> tuple[Firewall, FakeNft]:
    nft = FakeNft(listing)
    return Firewall(nft=nft), nft  # type: ignore[arg-type]


def test_port_elements_any_and_specific_host() -> None:
    lines = fw._ports_add(
        "berth",
        fw._port_elements(
            [
                PortRule("tcp", "", 8080, "10.210.0.2", 80),
                PortRule("udp", "0.0.0.0", 53, "10.210.0.2", 53),
                PortRule("tcp", "127.0.0.1", 8081, "10.210.0.2", 80),
            ]
        ),
    )
    assert lines == [
        "add element ip berth pub_any { tcp . 8080 : 10.210.0.2 . 80, udp . 53 : 10.210.0.2 . 53 }",
        "add element ip berth pub_ip { 127.0.0.1 . tcp . 8081 : 10.210.0.2 . 80 }",
    ]


def test_port_family_follows_the_container_address() -> None:
    lines = fw._ports_add(
        "berth",
        fw._port_elements(
            [
                PortRule("tcp", "::", 8080, "fd00:1::2", 80),
                PortRule("sctp", "", 9, "fd00:1:0::0002", 9),
                PortRule("tcp", "fd00::9", 8081, "fd00:1::2", 80),
                PortRule("tcp", "::", 8080, "10.210.0.2", 80),
            ]
        ),
    )
    assert lines == [
        "add element ip6 berth pub_any { tcp . 8080 : fd00:1::2 . 80, sctp . 9 : fd00:1::2 . 9 }",
        "add element ip6 berth pub_ip { fd00::9 . tcp . 8081 : fd00:1::2 . 80 }",
        "add element ip berth pub_any { tcp . 8080 : 10.210.0.2 . 80 }",
    ]


def test_remove_ports_adds_then_deletes_keys() -> None:
    firewall, nft = _firewall()
    firewall.remove_ports([PortRule("tcp", "", 8080, "10.210.0.2", 80)])
    assert nft.batches == [
        "add element ip berth pub_any { tcp . 8080 : 10.210.0.2 . 80 }\n"
        "delete element ip berth pub_any { tcp . 8080 }\n"
    ]


def test_one_batch_per_call() -> None:
    firewall, nft = _firewall()
    ports = [PortRule("tcp", "", p, "10.210.0.2", 80) for p in range(8000, 8100)]
    ports.append(PortRule("tcp", "", 8000, "fd00:1::2", 80))
    firewall.add_ports(ports)
    firewall.add_network(NET)
    firewall.setup([NET], ports)
    assert len(nft.batches) == 3
    firewall.add_ports([])
    firewall.remove_ports([])
    assert len(nft.batches) == 3


def test_network_chains_default() -> None:
    lines = fw._network_add("ip", "berth", NET)
    assert 'add element ip berth bridges { "br-abc" }' in lines
    assert "add element ip berth masq_nets { 10.210.0.0/24 }" in lines
    assert 'add element ip berth from_bridge { "br-abc" : jump out-br-abc }' in lines
    assert 'add element ip berth to_bridge { "br-abc" : jump in-br-abc }' in lines
    out = [
        line.removeprefix("add rule ip berth out-br-abc ")
        for line in lines
        if " out-br-abc " in line and line.startswith("add rule")
    ]
    assert out == [
        'oifname "br-abc" accept',
        "ct status dnat accept",
        "oifname @bridges drop",
        "accept",
    ]
    inn = [
        line.removeprefix("add rule ip berth in-br-abc ")
        for line in lines
        if " in-br-abc " in line and line.startswith("add rule")
    ]
    assert inn == ["ct status dnat accept", "ct state established,related accept", "drop"]
    v6 = fw._network_add("ip6", "berth", NET)
    assert "add element ip6 berth masq_nets { fd00:1::/64 }" in v6


def test_network_internal_no_icc_no_masquerade() -> None:
    net = NetworkRules("br-int", "10.211.0.5/24", internal=True, icc=False)
    lines = fw._network_add("ip", "berth", net)
    rules = [line for line in lines if line.startswith("add rule")]
    assert rules == [
        'add rule ip berth out-br-int oifname "br-int" drop',
        "add rule ip berth out-br-int drop",
        "add rule ip berth in-br-int drop",
    ]
    # never masqueraded; an element left from earlier flags is removed
    assert lines.index("add element ip berth masq_nets { 10.211.0.0/24 }") < lines.index(
        "delete element ip berth masq_nets { 10.211.0.0/24 }"
    )
    # no IPv6 subnet: the ip6 table still isolates the bridge but masquerades nothing
    v6 = fw._network_add("ip6", "berth", net)
    assert not any("masq_nets" in line for line in v6)
    assert 'add element ip6 berth from_bridge { "br-int" : jump out-br-int }' in v6


def test_remove_network_is_tolerant_by_construction() -> None:
    lines = fw._network_remove("ip", "berth", NET)
    for i, line in enumerate(lines):
        if line.startswith("delete element"):
            obj = line.removeprefix("delete element ").split(" {")[0]
            assert lines[i - 1].startswith(f"add element {obj} ")
        if line.startswith("delete chain"):
            assert f"add chain {line.removeprefix('delete chain ')}" in lines[:i]


def test_setup_replaces_both_tables() -> None:
    lines = fw._table_batch("ip", "berth", [NET], [PortRule("tcp", "", 1, "fd00::2", 1)])
    assert lines[:2] == ["add table ip berth", "delete table ip berth"]
    assert not any("pub_any {" in line and "add element" in line for line in lines)
    joined = "\n".join(lines)
    assert "priority -100" in joined and "dstnat" not in joined  # nft 1.0.6: numbers
    assert "add rule ip berth postrouting ip saddr 127.0.0.0/8 oifname @bridges masquerade" in lines
    v6 = fw._table_batch("ip6", "berth", [NET], [])
    assert "add rule ip6 berth postrouting ip6 saddr ::1 oifname @bridges masquerade" in v6


@pytest.mark.parametrize(
    "bridge",
    ['br"; flush ruleset; "', "br0 accept", "", "a" * 16, "br*", "br\n0", "br{0}"],
)
def test_bad_interface_names_are_refused(bridge: str) -> None:
    firewall, nft = _firewall()
    with pytest.raises(errdefs.InvalidParameter):
        firewall.add_network(NetworkRules(bridge, "10.0.0.0/24"))
    with pytest.raises(errdefs.InvalidParameter):
        firewall.ensure_forward_accept([bridge])
    assert nft.batches == []


@pytest.mark.parametrize(
    "port",
    [
        PortRule("icmp", "", 80, "10.0.0.2", 80),
        PortRule("tcp . 1 : 1.1.1.1 . 1 }; flush ruleset; {", "", 80, "10.0.0.2", 80),
        PortRule("tcp", "10.0.0.1 . tcp", 80, "10.0.0.2", 80),
        PortRule("tcp", "", 0, "10.0.0.2", 80),
        PortRule("tcp", "", 80, "10.0.0.2", 65536),
        PortRule("tcp", "", 80, "10.0.0.2 } ; flush ruleset", 80),
        PortRule("tcp", "fd00::1", 80, "10.0.0.2", 80),
        PortRule("tcp", "", True, "10.0.0.2", 80),
    ],
)
def test_bad_ports_are_refused(port: PortRule) -> None:
    firewall, nft = _firewall()
    with pytest.raises(errdefs.InvalidParameter):
        firewall.add_ports([port])
    assert nft.batches == []


def test_bad_subnets_and_tables_are_refused() -> None:
    firewall, _ = _firewall()
    for net in (
        NetworkRules("br0", "10.0.0.0/33"),
        NetworkRules("br0", "fd00::/64"),
        NetworkRules("br0", "10.0.0.0/24", "10.1.0.0/24"),
        NetworkRules("br0", "10.0.0.0/24 } ; flush ruleset"),
    ):
        with pytest.raises(errdefs.InvalidParameter):
            firewall.add_network(net)
    with pytest.raises(errdefs.InvalidParameter):
        Firewall(table="berth; flush ruleset", nft=FakeNft())  # type: ignore[arg-type]


def _listing(jumps: int, rules: list[tuple[str, str]], chain: bool = True) -> dict[str, Any]:
    objs: list[dict[str, Any]] = [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "policy": "drop"}},
    ]
    if chain:
        objs.append({"chain": {"family": "ip", "table": "filter", "name": "BERTH-FORWARD"}})
    objs += [
        {
            "rule": {
                "chain": "FORWARD",
                "handle": 10 + i,
                "expr": [{"counter": {}}, {"jump": {"target": "BERTH-FORWARD"}}],
            }
        }
        for i in range(jumps)
    ]
    objs.append(
        {"rule": {"chain": "FORWARD", "handle": 5, "expr": [{"jump": {"target": "DOCKER-USER"}}]}}
    )
    objs += [
        {
            "rule": {
                "chain": "BERTH-FORWARD",
                "handle": 20 + i,
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": br}},
                    {"accept": None},
                ],
            }
        }
        for i, (key, br) in enumerate(rules)
    ]
    return {"nftables": objs}


def test_forward_accept_writes_nothing_when_in_place() -> None:
    rules = [("iifname", "br-a"), ("oifname", "br-a"), ("iifname", "br-b"), ("oifname", "br-b")]
    firewall, nft = _firewall(_listing(1, rules))
    firewall.ensure_forward_accept(["br-b", "br-a", "br-a"])
    assert nft.batches == []


def test_forward_accept_adds_jump_once_and_drops_extras() -> None:
    firewall, nft = _firewall(_listing(0, [], chain=False))
    firewall.ensure_forward_accept(["br-a"])
    assert nft.batches[0].splitlines() == [
        "add chain ip filter BERTH-FORWARD",
        "flush chain ip filter BERTH-FORWARD",
        'add rule ip filter BERTH-FORWARD iifname "br-a" accept',
        'add rule ip filter BERTH-FORWARD oifname "br-a" accept',
        "add rule ip filter FORWARD jump BERTH-FORWARD",
    ]
    firewall, nft = _firewall(_listing(3, [("iifname", "br-a"), ("oifname", "br-a")]))
    firewall.ensure_forward_accept(["br-a"])
    assert nft.batches[0].splitlines()[-2:] == [
        "delete rule ip filter FORWARD handle 11",
        "delete rule ip filter FORWARD handle 12",
    ]


def test_forward_accept_without_bridges_removes_jump_and_chain() -> None:
    firewall, nft = _firewall(_listing(1, [("iifname", "br-a")]))
    firewall.ensure_forward_accept([])
    assert nft.batches[0].splitlines() == [
        "delete rule ip filter FORWARD handle 10",
        "flush chain ip filter BERTH-FORWARD",
        "delete chain ip filter BERTH-FORWARD",
    ]


def test_forward_accept_leaves_hosts_without_a_filter_table_alone() -> None:
    firewall, nft = _firewall(None)
    firewall.ensure_forward_accept(["br-a"])
    firewall.teardown()
    assert nft.batches == [
        "add table ip berth\ndelete table ip berth\nadd table ip6 berth\ndelete table ip6 berth\n"
    ]
