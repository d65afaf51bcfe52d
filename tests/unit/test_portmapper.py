"""berth.network.portmapper.PortMapper: host ports held as bound sockets.

Real sockets on 127.0.0.1 (and a bound, never listening, wildcard socket where the
wildcard rules are checked); ports are found free first by binding port 0.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from berth import errdefs
from berth.network.portmapper import HeldPort, PortMapper, PortRequest, ephemeral_range

LO = "127.0.0.1"


def free_port(proto: str = "tcp") -> int:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


def free_block(n: int) -> int:
    """The first of *n* consecutive ports free for tcp on every address of the host."""
    for _ in range(50):
        start = free_port()
        if start + n > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(start, start + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("0.0.0.0", p))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def can_bind(port: int, ip: str = LO, proto: str = "tcp") -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
        return True


@pytest.fixture
def pm() -> Iterator[PortMapper]:
    m = PortMapper()
    try:
        yield m
    finally:
        m.close()


def req(port: int, ip: str = LO, proto: str = "tcp", end: int = 0, cport: int = 80) -> PortRequest:
    return PortRequest(proto, cport, ip, port, end)


def test_fixed_port_held_until_release(pm: PortMapper) -> None:
    p = free_port()
    held = pm.map("ep1", [(req(p), LO)])
    assert held == [HeldPort("tcp", LO, p, 80)]
    assert not can_bind(p)
    pm.release("ep1")
    assert can_bind(p)


def test_release_only_the_owner(pm: PortMapper) -> None:
    p1, p2 = free_port(), free_port()
    pm.map("a", [(req(p1), LO)])
    pm.map("b", [(req(p2), LO)])
    pm.release("a")
    assert can_bind(p1)
    assert not can_bind(p2)
    pm.release("nobody")
    assert not can_bind(p2)


def test_foreign_socket_holds_port(pm: PortMapper) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind((LO, 0))
        p = foreign.getsockname()[1]
        with pytest.raises(errdefs.System) as ei:
            pm.map("ep1", [(req(p), LO)], container_ip="172.30.0.2")
    msg = str(ei.value)
    assert "address already in use" in msg
    assert msg == (
        f"failed to bind host port for {LO}:{p}:172.30.0.2:80/tcp: address already in use"
    )
    # nothing was kept: the port is free once the foreign socket is gone
    assert can_bind(p)
    assert pm.map("ep1", [(req(p), LO)])[0].host_port == p


def test_same_port_two_owners(pm: PortMapper) -> None:
    p = free_port()
    pm.map("a", [(req(p), LO)])
    with pytest.raises(errdefs.System) as ei:
        pm.map("b", [(req(p), LO)])
    assert str(ei.value) == f"Bind for {LO}:{p} failed: port is already allocated"
    pm.release("a")
    assert pm.map("b", [(req(p), LO)])[0].host_port == p


def test_wildcard_holding_conflicts_with_specific(pm: PortMapper) -> None:
    p = free_block(1)
    pm.map("a", [(req(p, ip=""), "0.0.0.0")])
    with pytest.raises(
        errdefs.System, match=f"Bind for {LO}:{p} failed: port is already allocated"
    ):
        pm.map("b", [(req(p), LO)])


def test_specific_holding_conflicts_with_wildcard(pm: PortMapper) -> None:
    p = free_block(1)
    pm.map("a", [(req(p), LO)])
    with pytest.raises(
        errdefs.System, match=f"Bind for 0.0.0.0:{p} failed: port is already allocated"
    ):
        pm.map("b", [(req(p, ip=""), "0.0.0.0")])


def test_two_specific_addresses_do_not_conflict_in_bookkeeping(pm: PortMapper) -> None:
    p = free_port()
    pm.map("a", [(req(p), LO)])
    # 127.0.0.2 is loopback too; the bookkeeping must not call it a conflict
    held = pm.map("b", [(req(p, ip="127.0.0.2"), "127.0.0.2")])
    assert held[0].host_ip == "127.0.0.2"


def test_range_picks_first_free(pm: PortMapper) -> None:
    start = free_block(3)
    pm.map("a", [(req(start), LO)])
    held = pm.map("b", [(req(start, end=start + 2), LO)])
    assert held == [HeldPort("tcp", LO, start + 1, 80)]
    held = pm.map("c", [(req(start, end=start + 2), LO)])
    assert held[0].host_port == start + 2


def test_range_skips_foreign_socket(pm: PortMapper) -> None:
    start = free_block(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind((LO, start))
        held = pm.map("a", [(req(start, end=start + 1), LO)])
    assert held[0].host_port == start + 1


def test_range_all_taken(pm: PortMapper) -> None:
    start = free_block(2)
    pm.map("a", [(req(start), LO)])
    pm.map("b", [(req(start + 1), LO)])
    with pytest.raises(errdefs.System, match="already allocated"):
        pm.map("c", [(req(start, end=start + 1), LO)])
    pm.release("c")
    assert not can_bind(start) and not can_bind(start + 1)


def test_ephemeral(pm: PortMapper) -> None:
    lo, hi = ephemeral_range()
    assert 0 < lo <= hi <= 65535
    held = pm.map("a", [(req(0), LO)])
    port = held[0].host_port
    assert lo <= port <= hi
    assert not can_bind(port)
    second = pm.map("b", [(req(0), LO)])[0].host_port
    assert second != port and lo <= second <= hi
    pm.release("a")
    assert can_bind(port)


def test_map_all_or_none(pm: PortMapper) -> None:
    p1, p2 = free_port(), free_port()
    pm.map("other", [(req(p2), LO)])
    with pytest.raises(errdefs.System, match="already allocated"):
        pm.map("a", [(req(p1, cport=80), LO), (req(p2, cport=443), LO)])
    assert can_bind(p1)  # the first binding was let go
    # and the bookkeeping forgot it: another owner can have it
    assert pm.map("b", [(req(p1), LO)])[0].host_port == p1


def test_map_all_or_none_on_duplicate_request(pm: PortMapper) -> None:
    p = free_port()
    with pytest.raises(errdefs.System, match="already allocated"):
        pm.map("a", [(req(p), LO), (req(p, cport=81), LO)])
    assert can_bind(p)


def test_map_all_or_none_foreign_socket_second(pm: PortMapper) -> None:
    p1 = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind((LO, 0))
        p2 = foreign.getsockname()[1]
        with pytest.raises(errdefs.System, match="address already in use"):
            pm.map("a", [(req(p1), LO), (req(p2), LO)])
    assert can_bind(p1)


def test_map_several(pm: PortMapper) -> None:
    p1, p2 = free_port(), free_port("udp")
    held = pm.map("a", [(req(p1), LO), (req(p2, proto="udp", cport=53), LO)])
    assert held == [HeldPort("tcp", LO, p1, 80), HeldPort("udp", LO, p2, 53)]
    assert not can_bind(p1) and not can_bind(p2, proto="udp")


def test_udp_and_tcp_independent(pm: PortMapper) -> None:
    p = free_block(1)
    if not can_bind(p, proto="udp"):
        pytest.skip("udp port taken")
    pm.map("a", [(req(p), LO)])
    held = pm.map("b", [(req(p, proto="udp"), LO)])
    assert held == [HeldPort("udp", LO, p, 80)]
    assert not can_bind(p, proto="udp")
    pm.release("a")
    assert can_bind(p)
    assert not can_bind(p, proto="udp")


def test_adopt(pm: PortMapper) -> None:
    p1 = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind((LO, 0))
        p2 = foreign.getsockname()[1]
        h1, h2 = HeldPort("tcp", LO, p1, 80), HeldPort("tcp", LO, p2, 81)
        lost = pm.adopt("a", [h1, h2])
        assert lost == [h2]
        assert not can_bind(p1)
    # the lost one is still booked to its owner: nobody else gets it
    with pytest.raises(errdefs.System, match="already allocated"):
        pm.map("b", [(req(p2), LO)])
    pm.release("a")
    assert can_bind(p1)
    assert pm.map("b", [(req(p2), LO)])[0].host_port == p2


def test_adopt_port_already_held(pm: PortMapper) -> None:
    p = free_port()
    pm.map("a", [(req(p), LO)])
    h = HeldPort("tcp", LO, p, 80)
    assert pm.adopt("b", [h]) == [h]
    pm.release("b")
    assert not can_bind(p)  # still a's


def test_adopt_nothing(pm: PortMapper) -> None:
    assert pm.adopt("a", []) == []


def test_close_frees_all() -> None:
    pm = PortMapper()
    p1, p2 = free_port(), free_port("udp")
    pm.map("a", [(req(p1), LO)])
    pm.map("b", [(req(p2, proto="udp"), LO)])
    pm.close()
    assert can_bind(p1) and can_bind(p2, proto="udp")
    # usable again after close
    assert pm.map("c", [(req(p1), LO)])[0].host_port == p1
    pm.close()
    assert can_bind(p1)
