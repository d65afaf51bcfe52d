"""The embedded DNS server, on loopback against a fake upstream it must forward to."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from berth import errdefs
from berth.network.resolver import Resolver

HOST = "127.0.10.1"  # the resolver
CLIENT = "127.0.10.9"  # the "container"
UP1, UP2 = "127.0.10.2", "127.0.10.3"  # upstreams
WAIT = 3.0  # a client's patience; never reached when things work
EXTERNAL = "93.184.216.34"


class Table:
    """A network controller's view: two containers, and upstreams set per test."""

    def __init__(self) -> None:
        self.names: dict[str, tuple[list[str], list[str]]] = {
            "web": (["172.18.0.2", "172.18.0.3"], ["fd00::2"]),
            "db": (["172.18.0.4"], []),
            "big": ([f"172.18.1.{i}" for i in range(1, 61)], []),
        }
        self.ptr = {"172.18.0.2": "web.mynet", "fd00::2": "web.mynet"}
        self.servers: list[tuple[str, int]] = []
        self.clients: list[str] = []

    def lookup(self, client_ip: str, name: str, family: int) -> list[str] | None:
        self.clients.append(client_ip)
        entry = self.names.get(name)
        if entry is None:
            return None
        return list(entry[0] if family == socket.AF_INET else entry[1])

    def reverse(self, client_ip: str, address: str) -> str | None:
        return self.ptr.get(address)

    def upstreams(self, client_ip: str) -> Sequence[tuple[str, int]]:
        return self.servers


class Upstream:
    """A recursive server stand-in on UDP and TCP that records what it is asked.

    mode: "answer"; "hang" (never replies); "servfail"; "truncate" (UDP answers carry TC
    and no records, TCP answers in full); "spoof" (UDP: a reply with the wrong ID and one
    with the wrong question come before the real one).
    """

    def __init__(self, host: str, mode: str = "answer") -> None:
        self.host, self.mode = host, mode
        self.udp: list[dns.message.Message] = []
        self.tcp: list[dns.message.Message] = []
        self.received = asyncio.Event()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, recursion_available=True)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        qname = query.question[0].name
        for i in range(3):
            address = f"93.184.216.{34 + i}"
            response.answer.append(dns.rrset.from_text(qname, 30, "IN", "A", address))
        return response

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.host, 0))
        self.port = udp.getsockname()[1]
        upstream = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                query = dns.message.from_wire(data)
                upstream.udp.append(query)
                upstream.received.set()
                if upstream.mode == "hang":
                    return
                response = upstream.answer(query)
                if upstream.mode == "truncate":
                    response.answer.clear()
                    response.flags |= dns.flags.TC
                if upstream.mode == "spoof":
                    wrong_id = upstream.answer(query)
                    wrong_id.id = (query.id + 1) % 65536
                    other = dns.message.make_query("evil.example", "A")
                    other.id = query.id
                    wrong_q = dns.message.make_response(other)
                    evil = dns.rrset.from_text("evil.example.", 30, "IN", "A", "6.6.6.6")
                    wrong_q.answer.append(evil)
                    self.transport.sendto(wrong_id.to_wire(), addr)
                    self.transport.sendto(wrong_q.to_wire(), addr)
                self.transport.sendto(response.to_wire(), addr)

        self.udp_transport, _ = await loop.create_datagram_endpoint(Proto, sock=udp)
        self.server = await asyncio.start_server(self._tcp, self.host, self.port)
        return self.host, self.port

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                self.tcp.append(query)
                self.received.set()
                if self.mode != "hang":
                    writer.write(self.answer(query).to_wire(prepend_length=True))
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.udp_transport.close()
        self.server.close()
        await self.server.wait_closed()


Scenario = Callable[[Resolver, Table, int], Awaitable[None]]


def run(
    scenario: Scenario, *modes: str, timeout: float = 2.0, max_concurrent: int = 1024
) -> list[Upstream]:
    """Start upstreams (one per mode) and a resolver on HOST:<free port>, run, tear down.

    Returns the upstreams, to check what they were asked.
    """
    upstreams = [Upstream(host, mode) for host, mode in zip((UP1, UP2), modes, strict=False)]

    async def main() -> None:
        table = Table()
        for upstream in upstreams:
            table.servers.append(await upstream.start())
        resolver = Resolver(table, timeout=timeout, max_concurrent=max_concurrent)
        _, port = await resolver.listen(HOST, 0)
        try:
            await scenario(resolver, table, port)
        finally:
            await resolver.close()
            for upstream in upstreams:
                await upstream.stop()

    asyncio.run(main())
    return upstreams


