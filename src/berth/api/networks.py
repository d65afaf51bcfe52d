"""Network routes, served by the network controller itself (``ctx.networks``);
connect and disconnect go to the container side (``ctx.backend``), which owns the
containers' endpoint settings.

As moby's router: list filters are checked here (and prune filters, which
moby's daemon checks), bodies are decoded here, and everything else — names,
IPAM, duplicates, references — is the service's to judge.
"""

from __future__ import annotations

from typing import Any

from berth import errdefs
from berth.api import _versions
from berth.api._http import Request, Response
from berth.api.context import Context
from berth.api.httputils import filters, query, read_json
from berth.api.router import Route
from berth.backend import NetworkBackend
from berth.types.network import (
    NetworkConnectRequest,
    NetworkCreateRequest,
    NetworkDisconnectRequest,
    NetworkPruneReport,
    NetworkResource,
)
from berth.types.wire import encode as wire_encode
from berth.utils.gostr import go_parse_bool, go_quote

#: moby's ``network.ValidateFilters`` (``GET /networks``).
LIST_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
#: moby's ``networksAcceptedFilters`` (``POST /networks/prune``).
PRUNE_FILTERS = ("label", "label!", "until")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(status, wire_encode(obj) + b"\n", "application/json")


def _verbose(req: Request) -> bool:
    """``verbose`` as moby reads it: strconv.ParseBool when given, else false."""
    raw = query(req, "verbose")
    if raw == "":
        return False
    value = go_parse_bool(raw)
    if value is None:
        raise errdefs.InvalidParameter(
            f"invalid value for verbose: {raw}: strconv.ParseBool: parsing {go_quote(raw)}: "
            "invalid syntax"
        )
    return value


def routes(ctx: Context, networks: NetworkBackend) -> list[Route]:
    backend = ctx.backend

    async def list_(req: Request) -> Response:
        flt = filters(req)
        flt.validate(LIST_FILTERS)
        result = await ctx.run(networks.list_networks, flt)
        if req.api_version < (1, 28):
            # Before 1.28 the list carried each network's endpoints, as inspect does.
            result = await ctx.run(_detailed, networks, result)
        return _json(result)

    async def inspect(req: Request) -> Response:
        verbose = _verbose(req)
        nw = await ctx.run(networks.inspect_network, req.params["id"], verbose, query(req, "scope"))
        return _json(nw)

    async def create(req: Request) -> Response:
        body = await read_json(req, NetworkCreateRequest) or NetworkCreateRequest()
        body = _versions.network_create(body, req.api_version)
        return _json(await ctx.run(networks.create_network, body), 201)

    async def delete(req: Request) -> Response:
        await ctx.run(networks.remove_network, req.params["id"])
        return Response(204)

    async def connect(req: Request) -> Response:
        body = await read_json(req, NetworkConnectRequest) or NetworkConnectRequest()
        await ctx.run(
            backend.connect_network, req.params["id"], body.container, body.endpoint_config
        )
        return Response(200)

    async def disconnect(req: Request) -> Response:
        body = await read_json(req, NetworkDisconnectRequest) or NetworkDisconnectRequest()
        await ctx.run(backend.disconnect_network, req.params["id"], body.container, body.force)
        return Response(200)

    async def prune(req: Request) -> Response:
        flt = filters(req)
        flt.validate(PRUNE_FILTERS)
        removed = await ctx.run(networks.prune_networks, flt)
        return _json(NetworkPruneReport(networks_deleted=removed or None))

    return [
        Route("GET", "/networks", list_),
        Route("GET", "/networks/", list_),
        Route("POST", "/networks/create", create),
        Route("POST", "/networks/prune", prune),
        Route("GET", "/networks/{id:.+}", inspect),
        Route("POST", "/networks/{id:.+}/connect", connect),
        Route("POST", "/networks/{id:.+}/disconnect", disconnect),
        Route("DELETE", "/networks/{id:.+}", delete),
    ]


def _detailed(networks: NetworkBackend, listed: list[NetworkResource]) -> list[NetworkResource]:
    out = []
    for nw in listed:
        try:
            out.append(networks.inspect_network(nw.id, False, ""))
        except errdefs.NotFound:
            continue  # removed since it was listed
    return out
