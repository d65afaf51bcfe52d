"""berth.network.ipam: default pools, free subnets and per-subnet address spaces
(pure bookkeeping, as libnetwork's default IPAM)."""

from __future__ import annotations

import ipaddress

import pytest

from berth import errdefs
from berth.network.ipam import (
    DEFAULT_POOLS,
    DEFAULT_POOLS_V6,
    AddressSpace,
    PoolSpec,
    free_subnet,
    parse_address,
    parse_network,
)

NO_POOL = (
    "could not find an available, non-overlapping IPv4 address pool among the defaults "
    "to assign to the network"
)


def net(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(s)


def ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(s)


# -- PoolSpec ------------------------------------------------------------------------


def test_poolspec_parse_good() -> None:
    p = PoolSpec.parse("10.10.0.0/16", 24)
    assert p.base == net("10.10.0.0/16")
    assert p.size == 24
    subnets = list(p.subnets())
    assert len(subnets) == 256
    assert subnets[0] == net("10.10.0.0/24")
    assert subnets[-1] == net("10.10.255.0/24")


def test_poolspec_parse_size_equal_to_base_prefix_is_one_subnet() -> None:
    assert list(PoolSpec.parse("192.168.0.0/24", 24).subnets()) == [net("192.168.0.0/24")]


def test_poolspec_parse_v6() -> None:
    p = PoolSpec.parse("fd00:1::/48", 64)
    first = next(iter(p.subnets()))
    assert first == net("fd00:1::/64")
    assert first.version == 6


@pytest.mark.parametrize("base", ["not-a-network", "10.0.0.0/33", "300.1.0.0/16", ""])
def test_poolspec_parse_bad_base(base: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="invalid default address pool"):
        PoolSpec.parse(base, 24)


def test_poolspec_parse_base_with_host_bits_refused() -> None:
    with pytest.raises(errdefs.InvalidParameter):
        PoolSpec.parse("10.0.0.1/16", 24)


@pytest.mark.parametrize(
    ("base", "size"),
    [
        ("10.0.0.0/16", 8),  # larger than the base
        ("10.0.0.0/16", 15),
        ("10.0.0.0/16", 31),  # no room for hosts
        ("10.0.0.0/16", 33),
        ("10.0.0.0/16", -1),
        ("fd00::/48", 127),
        ("fd00::/48", 32),
    ],
)
def test_poolspec_parse_size_out_of_range(base: str, size: int) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="size"):
        PoolSpec.parse(base, size)


def test_poolspec_parse_size_bounds_accepted() -> None:
    assert PoolSpec.parse("10.0.0.0/16", 30).size == 30
    assert PoolSpec.parse("10.0.0.0/16", 16).size == 16


def test_default_pools_are_private_and_away_from_docker() -> None:
    for p in (*DEFAULT_POOLS, *DEFAULT_POOLS_V6):
        assert p.base.is_private
    assert DEFAULT_POOLS[0].base.version == 4
    assert DEFAULT_POOLS_V6[0].base.version == 6
    assert not DEFAULT_POOLS[0].base.overlaps(net("172.17.0.0/16"))


def test_parse_helpers() -> None:
    assert parse_network("10.1.2.3/24") == net("10.1.2.0/24")  # host bits dropped
    assert parse_address("fd00::1") == ip("fd00::1")
    with pytest.raises(errdefs.InvalidParameter, match=r"invalid ip-range: 'x'"):
        parse_network("x", "ip-range")
    with pytest.raises(errdefs.InvalidParameter, match=r"invalid gateway: '10\.0\.0'"):
        parse_address("10.0.0", "gateway")


# -- free_subnet ---------------------------------------------------------------------


POOL = PoolSpec.parse("10.50.0.0/22", 24)  # four /24s


def test_free_subnet_first_of_pool() -> None:
    assert free_subnet([POOL], []) == net("10.50.0.0/24")