async def udp(port: int, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    response = await dns.asyncquery.udp(query, HOST, WAIT, port, source=CLIENT)
    assert response.id == query.id
    return response


async def tcp(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    response = await dns.asyncquery.tcp(query, HOST, WAIT, port, source=CLIENT)
    assert response.id == query.id
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


def test_a_and_aaaa_for_container_names() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        response = await udp(port, "Web")
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
        assert sorted(addresses(response)) == ["172.18.0.2", "172.18.0.3"]
        assert {rrset.ttl for rrset in response.answer} == {600}
        assert {rrset.name.to_text() for rrset in response.answer} == {"Web."}
        assert table.clients[-1] == CLIENT

        response = await udp(port, "web", "AAAA")
        assert addresses(response) == ["fd00::2"]
        assert response.answer[0].rdtype == dns.rdatatype.AAAA

    run(scenario, "answer")


def test_known_name_without_address_or_with_mx_is_nodata_and_not_forwarded() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        for rdtype in ("AAAA", "MX"):
            response = await udp(port, "db", rdtype)
            assert response.rcode() == dns.rcode.NOERROR
            assert response.answer == []

    upstreams = run(scenario, "answer")
    assert upstreams[0].udp == [] and upstreams[0].tcp == []


def test_ptr_for_our_addresses() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        response = await udp(port, "2.0.18.172.in-addr.arpa", "PTR")
        assert [rrset.ttl for rrset in response.answer] == [600]
        assert addresses(response) == ["web.mynet."]
        v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
        assert addresses(await udp(port, v6, "PTR")) == ["web.mynet."]

    run(scenario, "answer")


def test_other_names_are_forwarded_with_the_client_id_and_answer_relayed() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        query = dns.message.make_query("example.com", "A", use_edns=0)
        query.id = 4242
        response = await dns.asyncquery.udp(query, HOST, WAIT, port, source=CLIENT)
        assert response.id == 4242
        assert response.rcode() == dns.rcode.NOERROR
        assert addresses(response)[0] == EXTERNAL
        # unknown PTR and other types of our names go upstream too, as in dockerd
        await udp(port, "9.9.9.9.in-addr.arpa", "PTR")
        await udp(port, "web", "TXT")

    asked = run(scenario, "answer")[0].udp
    assert [q.question[0].name.to_text() for q in asked] == [
        "example.com.",
        "9.9.9.9.in-addr.arpa.",
        "web.",
    ]
    assert asked[0].edns == 0  # the client's EDNS goes along
    assert asked[0].id != 4242  # each forward has its own ID


def test_tcp_queries_local_and_forwarded_over_tcp() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        assert addresses(await tcp(port, "db")) == ["172.18.0.4"]
        assert addresses(await tcp(port, "example.com"))[0] == EXTERNAL
        # several queries on one connection
        reader, writer = await asyncio.open_connection(HOST, port)
        for name in ("web", "db"):
            writer.write(dns.message.make_query(name, "A").to_wire(prepend_length=True))
        for _ in range(2):
            size = int.from_bytes(await reader.readexactly(2), "big")
            assert dns.message.from_wire(await reader.readexactly(size)).answer
        writer.close()
        await writer.wait_closed()

    upstreams = run(scenario, "answer")
    assert len(upstreams[0].tcp) == 1 and upstreams[0].udp == []


def test_large_local_answer_is_truncated_over_udp_only() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        response = await udp(port, "big")
        assert response.flags & dns.flags.TC
        assert 0 < len(addresses(response)) < 60
        assert len(addresses(await tcp(port, "big"))) == 60

    run(scenario)


def test_truncated_udp_answer_is_retried_over_tcp() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        response = await udp(port, "example.com")
        assert not response.flags & dns.flags.TC
        assert len(addresses(response)) == 3

    upstreams = run(scenario, "truncate")
    assert len(upstreams[0].udp) == 1 and len(upstreams[0].tcp) == 1


def test_mismatched_upstream_replies_are_ignored() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        response = await udp(port, "example.com")
        assert addresses(response)[0] == EXTERNAL
        assert "6.6.6.6" not in addresses(response)

    run(scenario, "spoof")


def test_failing_upstream_is_skipped() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        assert addresses(await udp(port, "example.com"))[0] == EXTERNAL

    upstreams = run(scenario, "servfail", "answer")
    assert len(upstreams[0].udp) == 1 and len(upstreams[1].udp) == 1


def test_upstream_timeout_is_servfail() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        assert (await udp(port, "example.com")).rcode() == dns.rcode.SERVFAIL

    run(scenario, "hang", timeout=0.3)


def test_no_upstreams_is_servfail() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        assert (await udp(port, "example.com")).rcode() == dns.rcode.SERVFAIL
        assert (await tcp(port, "example.com")).rcode() == dns.rcode.SERVFAIL
        assert addresses(await udp(port, "web"))  # our names still work

    run(scenario)


def test_forwards_beyond_the_limit_are_refused() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        # the first holds the only slot for two upstream timeouts; the second waits one
        first = asyncio.ensure_future(udp(port, "one.example"))
        await asyncio.sleep(0.05)
        second = await udp(port, "two.example")
        assert second.rcode() == dns.rcode.REFUSED
        assert (await first).rcode() == dns.rcode.SERVFAIL

    run(scenario, "hang", "hang", timeout=0.3, max_concurrent=1)


def test_garbage_is_dropped_and_the_listener_survives() -> None:
    async def scenario(resolver: Resolver, table: Table, port: int) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind((CLIENT, 0))
            query = dns.message.make_query("web", "A")
            response = dns.message.make_response(query)
            for junk in (b"\x00", b"\x12\x34garbage-that-is-not-dns", response.to_wire()):
                await loop.sock_sendto(sock, junk, (HOST, port))
            await loop.sock_sendto(sock, query.to_wire(), (HOST, port))
            # the first datagram back is the answer to the real query
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), WAIT)
            assert dns.message.from_wire(data).id == query.id
        # garbage over TCP closes that connection only
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"\x00\x05abcde")
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await writer.wait_closed()
        assert addresses(await tcp(port, "db")) == ["172.18.0.4"]

    run(scenario)


