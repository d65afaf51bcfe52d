"""berth's nftables rules: NAT for published ports, masquerade, isolation between networks.

Everything lives in berth's own ``table ip <table>`` and ``table ip6 <table>``.  Per-network
and per-container state is kept in sets and maps, so that a change is an element add or
delete by key (never a rule handle) and every change is one kernel transaction:

* ``bridges`` (ifname) and ``masq_nets`` (subnets with masquerade on);
* ``pub_any`` (proto . port → addr . port) and ``pub_ip`` (host addr . proto . port → …),
  looked up by DNAT in chain ``publish`` for traffic to any local address; a lookup miss
  ends the rule and falls through to the next one;
* ``from_bridge`` / ``to_bridge`` (ifname → ``jump out-<bridge>`` / ``jump in-<bridge>``),
  dispatched from the ``forward`` chain; the per-network chains hold icc, internal and
  isolation.

Beside dockerd, whose iptables-nft sets ``ip filter FORWARD`` to policy drop, berth adds one
``jump <TABLE>-FORWARD`` to that chain and accepts its bridges' traffic there
(:meth:`Firewall.ensure_forward_accept`); nothing else of that table is touched.

The batch text is built by small pure functions that validate every value they write, so
a bad name or address is :class:`errdefs.InvalidParameter`, never nft syntax.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from berth import errdefs
from berth.network._nft import Nftables

Family = Literal["ip", "ip6"]
FAMILIES: tuple[Family, Family] = ("ip", "ip6")

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_PROTOS = frozenset({"tcp", "udp", "sctp"})
_ANY_HOST = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class NetworkRules:
    """What the firewall needs of one bridge network."""

    bridge: str  # device name
    subnet4: str  # "10.210.0.0/24"; "" if none
    subnet6: str = ""  # "" when the network has no IPv6
    internal: bool = False  # no traffic in or out of the bridge, only within
    masquerade: bool = True  # com.docker.network.bridge.enable_ip_masquerade
    icc: bool = True  # com.docker.network.bridge.enable_icc


@dataclass(frozen=True)
class PortRule:
    """One published port; the container address's family decides the table."""

    proto: str  # "tcp" | "udp" | "sctp"
    host_ip: str  # "" / "0.0.0.0" / "::" = every local address, else one address
    host_port: int
    container_ip: str
    container_port: int


# ---------------------------------------------------------------------------------------
# validation: everything written into a batch passes through one of these


