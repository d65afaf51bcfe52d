"""IP address management: subnets for networks, addresses for endpoints.

Pure bookkeeping, as libnetwork's default IPAM: a network's subnet is either the
user's or the first subnet of the default pools that overlaps neither another
network nor anything routed on the host (so berth and dockerd can share a host:
whoever comes second skips what the first one uses).  Nothing here is persisted:
after a restart the controller reserves again what live containers hold.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from berth import errdefs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PoolSpec:
    """One ``--default-address-pool`` entry: *base* cut into subnets of *size* bits."""

    base: IPNetwork
    size: int

    @classmethod
    def parse(cls, base: str, size: int) -> PoolSpec:
        try:
            net = ipaddress.ip_network(base, strict=True)
        except ValueError as e:
            raise errdefs.InvalidParameter(f"invalid default address pool {base!r}: {e}") from None
        if not net.prefixlen <= size <= net.max_prefixlen - 2:
            raise errdefs.InvalidParameter(
                f"invalid default address pool {base}: size {size} must be between "
                f"{net.prefixlen} and {net.max_prefixlen - 2}"
            )
        return cls(net, size)

    def subnets(self) -> Iterator[IPNetwork]:
        return self.base.subnets(new_prefix=self.size)


#: berth's default pools: 512 /24s away from Docker's 172.17.0.0/16 and its other defaults
DEFAULT_POOLS = (PoolSpec(ipaddress.ip_network("10.210.0.0/15"), 24),)
#: where IPv6 subnets come from when a network asks for IPv6 without a subnet
DEFAULT_POOLS_V6 = (PoolSpec(ipaddress.ip_network("fd9b:e27f:3b00::/48"), 64),)


def parse_network(value: str, what: str = "subnet") -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid {what}: {value!r}") from None


def parse_address(value: str, what: str = "address") -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid {what}: {value!r}") from None


def free_subnet(
    pools: Iterable[PoolSpec], taken: Iterable[IPNetwork], host: Iterable[IPNetwork] = ()
) -> IPNetwork:
    """The first pool subnet that overlaps nothing taken and nothing on the host."""
    used = [*taken, *host]
    pools = list(pools)
    for pool in pools:
        candidates = [n for n in used if n.version == pool.base.version and n.overlaps(pool.base)]
        for subnet in pool.subnets():
            if not any(subnet.overlaps(n) for n in candidates):
                return subnet
    family = "IPv6" if any(p.base.version == 6 for p in pools) else "IPv4"
    raise errdefs.Forbidden(
        f"could not find an available, non-overlapping {family} address pool among the "
        "defaults to assign to the network"
    )


@dataclass
class AddressSpace:
    """The addresses of one subnet: its gateway, the user's reserved auxiliary
    addresses and the endpoints' addresses, handed out lowest first from *pool*
    (the ``--ip-range``, or the whole subnet)."""

    subnet: IPNetwork
    gateway: IPAddress | None = None
    pool: IPNetwork | None = None
    reserved: set[IPAddress] = field(default_factory=set)
    _used: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.pool is None:
            self.pool = self.subnet
        if self.gateway is not None:
            self.reserved.add(self.gateway)

    def _first_last(self) -> tuple[int, int]:
        assert self.pool is not None
        first = int(self.pool.network_address)
        last = int(self.pool.broadcast_address)
        # The subnet's own network and broadcast addresses are never handed out.
        first = max(first, int(self.subnet.network_address) + 1)
        if self.subnet.version == 4:
            last = min(last, int(self.subnet.broadcast_address) - 1)
        return first, last

    def allocate(self, preferred: IPAddress | None = None) -> IPAddress:
        """An address for an endpoint: *preferred* (``--ip``) or the next free one."""
        with self._lock:
            reserved = {int(a) for a in self.reserved}
            if preferred is not None:
                if preferred not in self.subnet:
                    raise errdefs.InvalidParameter(
                        f"no configured subnet or ip-range contain the IP address {preferred}"
                    )
                n = int(preferred)
                edges = {int(self.subnet.network_address)}
                if self.subnet.version == 4:
                    edges.add(int(self.subnet.broadcast_address))
                if n in self._used or n in reserved or n in edges:
                    raise errdefs.Conflict("Address already in use")
                self._used.add(n)
                return preferred
            # Lowest free first, as libnetwork: a restarted container keeps its address
            # when nobody took it meanwhile.
            first, last = self._first_last()
            for n in range(first, last + 1):
                if n not in self._used and n not in reserved:
                    self._used.add(n)
                    return ipaddress.ip_address(n)
            raise errdefs.Unavailable(f"no available IP addresses on network subnet {self.subnet}")

    def reserve(self, address: IPAddress) -> bool:
        """Take *address* again for an endpoint that outlived a restart; False if taken."""
        with self._lock:
            n = int(address)
            if address not in self.subnet or n in self._used or address in self.reserved:
                return False
            self._used.add(n)
            return True

    def release(self, address: IPAddress) -> None:
        with self._lock:
            self._used.discard(int(address))

    def in_use(self) -> int:
        return len(self._used)