def test_listen_is_idempotent_unlisten_frees_the_port_and_in_use_is_an_error() -> None:
    async def main() -> None:
        resolver = Resolver(Table())
        _, port = await resolver.listen(HOST, 0)
        assert await resolver.listen(HOST, port) == (HOST, port)
        assert resolver.addresses == [(HOST, port)]
        assert addresses(await tcp(port, "db")) == ["172.18.0.4"]

        await resolver.unlisten(HOST, port)
        assert resolver.addresses == []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, port))
            with pytest.raises(errdefs.System, match="in use"):
                await resolver.listen(HOST, port)
        assert resolver.addresses == []
        await resolver.listen(HOST, port)
        assert addresses(await udp(port, "db")) == ["172.18.0.4"]
        await resolver.unlisten(HOST, port)
        await resolver.unlisten(HOST, port)  # again: nothing to do
        await resolver.close()

    asyncio.run(main())


def test_ipv6_listener() -> None:
    async def main() -> None:
        resolver = Resolver(Table())
        try:
            _, port = await resolver.listen("::1", 0)
        except errdefs.System:
            pytest.skip("no IPv6 loopback")
        try:
            query = dns.message.make_query("web", "AAAA")
            response = await dns.asyncquery.udp(query, "::1", WAIT, port)
            assert addresses(response) == ["fd00::2"]
        finally:
            await resolver.close()

    asyncio.run(main())


def test_close_leaves_no_sockets() -> None:
    async def main() -> None:
        table = Table()
        upstream = Upstream(UP1, "hang")
        table.servers.append(await upstream.start())
        before = _sockets()
        resolver = Resolver(table, timeout=60.0)  # close() must cancel, not wait it out
        _, port = await resolver.listen(HOST, 0)
        reader, writer = await asyncio.open_connection(HOST, port)  # an idle TCP client
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(dns.message.make_query("example.com", "A").to_wire(), (HOST, port))
        await asyncio.wait_for(upstream.received.wait(), WAIT)  # a forward is in flight
        await asyncio.wait_for(resolver.close(), WAIT)
        assert resolver.addresses == []
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0)
        assert _sockets() == before
        await upstream.stop()

    asyncio.run(main())


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.stat(f"/proc/self/fd/{fd}").st_mode):
                count += 1
        except FileNotFoundError:
            pass
    return count
