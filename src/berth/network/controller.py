"""The network controller: libnetwork's role in berth.

It owns the networks (persisted), the endpoints of running containers, IPAM,
the host ports held for published ports, the firewall and the DNS resolver of
user-defined networks.  The container side calls it to build a container's
sandbox (a network namespace) and to join or leave networks; it never learns
of containers otherwise, except through :class:`ContainerLookup`.

Locking: ``_lock`` guards the bookkeeping only; netlink and nftables work is
done outside it, so containers start in parallel.  Readers on the event loop
(the DNS resolver) read an immutable name index swapped in under the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from berth import errdefs
from berth.events import Events
from berth.network import firewall as _fw
from berth.network import sandbox as _sb
from berth.network.ipam import (
    DEFAULT_POOLS_V6,
    AddressSpace,
    IPNetwork,
    free_subnet,
    parse_address,
    parse_network,
)
from berth.network.model import (
    BRIDGE,
    OPT_BRIDGE_NAME,
    OPT_ENABLE_ICC,
    OPT_ENABLE_MASQ,
    OPT_MTU,
    PREDEFINED,
    Endpoint,
    Network,
    Subnet,
)
from berth.network.options import NetworkOptions
from berth.network.portmapper import PortMapper, PortRequest
from berth.utils.atomic import write_file
from berth.utils.stringid import generate_id
from berth.utils.timefmt import format_rfc3339_nano, now_ns

if TYPE_CHECKING:
    # dnspython is loaded with the first user-defined network, not at every start
    from berth.network.resolver import Resolver

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class ContainerLookup:
    """What the controller may ask of the container side (set by the Daemon)."""

    def __init__(self, upstreams: Callable[[str], list[str]] | None = None) -> None:
        #: the DNS servers a container asked for (``--dns``), by container ID
        self.upstreams = upstreams or (lambda _cid: [])


class _Runtime:
    """The live state of one network: its address spaces and its endpoints."""

    def __init__(self, net: Network) -> None:
        self.spaces: dict[int, AddressSpace] = {}
        for s in net.subnets:
            pool = parse_network(s.ip_range) if s.ip_range else None
            gw = parse_address(s.gateway) if s.gateway else None
            aux = {parse_address(a) for a in s.aux.values()}
            self.spaces[s.version] = AddressSpace(s.network, gw, pool, aux)
        self.endpoints: dict[str, Endpoint] = {}  # by container ID


#: held while a subnet is chosen and its bridge made: two daemons starting (or creating
#: networks) at once would otherwise both see the same subnet free on the host
HOST_LOCK = "/run/berth-network.lock"


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _now() -> str:
    return format_rfc3339_nano(now_ns())


def _mac_for(ip: ipaddress.IPv4Address | None) -> str:
    """dockerd's generated MAC: 02:42 and the IPv4 address (random without one)."""
    raw = ip.packed if ip is not None else secrets.token_bytes(4)
    return "02:42:" + ":".join(f"{b:02x}" for b in raw)


