"""A container's networking: the container side of the network controller.

moby's ``daemon/container_operations.go``: at create the requested networks are
checked and recorded (``verifyNetworkingConfig``); at start the container gets
a sandbox (a network namespace made by berth and handed to the OCI spec) with
an interface on each of its networks and its ports published on the first
(the gateway network); at exit everything is given back.  ``docker network
connect``/``disconnect`` do the same on a running container at once, or only in
its record when it is not running.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING

import msgspec

from berth import errdefs
from berth.daemon.validate import split_proto_port
from berth.network.model import Endpoint, Network
from berth.network.portmapper import HeldPort, PortRequest
from berth.types.container import (
    Config,
    EndpointIPAMConfig,
    EndpointSettings,
    HostConfig,
    NetworkingConfig,
    NetworkSettings,
    PortBinding,
)
from berth.utils.stringid import generate_id

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)


def _joins_networks(hc: HostConfig, config: Config) -> bool:
    """Modes in which the container has interfaces of its own on networks."""
    mode = hc.network_mode
    return not (
        config.network_disabled or mode in ("host", "none") or mode.startswith("container:")
    )


def _check_endpoint(name: str, net: Network | None, ep: EndpointSettings) -> None:
    """moby's ``validateEndpointSettings``."""
    ipam = ep.ipam_config
    if ipam is not None:
        for value, version in ((ipam.i_pv4_address, 4), (ipam.i_pv6_address, 6)):
            if not value:
                continue
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                raise errdefs.InvalidParameter(f"invalid IPv{version} address: {value}") from None
            if addr.version != version:
                raise errdefs.InvalidParameter(f"invalid IPv{version} address: {value}")
        for value in ipam.link_local_i_ps or []:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise errdefs.InvalidParameter(f"invalid link-local IP address: {value}") from None
        if (ipam.i_pv4_address or ipam.i_pv6_address) and (
            net is None or net.name == "bridge" or not net.is_bridge
        ):
            raise errdefs.InvalidParameter(
                "user specified IP address is supported on user defined networks only"
            )
        if net is not None:
            for value, version in ((ipam.i_pv4_address, 4), (ipam.i_pv6_address, 6)):
                sub = net.subnet(version)
                if value and (sub is None or not sub.user):
                    raise errdefs.InvalidParameter(
                        "user specified IP address is supported only when connecting to "
                        "networks with user configured subnets"
                    )
                if value and sub is not None and ipaddress.ip_address(value) not in sub.network:
                    raise errdefs.InvalidParameter(
                        f"no configured subnet or ip-range contain the IP address {value}"
                    )
    if ep.aliases and net is not None and not net.dns:
        raise errdefs.InvalidParameter(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    if ep.mac_address:
        try:
            _normal_mac(ep.mac_address)
        except ValueError:
            raise errdefs.InvalidParameter(f"invalid MAC address: {ep.mac_address}") from None


def _check_endpoint_config(name: str, net: Network | None, ep: EndpointSettings) -> None:
    """moby's ``verifyNetworkingConfig`` wording around ``validateEndpointSettings``."""
    try:
        _check_endpoint(name, net, ep)
    except errdefs.InvalidParameter as e:
        raise errdefs.InvalidParameter(
            f"invalid config for network {name}: invalid endpoint settings:\n{e}"
        ) from None


def _normal_mac(value: str) -> str:
    parts = value.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(value)
    return ":".join(f"{int(p, 16):02x}" for p in parts)


def network_settings(
    d: Daemon, hc: HostConfig, net_cfg: NetworkingConfig | None, config: Config
) -> NetworkSettings:
    """The networks a new container is to join, checked and recorded by name."""
    settings = NetworkSettings()
    endpoints = dict((net_cfg.endpoints_config or {}) if net_cfg else {})
    mode = hc.network_mode
    if config.network_disabled or mode.startswith("container:"):
        return settings
    if mode in ("host", "none"):
        for name, ep in endpoints.items():
            if name not in (mode, "default") and ep is not None:
                raise errdefs.InvalidParameter(
                    f"container cannot be connected to network endpoints: {mode}, {name}"
                )
        settings.networks[mode] = EndpointSettings(network_id=d.networks.find(mode).id)
        return settings
    primary = d.networks.find(mode)
    if "default" in endpoints:
        endpoints[primary.name] = endpoints.pop("default")
    ordered = {primary.name: endpoints.pop(mode, None) or endpoints.pop(primary.name, None)}
    for name, ep in endpoints.items():
        ordered[name] = ep
    for name, given in ordered.items():
        net = d.networks.find(name)
        if not net.is_bridge:
            raise errdefs.InvalidParameter(
                "container cannot be disconnected from host network or connected to host network"
                if net.driver == "host"
                else f"container cannot be connected to network endpoints: {mode}, {name}"
            )
        ep = msgspec.structs.replace(given) if given is not None else EndpointSettings()
        if config.mac_address and net is primary and not ep.mac_address:
            ep.mac_address = config.mac_address  # API < 1.44 keeps it in Config
        _check_endpoint_config(name, net, ep)
        ep.network_id = net.id
        settings.networks[net.name] = ep
    return settings


# -- legacy links --------------------------------------------------------------------------
def parse_link(raw: str) -> tuple[str, str]:
    """``name[:alias]`` (as the CLI sends it) or ``/name:/parent/alias`` (as stored) →
    (name, alias)."""
    name, _, alias = raw.partition(":")
    name = name.strip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else name
    if not name or not alias:
        raise errdefs.InvalidParameter(f"invalid link: {raw!r}")
    return name, alias


def check_links(d: Daemon, hc: HostConfig, own_name: str) -> None:
    """moby's ``registerLinks`` at create: each target exists and the links are stored as
    ``/target:/self/alias``."""
    if not hc.links:
        return
    mode = hc.network_mode
    if mode == "host":
        raise errdefs.InvalidParameter(
            "conflicting options: host type networking can't be used with links. This would "
            "result in undefined behavior"
        )
    if mode.startswith("container:"):
        raise errdefs.InvalidParameter(
            "conflicting options: container type network can't be used with links. This would "
            "result in undefined behavior"
        )
    out = []
    for raw in hc.links:
        name, alias = parse_link(raw)
        try:
            child = d.get_container(name)
        except errdefs.NotFound:
            raise errdefs.InvalidParameter(f"could not get container for {name}") from None
        child_mode = child.host_config.network_mode
        if mode in ("bridge", "default", "") and child_mode not in ("bridge", "default", ""):
            raise errdefs.InvalidParameter(
                f"Cannot link to {child.name}, as it does not belong to the default network"
            )
        out.append(f"{child.name}:/{own_name.lstrip('/')}/{alias}")
    hc.links = out


def _links(container: Container) -> list[tuple[str, str]]:
    return [parse_link(raw) for raw in container.host_config.links or []]


def link_hosts(d: Daemon, container: Container) -> list[str]:
    """/etc/hosts lines of a default-bridge container's links: ``IP\talias hostname name``
    (the name left out when it is the alias), as dockerd writes them."""
    hc = container.host_config
    if hc.network_mode not in ("bridge", "default", ""):
        return []
    lines = []
    for name, alias in _links(container):
        child = d.get_container(name)
        st = child.state
        if not st.running or st.restarting:
            raise errdefs.System(
                f"Cannot link to a non running container: {child.name} AS "
                f"/{container.name.lstrip('/')}/{alias}"
            )
        ep = child.record.network_settings.networks.get("bridge")
        if ep is None or not ep.ip_address:
            continue
        names = [alias, child.record.config.hostname]
        if alias != child.name.lstrip("/"):
            names.append(child.name.lstrip("/"))
        lines.append(f"{ep.ip_address}\t{' '.join(n for n in names if n)}")
    return lines


def link_env(d: Daemon, container: Container) -> list[str]:
    """The environment legacy links give a default-bridge container (moby's ``links.go``):
    ``ALIAS_NAME``, ``ALIAS_PORT`` and ``ALIAS_PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO]`` per
    exposed port of the target, and ``ALIAS_ENV_<VAR>`` for its variables."""
    hc = container.host_config
    if hc.network_mode not in ("bridge", "default", "") or not hc.links:
        return []
    out: list[str] = []
    for name, alias in _links(container):
        child = d.get_container(name)
        ep = child.record.network_settings.networks.get("bridge")
        if ep is None or not ep.ip_address:
            continue
        prefix = alias.upper().replace("-", "_")
        ip = ep.ip_address
        out.append(f"{prefix}_NAME=/{container.name.lstrip('/')}/{alias}")
        exposed: list[tuple[int, str]] = []
        for key in child.record.config.exposed_ports or {}:
            proto, number = split_proto_port(key)
            if number.isdigit():
                exposed.append((int(number), proto or "tcp"))
        exposed.sort()
        if exposed:
            first, first_proto = exposed[0]
            out.append(f"{prefix}_PORT={first_proto}://{ip}:{first}")
        for port, proto in exposed:
            base = f"{prefix}_PORT_{port}_{proto.upper()}"
            out += [
                f"{base}={proto}://{ip}:{port}",
                f"{base}_ADDR={ip}",
                f"{base}_PORT={port}",
                f"{base}_PROTO={proto}",
            ]
        for var in child.record.config.env or []:
            key, sep, value = var.partition("=")
            if sep and key not in ("HOME", "PATH"):
                out.append(f"{prefix}_ENV_{key}={value}")
    return out


def remove_link(d: Daemon, ref: str) -> None:
    """``docker rm --link /parent/alias``: the link goes from the parent's config."""
    full = "/" + ref.lstrip("/")
    parent, _, alias = full.rpartition("/")
    if not parent:
        raise errdefs.InvalidParameter(
            "Conflict, cannot remove the default link name of the container"
        )
    try:
        container = d.get_container(parent)
    except errdefs.NotFound:
        raise errdefs.NotFound(f"Cannot get parent {parent} for link name {full}") from None
    with container.lock:
        hc = container.host_config
        hc.links = [raw for raw in hc.links or [] if parse_link(raw)[1] != alias] or None
        d.checkpoint(container)


# -- start and exit ------------------------------------------------------------------------
def port_requests(hc: HostConfig, config: Config) -> list[PortRequest]:
    """HostConfig.PortBindings, plus every exposed port with ``-P``."""
    out: list[PortRequest] = []
    bindings = dict(hc.port_bindings or {})
    if hc.publish_all_ports:
        for key in config.exposed_ports or {}:
            bindings.setdefault(key, None)
            if not bindings[key]:
                bindings[key] = [PortBinding()]
    for key, items in bindings.items():
        proto, port = split_proto_port(key)
        for b in items or []:
            start = end = 0
            if b.HostPort:
                lo, _, hi = b.HostPort.partition("-")
                start, end = int(lo), int(hi or lo)
            out.append(PortRequest(proto or "tcp", int(port), b.HostIp, start, end))
    return out


def _endpoint_settings(ep: Endpoint, net: Network, base: EndpointSettings) -> EndpointSettings:
    out = msgspec.structs.replace(base)
    out.network_id = net.id
    out.endpoint_id = ep.id
    out.mac_address = ep.mac
    s4, s6 = net.subnet(4), net.subnet(6)
    if ep.ipv4 is not None:
        out.ip_address = str(ep.ipv4.ip)
        out.ip_prefix_len = ep.ipv4.network.prefixlen
        out.gateway = s4.gateway if s4 is not None and not net.internal else ""
    if ep.ipv6 is not None:
        out.global_ipv6_address = str(ep.ipv6.ip)
        out.global_ipv6_prefix_len = ep.ipv6.network.prefixlen
        out.ipv6_gateway = s6.gateway if s6 is not None and not net.internal else ""
    out.dns_names = list(ep.dns_names) if net.dns else None
    return out


def _cleared(ep: EndpointSettings, desired_mac: str) -> EndpointSettings:
    """What a stopped container's record keeps of an endpoint: the user's config."""
    return EndpointSettings(
        ipam_config=ep.ipam_config,
        links=ep.links,
        aliases=ep.aliases,
        mac_address=desired_mac,
        driver_opts=ep.driver_opts,
        gw_priority=ep.gw_priority,
        network_id=ep.network_id,
        dns_names=None,
    )


def _dns_names(container: Container, aliases: list[str]) -> list[str]:
    """moby's ``buildEndpointDNSNames``: name, aliases, short ID, hostname, deduplicated."""
    out: list[str] = []
    for n in (
        container.name.lstrip("/"),
        *aliases,
        container.id[:12],
        container.record.config.hostname,
    ):
        if n and n not in out:
            out.append(n)
    return out


def _join(
    d: Daemon,
    container: Container,
    net: Network,
    base: EndpointSettings,
    sandbox: str,
    iface: str,
    gateway: bool,
) -> EndpointSettings:
    hc = container.host_config
    rec = container.record
    if base.mac_address and net.id not in rec.desired_macs:
        rec.desired_macs[net.id] = base.mac_address
    desired = rec.desired_macs.get(net.id, "")
    ipam = base.ipam_config or EndpointIPAMConfig()
    aliases = list(base.aliases or [])
    ep = d.networks.join(
        net,
        container.id,
        container.name.lstrip("/"),
        sandbox,
        iface=iface,
        gateway=gateway,
        aliases=aliases,
        dns_names=_dns_names(container, aliases) if net.dns else (),
        ipv4=ipam.i_pv4_address,
        ipv6=ipam.i_pv6_address,
        mac=_normal_mac(desired) if desired else "",
        ports=port_requests(hc, container.record.config) if gateway else (),
        links=_links(container) if net.dns else (),
        host_ip=net.options.get("com.docker.network.bridge.host_binding_ipv4", ""),
    )
    if gateway:
        container.record.network_settings.ports = _ports_view(container, ep.ports)
    rec.net_ifaces[net.id] = iface
    return _endpoint_settings(ep, net, base)


def _ports_view(container: Container, held: list[HeldPort]) -> dict[str, list[PortBinding] | None]:
    """NetworkSettings.Ports: every exposed or published port, with its host bindings
    (null for one that is only exposed), as dockerd shows them."""
    out: dict[str, list[PortBinding] | None] = {}
    for key in container.record.config.exposed_ports or {}:
        out[_port_key(key)] = None
    for key in container.host_config.port_bindings or {}:
        out.setdefault(_port_key(key), None)
    for h in held:
        key = f"{h.container_port}/{h.proto}"
        bindings = out.get(key) or []
        bindings.append(PortBinding(HostIp=h.host_ip, HostPort=str(h.host_port)))
        out[key] = bindings
    return out


def _port_key(key: str) -> str:
    proto, port = split_proto_port(key)
    return f"{port}/{proto or 'tcp'}"


def connect_at_start(d: Daemon, container: Container) -> str:
    """Build the container's sandbox and join its networks; returns the namespace
    path for the OCI spec ("" when the runtime makes it or it is the host's)."""
    hc = container.host_config
    settings = container.record.network_settings
    if not _joins_networks(hc, container.record.config):
        return ""
    sandbox = d.networks.create_sandbox(container.id)
    settings.sandbox_id = generate_id()
    settings.sandbox_key = sandbox
    joined: list[str] = []
    try:
        gateway_left = True
        for i, (name, base) in enumerate(list(settings.networks.items())):
            net = d.networks.find(base.network_id or name)
            gateway = gateway_left and not net.internal
            ep = _join(d, container, net, base, sandbox, f"eth{i}", gateway)
            gateway_left = gateway_left and not gateway
            joined.append(net.id)
            if name != net.name:  # renamed meanwhile: the record follows the network
                del settings.networks[name]
            settings.networks[net.name] = ep
    except BaseException:
        release(d, container, [*joined])
        raise
    for nid in joined:
        net = d.networks.find(nid)
        d.events.publish(
            "network",
            "connect",
            nid,
            {"container": container.id, "name": net.name, "type": net.driver},
        )
    return sandbox


def clear_runtime(container: Container) -> list[str]:
    """Forget a stopped container's addresses in its record; the networks whose
    endpoints are to be released are returned."""
    rec = container.record
    settings = rec.network_settings
    joined = [ep.network_id for ep in settings.networks.values() if ep.endpoint_id]
    for name, ep in list(settings.networks.items()):
        settings.networks[name] = _cleared(ep, rec.desired_macs.get(ep.network_id, ""))
    rec.net_ifaces = {}
    settings.ports = {}
    settings.sandbox_id = ""
    settings.sandbox_key = ""
    return joined


def release(d: Daemon, container: Container, network_ids: list[str]) -> None:
    """Give back the container's endpoints and remove its sandbox."""
    for ep in d.networks.release_sandbox(container.id, network_ids):
        with contextlib.suppress(errdefs.NotFound):
            net = d.networks.find(ep.network_id)
            d.events.publish(
                "network",
                "disconnect",
                net.id,
                {"container": container.id, "name": net.name, "type": net.driver},
            )


def adopt(d: Daemon, container: Container) -> None:
    """Take back the endpoints of a container that kept running over a restart."""
    settings = container.record.network_settings
    for name, es in settings.networks.items():
        if not es.endpoint_id:
            continue
        try:
            net = d.networks.find(es.network_id or name)
        except errdefs.NotFound:
            log.warning("network %s of %s is gone", name, container.id[:12])
            continue
        held = [
            HeldPort(proto, b.HostIp, int(b.HostPort), int(port))
            for key, bindings in settings.ports.items()
            for proto, port in [split_proto_port(key)]
            for b in bindings or []
            if es.gateway or es.ipv6_gateway
        ]
        ep = Endpoint(
            id=es.endpoint_id,
            network_id=net.id,
            container_id=container.id,
            name=container.name.lstrip("/"),
            iface=container.record.net_ifaces.get(net.id, ""),
            host_veth="",
            mac=es.mac_address,
            ipv4=ipaddress.IPv4Interface(f"{es.ip_address}/{es.ip_prefix_len}")
            if es.ip_address
            else None,
            ipv6=ipaddress.IPv6Interface(f"{es.global_ipv6_address}/{es.global_ipv6_prefix_len}")
            if es.global_ipv6_address
            else None,
            aliases=tuple(es.aliases or ()),
            dns_names=tuple(es.dns_names or ()),
            gateway=bool(es.gateway or es.ipv6_gateway),
            ports=held,
        )
        d.networks.adopt(net, container.id, ep)


# -- connect and disconnect ----------------------------------------------------------------
def _refuse_mode(hc: HostConfig, net: Network) -> None:
    mode = hc.network_mode
    if mode == "host" or net.driver == "host":
        raise errdefs.Forbidden(
            "container cannot be disconnected from host network or connected to host network"
        )
    if mode.startswith("container:"):
        raise errdefs.Forbidden(
            "Container sharing network namespace with another container or host cannot be "
            "connected to any other network"
        )
    if mode == "none" or net.driver == "null":
        raise errdefs.Forbidden(
            "container cannot be connected to multiple networks with one of the networks in "
            "private (none) mode"
        )


def connect(
    d: Daemon, network_ref: str, container_ref: str, endpoint: EndpointSettings | None
) -> None:
    """``docker network connect``: at once on a running container, else in its record."""
    net = d.networks.find(network_ref)
    container = d.get_container(container_ref)
    with container.lock:
        settings = container.record.network_settings
        _refuse_mode(container.host_config, net)
        if net.name in settings.networks:
            raise errdefs.Forbidden(
                f"endpoint with name {container.name.lstrip('/')} already exists in network "
                f"{net.name}"
            )
        ep = msgspec.structs.replace(endpoint) if endpoint is not None else EndpointSettings()
        _check_endpoint_config(net.name, net, ep)
        ep.network_id = net.id
        st = container.state
        if st.running and not st.restarting:
            used = set(container.record.net_ifaces.values())
            iface = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
            gateway = not any(e.gateway for e in settings.networks.values())
            sandbox = settings.sandbox_key or d.networks.create_sandbox(container.id)
            settings.networks[net.name] = _join(d, container, net, ep, sandbox, iface, gateway)
            d.events.publish(
                "network",
                "connect",
                net.id,
                {"container": container.id, "name": net.name, "type": net.driver},
            )
        else:
            settings.networks[net.name] = ep
        d.checkpoint(container, host_config=False)


def disconnect(d: Daemon, network_ref: str, container_ref: str, force: bool) -> None:
    """``docker network disconnect``."""
    net = d.networks.find(network_ref)
    container = d.get_container(container_ref)
    with container.lock:
        settings = container.record.network_settings
        hc = container.host_config
        if hc.network_mode == "host" or net.driver == "host":
            raise errdefs.Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        name = next(
            (n for n, e in settings.networks.items() if e.network_id == net.id or n == net.name),
            None,
        )
        if name is None:
            raise errdefs.Forbidden(
                f"container {container.id} is not connected to network {net.name}"
            )
        ep = d.networks.leave(net.id, container.id)
        del settings.networks[name]
        container.record.net_ifaces.pop(net.id, None)
        container.record.desired_macs.pop(net.id, None)
        if ep is not None:
            if ep.gateway:
                settings.ports = {}
            d.events.publish(
                "network",
                "disconnect",
                net.id,
                {"container": container.id, "name": net.name, "type": net.driver},
            )
        d.checkpoint(container, host_config=False)


def file_inputs(d: Daemon, container: Container) -> tuple[str, str, str]:
    """(own address, host-gateway address, nameserver) for /etc/hosts and resolv.conf:
    the nameserver is berth's resolver on the first user-defined network, "" when the
    container uses the host's (default bridge, host, none)."""
    own = resolver = ""
    for es in container.record.network_settings.networks.values():
        if es.ip_address and not own:
            own = es.ip_address
        if es.endpoint_id and not resolver:
            with contextlib.suppress(errdefs.NotFound):
                net = d.networks.find(es.network_id)
                if net.dns:
                    resolver = d.networks.resolver_address(net)
    gateway = ""
    with contextlib.suppress(errdefs.NotFound):
        sub = d.networks.find("bridge").subnet(4)
        gateway = sub.gateway if sub is not None else ""
    return own, gateway, resolver