def _ifname(name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise errdefs.InvalidParameter(f"invalid interface name {name!r}")
    return name


def _table(name: str) -> str:
    if not _TABLE.fullmatch(name):
        raise errdefs.InvalidParameter(f"invalid nftables table name {name!r}")
    return name


def _subnet(value: str, family: Family) -> str:
    """``value`` as a network in canonical form ("10.210.0.1/24" → "10.210.0.0/24")."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise errdefs.InvalidParameter(f"invalid subnet {value!r}") from e
    if net.version != (4 if family == "ip" else 6):
        raise errdefs.InvalidParameter(f"subnet {value!r} is not IPv{4 if family == 'ip' else 6}")
    return net.with_prefixlen


def _port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise errdefs.InvalidParameter(f"invalid {what} {value!r}")
    return value


@dataclass(frozen=True)
class _Element:
    """A published port as a map element of one family: ``key : value`` in nft syntax."""

    family: Family
    map: Literal["pub_any", "pub_ip"]
    key: str
    value: str


def _port_element(port: PortRule) -> _Element:
    if port.proto not in _PROTOS:
        raise errdefs.InvalidParameter(f"invalid protocol {port.proto!r}")
    hport = _port(port.host_port, "host port")
    cport = _port(port.container_port, "container port")
    try:
        cip = ipaddress.ip_address(port.container_ip)
    except ValueError as e:
        raise errdefs.InvalidParameter(f"invalid container address {port.container_ip!r}") from e
    family: Family = "ip" if cip.version == 4 else "ip6"
    value = f"{cip} . {cport}"
    if port.host_ip in _ANY_HOST:
        return _Element(family, "pub_any", f"{port.proto} . {hport}", value)
    try:
        hip = ipaddress.ip_address(port.host_ip)
    except ValueError as e:
        raise errdefs.InvalidParameter(f"invalid host address {port.host_ip!r}") from e
    if hip.version != cip.version:
        raise errdefs.InvalidParameter(
            f"cannot publish {port.host_ip} to {port.container_ip}: different address families"
        )
    return _Element(family, "pub_ip", f"{hip} . {port.proto} . {hport}", value)


def _port_elements(ports: Iterable[PortRule]) -> list[_Element]:
    return [_port_element(p) for p in ports]


# ---------------------------------------------------------------------------------------
# batch text


def _skeleton(family: Family, table: str) -> list[str]:
    """Declare the table's sets, maps and fixed chains; idempotent (the rules of the fixed
    chains are flushed and written again in the same transaction)."""
    ip = family
    addr = "ipv4_addr" if family == "ip" else "ipv6_addr"
    loopback = "127.0.0.0/8" if family == "ip" else "::1"
    t = f"{family} {table}"
    lines = [
        f"add table {t}",
        f"add set {t} bridges {{ type ifname; }}",
        f"add set {t} masq_nets {{ type {addr}; flags interval; }}",
        f"add map {t} pub_any {{ type inet_proto . inet_service : {addr} . inet_service; }}",
        f"add map {t} pub_ip"
        f" {{ type {addr} . inet_proto . inet_service : {addr} . inet_service; }}",
        f"add map {t} from_bridge {{ type ifname : verdict; }}",
        f"add map {t} to_bridge {{ type ifname : verdict; }}",
        # nft 1.0.6 refuses named priorities (dstnat, srcnat, filter) here: numbers
        f"add chain {t} publish",
        f"add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}",
        f"add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}",
    ]
    rules = {
        "publish": [
            f"meta l4proto {{ tcp, udp, sctp }} dnat {ip} to {ip} daddr . meta l4proto"
            " . th dport map @pub_ip",
            f"meta l4proto {{ tcp, udp, sctp }} dnat {ip} to meta l4proto . th dport map @pub_any",
        ],
        "prerouting": ["fib daddr type local jump publish"],
        "output": ["fib daddr type local jump publish"],
        "postrouting": [
            f"{ip} saddr @masq_nets oifname != @bridges masquerade",
            f"{ip} saddr {loopback} oifname @bridges masquerade",
            "ct status dnat iifname @bridges oifname @bridges masquerade",
        ],
        "forward": ["iifname vmap @from_bridge", "oifname vmap @to_bridge"],
    }
    for chain, body in rules.items():
        lines.append(f"flush chain {t} {chain}")
        lines += [f"add rule {t} {chain} {rule}" for rule in body]
    return lines


def _network_subnet(net: NetworkRules, family: Family) -> str:
    raw = net.subnet4 if family == "ip" else net.subnet6
    return _subnet(raw, family) if raw else ""


def _network_add(family: Family, table: str, net: NetworkRules) -> list[str]:
    """Add (or rewrite) one network's elements and chains."""
    br = _ifname(net.bridge)
    t = f"{family} {table}"
    subnet = _network_subnet(net, family)
    out = [f'oifname "{br}" {"accept" if net.icc else "drop"}']
    inn: list[str] = []
    if net.internal:
        out.append("drop")
        inn.append("drop")
    else:
        out += ["ct status dnat accept", "oifname @bridges drop", "accept"]
        inn += ["ct status dnat accept", "ct state established,related accept", "drop"]
    lines = [f'add element {t} bridges {{ "{br}" }}']
    if subnet and net.masquerade and not net.internal:
        lines.append(f"add element {t} masq_nets {{ {subnet} }}")
    elif subnet:  # the flags may have changed since the network was last written
        lines += [
            f"add element {t} masq_nets {{ {subnet} }}",
            f"delete element {t} masq_nets {{ {subnet} }}",
        ]
    for chain, body in ((f"out-{br}", out), (f"in-{br}", inn)):
        lines += [f"add chain {t} {chain}", f"flush chain {t} {chain}"]
        lines += [f"add rule {t} {chain} {rule}" for rule in body]
    lines += [
        f'add element {t} from_bridge {{ "{br}" : jump out-{br} }}',
        f'add element {t} to_bridge {{ "{br}" : jump in-{br} }}',
    ]
    return lines


def _network_remove(family: Family, table: str, net: NetworkRules) -> list[str]:
    """Remove one network; each delete is preceded by an add of the same object, so the
    batch succeeds whatever part of the network is present."""
    br = _ifname(net.bridge)
    t = f"{family} {table}"
    subnet = _network_subnet(net, family)
    lines = [f'add element {t} bridges {{ "{br}" }}', f'delete element {t} bridges {{ "{br}" }}']
    if subnet:
        lines += [
            f"add element {t} masq_nets {{ {subnet} }}",
            f"delete element {t} masq_nets {{ {subnet} }}",
        ]
    for vmap, chain in (("from_bridge", f"out-{br}"), ("to_bridge", f"in-{br}")):
        lines += [
            f"add chain {t} {chain}",
            f"flush chain {t} {chain}",
            f'add element {t} {vmap} {{ "{br}" : jump {chain} }}',
            f'delete element {t} {vmap} {{ "{br}" }}',
            f"delete chain {t} {chain}",
        ]
    return lines


