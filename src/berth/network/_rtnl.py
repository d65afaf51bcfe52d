"""One rtnetlink socket, with pyroute2's message classes for the wire format.

pyroute2's ``IPRoute`` runs an asyncio loop of its own in every socket: 0.5 ms to open one
and 0.6 ms a request, ten requests and two sockets for each container plugged into a
bridge. It also imports its mock engine, and with it ``unittest``: 99 modules in an idle
berthd. Here a plain blocking socket sends what ``ifinfmsg``, ``ifaddrmsg`` and ``rtmsg``
encode and decodes the replies with them; the socket belongs to the namespace of the
thread that opens it. This module is the only code that sees pyroute2's untyped objects.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from berth.utils.lazypkg import skip_init

skip_init("pyroute2")  # its __init__ imports every family it speaks (NDB, IPDB, ...)

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # type: ignore[import-untyped]  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # type: ignore[import-untyped]  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # type: ignore[import-untyped]  # noqa: E402

__all__ = ["STAT_KEYS", "Link", "Rtnl"]

#: the counters of ``docker stats``' "networks" section, in its order
STAT_KEYS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NETLINK_ROUTE = 0
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_SETLINK = 16, 17, 18, 19
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_RTEXT_FILTER_SKIP_STATS = 1 << 3  # a lookup needs no counters: a third of the reply
_NLA_F_NESTED = 0x8000
_IFF_UP = 0x1
_IFA_F_NODAD = 0x02
_IFLA_BRPORT_MODE_HAIRPIN = 1
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3  # what `ip route add` (and Docker) marks a route with
_RT_SCOPE_UNIVERSE = 0
_RTN_UNICAST = 1
_SIOCGIFINDEX = 0x8933
_IFREQ_INDEX = struct.Struct("16si20x")  # struct ifreq: the name, then ifr_ifindex
_BUFSIZE = 65536  # the kernel fills a dump's datagrams to at most 32 KiB
_HEADER = struct.Struct("=IHHII")
_ERRNO = struct.Struct("=i")


@dataclass(frozen=True)
class Link:
    index: int
    kind: str
    mtu: int
    up: bool


class Rtnl:
    """A socket in the network namespace of the thread that opens it; one thread at a time."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
        )
        try:
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._seq = 0
        self._buf = bytearray(_BUFSIZE)

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _request(self, msg: Any, kind: int, flags: int = _NLM_F_ACK) -> list[Any]:
        """Send *msg* as a *kind* request; the replies decoded as *msg*'s class. An error
        the kernel answers is raised as OSError with its errno."""
        self._seq += 1
        seq = self._seq
        header = msg["header"]
        header["type"] = kind
        header["flags"] = _NLM_F_REQUEST | flags
        header["sequence_number"] = seq
        msg.encode()
        self._sock.send(msg.data)
        cls = type(msg)
        buf = self._buf
        view = memoryview(buf)
        out: list[Any] = []
        while True:
            size, _, msg_flags, _ = self._sock.recvmsg_into([buf])
            if msg_flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "netlink reply larger than the buffer")
            offset = 0
            while offset + _HEADER.size <= size:
                length, reply, _, reply_seq, _ = _HEADER.unpack_from(buf, offset)
                if length < _HEADER.size or offset + length > size:
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                if reply_seq == seq:
                    if reply == _NLMSG_ERROR:
                        (code,) = _ERRNO.unpack_from(buf, offset + _HEADER.size)
                        if code:
                            raise OSError(-code, os.strerror(-code))
                        return out  # the acknowledgement ends a request
                    if reply == _NLMSG_DONE:
                        return out  # ... and this a dump
                    decoded = cls(bytes(view[offset : offset + length]))  # one copy
                    decoded.decode()
                    out.append(decoded)
                offset += (length + 3) & ~3

    # links

    def index(self, name: str) -> int | None:
        """The index of device *name*, or None: an ioctl in the socket's namespace, 2 µs
        where a link request and its decoding take 0.5 ms."""
        try:
            reply = fcntl.ioctl(self._sock, _SIOCGIFINDEX, _IFREQ_INDEX.pack(name.encode(), 0))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return int(_IFREQ_INDEX.unpack(reply)[1])

    def link(self, name: str) -> Link | None:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_EXT_MASK", _RTEXT_FILTER_SKIP_STATS)]
        try:
            (info,) = self._request(msg, _RTM_GETLINK)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return Link(
            index=int(info["index"]),
            kind=str(info.get(("linkinfo", "kind")) or ""),
            mtu=int(info.get("mtu") or 0),
            up=bool(int(info["flags"]) & _IFF_UP),
        )

    def links(self) -> list[tuple[str, int, dict[str, int]]]:
        """(name, flags, counters) of every device."""
        out = []
        for info in self._request(ifinfmsg(), _RTM_GETLINK, _NLM_F_DUMP):
            raw = info.get("stats64") or info.get("stats") or {}
            counters = {key: int(raw.get(key) or 0) for key in STAT_KEYS}
            out.append((str(info.get("ifname")), int(info["flags"]), counters))
        return out

    def _set(self, index: int, attrs: list[tuple[str, Any]], *, up: bool = False) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        if up:
            msg["flags"] = msg["change"] = _IFF_UP
        msg["attrs"] = attrs
        self._request(msg, _RTM_SETLINK)

    def add_bridge(self, name: str, mtu: int, mac: str) -> None:
        msg = ifinfmsg()
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_MTU", mtu),
            ("IFLA_ADDRESS", mac),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}),
        ]
        self._request(msg, _RTM_NEWLINK, _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL)

    def add_veth(
        self, name: str, *, master: int, mtu: int, peer: str, peer_netns: int, peer_mac: str
    ) -> None:
        """Both ends in one request: the peer is born in the namespace with its final name,
        MAC and MTU; the host end is born a bridge port, up."""
        peer_attrs = [
            ("IFLA_IFNAME", peer),
            ("IFLA_NET_NS_FD", peer_netns),
            ("IFLA_ADDRESS", peer_mac),
            ("IFLA_MTU", mtu),
        ]
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = _IFF_UP
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_MTU", mtu),
            ("IFLA_MASTER", master),
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
                    ]
                },
            ),
        ]
        self._request(msg, _RTM_NEWLINK, _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL)

    def set_mac(self, index: int, mac: str) -> None:
        self._set(index, [("IFLA_ADDRESS", mac)])

    def set_up(self, index: int) -> None:
        self._set(index, [], up=True)

    def set_mtu(self, index: int, mtu: int) -> None:
        self._set(index, [("IFLA_MTU", mtu)])

    def set_hairpin(self, index: int) -> None:
        """Hairpin mode on bridge port *index*, as ``bridge link set ... hairpin on``."""
        msg = ifinfmsg()
        msg["family"] = socket.AF_BRIDGE
        msg["index"] = index
        protinfo = {"attrs": [("IFLA_BRPORT_MODE", _IFLA_BRPORT_MODE_HAIRPIN)]}
        msg["attrs"] = [("IFLA_PROTINFO", protinfo, _NLA_F_NESTED)]
        self._request(msg, _RTM_SETLINK)

    def delete(self, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        self._request(msg, _RTM_DELLINK)

    # addresses and routes

    def addresses(self, index: int | None = None) -> list[IPInterface]:
        return [
            ipaddress.ip_interface(f"{msg.get('address')}/{int(msg['prefixlen'])}")
            for msg in self._request(ifaddrmsg(), _RTM_GETADDR, _NLM_F_DUMP)
            if msg.get("address") and (index is None or msg["index"] == index)
        ]

    def add_address(self, index: int, addr: IPInterface) -> None:
        msg = ifaddrmsg()
        msg["index"] = index
        msg["prefixlen"] = addr.network.prefixlen
        if addr.version == 4:
            msg["family"] = socket.AF_INET
            msg["attrs"] = [
                ("IFA_LOCAL", str(addr.ip)),
                ("IFA_ADDRESS", str(addr.ip)),
                ("IFA_BROADCAST", str(addr.network.broadcast_address)),
            ]
        else:  # no duplicate address detection: the address is ours and usable at once
            msg["family"] = socket.AF_INET6
            msg["flags"] = _IFA_F_NODAD
            msg["attrs"] = [("IFA_ADDRESS", str(addr.ip))]
        self._request(msg, _RTM_NEWADDR, _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL)

    def add_default_route(self, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
        msg["table"] = _RT_TABLE_MAIN
        msg["proto"] = _RTPROT_BOOT
        msg["scope"] = _RT_SCOPE_UNIVERSE
        msg["type"] = _RTN_UNICAST
        msg["attrs"] = [("RTA_GATEWAY", str(gateway))]
        self._request(msg, _RTM_NEWROUTE, _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL)

    def main_routes(self) -> list[IPNetwork]:
        """Destinations of the unicast routes in the main table."""
        out: list[IPNetwork] = []
        for msg in self._request(rtmsg(), _RTM_GETROUTE, _NLM_F_DUMP):
            if msg.get("table") != _RT_TABLE_MAIN or msg["type"] != _RTN_UNICAST:
                continue
            dst = msg.get("dst")
            if dst:
                out.append(ipaddress.ip_network(f"{dst}/{int(msg['dst_len'])}", strict=False))
        return out
