"""Network sandboxes through netlink: namespaces, bridges and veth pairs.

A namespace is made or entered by a short-lived thread: ``unshare``/``setns`` change only
the calling thread, and the thread ends with the job, so no daemon thread ever runs in a
container's namespace and nothing forks (pyroute2's own netns helpers fork and are slower).
Each call opens its own netlink sockets, which makes every function safe from many threads.
The functions block; call them from a worker thread, not from an event loop.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from berth import errdefs
from berth.network._rtnl import STAT_KEYS, IPInterface, IPNetwork, Rtnl
from berth.utils import syscalls

__all__ = [
    "STAT_KEYS",
    "Interface",
    "attach",
    "bridge_addresses",
    "create_netns",
    "delete_bridge",
    "detach",
    "enable_forwarding",
    "ensure_bridge",
    "host_networks",
    "interface_stats",
    "netns_exists",
    "remove_netns",
    "veth_name",
]

T = TypeVar("T")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFNAMSIZ = 16

_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")


def _oserror(what: str, exc: OSError) -> OSError:
    """The call's error with what berth was doing in its words (shown by _strerror)."""
    return OSError(exc.errno, f"{what}: {exc.strerror}")


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


# ---------------------------------------------------------------------------------------------
# Threads in namespaces


def _in_thread(fn: Callable[[], T]) -> T:
    """Run *fn* in a new thread and hand back its result or exception: a namespace the
    thread enters dies with it."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="berth-netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _enter(fd: int, path: str) -> None:
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    except OSError as e:
        raise _oserror(f"enter network namespace {path}", e) from None


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise errdefs.System(f"network namespace {path}: {_strerror(exc)}") from exc


def _in_netns(path: str, fn: Callable[[Rtnl], T]) -> T:
    """``fn(rtnl)`` with a netlink socket inside the namespace bind-mounted at *path*."""
    fd = _open_netns(path)
    try:

        def run() -> T:
            _enter(fd, path)
            with Rtnl() as nl:
                return fn(nl)

        return _in_thread(run)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Validation


def _check_ifname(name: str, what: str = "interface name") -> None:
    """The kernel's dev_valid_name, said up front instead of as an errno."""
    if (
        not name
        or len(name.encode()) >= _IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:" or c.isspace() for c in name)
    ):
        raise errdefs.InvalidParameter(
            f"invalid {what} {name!r}: 1 to {_IFNAMSIZ - 1} bytes, no '/', ':' or whitespace"
        )


def _check_mtu(mtu: int) -> None:
    if not 68 <= mtu <= 65535:
        raise errdefs.InvalidParameter(f"invalid MTU {mtu}: must be between 68 and 65535")


def _parse_interface(value: str, version: int | None = None) -> IPInterface:
    try:
        addr = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise errdefs.InvalidParameter(f"invalid address {value!r}: {exc}") from exc
    if version is not None and addr.version != version:
        raise errdefs.InvalidParameter(f"invalid address {value!r}: not IPv{version}")
    if "/" not in value:
        raise errdefs.InvalidParameter(f"invalid address {value!r}: no prefix length")
    return addr


