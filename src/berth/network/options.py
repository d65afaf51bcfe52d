"""The daemon's network settings, apart so that reading the configuration stays light."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from berth.network.ipam import DEFAULT_POOLS, PoolSpec


@dataclass
class NetworkOptions:
    """The daemon's network settings (dockerd's flags of the same names)."""

    bridge: str = "berth0"  # the default bridge's device
    bip: str = ""  # the default bridge's address/prefix; "" = keep or pick
    fixed_cidr: str = ""
    #: IPv6 on the default bridge, from ``fixed_cidr_v6`` or berth's IPv6 pool
    ipv6: bool = False
    fixed_cidr_v6: str = ""
    default_address_pools: Sequence[PoolSpec] = DEFAULT_POOLS
    iptables: bool = True
    ip_forward: bool = True
    ip_masq: bool = True
    icc: bool = True
    mtu: int = 1500
    #: berth's nftables tables (``ip``/``ip6``); one per daemon on a host
    firewall_table: str = "berth"
    #: upstream servers for names the per-network resolver does not own
    dns: list[str] = field(default_factory=list)
