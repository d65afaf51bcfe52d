"""The embedded DNS server of user-defined networks, as dockerd's libnetwork resolver.

A container on a user-defined network has its network's gateway as nameserver. Queries
for the names of the containers on its networks are answered here from the network
controller's tables; everything else is forwarded to the upstream servers the controller
names for that client. It runs on berthd's event loop: one UDP endpoint and one TCP
server per listening address, no threads.

Behaviour follows moby's ``libnetwork/resolver.go``: answers carry RA but not AA and a
TTL of 600 s, several addresses come shuffled, a known name without an address of the
asked family (and MX of a known name) is NOERROR with no records so that it is not
forwarded, PTR is answered for our addresses, at most three upstreams are tried in
order (one that answers SERVFAIL or REFUSED is skipped), a query that no upstream
answers gets SERVFAIL, and forwards beyond the concurrency limit get REFUSED. Two
things are stricter than dockerd: each forward carries a fresh random ID (dockerd
reuses the client's) on its own socket, and a truncated UDP answer is retried over TCP
before it is relayed (dockerd relays it and lets the client retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from berth import errdefs

__all__ = ["NameLookup", "Resolver"]

log = logging.getLogger(__name__)

RESPONSE_TTL = 600
"""TTL of our own records (dockerd's respTTL)."""
MAX_UPSTREAMS = 3
"""Upstreams tried per query, as dockerd's maxExtDNS and resolv.conf's three nameservers."""
MAX_CONCURRENT = 1024
"""In-flight forwards (dockerd's maxConcurrent); beyond it a query waits, then is REFUSED."""
TCP_IDLE_TIMEOUT = 8.0
"""An idle client TCP connection is closed after this long (miekg/dns's default)."""
_UDP_MIN = 512
_TCP_MAX = 65535
_OUR_EDNS_PAYLOAD = 1232

_BACKEND = dns.asyncbackend.get_backend("asyncio")


class NameLookup(Protocol):
    """What the resolver asks berth's network controller.

    Called on the event loop for every query, so it must be fast and must not block.
    """

    def lookup(self, client_ip: str, name: str, family: int) -> list[str] | None:
        """Addresses of ``name`` as the container at ``client_ip`` sees it.

        ``name`` is lower-case without the trailing dot; ``family`` is ``socket.AF_INET``
        (A) or ``socket.AF_INET6`` (AAAA). ``None``: not a name of its networks (forward
        it); ``[]``: ours, but without an address of that family (answer NODATA).
        """
        ...

    def reverse(self, client_ip: str, address: str) -> str | None:
        """The PTR name of ``address`` if it is on one of the client's networks."""
        ...

    def upstreams(self, client_ip: str) -> Sequence[tuple[str, int]]:
        """The servers, as (ip, port), that this client's other queries go to."""
        ...


@dataclass(eq=False)
class _Listener:
    """One listening address: its UDP endpoint, TCP server and open TCP connections."""

    address: str
    port: int
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server | None = None
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    closed: bool = False


class _UDPProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to the resolver; never raises into the transport."""

    def __init__(self, resolver: Resolver, own: tuple[str, int]) -> None:
        self.resolver = resolver
        self.own = own
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.resolver._on_datagram(self.transport, self.own, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error: %s", exc)


class Resolver:
    """Answers container names and forwards the rest, on any number of addresses."""

    def __init__(
        self, lookup: NameLookup, *, timeout: float = 2.0, max_concurrent: int = MAX_CONCURRENT
    ) -> None:
        """``timeout`` bounds each upstream exchange (UDP and its TCP retry together)."""
        self._lookup = lookup
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._forwards: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (address, port) pairs listened on."""
        return list(self._listeners)

    async def listen(self, address: str, port: int = 53) -> tuple[str, int]:
        """Serve UDP and TCP on ``address``; port 0 picks one free for both.

        Listening again on the same (address, port) does nothing. Returns the pair
        listened on, whose port is the chosen one when ``port`` is 0.
        """
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise errdefs.InvalidParameter(f"DNS listen address {address!r} is not an IP") from None
        key = (ip.compressed, port)
        async with self._lock:
            if port and key in self._listeners:
                return key
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            udp_sock, tcp_sock = _bind_pair(family, ip.compressed, port)
            key = (ip.compressed, udp_sock.getsockname()[1])
            loop = asyncio.get_running_loop()
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UDPProtocol(self, key), sock=udp_sock
                )
            except BaseException:
                udp_sock.close()
                tcp_sock.close()
                raise
            listener = _Listener(*key, transport)

            async def on_connection(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                task = asyncio.current_task()
                assert task is not None
                if listener.closed:  # accepted just before the listener was shut
                    writer.close()
                    return
                listener.connections.add(task)
                try:
                    await self._serve_tcp(key, reader, writer)
                finally:
                    listener.connections.discard(task)

            try:
                listener.tcp = await asyncio.start_server(on_connection, sock=tcp_sock)
            except BaseException:
                transport.close()
                tcp_sock.close()
                raise
            self._listeners[key] = listener
            log.debug("dns: listening on %s port %d", *key)
            return key

    async def unlisten(self, address: str, port: int = 53) -> None:
        """Stop serving on (address, port) and free it; unknown pairs are ignored."""
        try:
            key = (ipaddress.ip_address(address.split("%", 1)[0]).compressed, port)
        except ValueError:
            return
        async with self._lock:
            listener = self._listeners.pop(key, None)
            if listener is not None:
                await _shut(listener)

    async def close(self) -> None:
        """Stop every listener and cancel every forward in flight (their sockets close)."""
        async with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
            for listener in listeners:
                await _shut(listener)
        forwards = list(self._forwards)
        for task in forwards:
            task.cancel()
        await asyncio.gather(*forwards, return_exceptions=True)

    # -- query handling

    def _on_datagram(
        self,
        transport: asyncio.DatagramTransport,
        own: tuple[str, int],
        data: bytes,
        addr: tuple[str | int, ...],
    ) -> None:
        client_ip = str(addr[0]).split("%", 1)[0]
        query = _parse_query(data)
        if query is None:
            return
        limit = max(_UDP_MIN, query.payload) if query.edns >= 0 else _UDP_MIN
        response = self._answer(client_ip, query)

        def send(msg: dns.message.Message) -> None:
            if not transport.is_closing():
                transport.sendto(_render(query, msg, limit), addr)

        if response is not None:
            send(response)
            return

        async def forward() -> None:
            send(await self._forward(own, client_ip, query, tcp=False))

        task = asyncio.get_running_loop().create_task(forward())
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    async def _serve_tcp(
        self, own: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer queries on one connection in turn until EOF, garbage or idleness."""
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]).split("%", 1)[0] if peer else ""
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                query = _parse_query(data)
                if query is None:
                    return
                response = self._answer(client_ip, query)
                if response is None:
                    response = await self._forward(own, client_ip, query, tcp=True)
                wire = _render(query, response, _TCP_MAX)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            return
        except Exception:
            log.debug("dns: tcp connection from %s failed", client_ip, exc_info=True)
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, client_ip: str, query: dns.message.Message) -> dns.message.Message | None:
        """The response from our own names, or None when the query is to be forwarded."""
        if query.opcode() != dns.opcode.QUERY:
            return _error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _error(query, dns.rcode.FORMERR)
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or qname == dns.name.root:
            return None
        try:
            if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                family = socket.AF_INET if qtype == dns.rdatatype.A else socket.AF_INET6
                addrs = self._lookup.lookup(client_ip, _key(qname), family)
                if addrs is None:
                    return None
                addrs = list(addrs)
                random.shuffle(addrs)
                log.debug("dns: %s %s for %s: %s", qname, qtype.name, client_ip, addrs)
                # One RRset per address, so that a truncated reply drops records one by
                # one as dockerd's does rather than the whole set.
                records = [dns.rrset.from_text(qname, RESPONSE_TTL, "IN", qtype, a) for a in addrs]
                return _reply(query, records)
            if qtype == dns.rdatatype.MX:
                name = _key(qname)
                v4 = self._lookup.lookup(client_ip, name, socket.AF_INET)
                v6 = self._lookup.lookup(client_ip, name, socket.AF_INET6)
                # A container has no mail exchanger: NOERROR/NODATA lets a mail client
                # fall back to the address (RFC 5321 "implicit MX"), as in dockerd.
                return None if v4 is None and v6 is None else _reply(query, [])
            if qtype == dns.rdatatype.PTR:
                try:
                    address = ipaddress.ip_address(dns.reversename.to_address(qname)).compressed
                except (dns.exception.DNSException, ValueError):
                    return None
                host = self._lookup.reverse(client_ip, address)
                if not host:
                    return None
                log.debug("dns: PTR %s for %s: %s", address, client_ip, host)
                target = dns.name.from_text(host).to_text()
                ptr = dns.rrset.from_text(qname, RESPONSE_TTL, "IN", qtype, target)
                return _reply(query, [ptr])
        except Exception:
            log.debug("dns: lookup of %s %s for %s failed", qname, qtype, client_ip, exc_info=True)
            return _error(query, dns.rcode.SERVFAIL)
        return None

    async def _forward(
        self, own: tuple[str, int], client_ip: str, query: dns.message.Message, *, tcp: bool
    ) -> dns.message.Message:
        """Ask the client's upstreams in turn; the answer carries the client's query ID.

        The listening address itself is never an upstream, which would loop.
        """
        try:
            upstreams = [
                (host, port)
                for host, port in list(self._lookup.upstreams(client_ip))[:MAX_UPSTREAMS]
                if (host, port) != own
            ]
        except Exception:
            log.debug("dns: upstreams for %s failed", client_ip, exc_info=True)
            upstreams = []
        if not upstreams:
            return _error(query, dns.rcode.SERVFAIL)
        try:
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
        except TimeoutError:
            log.debug("dns: more than the allowed concurrent forwards, refusing %s", client_ip)
            return _error(query, dns.rcode.REFUSED)
        client_id = query.id
        try:
            for host, port in upstreams:
                query.id = secrets.randbits(16)
                response = await self._exchange(query, host, port, tcp)
                if response is None:
                    continue
                if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                    log.debug("dns: %s:%d answered %s", host, port, response.rcode().name)
                    continue
                response.id = client_id
                return response
        finally:
            query.id = client_id
            self._slots.release()
        return _error(query, dns.rcode.SERVFAIL)

    async def _exchange(
        self, query: dns.message.Message, host: str, port: int, tcp: bool
    ) -> dns.message.Message | None:
        """One upstream exchange on a fresh socket; None on timeout or failure.

        dnspython ignores datagrams from other sources and answers whose ID or question
        do not match, so a spoofed reply cannot take the place of the real one.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        truncated: dns.message.Message | None = None
        try:
            if not tcp:
                try:
                    return await dns.asyncquery.udp(
                        query,
                        host,
                        timeout=self._timeout,
                        port=port,
                        ignore_unexpected=True,
                        one_rr_per_rrset=True,
                        raise_on_truncation=True,
                        ignore_errors=True,
                        backend=_BACKEND,
                    )
                except dns.message.Truncated as exc:
                    partial = exc.kwargs.get("message")  # what Truncated.message() returns
                    if isinstance(partial, dns.message.Message):
                        truncated = partial
                    log.debug("dns: truncated answer from %s:%d, retrying over TCP", host, port)
            try:
                return await dns.asyncquery.tcp(
                    query,
                    host,
                    timeout=max(0.0, deadline - loop.time()),
                    port=port,
                    one_rr_per_rrset=True,
                    backend=_BACKEND,
                )
            except Exception:
                if truncated is None:
                    raise
                return truncated  # the client may retry over TCP itself
        except Exception as exc:
            log.debug("dns: forward to %s:%d failed: %r", host, port, exc)
            return None


def _bind_pair(family: int, address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same address and port (chosen if port is 0)."""
    attempts = 20 if port == 0 else 1
    for attempt in range(attempts):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # For TCP only: lets a restarted listener bind past TIME_WAIT connections;
            # on UDP it would let a second socket share the port.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((address, port))
            tcp.bind((address, udp.getsockname()[1]))
            tcp.listen(128)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            if port == 0 and attempt + 1 < attempts:
                continue
            raise errdefs.System(
                f"cannot listen for DNS on {address} port {port}: {exc.strerror or exc}"
                + (" (is another DNS server using it?)" if _in_use(exc) else "")
            ) from exc
    raise AssertionError("unreachable")


def _in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


async def _shut(listener: _Listener) -> None:
    """Close a listener's sockets and its open connections, and wait for them."""
    listener.closed = True
    listener.udp.close()
    if listener.tcp is not None:
        listener.tcp.close()
    connections = list(listener.connections)
    for task in connections:
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    if listener.tcp is not None:
        await listener.tcp.wait_closed()
    log.debug("dns: stopped listening on %s port %d", listener.address, listener.port)


def _parse_query(data: bytes) -> dns.message.Message | None:
    """A query message, or None for anything malformed or that is a response."""
    try:
        query = dns.message.from_wire(data)
    except Exception as exc:
        log.debug("dns: dropping malformed packet (%d bytes): %s", len(data), exc)
        return None
    if query.flags & dns.flags.QR:
        return None
    return query


def _render(query: dns.message.Message, response: dns.message.Message, limit: int) -> bytes:
    """``response`` in wire format within ``limit`` bytes (TC set if cut short).

    A relayed upstream answer that dnspython cannot render becomes SERVFAIL rather than
    an error on the event loop.
    """
    try:
        return response.to_wire(max_size=limit, prefer_truncation=True)
    except Exception:
        log.debug("dns: cannot render the answer to %s", query.question, exc_info=True)
        return _error(query, dns.rcode.SERVFAIL).to_wire(max_size=limit, prefer_truncation=True)


def _key(name: dns.name.Name) -> str:
    """The controller's form of a query name: lower-case, without the trailing dot."""
    return name.to_text(omit_final_dot=True).lower()


def _reply(query: dns.message.Message, answer: list[dns.rrset.RRset]) -> dns.message.Message:
    """A NOERROR reply with RA (not AA, as dockerd) holding ``answer``."""
    response = dns.message.make_response(
        query, recursion_available=True, our_payload=_OUR_EDNS_PAYLOAD
    )
    response.answer.extend(answer)
    return response


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = dns.message.make_response(
        query, recursion_available=True, our_payload=_OUR_EDNS_PAYLOAD
    )
    response.set_rcode(rcode)
    return response