def _parse_gateway(value: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        gateway = ipaddress.ip_address(value)
    except ValueError as exc:
        raise errdefs.InvalidParameter(f"invalid gateway {value!r}: {exc}") from exc
    if gateway.version != version:
        raise errdefs.InvalidParameter(f"invalid gateway {value!r}: not IPv{version}")
    return gateway


# ---------------------------------------------------------------------------------------------
# sysctl


def _sysctl(path: str, value: str) -> None:
    """Write *value* only when it differs: reads are cheap, and any write to ``ip_forward``
    rewrites the forwarding setting of every interface."""
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise errdefs.System(f"set {path} to {value}: {_strerror(exc)}") from exc


# ---------------------------------------------------------------------------------------------
# Namespaces


_nsfs_dev: int | None = None


def netns_exists(path: str) -> bool:
    """Whether a namespace file is mounted at *path* (an nsfs inode, not a plain file)."""
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    try:
        return os.stat(path).st_dev == _nsfs_dev
    except OSError:
        return False


def _loopback_up() -> None:
    """``lo`` up in the thread's namespace with two ioctls: cheaper than a netlink socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def create_netns(path: str) -> None:
    """A new network namespace bind-mounted at *path* (the file is created; its directory
    must exist), with ``lo`` up."""
    if netns_exists(path):
        raise errdefs.Conflict(f"network namespace {path} already exists")
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    except OSError as exc:
        raise errdefs.System(f"create network namespace file {path}: {_strerror(exc)}") from exc

    def run() -> None:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
        except OSError as e:
            raise _oserror("unshare network namespace", e) from None
        try:
            syscalls.mount("/proc/thread-self/ns/net", path, None, syscalls.MS_BIND)
        except OSError as e:
            raise _oserror(f"bind-mount network namespace on {path}", e) from None
        try:
            _loopback_up()
        except OSError:
            syscalls.umount2(path)
            raise

    try:
        _in_thread(run)
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise errdefs.System(f"create network namespace {path}: {_strerror(exc)}") from exc


def remove_netns(path: str) -> None:
    """Unmount (lazily: a process still inside keeps it alive) and unlink *path*; the veths
    inside die with the namespace. A missing path is fine."""
    try:
        syscalls.umount2(path)  # not a mount point (a crash's plain file), or gone: fine
    except OSError as e:
        raise errdefs.System(f"unmount network namespace {path}: {e.strerror}") from None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise errdefs.System(f"remove network namespace file {path}: {_strerror(exc)}") from exc


# ---------------------------------------------------------------------------------------------
# Bridges


def ensure_bridge(name: str, addresses: Sequence[str], *, mtu: int = 1500) -> int:
    """Make bridge *name* exist, be up and carry each ``ip/prefixlen`` of *addresses*
    (addresses it has besides are kept); return its ifindex.

    ``route_localnet`` is set so that DNAT of ports published on 127.0.0.1 reaches
    containers, and IPv6 is enabled on the bridge when an IPv6 address is asked for.
    """
    _check_ifname(name, "bridge name")
    _check_mtu(mtu)
    wanted = [_parse_interface(a) for a in addresses]
    try:
        with Rtnl() as nl:
            link = nl.link(name)
            if link is None:
                try:
                    nl.add_bridge(name, mtu, _random_mac())
                except OSError as exc:
                    if exc.errno != errno.EEXIST:  # EEXIST: another thread was first
                        raise
                link = nl.link(name)
                if link is None:
                    raise OSError(errno.ENODEV, "vanished after creation")
            if link.kind != "bridge":
                raise errdefs.Conflict(f"device {name} exists and is not a bridge")
            _pin_mac(nl, name, link.index)
            if link.mtu != mtu:
                nl.set_mtu(link.index, mtu)
            if any(a.version == 6 for a in wanted):
                _sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "0")
            have = set(nl.addresses(link.index))
            for addr in wanted:
                if addr not in have:
                    try:
                        nl.add_address(link.index, addr)
                    except OSError as exc:
                        if exc.errno != errno.EEXIST:
                            raise
            if not link.up:
                nl.set_up(link.index)
    except OSError as exc:
        raise errdefs.System(f"set up bridge {name}: {_strerror(exc)}") from exc
    _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
    return link.index


def _random_mac() -> str:
    """A locally administered unicast address, as libnetwork gives its bridges."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _pin_mac(nl: Rtnl, name: str, index: int) -> None:
    """Give the bridge an address of its own, once.

    A bridge whose address was never set takes the lowest of its ports' addresses, so
    it changes as containers come and go; containers then hold a stale ARP entry for
    their gateway (the resolver, published ports, the way out) for up to a minute.
    An address already in use is kept (live containers have it cached).
    """
    try:
        with open(f"/sys/class/net/{name}/addr_assign_type") as f:
            if f.read().strip() == "3":  # NET_ADDR_SET: set by someone, stays
                return
        with open(f"/sys/class/net/{name}/address") as f:
            current = f.read().strip()
    except OSError:
        return
    nl.set_mac(index, current if current.replace(":", "").strip("0") else _random_mac())


def delete_bridge(name: str) -> None:
    """Delete bridge *name*; a missing one is fine, a device that is no bridge is refused."""
    _check_ifname(name, "bridge name")
    try:
        with Rtnl() as nl:
            link = nl.link(name)
            if link is None:
                return
            if link.kind != "bridge":
                raise errdefs.Conflict(f"device {name} is not a bridge; not deleting it")
            try:
                nl.delete(link.index)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    raise
    except OSError as exc:
        raise errdefs.System(f"delete bridge {name}: {_strerror(exc)}") from exc


def bridge_addresses(name: str) -> list[str]:
    """The ``ip/prefixlen`` addresses on device *name* in the host namespace; ``[]`` if it
    does not exist."""
    _check_ifname(name, "bridge name")
    try:
        with Rtnl() as nl:
            index = nl.index(name)
            return [] if index is None else [str(a) for a in nl.addresses(index)]
    except OSError as exc:
        raise errdefs.System(f"addresses of {name}: {_strerror(exc)}") from exc


# ---------------------------------------------------------------------------------------------
# Endpoints


@dataclass(frozen=True)
class Interface:
    """One container interface: a veth pair from *bridge* into the namespace."""

    bridge: str
    host_name: str
    name: str
    mac: str
    ipv4: str = ""
    ipv6: str = ""
    gateway4: str = ""
    gateway6: str = ""
    mtu: int = 1500


def veth_name() -> str:
    """A random ``veth`` + 7 hex name that no host device has now."""
    while True:
        name = "veth" + secrets.token_hex(4)[:7]
        if not os.path.exists(f"/sys/class/net/{name}"):
            return name


def attach(netns_path: str, iface: Interface) -> None:
    """Plug *iface* into the namespace at *netns_path*: a veth pair whose peer is born in
    the namespace with its name, MAC and MTU, then gets its addresses, comes up and gets
    the default routes; the host end is a port of the bridge in hairpin mode (a container
    can reach its own published port through the host's address). On failure nothing is
    left behind."""
    _check_ifname(iface.bridge, "bridge name")
    _check_ifname(iface.host_name, "host interface name")
    _check_ifname(iface.name)
    _check_mtu(iface.mtu)
    if not _MAC.fullmatch(iface.mac) or int(iface.mac[:2], 16) & 1:
        raise errdefs.InvalidParameter(f"invalid MAC address {iface.mac!r}: not unicast")
    addrs = [_parse_interface(iface.ipv4, 4)] if iface.ipv4 else []
    if iface.ipv6:
        addrs.append(_parse_interface(iface.ipv6, 6))
    gateways = [_parse_gateway(iface.gateway4, 4)] if iface.gateway4 else []
    if iface.gateway6:
        gateways.append(_parse_gateway(iface.gateway6, 6))
    where = f"{iface.name} ({iface.host_name}) in {netns_path}"

    def inside(nl: Rtnl) -> None:
        if iface.ipv6:  # a namespace's default may be off (devconf_inherit_init_net)
            _sysctl(f"/proc/sys/net/ipv6/conf/{iface.name}/disable_ipv6", "0")
        index = nl.index(iface.name)
        if index is None:
            raise OSError(errno.ENODEV, f"{iface.name} missing in the namespace")
        for addr in addrs:
            nl.add_address(index, addr)
        nl.set_up(index)
        for gateway in gateways:
            nl.add_default_route(gateway)

    def configure() -> None:  # in a thread of its own, which enters the namespace
        _enter(fd, netns_path)
        with Rtnl() as inner:
            inside(inner)

    fd = _open_netns(netns_path)
    try:
        with Rtnl() as nl:
            bridge = nl.link(iface.bridge)
            if bridge is None or bridge.kind != "bridge":
                raise errdefs.NotFound(f"bridge {iface.bridge} not found")
            try:
                nl.add_veth(
                    iface.host_name,
                    master=bridge.index,
                    mtu=iface.mtu,
                    peer=iface.name,
                    peer_netns=fd,
                    peer_mac=iface.mac.lower(),
                )
            except OSError as exc:
                raise errdefs.System(f"create veth {where}: {_strerror(exc)}") from exc
            try:
                host = nl.index(iface.host_name)
                if host is None:
                    raise OSError(errno.ENODEV, f"{iface.host_name} vanished")
                nl.set_hairpin(host)
                _in_thread(configure)
            except BaseException as exc:
                _delete_quietly(nl, iface.host_name)  # the peer goes with it
                if isinstance(exc, OSError):
                    raise errdefs.System(f"configure {where}: {_strerror(exc)}") from exc
                raise
    except OSError as exc:  # netlink socket or lookup of the bridge
        raise errdefs.System(f"attach {where}: {_strerror(exc)}") from exc
    finally:
        os.close(fd)


def _delete_quietly(nl: Rtnl, name: str) -> None:
    """Best-effort removal on an error path, where the first error is the one to report."""
    try:
        index = nl.index(name)
        if index is not None:
            nl.delete(index)
    except OSError:
        pass


def detach(netns_path: str, name: str) -> None:
    """Delete interface *name* in the namespace (its veth peer goes with it). A missing
    interface or namespace is fine."""
    _check_ifname(name)
    if not netns_exists(netns_path):
        return

    def run(nl: Rtnl) -> None:
        index = nl.index(name)
        if index is not None:
            try:
                nl.delete(index)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    raise

    try:
        _in_netns(netns_path, run)
    except OSError as exc:
        raise errdefs.System(f"remove {name} in {netns_path}: {_strerror(exc)}") from exc


def interface_stats(netns_path: str) -> dict[str, dict[str, int]]:
    """Counters per interface in the namespace, loopback left out, keyed as ``docker
    stats`` has them (:data:`STAT_KEYS`)."""

    def run(nl: Rtnl) -> dict[str, dict[str, int]]:
        return {name: counters for name, flags, counters in nl.links() if not flags & _IFF_LOOPBACK}

    try:
        return _in_netns(netns_path, run)
    except OSError as exc:
        raise errdefs.System(f"interface counters in {netns_path}: {_strerror(exc)}") from exc


# ---------------------------------------------------------------------------------------------
# Host


def enable_forwarding(ipv6: bool = False) -> None:
    """Turn on IPv4 (and, when asked, IPv6) forwarding, leaving it untouched if on."""
    _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    if ipv6:
        _sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def host_networks() -> list[IPNetwork]:
    """Subnets in use in the host namespace: those of its addresses and of its main-table
    routes, without default routes, link-local, loopback and multicast (IPAM skips pools
    that overlap one). Includes berth's own bridges."""
    try:
        with Rtnl() as nl:
            nets = [a.network for a in nl.addresses()] + nl.main_routes()
    except OSError as exc:
        raise errdefs.System(f"list host networks: {_strerror(exc)}") from exc
    keep = {
        n for n in nets if n.prefixlen and not (n.is_link_local or n.is_loopback or n.is_multicast)
    }
    return sorted(keep, key=lambda n: (n.version, n.network_address, n.prefixlen))


def wait_links_gone(names: Sequence[str], timeout: float = 2.0) -> bool:
    """Wait until no host device has one of *names*: the host ends of veths whose
    namespace was removed, which the kernel deletes a few tens of ms later.  False if
    some outlived *timeout*."""
    deadline = time.monotonic() + timeout
    with Rtnl() as nl:
        pending = list(names)
        while pending:
            pending = [n for n in pending if nl.index(n) is not None]
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
    return True