def test_free_subnet_skips_taken_networks() -> None:
    taken = [net("10.50.0.0/24"), net("10.50.1.0/24")]
    assert free_subnet([POOL], taken) == net("10.50.2.0/24")


def test_free_subnet_skips_partially_overlapping_taken() -> None:
    # a /28 inside the first /24 and a /23 covering the 2nd and 3rd
    taken = [net("10.50.0.16/28"), net("10.50.2.0/23")]
    assert free_subnet([POOL], taken) == net("10.50.1.0/24")
    taken = [net("10.50.0.16/28"), net("10.50.1.128/25")]
    assert free_subnet([POOL], taken) == net("10.50.2.0/24")


def test_free_subnet_skips_host_networks() -> None:
    host = [net("10.50.0.0/23")]
    assert free_subnet([POOL], [], host) == net("10.50.2.0/24")
    assert free_subnet([POOL], [net("10.50.2.0/24")], host) == net("10.50.3.0/24")


def test_free_subnet_host_route_covering_the_pool() -> None:
    with pytest.raises(errdefs.Forbidden):
        free_subnet([POOL], [], [net("10.0.0.0/8")])


def test_free_subnet_ignores_unrelated_networks() -> None:
    taken = [net("192.168.0.0/16"), net("fd00::/8"), net("10.51.0.0/24")]
    assert free_subnet([POOL], taken, [net("172.16.0.0/12")]) == net("10.50.0.0/24")


def test_free_subnet_next_pool_when_first_is_full() -> None:
    second = PoolSpec.parse("192.168.100.0/24", 26)
    taken = [net("10.50.0.0/22")]
    assert free_subnet([POOL, second], taken) == net("192.168.100.0/26")


def test_free_subnet_v6() -> None:
    assert free_subnet(DEFAULT_POOLS_V6, []) == net("fd9b:e27f:3b00::/64")
    got = free_subnet(DEFAULT_POOLS_V6, [net("fd9b:e27f:3b00::/64"), net("10.210.0.0/24")])
    assert got == net("fd9b:e27f:3b00:1::/64")
    # an IPv4 host route does not matter to a v6 pool and vice versa
    assert free_subnet(DEFAULT_POOLS_V6, [], [net("10.0.0.0/8")]).version == 6


def test_free_subnet_v6_skips_host_v6_routes() -> None:
    pool = PoolSpec.parse("fd00:aa::/62", 64)
    assert free_subnet([pool], [], [net("fd00:aa::/63")]) == net("fd00:aa:0:2::/64")


def test_free_subnet_exhausted() -> None:
    taken = [net(f"10.50.{i}.0/24") for i in range(4)]
    with pytest.raises(errdefs.Forbidden) as ei:
        free_subnet([POOL], taken)
    assert str(ei.value) == NO_POOL


def test_free_subnet_no_pools() -> None:
    with pytest.raises(errdefs.Forbidden, match="non-overlapping"):
        free_subnet([], [])


def test_free_subnet_accepts_generators() -> None:
    taken = (net(f"10.50.{i}.0/24") for i in range(2))
    assert free_subnet(iter([POOL]), taken, iter([])) == net("10.50.2.0/24")


# -- AddressSpace --------------------------------------------------------------------


def test_lowest_free_first_after_gateway() -> None:
    sp = AddressSpace(net("172.30.0.0/24"), gateway=ip("172.30.0.1"))
    assert sp.allocate() == ip("172.30.0.2")
    assert sp.allocate() == ip("172.30.0.3")
    assert sp.in_use() == 2


def test_without_gateway_first_host_is_handed_out() -> None:
    sp = AddressSpace(net("172.30.0.0/24"))
    assert sp.allocate() == ip("172.30.0.1")


def test_gateway_in_the_middle_is_skipped() -> None:
    sp = AddressSpace(net("10.9.0.0/29"), gateway=ip("10.9.0.2"))
    assert [sp.allocate() for _ in range(5)] == [
        ip("10.9.0.1"),
        ip("10.9.0.3"),
        ip("10.9.0.4"),
        ip("10.9.0.5"),
        ip("10.9.0.6"),
    ]
    with pytest.raises(errdefs.Unavailable):
        sp.allocate()


