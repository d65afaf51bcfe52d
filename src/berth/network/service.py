"""The network routes' service: the Engine API's view of the controller.

Requests are checked and turned into the controller's terms here; answers are
built in the current API's shape (``NetworkResource``).
"""

from __future__ import annotations

import ipaddress
import threading

from berth import errdefs
from berth.network.controller import NetworkController
from berth.network.ipam import parse_network
from berth.network.model import Network, Subnet
from berth.types.filters import Filters, until_filter
from berth.types.network import (
    IPAM,
    EndpointResource,
    IPAMConfig,
    NetworkCreateRequest,
    NetworkCreateResponse,
    NetworkResource,
)
from berth.utils.timefmt import parse_rfc3339

_prune_lock = threading.Lock()


class NetworkService:
    def __init__(self, controller: NetworkController) -> None:
        self.controller = controller

    # -- answers ---------------------------------------------------------------------
    def _resource(self, net: Network, containers: bool) -> NetworkResource:
        config = None
        if net.subnets:
            config = [
                IPAMConfig(
                    subnet=s.subnet,
                    ip_range=s.ip_range,
                    gateway=s.gateway,
                    aux_addresses=dict(s.aux) or None,
                )
                for s in net.subnets
            ]
        eps: dict[str, EndpointResource] = {}
        if containers:
            for ep in self.controller.endpoints(net.id):
                eps[ep.container_id] = EndpointResource(
                    name=ep.name,
                    endpoint_id=ep.id,
                    mac_address=ep.mac,
                    ipv4_address=str(ep.ipv4) if ep.ipv4 is not None else "",
                    ipv6_address=str(ep.ipv6) if ep.ipv6 is not None else "",
                )
        return NetworkResource(
            name=net.name,
            id=net.id,
            created=net.created,
            scope="local",
            driver=net.driver,
            enable_ipv4=net.enable_ipv4 and net.driver == "bridge",
            enable_ipv6=net.enable_ipv6,
            ipam=IPAM(
                driver=net.ipam_driver,
                options=None if net.predefined else dict(net.ipam_options),
                config=config,
            ),
            internal=net.internal,
            attachable=net.attachable,
            containers=eps,
            options=dict(net.options),
            labels=dict(net.labels),
        )

    # -- NetworkBackend ------------------------------------------------------------------
    def list_networks(self, filters: Filters) -> list[NetworkResource]:
        filters.validate(("dangling", "driver", "id", "label", "name", "scope", "type"))
        for t in filters.get("type"):
            if t not in ("custom", "builtin"):
                raise errdefs.InvalidParameter(f"invalid filter: 'type'='{t}'")
        dangling = (
            filters.get_bool_or_default("dangling", False) if filters.contains("dangling") else None
        )
        out = []
        for net in sorted(self.controller.networks(), key=lambda n: n.created):
            if not filters.match("name", net.name) or not filters.fuzzy_match("id", net.id):
                continue
            if filters.contains("driver") and not filters.exact_match("driver", net.driver):
                continue
            if not filters.match_kv_list("label", net.labels):
                continue
            if filters.contains("scope") and not filters.exact_match("scope", "local"):
                continue
            if filters.contains("type") and not filters.exact_match(
                "type", "builtin" if net.predefined else "custom"
            ):
                continue
            if dangling is not None:
                unused = not net.predefined and not self.controller.in_use(net.id)
                if unused != dangling:
                    continue
            out.append(self._resource(net, containers=False))
        return out

    def inspect_network(self, ref: str, verbose: bool, scope: str) -> NetworkResource:
        if scope and scope != "local":
            raise errdefs.NotFound(f"network {ref} not found")
        return self._resource(self.controller.find(ref), containers=True)

    def create_network(self, req: NetworkCreateRequest) -> NetworkCreateResponse:
        if not req.name:
            raise errdefs.InvalidParameter("network name cannot be empty")
        if req.ingress or req.scope not in ("", "local"):
            raise errdefs.NotImplementedFeature(
                "swarm networks (ingress, scope swarm or global) are not supported by berth"
            )
        if req.config_only or (req.config_from is not None and req.config_from.network):
            raise errdefs.NotImplementedFeature(
                "config-only networks (--config-only, --config-from) are not supported by berth yet"
            )
        ipam = req.ipam or IPAM()
        subnets = []
        for c in ipam.config or []:
            if not c.subnet:
                if c.ip_range or c.gateway:
                    raise errdefs.InvalidParameter(
                        "invalid network config: a subnet is required with --ip-range or --gateway"
                    )
                if c.aux_addresses:  # moby's ValidateIPAM
                    raise errdefs.InvalidParameter("invalid subnet : invalid CIDR block notation")
                continue
            masked = parse_network(c.subnet)
            if ipaddress.ip_interface(c.subnet).ip != masked.network_address:
                raise errdefs.InvalidParameter(f"invalid subnet {c.subnet}: it should be {masked}")
            subnets.append(
                Subnet(
                    c.subnet,
                    gateway=c.gateway,
                    ip_range=c.ip_range,
                    aux=dict(c.aux_addresses or {}),
                )
            )
        enable_ipv6 = bool(req.enable_ipv6)  # a v6 subnet without it is refused, as dockerd
        net = self.controller.create(
            req.name,
            driver=req.driver or "bridge",
            internal=req.internal,
            attachable=req.attachable,
            enable_ipv4=req.enable_ipv4 if req.enable_ipv4 is not None else True,
            enable_ipv6=enable_ipv6,
            options=req.options,
            labels=req.labels,
            ipam_driver=ipam.driver or "default",
            ipam_options=ipam.options,
            subnets=subnets,
        )
        return NetworkCreateResponse(id=net.id)

    def remove_network(self, ref: str) -> None:
        self.controller.remove(ref)

    def prune_networks(self, filters: Filters) -> list[str]:
        filters.validate(("label", "label!", "until"))
        until = until_filter(filters)
        if not _prune_lock.acquire(blocking=False):
            raise errdefs.Conflict("a prune operation is already running")
        try:
            removed = []
            for net in self.controller.networks():
                if net.predefined or self.controller.in_use(net.id):
                    continue
                if until is not None and parse_rfc3339(net.created) > until:
                    continue
                if not filters.match_kv_list("label", net.labels):
                    continue
                if filters.contains("label!") and filters.match_kv_list("label!", net.labels):
                    continue
                try:
                    self.controller.remove(net.id)
                except errdefs.BerthError:
                    continue
                removed.append(net.name)
            self.controller.events.publish("network", "prune", "", {"reclaimed": "0"})
            return removed
        finally:
            _prune_lock.release()
