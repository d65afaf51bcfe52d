"""Host ports for published container ports.

Traffic reaches a container through the kernel's NAT (``firewall``); this module
only decides which host port each binding gets and holds it.  A held port is a
bound socket (not listening), as dockerd does without its userland proxy: another
program cannot take the port while a container publishes it, and a port another
program already has is refused at start with the kernel's own words.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from dataclasses import dataclass

from berth import errdefs

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM, "sctp": socket.SOCK_SEQPACKET}
_DEFAULT_EPHEMERAL = (49153, 60999)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's local port range, as dockerd reads it for ``-p 80``."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


@dataclass(frozen=True)
class PortRequest:
    """One binding a container asks for: ``-p [host_ip:][start[-end]:]port/proto``."""

    proto: str
    container_port: int
    host_ip: str = ""  # "" = every address of the family the container has
    host_start: int = 0  # 0 = any free port
    host_end: int = 0


@dataclass(frozen=True)
class HeldPort:
    proto: str
    host_ip: str  # "0.0.0.0", "::" or one address
    host_port: int
    container_port: int


class PortMapper:
    """The host ports held for published container ports, by owner (an endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, int], tuple[str, socket.socket | None]] = {}

    def _conflict(self, proto: str, ip: str, port: int) -> str | None:
        """The owner already holding *port* on *ip* (or on the wildcard, or any address
        when *ip* is the wildcard)."""
        version = ipaddress.ip_address(ip).version
        wildcard = "0.0.0.0" if version == 4 else "::"
        for (p, held_ip, held_port), (owner, _) in self._held.items():
            if p != proto or held_port != port:
                continue
            if ipaddress.ip_address(held_ip).version != version:
                continue
            if held_ip in (ip, wildcard) or ip == wildcard:
                return owner
        return None

    def _bind(self, proto: str, ip: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        sock = socket.socket(
            family, PROTOCOLS[proto], socket.IPPROTO_SCTP if proto == "sctp" else 0
        )
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ip, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _take(
        self, owner: str, proto: str, ip: str, port: int, bind: bool, target: str = ""
    ) -> None:
        other = self._conflict(proto, ip, port)
        if other is not None:
            raise errdefs.System(f"Bind for {_join(ip, port)} failed: port is already allocated")
        sock = None
        if bind:
            try:
                sock = self._bind(proto, ip, port)
            except OSError as e:
                raise errdefs.System(
                    f"failed to bind host port for {_join(ip, port)}{target}/{proto}: "
                    f"{(e.strerror or str(e)).lower()}"
                ) from None
        self._held[(proto, ip, port)] = (owner, sock)

    def map(
        self, owner: str, requests: list[tuple[PortRequest, str]], container_ip: str = ""
    ) -> list[HeldPort]:
        """Hold a host port for each (request, host address) pair, all or none.

        *host address* is the request's own address or the wildcard of one family;
        *container_ip* only goes into messages, as dockerd shows it.
        """
        held: list[HeldPort] = []
        with self._lock:
            try:
                for req, ip in requests:
                    target = f":{_join(container_ip, req.container_port)}" if container_ip else ""
                    held.append(self._map_one(owner, req, ip, target))
            except BaseException:
                for h in held:
                    self._drop(h.proto, h.host_ip, h.host_port)
                raise
        return held

    def _map_one(self, owner: str, req: PortRequest, ip: str, target: str) -> HeldPort:
        if req.host_start:
            end = req.host_end or req.host_start
            last_error: errdefs.BerthError | None = None
            for port in range(req.host_start, end + 1):
                try:
                    self._take(owner, req.proto, ip, port, bind=True, target=target)
                    return HeldPort(req.proto, ip, port, req.container_port)
                except errdefs.BerthError as e:
                    last_error = e
            assert last_error is not None
            raise last_error
        lo, hi = ephemeral_range()
        for port in range(lo, hi + 1):
            if self._conflict(req.proto, ip, port) is not None:
                continue
            try:
                self._take(owner, req.proto, ip, port, bind=True)
            except errdefs.BerthError:
                continue
            return HeldPort(req.proto, ip, port, req.container_port)
        raise errdefs.System(f"no free host port in {lo}-{hi} for {req.container_port}/{req.proto}")

    def adopt(self, owner: str, ports: list[HeldPort]) -> list[HeldPort]:
        """Hold again the ports of a container that kept running over a restart; those
        another program took meanwhile are returned (their NAT still works)."""
        lost = []
        with self._lock:
            for h in ports:
                if (h.proto, h.host_ip, h.host_port) in self._held:
                    lost.append(h)
                    continue
                try:
                    self._take(owner, h.proto, h.host_ip, h.host_port, bind=True)
                except errdefs.BerthError:
                    self._held[(h.proto, h.host_ip, h.host_port)] = (owner, None)
                    lost.append(h)
        return lost

    def _drop(self, proto: str, ip: str, port: int) -> None:
        entry = self._held.pop((proto, ip, port), None)
        if entry is not None and entry[1] is not None:
            with contextlib.suppress(OSError):
                entry[1].close()

    def release(self, owner: str) -> None:
        with self._lock:
            for key in [k for k, (o, _) in self._held.items() if o == owner]:
                self._drop(*key)

    def close(self) -> None:
        with self._lock:
            for key in list(self._held):
                self._drop(*key)


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
