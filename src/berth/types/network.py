"""Network models of the Engine API (``api/types/network`` in moby, API 1.51).

Fields use snake_case in Python and the Engine's spelling on the wire
(``rename="pascal"`` plus explicit names where Go's initialisms differ).  In
requests, collections and pointers are Optional because Go clients send
``null`` for them; in answers, what dockerd always sends as an object (a
network's ``Options``, ``Labels``, ``Containers``, ``ConfigFrom``) is never
None.  Structs listing ``__omitempty__`` must be encoded with
:func:`berth.types.wire.encode` to drop those keys when empty, as Go does.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
from msgspec import field

from berth.types.container import EndpointSettings
from berth.utils.timefmt import ZERO_TIME


class IPAMConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    """One subnet of a network; every member is omitted when empty."""

    subnet: str = ""
    ip_range: str = field(default="", name="IPRange")
    gateway: str = ""
    aux_addresses: dict[str, str] | None = field(default=None, name="AuxiliaryAddresses")

    __omitempty__: ClassVar[frozenset[str]] = frozenset(
        {"Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"}
    )


class IPAM(msgspec.Struct, rename="pascal"):
    """A network's IP address management.  ``Options`` and ``Config`` are Go's nil
    (``null``) unless set: dockerd shows ``"Options": null`` for the predefined
    networks, ``{}`` for a network created by the CLI (which always sends a map),
    and ``"Config": null`` for a network without subnets (host, none)."""

    driver: str = "default"
    options: dict[str, str] | None = None
    config: list[IPAMConfig] | None = None


class ConfigReference(msgspec.Struct, rename="pascal"):
    """The config-only network a network takes its configuration from ("" for none)."""

    network: str = ""


class NetworkCreateRequest(msgspec.Struct, rename="pascal"):
    """Body of ``POST /networks/create`` (moby's ``network.CreateRequest``).

    ``CheckDuplicate`` is accepted and ignored: since API 1.44 a duplicate name
    always fails (409 "network with name X already exists"), whatever the client
    sends.  ``EnableIPv4`` and ``EnableIPv6`` are None when not given, so that
    the daemon's defaults apply; the router sets ``EnableIPv4`` to None for
    clients before API 1.48, which did not have the field.
    """

    name: str = ""
    check_duplicate: bool | None = None
    driver: str = ""
    scope: str = ""
    enable_ipv4: bool | None = field(default=None, name="EnableIPv4")
    enable_ipv6: bool | None = field(default=None, name="EnableIPv6")
    ipam: IPAM | None = field(default=None, name="IPAM")
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    config_only: bool = False
    config_from: ConfigReference | None = None
    options: dict[str, str] | None = None
    labels: dict[str, str] | None = None


class NetworkCreateResponse(msgspec.Struct, rename="pascal"):
    """``{"Id": ..., "Warning": ""}``: both always present."""

    id: str
    warning: str = ""


class EndpointResource(msgspec.Struct, rename="pascal"):
    """A container's endpoint as a network's ``Containers`` lists it (key: the
    container's ID, or ``ep-<endpoint ID>`` for an endpoint without a sandbox).
    The addresses are CIDR strings ("172.18.0.2/16"), "" when absent."""

    name: str = ""
    endpoint_id: str = field(default="", name="EndpointID")
    mac_address: str = ""
    ipv4_address: str = field(default="", name="IPv4Address")
    ipv6_address: str = field(default="", name="IPv6Address")


class NetworkResource(msgspec.Struct, rename="pascal"):
    """A network as ``GET /networks`` and ``GET /networks/{id}`` answer it
    (moby's ``network.Inspect``; ``network.Summary`` is the same type in 1.51).

    ``Created`` is RFC 3339 with nanoseconds, as Go marshals a ``time.Time``.
    ``Peers`` and ``Services`` (overlay and swarm only, ``omitempty`` in Go) are
    never sent for local networks and are not modelled.
    """

    name: str = ""
    id: str = ""
    created: str = ZERO_TIME
    scope: str = "local"
    driver: str = ""
    enable_ipv4: bool = field(default=False, name="EnableIPv4")
    enable_ipv6: bool = field(default=False, name="EnableIPv6")
    ipam: IPAM = field(default_factory=IPAM, name="IPAM")
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    config_from: ConfigReference = field(default_factory=ConfigReference)
    config_only: bool = False
    containers: dict[str, EndpointResource] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class NetworkConnectRequest(msgspec.Struct, rename="pascal"):
    """Body of ``POST /networks/{id}/connect``."""

    container: str = ""
    endpoint_config: EndpointSettings | None = None


class NetworkDisconnectRequest(msgspec.Struct, rename="pascal"):
    """Body of ``POST /networks/{id}/disconnect``."""

    container: str = ""
    force: bool = False


class NetworkPruneReport(msgspec.Struct, rename="pascal"):
    """``{"NetworksDeleted": [...]}``; ``null`` when nothing was removed, as Go's nil slice."""

    networks_deleted: list[str] | None = None