def test_aux_addresses_reserved() -> None:
    sp = AddressSpace(
        net("10.9.0.0/24"), gateway=ip("10.9.0.1"), reserved={ip("10.9.0.2"), ip("10.9.0.4")}
    )
    assert sp.allocate() == ip("10.9.0.3")
    assert sp.allocate() == ip("10.9.0.5")
    with pytest.raises(errdefs.Conflict, match="Address already in use"):
        sp.allocate(ip("10.9.0.4"))


def test_v4_never_network_or_broadcast() -> None:
    sp = AddressSpace(net("10.9.0.0/30"))  # .1 and .2 only
    got = [sp.allocate(), sp.allocate()]
    assert got == [ip("10.9.0.1"), ip("10.9.0.2")]
    with pytest.raises(errdefs.Unavailable):
        sp.allocate()


def test_preferred_network_address_refused() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    with pytest.raises(errdefs.Conflict, match="Address already in use"):
        sp.allocate(ip("10.9.0.0"))


def test_preferred_broadcast_address_refused() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    with pytest.raises(errdefs.Conflict, match="Address already in use"):
        sp.allocate(ip("10.9.0.255"))


def test_ip_range_limits_dynamic_allocation() -> None:
    sp = AddressSpace(net("172.28.0.0/16"), gateway=ip("172.28.0.1"), pool=net("172.28.5.0/30"))
    got = [sp.allocate() for _ in range(4)]
    # the range's own network/broadcast are ordinary hosts of the /16 (as libnetwork)
    assert got == [ip("172.28.5.0"), ip("172.28.5.1"), ip("172.28.5.2"), ip("172.28.5.3")]
    with pytest.raises(errdefs.Unavailable):
        sp.allocate()


def test_ip_range_at_subnet_start_skips_network_address_and_gateway() -> None:
    sp = AddressSpace(net("10.8.0.0/24"), gateway=ip("10.8.0.1"), pool=net("10.8.0.0/29"))
    assert sp.allocate() == ip("10.8.0.2")


def test_ip_range_at_subnet_end_skips_broadcast() -> None:
    sp = AddressSpace(net("10.8.0.0/24"), gateway=ip("10.8.0.1"), pool=net("10.8.0.252/30"))
    assert [sp.allocate() for _ in range(3)] == [
        ip("10.8.0.252"),
        ip("10.8.0.253"),
        ip("10.8.0.254"),
    ]
    with pytest.raises(errdefs.Unavailable):
        sp.allocate()


def test_preferred_outside_ip_range_but_inside_subnet_is_allowed() -> None:
    # dockerd: --ip may be anywhere in the subnet; --ip-range only bounds dynamic addresses
    sp = AddressSpace(net("172.28.0.0/16"), gateway=ip("172.28.0.1"), pool=net("172.28.5.0/24"))
    assert sp.allocate(ip("172.28.9.9")) == ip("172.28.9.9")
    assert sp.allocate() == ip("172.28.5.0")


def test_preferred_address() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    assert sp.allocate(ip("10.9.0.50")) == ip("10.9.0.50")
    assert sp.allocate() == ip("10.9.0.2")  # dynamic allocation still lowest first


def test_preferred_outside_subnet() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    with pytest.raises(errdefs.InvalidParameter) as ei:
        sp.allocate(ip("10.10.0.5"))
    assert str(ei.value) == "no configured subnet or ip-range contain the IP address 10.10.0.5"
    assert sp.in_use() == 0


def test_preferred_other_family_outside_subnet() -> None:
    sp = AddressSpace(net("10.9.0.0/24"))
    with pytest.raises(errdefs.InvalidParameter, match="fd00::5"):
        sp.allocate(ip("fd00::5"))


