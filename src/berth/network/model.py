"""The network controller's records: networks (persisted) and endpoints (in memory).

A network is written atomically to ``<data-root>/network/networks/<id>.json``.
Endpoints are not persisted here: a container keeps its own in its
NetworkSettings (as dockerd's container does), and the controller takes them
back from the running containers after a restart.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import msgspec

from berth.network.portmapper import HeldPort

#: drivers berth has, by the names the Engine API uses
BRIDGE, HOST, NULL = "bridge", "host", "null"
#: the networks every daemon has, by name and driver
PREDEFINED = {"bridge": BRIDGE, "host": HOST, "none": NULL}

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ENABLE_ICC = "com.docker.network.bridge.enable_icc"
OPT_ENABLE_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"


class Subnet(msgspec.Struct, omit_defaults=True):
    """One IPAM pool of a network: the user's values or those berth picked."""

    subnet: str
    gateway: str = ""
    ip_range: str = ""
    aux: dict[str, str] = msgspec.field(default_factory=dict)
    #: the user gave the subnet (``--ip`` is allowed only then, as dockerd)
    user: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.subnet, strict=False)

    @property
    def version(self) -> int:
        return self.network.version


class Network(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    driver: str
    created: str
    internal: bool = False
    attachable: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    options: dict[str, str] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = msgspec.field(default_factory=dict)
    #: the IPAM config exactly as the user gave it (shown by inspect)
    subnets: list[Subnet] = msgspec.field(default_factory=list)
    #: the bridge device ("" for host and null)
    bridge: str = ""

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED and PREDEFINED[self.name] == self.driver

    @property
    def is_bridge(self) -> bool:
        return self.driver == BRIDGE

    @property
    def dns(self) -> bool:
        """User-defined bridge networks resolve their containers' names; the default
        bridge does not (dockerd's legacy links do that there)."""
        return self.is_bridge and self.name != "bridge"

    def subnet(self, version: int) -> Subnet | None:
        for s in self.subnets:
            if s.version == version:
                return s
        return None

    def option_bool(self, key: str, default: bool) -> bool:
        value = self.options.get(key)
        if value is None:
            return default
        return value.lower() in ("1", "t", "true")


@dataclass
class Endpoint:
    """A container's interface on one network."""

    id: str
    network_id: str
    container_id: str
    #: the container's name without its slash
    name: str
    iface: str
    host_veth: str
    mac: str
    ipv4: ipaddress.IPv4Interface | None = None
    ipv6: ipaddress.IPv6Interface | None = None
    aliases: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    #: legacy links on a user-defined network: (target's name, alias) the container
    #: alone resolves
    links: tuple[tuple[str, str], ...] = ()
    gateway: bool = False
    ports: list[HeldPort] = field(default_factory=list)

    def addresses(self, family: int) -> list[str]:
        addr = self.ipv4 if family == 4 else self.ipv6
        return [str(addr.ip)] if addr is not None else []