def _elements_by_map(elements: Iterable[_Element]) -> dict[tuple[Family, str], list[_Element]]:
    groups: dict[tuple[Family, str], list[_Element]] = {}
    for e in elements:
        groups.setdefault((e.family, e.map), []).append(e)
    return groups


def _ports_add(table: str, elements: Iterable[_Element]) -> list[str]:
    lines = []
    for (family, name), group in _elements_by_map(elements).items():
        items = ", ".join(f"{e.key} : {e.value}" for e in group)
        lines.append(f"add element {family} {table} {name} {{ {items} }}")
    return lines


def _ports_remove(table: str, elements: Iterable[_Element]) -> list[str]:
    """Add then delete: a missing element is no error.  The add fails (``File exists``)
    only when a key is mapped to a different container, which the caller handles."""
    lines = []
    for (family, name), group in _elements_by_map(elements).items():
        items = ", ".join(f"{e.key} : {e.value}" for e in group)
        keys = ", ".join(e.key for e in group)
        lines.append(f"add element {family} {table} {name} {{ {items} }}")
        lines.append(f"delete element {family} {table} {name} {{ {keys} }}")
    return lines


def _table_batch(
    family: Family, table: str, networks: Iterable[NetworkRules], ports: Iterable[PortRule]
) -> list[str]:
    """The whole of one family's table, replacing whatever was there."""
    t = f"{family} {table}"
    lines = [f"add table {t}", f"delete table {t}", *_skeleton(family, table)]
    for net in networks:
        lines += _network_add(family, table, net)
    lines += _ports_add(table, [e for e in _port_elements(ports) if e.family == family])
    return lines


def _forward_chain(table: str) -> str:
    return f"{_table(table).upper()}-FORWARD"