def test_preferred_taken() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    a = sp.allocate()
    with pytest.raises(errdefs.Conflict) as ei:
        sp.allocate(a)
    assert str(ei.value) == "Address already in use"
    with pytest.raises(errdefs.Conflict, match="Address already in use"):
        sp.allocate(ip("10.9.0.1"))  # the gateway
    assert sp.in_use() == 1


def test_release_then_handed_out_next() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    a, b, c = sp.allocate(), sp.allocate(), sp.allocate()
    assert (a, b, c) == (ip("10.9.0.2"), ip("10.9.0.3"), ip("10.9.0.4"))
    sp.release(b)
    assert sp.in_use() == 2
    assert sp.allocate() == b
    assert sp.allocate() == ip("10.9.0.5")


def test_release_preferred_makes_it_free() -> None:
    sp = AddressSpace(net("10.9.0.0/24"))
    sp.allocate(ip("10.9.0.77"))
    sp.release(ip("10.9.0.77"))
    assert sp.allocate(ip("10.9.0.77")) == ip("10.9.0.77")


def test_release_unknown_is_harmless_and_keeps_gateway_reserved() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    sp.release(ip("10.9.0.200"))
    sp.release(ip("10.9.0.1"))
    assert sp.allocate() == ip("10.9.0.2")
    assert sp.in_use() == 1


def test_reserve() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"))
    assert sp.reserve(ip("10.9.0.2")) is True
    assert sp.reserve(ip("10.9.0.2")) is False  # taken
    assert sp.reserve(ip("10.10.0.2")) is False  # outside
    assert sp.allocate() == ip("10.9.0.3")
    with pytest.raises(errdefs.Conflict):
        sp.allocate(ip("10.9.0.2"))


def test_reserve_gateway_or_aux_refused() -> None:
    sp = AddressSpace(net("10.9.0.0/24"), gateway=ip("10.9.0.1"), reserved={ip("10.9.0.9")})
    assert sp.reserve(ip("10.9.0.1")) is False
    assert sp.reserve(ip("10.9.0.9")) is False


def test_exhaustion() -> None:
    sp = AddressSpace(net("10.9.0.0/29"), gateway=ip("10.9.0.1"))
    got = [sp.allocate() for _ in range(5)]
    assert got[-1] == ip("10.9.0.6")
    with pytest.raises(errdefs.Unavailable, match="no available IP addresses"):
        sp.allocate()
    sp.release(ip("10.9.0.4"))
    assert sp.allocate() == ip("10.9.0.4")


def test_ipv6_64() -> None:
    sp = AddressSpace(net("fd9b:e27f:3b00::/64"), gateway=ip("fd9b:e27f:3b00::1"))
    assert sp.allocate() == ip("fd9b:e27f:3b00::2")
    assert sp.allocate() == ip("fd9b:e27f:3b00::3")
    last = ip("fd9b:e27f:3b00:0:ffff:ffff:ffff:ffff")
    assert sp.allocate(last) == last  # no broadcast in IPv6
    with pytest.raises(errdefs.Conflict):
        sp.allocate(ip("fd9b:e27f:3b00::1"))
    with pytest.raises(errdefs.InvalidParameter):
        sp.allocate(ip("fd9b:e27f:3b01::1"))
    sp.release(ip("fd9b:e27f:3b00::2"))
    assert sp.allocate() == ip("fd9b:e27f:3b00::2")


def test_ipv6_small_subnet_exhaustion_uses_last_address() -> None:
    sp = AddressSpace(net("fd00::/126"), gateway=ip("fd00::1"))
    assert [sp.allocate(), sp.allocate()] == [ip("fd00::2"), ip("fd00::3")]
    with pytest.raises(errdefs.Unavailable):
        sp.allocate()


def test_ipv6_with_ip_range() -> None:
    sp = AddressSpace(net("fd00:1::/64"), gateway=ip("fd00:1::1"), pool=net("fd00:1::100/120"))
    assert sp.allocate() == ip("fd00:1::100")