class NetworkController:
    def __init__(self, data_root: Path, exec_root: Path, options: NetworkOptions, events: Events):
        self.options = options
        self.events = events
        self.containers = ContainerLookup()
        self._dir = data_root / "network" / "networks"
        self._dir.mkdir(parents=True, exist_ok=True)
        self.netns_dir = exec_root / "netns"
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._networks: dict[str, Network] = {}
        self._live: dict[str, _Runtime] = {}
        self._ports = PortMapper()
        self._fw = _fw.Firewall(options.firewall_table) if options.iptables else None
        self._names: dict[str, tuple[Endpoint, ...]] = {}  # DNS: client IP -> its endpoints
        self._resolver: _Resolver | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._load()

    # -- persistence -----------------------------------------------------------------
    def _load(self) -> None:
        for path in self._dir.glob("*.json"):
            try:
                net = msgspec.json.decode(path.read_bytes(), type=Network)
            except (OSError, msgspec.DecodeError) as e:
                log.error("skipping network %s: %s", path.name, e)
                continue
            self._networks[net.id] = net
        for name, driver in PREDEFINED.items():
            if self._by_name(name) is None:
                net = Network(id=generate_id(), name=name, driver=driver, created=_now())
                if driver == BRIDGE:
                    net.options = {
                        "com.docker.network.bridge.default_bridge": "true",
                        OPT_ENABLE_ICC: "true",
                        OPT_ENABLE_MASQ: "true",
                        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                        OPT_BRIDGE_NAME: self.options.bridge,
                        OPT_MTU: str(self.options.mtu),
                    }
                self._networks[net.id] = net
        default = self._by_name("bridge")
        assert default is not None
        with _host_lock():
            self._configure_default_bridge(default)
            # Made now, not at start: the device's route is what tells another daemon
            # choosing its subnet that this one is taken.
            self._bridge_up(default)
        for net in self._networks.values():
            self._save(net)
            if net.is_bridge:
                self._live[net.id] = _Runtime(net)

    def _save(self, net: Network) -> None:
        write_file(self._dir / f"{net.id}.json", msgspec.json.encode(net), 0o600)

    def _configure_default_bridge(self, net: Network) -> None:
        """``--bridge``, ``--bip``, ``--fixed-cidr``, ``--ipv6`` and ``--fixed-cidr-v6``
        decide the default bridge at each start; without a ``--bip`` the subnet it had (or
        the device's address) stays."""
        opts = self.options
        net.bridge = opts.bridge
        net.options[OPT_BRIDGE_NAME] = opts.bridge
        v4 = self._default_v4(net)
        if opts.fixed_cidr:
            rng = parse_network(opts.fixed_cidr, "fixed-cidr")
            if rng.version != 4 or not rng.subnet_of(v4.network):  # type: ignore[arg-type]
                raise errdefs.InvalidParameter(
                    f"invalid fixed-cidr {opts.fixed_cidr}: it must be inside {v4.subnet}"
                )
            v4.ip_range = str(rng)
        subnets = [v4]
        net.enable_ipv6 = opts.ipv6
        if opts.ipv6:
            if opts.fixed_cidr_v6:
                n6 = parse_network(opts.fixed_cidr_v6, "fixed-cidr-v6")
                if n6.version != 6:
                    raise errdefs.InvalidParameter(f"invalid fixed-cidr-v6 {opts.fixed_cidr_v6}")
                subnets.append(Subnet(str(n6), gateway=str(next(n6.hosts())), user=True))
            else:
                old = net.subnet(6)
                if old is None:
                    n6 = free_subnet(DEFAULT_POOLS_V6, self._subnets(), _sb.host_networks())
                    old = Subnet(str(n6), gateway=str(next(n6.hosts())))
                subnets.append(old)
        net.subnets = subnets

    def _default_v4(self, net: Network) -> Subnet:
        opts = self.options
        if opts.bip:
            iface = ipaddress.ip_interface(opts.bip)
            return Subnet(str(iface.network), gateway=str(iface.ip), user=True)
        old = net.subnet(4)
        if old is not None:
            return Subnet(old.subnet, gateway=old.gateway, user=old.user)
        for addr in _sb.bridge_addresses(opts.bridge):
            iface = ipaddress.ip_interface(addr)
            if iface.version == 4:
                return Subnet(str(iface.network), gateway=str(iface.ip))
        subnet = free_subnet(opts.default_address_pools, self._subnets(), _sb.host_networks())
        return Subnet(str(subnet), gateway=str(next(subnet.hosts())))

    # -- start and stop ----------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None, keep: set[str]) -> None:
        """Bring up every bridge network's device and berth's firewall tables, before
        containers are restored or started.  The tables keep what they hold, so the
        published ports of containers that ran on over a restart keep working; what
        belongs to no live container goes once restore is done (``finish_restore``)."""
        self.loop = loop
        if self.options.ip_forward:
            _sb.enable_forwarding(ipv6=any(n.enable_ipv6 for n in self._networks.values()))
        for net in self._networks.values():
            if net.is_bridge:
                self._bridge_up(net)
        if self._fw is not None:
            for rules in self._network_rules():
                self._fw.add_network(rules)
            self._fw.ensure_forward_accept(self._bridges())
        # Sandboxes of containers that were not running when berthd stopped (nothing
        # starts before restore, so none of these is being made right now).
        for entry in os.scandir(self.netns_dir):
            if entry.name not in keep:
                with contextlib.suppress(errdefs.BerthError):
                    _sb.remove_netns(entry.path)

    def _bridge_up(self, net: Network) -> None:
        addrs = []
        for s in net.subnets:
            if s.gateway:
                addrs.append(f"{s.gateway}/{s.network.prefixlen}")
        mtu = int(net.options.get(OPT_MTU, self.options.mtu) or self.options.mtu)
        _sb.ensure_bridge(net.bridge, addrs, mtu=mtu)

    def finish_restore(self) -> None:
        """After restore: the firewall holds exactly the networks and the ports of the
        endpoints now known (adopted, or started since by a restart policy; one that
        joins meanwhile adds its ports again after this), and the resolvers of
        user-defined networks listen."""
        if self._fw is not None:
            with self._lock:
                eps = [ep for rt in self._live.values() for ep in rt.endpoints.values()]
                ports = [r for ep in eps for r in self._port_rules(ep)]
                self._fw.setup(self._network_rules(), ports)
        if self.loop is not None:
            for net in list(self._networks.values()):
                if net.dns:
                    self._listen(net)

    def close(self) -> None:
        if self._resolver is not None and self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._resolver.close(), self.loop).result(5)
        self._ports.close()
        if self._fw is not None:
            self._fw.close()

    # -- lookups -------------------------------------------------------------------
    def _by_name(self, name: str) -> Network | None:
        for net in self._networks.values():
            if net.name == name:
                return net
        return None

    def find(self, ref: str) -> Network:
        """A network by full ID, name, or unique ID prefix (dockerd's order)."""
        with self._lock:
            net = self._networks.get(ref) or self._by_name(ref)
            if net is not None:
                return net
            matches = [n for n in self._networks.values() if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errdefs.InvalidParameter(
                f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        raise errdefs.NotFound(f"network {ref} not found")

    def networks(self) -> list[Network]:
        with self._lock:
            return list(self._networks.values())

    def endpoints(self, network_id: str) -> list[Endpoint]:
        with self._lock:
            rt = self._live.get(network_id)
            return list(rt.endpoints.values()) if rt is not None else []

    def endpoint(self, network_id: str, container_id: str) -> Endpoint | None:
        with self._lock:
            rt = self._live.get(network_id)
            return rt.endpoints.get(container_id) if rt is not None else None

    def _subnets(self) -> list[IPNetwork]:
        return [s.network for n in self._networks.values() for s in n.subnets]

    def _bridges(self) -> list[str]:
        with self._lock:
            return [n.bridge for n in self._networks.values() if n.is_bridge]

    # -- networks --------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        driver: str = "bridge",
        internal: bool = False,
        attachable: bool = False,
        enable_ipv4: bool = True,
        enable_ipv6: bool = False,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ipam_driver: str = "default",
        ipam_options: dict[str, str] | None = None,
        subnets: Sequence[Subnet] = (),
    ) -> Network:
        """Make a network; the caller checked the request's shape."""
        if not _NAME.match(name):
            raise errdefs.InvalidParameter(
                f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
            )
        driver = driver or "bridge"
        if driver in ("host", "null"):
            raise errdefs.Forbidden(f'only one instance of "{driver}" network is allowed')
        if driver != BRIDGE:
            raise errdefs.NotFound(
                f"could not find plugin {driver} in v1 plugin registry: plugin not found"
            )
        if ipam_driver not in ("", "default"):
            raise errdefs.NotFound(
                f"could not find plugin {ipam_driver} in v1 plugin registry: plugin not found"
            )
        opts = dict(options or {})
        with self._lock:
            if self._by_name(name) is not None:
                raise errdefs.Conflict(f"network with name {name} already exists")
            net = Network(
                id=generate_id(),
                name=name,
                driver=driver,
                created=_now(),
                internal=internal,
                attachable=attachable,
                enable_ipv4=enable_ipv4,
                enable_ipv6=enable_ipv6,
                options=opts,
                labels=dict(labels or {}),
                ipam_driver="default",
                ipam_options=dict(ipam_options or {}),
            )
            net.bridge = self._bridge_name(net)
            with _host_lock():
                net.subnets = self._plan_subnets(net, subnets)
                self._networks[net.id] = net
                self._live[net.id] = _Runtime(net)
                try:
                    self._bridge_up(net)
                except BaseException:
                    self._networks.pop(net.id, None)
                    self._live.pop(net.id, None)
                    raise
        try:
            if enable_ipv6 and self.options.ip_forward:
                _sb.enable_forwarding(ipv6=True)
            if self._fw is not None:
                self._fw.add_network(self._rules_of(net))
                self._fw.ensure_forward_accept(self._bridges())
            self._save(net)
            if net.dns:
                self._listen(net)
        except BaseException:
            self._drop_network(net)
            raise
        self.events.publish("network", "create", net.id, {"name": net.name, "type": net.driver})
        return net

    def _bridge_name(self, net: Network) -> str:
        name = net.options.get(OPT_BRIDGE_NAME) or "berth-" + net.id[:9]
        if not _IFNAME.match(name):
            raise errdefs.InvalidParameter(f"invalid bridge name {name!r}")
        for other in self._networks.values():
            if other.bridge == name:
                raise errdefs.Conflict(
                    f"bridge name {name} is already used by network {other.name}"
                )
        return name

    def _plan_subnets(self, net: Network, given: Sequence[Subnet]) -> list[Subnet]:
        """The user's subnets checked (gateway inside, no overlap with another
        network), the missing families filled from the default pools."""
        out: list[Subnet] = []
        taken = [(s.network, n.name) for n in self._networks.values() for s in n.subnets]
        for s in given:
            subnet = s.network
            if subnet.version == 6 and not net.enable_ipv6:
                raise errdefs.InvalidParameter(
                    "invalid network config: IPv6 subnet provided while IPv6 is disabled "
                    "(enable it with --ipv6)"
                )
            for other, owner in taken:
                if other.version == subnet.version and other.overlaps(subnet):
                    raise errdefs.InvalidParameter(
                        f"invalid pool request: subnet {subnet} overlaps with network "
                        f"{owner} ({other})"
                    )
            if s.ip_range:
                rng = parse_network(s.ip_range, "ip-range")
                if rng.version != subnet.version or not rng.subnet_of(subnet):  # type: ignore[arg-type]
                    raise errdefs.InvalidParameter(
                        f"invalid ip-range {s.ip_range}: it must be inside subnet {subnet}"
                    )
            gateway = s.gateway
            if gateway:
                if parse_address(gateway, "gateway") not in subnet:
                    raise errdefs.InvalidParameter(
                        f"invalid gateway {gateway}: it is outside subnet {subnet}"
                    )
            else:
                gateway = str(next(subnet.hosts()))
            for aux_name, aux in s.aux.items():
                if parse_address(aux, f"auxiliary address {aux_name}") not in subnet:
                    raise errdefs.InvalidParameter(
                        f"invalid auxiliary address {aux_name}={aux}: outside subnet {subnet}"
                    )
            if any(o.version == subnet.version for o in (x.network for x in out)):
                raise errdefs.NotImplementedFeature(
                    "more than one subnet of a family on a network is not supported by berth yet"
                )
            out.append(
                Subnet(
                    str(subnet), gateway=gateway, ip_range=s.ip_range, aux=dict(s.aux), user=True
                )
            )
            taken.append((subnet, net.name))
        host = _sb.host_networks()
        used = [t for t, _ in taken]
        if net.enable_ipv4 and not any(s.version == 4 for s in out):
            subnet = free_subnet(self.options.default_address_pools, used, host)
            out.append(Subnet(str(subnet), gateway=str(next(subnet.hosts()))))
        if net.enable_ipv6 and not any(s.version == 6 for s in out):
            subnet = free_subnet(DEFAULT_POOLS_V6, used, host)
            out.append(Subnet(str(subnet), gateway=str(next(subnet.hosts()))))
        return out

    def remove(self, ref: str) -> Network:
        net = self.find(ref)
        if net.predefined:
            raise errdefs.Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        with self._lock:
            rt = self._live.get(net.id)
            if rt is not None and rt.endpoints:
                raise errdefs.Forbidden(
                    f"error while removing network: network {net.name} has active endpoints "
                    f'(name:"{next(iter(rt.endpoints.values())).name}" '
                    f'id:"{next(iter(rt.endpoints.values())).id[:12]}")'
                )
            self._networks.pop(net.id, None)
            self._live.pop(net.id, None)
        self._drop_network(net)
        self.events.publish("network", "destroy", net.id, {"name": net.name, "type": net.driver})
        return net

    def _drop_network(self, net: Network) -> None:
        with self._lock:
            self._networks.pop(net.id, None)
            self._live.pop(net.id, None)
        if net.dns:
            self._unlisten(net)
        if self._fw is not None:
            with contextlib.suppress(errdefs.BerthError):
                self._fw.remove_network(self._rules_of(net))
            with contextlib.suppress(errdefs.BerthError):
                self._fw.ensure_forward_accept(self._bridges())
        if net.bridge:
            _sb.delete_bridge(net.bridge)
        with contextlib.suppress(FileNotFoundError):
            (self._dir / f"{net.id}.json").unlink()

    def in_use(self, network_id: str) -> bool:
        with self._lock:
            rt = self._live.get(network_id)
            return rt is not None and bool(rt.endpoints)

    # -- firewall views ----------------------------------------------------------------
    def _rules_of(self, net: Network) -> _fw.NetworkRules:
        s4, s6 = net.subnet(4), net.subnet(6)
        return _fw.NetworkRules(
            bridge=net.bridge,
            subnet4=s4.subnet if s4 else "",
            subnet6=s6.subnet if s6 else "",
            internal=net.internal,
            masquerade=self.options.ip_masq and net.option_bool(OPT_ENABLE_MASQ, True),
            icc=net.option_bool(OPT_ENABLE_ICC, self.options.icc if net.name == "bridge" else True),
        )

    def _network_rules(self) -> list[_fw.NetworkRules]:
        with self._lock:
            return [self._rules_of(n) for n in self._networks.values() if n.is_bridge]

    @staticmethod
    def _port_rules(ep: Endpoint) -> list[_fw.PortRule]:
        out = []
        for p in ep.ports:
            v6 = ":" in p.host_ip
            addr = ep.ipv6 if v6 else ep.ipv4
            if addr is None:
                continue
            host_ip = "" if p.host_ip in ("0.0.0.0", "::") else p.host_ip
            out.append(_fw.PortRule(p.proto, host_ip, p.host_port, str(addr.ip), p.container_port))
        return out

    # -- sandboxes and endpoints ---------------------------------------------------------
    def sandbox_path(self, container_id: str) -> str:
        return str(self.netns_dir / container_id)

    def create_sandbox(self, container_id: str) -> str:
        path = self.sandbox_path(container_id)
        if not _sb.netns_exists(path):
            self.netns_dir.mkdir(parents=True, exist_ok=True)
            _sb.create_netns(path)
        if self._fw is not None:
            # A dockerd started after berthd sets FORWARD's policy to DROP: the accept for
            # berth's bridges is checked at each start (0.05 ms without dockerd, ~1 ms with).
            try:
                self._fw.ensure_forward_accept(self._bridges())
            except errdefs.BerthError as e:
                log.warning("cannot accept berth's traffic in the host's FORWARD chain: %s", e)
        return path

    def remove_sandbox(self, container_id: str) -> None:
        _sb.remove_netns(self.sandbox_path(container_id))

    def release_sandbox(self, container_id: str, network_ids: Sequence[str]) -> list[Endpoint]:
        """A stopped container's endpoints and sandbox, all given back.

        Its ports are unpublished and free at once; its namespace is removed without
        deleting each interface first (a synchronous veth delete costs ~27 ms, the
        namespace's removal 0.1 ms).  The kernel deletes the veths a few tens of ms
        later, and only then are the addresses free again, so none is handed out
        while its old interface is still on the bridge.
        """
        gone: list[Endpoint] = []
        for nid in network_ids:
            ep = self.endpoint(nid, container_id)
            if ep is None:
                continue
            if self._fw is not None and ep.ports:
                try:
                    self._fw.remove_ports(self._port_rules(ep))
                except errdefs.BerthError as e:
                    log.warning("removing published ports of %s: %s", container_id[:12], e)
            with self._lock:
                rt = self._live.get(nid)
                if rt is not None and rt.endpoints.get(container_id) is ep:
                    del rt.endpoints[container_id]
                self._ports.release(ep.id)
            gone.append(ep)
        if gone:
            self._index_names()
        self.remove_sandbox(container_id)
        veths = [ep.host_veth for ep in gone if ep.host_veth]
        if not veths:
            self._release_addresses(gone)
        else:
            threading.Thread(
                target=self._release_when_gone, args=(gone, veths), daemon=True
            ).start()
        return gone

    def _release_when_gone(self, eps: list[Endpoint], veths: list[str]) -> None:
        try:
            if not _sb.wait_links_gone(veths, timeout=5.0):
                log.warning("interfaces %s outlived their namespace", ", ".join(veths))
        except Exception as e:  # the addresses must come back whatever happened
            log.warning("waiting for %s: %s", ", ".join(veths), e)
        self._release_addresses(eps)

    def _release_addresses(self, eps: list[Endpoint]) -> None:
        with self._lock:
            for ep in eps:
                rt = self._live.get(ep.network_id)
                if rt is None:
                    continue
                for addr in (ep.ipv4, ep.ipv6):
                    if addr is not None:
                        space = rt.spaces.get(addr.version)
                        if space is not None:
                            space.release(addr.ip)

    def join(
        self,
        net: Network,
        container_id: str,
        name: str,
        sandbox: str,
        *,
        iface: str,
        gateway: bool,
        aliases: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ipv4: str = "",
        ipv6: str = "",
        mac: str = "",
        ports: Sequence[PortRequest] = (),
        host_ip: str = "",
        links: Sequence[tuple[str, str]] = (),
    ) -> Endpoint:
        """Give the container an interface on *net* inside *sandbox*, with the
        requested addresses and, on its gateway network, its published ports."""
        if not net.is_bridge:
            raise errdefs.InvalidParameter(f"network {net.name} has no interfaces to join")
        with self._lock:
            rt = self._live.get(net.id)
            if rt is None or net.id not in self._networks:
                raise errdefs.NotFound(f"network {net.name} not found")
            if container_id in rt.endpoints:
                raise errdefs.Forbidden(
                    f"endpoint with name {name} already exists in network {net.name}"
                )
            ep = Endpoint(
                id=generate_id(),
                network_id=net.id,
                container_id=container_id,
                name=name,
                iface=iface,
                host_veth="veth" + secrets.token_hex(4)[:7],
                mac="",
                aliases=tuple(aliases),
                dns_names=tuple(dns_names),
                links=tuple(links),
                gateway=gateway and not net.internal,
            )
            allocated: list[tuple[AddressSpace, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
            try:
                for version, wanted in ((4, ipv4), (6, ipv6)):
                    space = rt.spaces.get(version)
                    if space is None:
                        if wanted:
                            raise errdefs.InvalidParameter(
                                f"invalid endpoint settings: network {net.name} has no "
                                f"IPv{version} subnet for address {wanted}"
                            )
                        continue
                    sub = net.subnet(version)
                    assert sub is not None
                    preferred = parse_address(wanted) if wanted else None
                    if preferred is not None and not sub.user:
                        raise errdefs.InvalidParameter(
                            "invalid endpoint settings:\nuser specified IP address is supported "
                            "only when connecting to networks with user configured subnets"
                        )
                    addr = space.allocate(preferred)
                    allocated.append((space, addr))
                    iface_addr = ipaddress.ip_interface(f"{addr}/{sub.network.prefixlen}")
                    if version == 4:
                        ep.ipv4 = iface_addr  # type: ignore[assignment]
                    else:
                        ep.ipv6 = iface_addr  # type: ignore[assignment]
                ep.mac = mac or _mac_for(ep.ipv4.ip if ep.ipv4 is not None else None)
                if ep.gateway and ports:
                    try:
                        ep.ports = self._ports.map(
                            ep.id,
                            self._port_requests(ep, ports, host_ip),
                            str(ep.ipv4.ip) if ep.ipv4 is not None else "",
                        )
                    except errdefs.System as e:
                        raise errdefs.System(
                            "failed to set up container networking: driver failed programming "
                            f"external connectivity on endpoint {name} ({ep.id}): {e}"
                        ) from None
            except BaseException:
                for space, addr in allocated:
                    space.release(addr)
                raise
            rt.endpoints[container_id] = ep
        try:
            s4, s6 = net.subnet(4), net.subnet(6)
            _sb.attach(
                sandbox,
                _sb.Interface(
                    bridge=net.bridge,
                    host_name=ep.host_veth,
                    name=iface,
                    mac=ep.mac,
                    ipv4=str(ep.ipv4) if ep.ipv4 else "",
                    ipv6=str(ep.ipv6) if ep.ipv6 else "",
                    gateway4=s4.gateway if s4 and ep.gateway else "",
                    gateway6=s6.gateway if s6 and ep.gateway else "",
                    mtu=int(net.options.get(OPT_MTU, self.options.mtu) or self.options.mtu),
                ),
            )
            if self._fw is not None and ep.ports:
                self._fw.add_ports(self._port_rules(ep))
        except BaseException:
            self._forget(net.id, ep)
            with contextlib.suppress(errdefs.BerthError):
                _sb.detach(sandbox, iface)
            raise
        self._index_names()
        return ep

    def _port_requests(
        self, ep: Endpoint, ports: Sequence[PortRequest], default_ip: str
    ) -> list[tuple[PortRequest, str]]:
        """(request, host address) pairs: a binding without an address is published on
        every family the endpoint has (0.0.0.0, and :: with IPv6)."""
        out = []
        for req in ports:
            ip = req.host_ip or default_ip
            if ip in ("", "0.0.0.0", "::"):
                if ep.ipv4 is not None and ip != "::":
                    out.append((req, "0.0.0.0"))
                if ep.ipv6 is not None and ip != "0.0.0.0":
                    out.append((req, "::"))
                continue
            version = parse_address(ip, "host IP").version
            if (version == 4 and ep.ipv4 is None) or (version == 6 and ep.ipv6 is None):
                continue  # dockerd skips a binding of a family the endpoint does not have
            out.append((req, ip))
        return out

    def _forget(self, network_id: str, ep: Endpoint) -> None:
        with self._lock:
            rt = self._live.get(network_id)
            if rt is not None and rt.endpoints.get(ep.container_id) is ep:
                del rt.endpoints[ep.container_id]
            self._ports.release(ep.id)
            if rt is not None:
                for addr in (ep.ipv4, ep.ipv6):
                    if addr is not None:
                        space = rt.spaces.get(addr.version)
                        if space is not None:
                            space.release(addr.ip)

    def leave(self, network_id: str, container_id: str) -> Endpoint | None:
        """Take the container's interface off the network.  The interface is deleted
        before its addresses and ports are free again, so none is handed out twice."""
        ep = self.endpoint(network_id, container_id)
        if ep is None:
            return None
        if self._fw is not None and ep.ports:
            try:
                self._fw.remove_ports(self._port_rules(ep))
            except errdefs.BerthError as e:
                log.warning("removing published ports of %s: %s", container_id[:12], e)
        try:
            if ep.iface:
                _sb.detach(self.sandbox_path(container_id), ep.iface)
        except errdefs.BerthError as e:
            log.warning("detaching %s from %s: %s", container_id[:12], network_id[:12], e)
        self._forget(network_id, ep)
        self._index_names()
        return ep

    def adopt(self, net: Network, container_id: str, ep: Endpoint) -> bool:
        """Take back the endpoint of a container that kept running over a restart: its
        addresses and host ports are reserved again before anything new is handed out."""
        with self._lock:
            rt = self._live.get(net.id)
            if rt is None:
                return False
            for addr in (ep.ipv4, ep.ipv6):
                if addr is not None:
                    space = rt.spaces.get(addr.version)
                    if space is None or not space.reserve(addr.ip):
                        log.warning(
                            "address %s of %s is taken twice on %s",
                            addr,
                            container_id[:12],
                            net.name,
                        )
            rt.endpoints[container_id] = ep
            lost = self._ports.adopt(ep.id, ep.ports)
        if self._fw is not None and ep.ports:
            self._fw.add_ports(self._port_rules(ep))
        for p in lost:
            log.warning(
                "host port %s/%s of %s could not be held again",
                p.host_port,
                p.proto,
                container_id[:12],
            )
        self._index_names()
        return True

    def interface_stats(self, container_id: str) -> dict[str, dict[str, int]]:
        path = self.sandbox_path(container_id)
        if not os.path.exists(path):
            return {}
        return _sb.interface_stats(path)

    # -- DNS -----------------------------------------------------------------------------
    def _index_names(self) -> None:
        """client IP -> the endpoints of that container on DNS-enabled networks."""
        with self._lock:
            by_container: dict[str, list[Endpoint]] = {}
            for nid, rt in self._live.items():
                net = self._networks.get(nid)
                if net is None or not net.dns:
                    continue
                for ep in rt.endpoints.values():
                    by_container.setdefault(ep.container_id, []).append(ep)
            index: dict[str, tuple[Endpoint, ...]] = {}
            for eps in by_container.values():
                for ep in eps:
                    for addr in (ep.ipv4, ep.ipv6):
                        if addr is not None:
                            index[str(addr.ip)] = tuple(eps)
            self._names = index

    def lookup(self, client_ip: str, name: str, family: int) -> list[str] | None:
        """libnetwork's ``ResolveName``: the client's networks in turn, the one the query
        came in on first; the first network where *name* has addresses of *family*
        answers alone.  A name known only without such addresses is [] (NODATA)."""
        mine = self._names.get(client_ip)
        if not mine:
            return None
        version = 6 if family == socket.AF_INET6 else 4
        for own in mine:  # a legacy link's alias stands for its target, for this client only
            for target, alias in own.links:
                if name == alias.lower():
                    name = target.lower()
        ordered = sorted(mine, key=lambda ep: client_ip not in (*ep.addresses(4), *ep.addresses(6)))
        known = False
        with self._lock:
            for own in ordered:
                rt = self._live.get(own.network_id)
                net = self._networks.get(own.network_id)
                if rt is None or net is None:
                    continue
                found = [ep for ep in rt.endpoints.values() if name in _dns_names(ep, net.name)]
                addresses = [a for ep in found for a in ep.addresses(version)]
                if addresses:
                    return addresses
                known = known or bool(found)
        return [] if known else None

    def reverse(self, client_ip: str, address: str) -> str | None:
        mine = self._names.get(client_ip)
        if not mine:
            return None
        with self._lock:
            for own in mine:
                rt = self._live.get(own.network_id)
                net = self._networks.get(own.network_id)
                if rt is None or net is None:
                    continue
                for ep in rt.endpoints.values():
                    if address in (*ep.addresses(4), *ep.addresses(6)):
                        return f"{ep.name}.{net.name}"
        return None

    def upstreams(self, client_ip: str) -> list[tuple[str, int]]:
        mine = self._names.get(client_ip)
        servers: list[str] = []
        if mine:
            servers = self.containers.upstreams(mine[0].container_id)
        if not servers:
            servers = self.options.dns or host_nameservers()
        out = []
        for s in servers:
            with contextlib.suppress(ValueError):
                out.append((str(ipaddress.ip_address(s)), 53))
        return out

    def _listen(self, net: Network) -> None:
        loop = self.loop
        if loop is None:
            return
        if self._resolver is None:
            from berth.network import resolver

            self._resolver = _Resolver(resolver.Resolver(self))
        for s in net.subnets:
            if s.gateway:
                self._resolver.listen(loop, s.gateway)

    def _unlisten(self, net: Network) -> None:
        if self._resolver is None or self.loop is None:
            return
        for s in net.subnets:
            if s.gateway:
                self._resolver.unlisten(self.loop, s.gateway)

    def resolver_address(self, net: Network) -> str:
        """The nameserver a container on *net* is given."""
        s = net.subnet(4) or net.subnet(6)
        return s.gateway if s is not None else ""


class _Resolver:
    """The resolver driven from worker threads (never the loop's own: it would wait on
    itself): its listeners live on the loop."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def listen(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.resolver.listen(address), loop)
        try:
            fut.result(5)
        except errdefs.BerthError as e:
            log.error("DNS resolver on %s: %s", address, e)

    def unlisten(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.resolver.unlisten(address), loop)
        with contextlib.suppress(Exception):
            fut.result(5)

    async def close(self) -> None:
        await self.resolver.close()


def _dns_names(ep: Endpoint, network: str) -> set[str]:
    """The names an endpoint answers to on *network*, lower-cased."""
    names = {ep.name, *ep.aliases, *ep.dns_names, ep.container_id[:12]}
    names |= {f"{n}.{network}" for n in list(names)}
    return {n.lower() for n in names}


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out