def _forward_batch(
    family: Family,
    chain: str,
    bridges: Sequence[str],
    jumps: Sequence[int],
    chain_exists: bool,
) -> list[str]:
    """Make ``<family> filter <chain>`` accept exactly ``bridges`` with exactly one jump to it
    from FORWARD (``jumps``: handles of the jumps there now); no bridges: remove both."""
    t = f"{family} filter"
    lines = []
    if not bridges:
        lines += [f"delete rule {t} FORWARD handle {h}" for h in jumps]
        if chain_exists:
            lines += [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
        return lines
    lines += [f"add chain {t} {chain}", f"flush chain {t} {chain}"]
    for br in bridges:
        lines.append(f'add rule {t} {chain} iifname "{_ifname(br)}" accept')
        lines.append(f'add rule {t} {chain} oifname "{br}" accept')
    if not jumps:
        lines.append(f"add rule {t} FORWARD jump {chain}")
    lines += [f"delete rule {t} FORWARD handle {h}" for h in jumps[1:]]
    return lines


def _batch(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# reading the filter table written by iptables-nft


@dataclass(frozen=True)
class _ForwardState:
    jumps: tuple[int, ...]  # handles of FORWARD's rules that jump to our chain
    chain_exists: bool
    accepted: tuple[tuple[str, str], ...]  # (iifname|oifname, bridge) in rule order


def _forward_state(listing: Any, chain: str) -> _ForwardState | None:
    """Parse ``list table <family> filter`` (JSON); None when it has no FORWARD chain."""
    forward = exists = False
    jumps: list[int] = []
    accepted: list[tuple[str, str]] = []
    for obj in listing.get("nftables", []):
        if "chain" in obj:
            name = obj["chain"].get("name")
            forward = forward or name == "FORWARD"
            exists = exists or name == chain
        rule = obj.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        if rule.get("chain") == "FORWARD":
            if any(e.get("jump", {}).get("target") == chain for e in exprs):
                jumps.append(int(rule["handle"]))
        elif rule.get("chain") == chain:
            accepted.append(_accept_rule(exprs))
    if not forward:
        return None
    return _ForwardState(tuple(jumps), exists, tuple(accepted))


def _accept_rule(exprs: list[Any]) -> tuple[str, str]:
    """``iifname "br" accept`` → ("iifname", "br"); anything else → ("", "") (rewritten)."""
    if len(exprs) == 2 and "accept" in exprs[1] and "match" in exprs[0]:
        match = exprs[0]["match"]
        key = match.get("left", {}).get("meta", {}).get("key")
        if match.get("op") == "==" and key in ("iifname", "oifname"):
            return key, str(match.get("right"))
    return "", ""


def _is_missing(err: errdefs.System) -> bool:
    return "No such file or directory" in err.message


# ---------------------------------------------------------------------------------------


class Firewall:
    """berth's rules in ``table ip <table>`` and ``table ip6 <table>``; one transaction per call."""

    def __init__(self, table: str = "berth", nft: Nftables | None = None) -> None:
        self.table = _table(table)
        self.forward_chain = _forward_chain(table)
        self._nft = nft if nft is not None else Nftables()
        self._own_nft = nft is None

    def setup(self, networks: Iterable[NetworkRules], ports: Iterable[PortRule]) -> None:
        """Replace berth's tables (ip and ip6) atomically with exactly these: at daemon start,
        so rules of containers that are gone disappear and live ones keep working."""
        networks, ports = list(networks), list(ports)
        lines: list[str] = []
        for family in FAMILIES:
            lines += _table_batch(family, self.table, networks, ports)
        self._nft.run(_batch(lines))

    def add_network(self, net: NetworkRules) -> None:
        """Add (or rewrite) one network; creates the tables if they are missing."""
        lines: list[str] = []
        for family in FAMILIES:
            lines += _skeleton(family, self.table)
            lines += _network_add(family, self.table, net)
        self._nft.run(_batch(lines))

    def remove_network(self, net: NetworkRules) -> None:
        """Remove one network, whatever part of it is present (nothing if the tables are gone)."""
        lines: list[str] = []
        for family in FAMILIES:
            lines += _network_remove(family, self.table, net)
        try:
            self._nft.run(_batch(lines))
        except errdefs.System as e:
            if not _is_missing(e) or self._tables_present():
                raise

    def add_ports(self, ports: Sequence[PortRule]) -> None:
        """Publish a container's ports in one transaction.

        A key already mapped elsewhere (left by a container whose removal failed) is
        replaced: berth's port allocator, not the kernel, decides who owns a port.
        """
        elements = _port_elements(ports)
        if not elements:
            return
        try:
            self._nft.run(_batch(_ports_add(self.table, elements)))
        except errdefs.System as e:
            if "File exists" not in e.message:
                raise
            for el in elements:  # slow path: find the stale ones
                try:
                    self._nft.run(_batch(_ports_add(self.table, [el])))
                except errdefs.System as e2:
                    if "File exists" not in e2.message:
                        raise
                    t = f"{el.family} {self.table}"
                    self._nft.run(
                        _batch(
                            [
                                f"delete element {t} {el.map} {{ {el.key} }}",
                                f"add element {t} {el.map} {{ {el.key} : {el.value} }}",
                            ]
                        )
                    )

    def remove_ports(self, ports: Sequence[PortRule]) -> None:
        """Unpublish ports in one transaction; missing ones are no error, and a key now
        mapped to another container is left alone."""
        elements = _port_elements(ports)
        if not elements:
            return
        try:
            self._nft.run(_batch(_ports_remove(self.table, elements)))
        except errdefs.System as e:
            if "File exists" in e.message:
                for el in elements:  # slow path: skip the keys that are not ours
                    try:
                        self._nft.run(_batch(_ports_remove(self.table, [el])))
                    except errdefs.System as e2:
                        if "File exists" not in e2.message:
                            raise
            elif not _is_missing(e) or self._tables_present():
                raise

    def ensure_forward_accept(self, bridges: Iterable[str]) -> None:
        """Where ``<family> filter FORWARD`` exists (dockerd's iptables-nft), make chain
        ``<TABLE>-FORWARD`` accept exactly ``bridges`` with one jump to it from FORWARD.

        Reads the filter tables and writes only when they differ; no bridges removes the
        jump and the chain.  No other rule, chain or policy there is changed.
        """
        wanted = sorted({_ifname(b) for b in bridges})
        want_rules = tuple((k, b) for b in wanted for k in ("iifname", "oifname"))
        for family in FAMILIES:
            state = self._forward_state(family)
            if state is None:
                continue
            if wanted and len(state.jumps) == 1 and state.accepted == want_rules:
                continue
            if not wanted and not state.jumps and not state.chain_exists:
                continue
            self._nft.run(
                _batch(
                    _forward_batch(
                        family, self.forward_chain, wanted, state.jumps, state.chain_exists
                    )
                )
            )

    def teardown(self) -> None:
        """Delete both tables and the FORWARD jump with its chain: a test daemon's cleanup,
        or berthd with its last network gone."""
        lines: list[str] = []
        for family in FAMILIES:
            lines += [f"add table {family} {self.table}", f"delete table {family} {self.table}"]
        self._nft.run(_batch(lines))
        self.ensure_forward_accept(())

    def close(self) -> None:
        if self._own_nft:
            self._nft.close()

    def _forward_state(self, family: Family) -> _ForwardState | None:
        try:
            listing = self._nft.run_json(f"list table {family} filter")
        except errdefs.System as e:
            if _is_missing(e):
                return None
            raise
        return _forward_state(listing, self.forward_chain)

    def _tables_present(self) -> bool:
        listing = self._nft.run_json("list tables")
        return any(
            obj.get("table", {}).get("name") == self.table for obj in listing.get("nftables", [])
        )


__all__ = ["Firewall", "NetworkRules", "PortRule"]
