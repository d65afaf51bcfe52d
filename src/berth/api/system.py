"""System routes: ping, version, info, and the answers of a daemon outside a swarm."""

from __future__ import annotations

import msgspec

from berth import errdefs
from berth.api import _versions
from berth.api._http import Request, Response
from berth.api.context import Context
from berth.api.httputils import json_response, query_all
from berth.api.router import Route
from berth.distribution import AuthConfig
from berth.types.wire import encode as wire_encode

_NOT_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
    "connect this node to swarm and try again."
)
_NOT_IN_SWARM = "This node is not part of a swarm"
_PING_HEADERS = [
    ("Builder-Version", "1"),
    ("Swarm", "inactive"),
    ("Cache-Control", "no-cache, no-store, must-revalidate"),
    ("Pragma", "no-cache"),
]


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def ping(req: Request) -> Response:
        if req.method == "HEAD":
            return Response(
                200,
                b"",
                "text/plain; charset=utf-8",
                [*_PING_HEADERS, ("Content-Length", "0")],
            )
        return Response(200, b"OK", "text/plain; charset=utf-8", list(_PING_HEADERS))

    async def version(req: Request) -> Response:
        return json_response(backend.system_version())

    async def auth(req: Request) -> Response:
        """``docker login``: the credentials are checked against the registry itself (the
        CLI keeps them); a token the registry gives for them goes back to the CLI."""
        if ctx.distribution is None:
            raise errdefs.NotImplementedFeature("registry logins are not supported by this daemon")
        client = ctx.distribution.client
        raw = await req.body()
        try:
            doc = msgspec.json.decode(raw) if raw.strip() else None
        except msgspec.DecodeError as e:
            raise errdefs.InvalidParameter(f"invalid JSON: {e}") from None
        config = AuthConfig.from_json(doc)
        status, token = await ctx.run(client.login, config.serveraddress, config)
        return json_response({"IdentityToken": token, "Status": status})

    async def info(req: Request) -> Response:
        info = await ctx.run(backend.system_info)
        return json_response(_versions.system_info(info, req.api_version))

    async def not_manager(req: Request) -> Response:
        raise errdefs.Unavailable(_NOT_MANAGER)

    async def not_in_swarm(req: Request) -> Response:
        raise errdefs.Unavailable(_NOT_IN_SWARM)

    async def no_swarm_support(req: Request) -> Response:
        raise errdefs.NotImplementedFeature("berth does not support swarm mode")

    async def disk_usage(req: Request) -> Response:
        """``docker system df``: every kind, or from API 1.42 those named by ``type``."""
        kinds = {"container": False, "image": False, "volume": False, "build-cache": False}
        asked = query_all(req, "type")
        if req.api_version < (1, 42) or "type" not in req.query:
            kinds = dict.fromkeys(kinds, True)
        for kind in asked if req.api_version >= (1, 42) else []:
            if kind not in kinds:
                raise errdefs.InvalidParameter(f"unknown object type: {kind}")
            kinds[kind] = True
        du = await ctx.run(
            backend.system_disk_usage,
            kinds["container"],
            kinds["image"],
            kinds["volume"],
            kinds["build-cache"],
        )
        du = _versions.disk_usage(du, req.api_version)
        return Response(200, wire_encode(du) + b"\n", "application/json")

    async def plugins(req: Request) -> Response:
        return json_response([])

    async def plugin(req: Request) -> Response:
        raise errdefs.NotFound(f'plugin "{req.params["name"]}" not found')

    out = [
        Route("GET", "/_ping", ping),
        Route("HEAD", "/_ping", ping),
        Route("GET", "/version", version),
        Route("POST", "/auth", auth),
        Route("GET", "/info", info),
        Route("GET", "/system/df", disk_usage),
        Route("GET", "/plugins", plugins),
        Route("GET", "/plugins/{name:.*}/json", plugin),
        Route("POST", "/swarm/leave", not_in_swarm),
        Route("POST", "/swarm/unlock", not_in_swarm),
        Route("POST", "/swarm/init", no_swarm_support),
        Route("POST", "/swarm/join", no_swarm_support),
    ]
    for method, path in (
        ("GET", "/swarm"),
        ("GET", "/swarm/unlockkey"),
        ("POST", "/swarm/update"),
        ("GET", "/services"),
        ("POST", "/services/create"),
        ("GET", "/services/{id}"),
        ("POST", "/services/{id}/update"),
        ("DELETE", "/services/{id}"),
        ("GET", "/services/{id}/logs"),
        ("GET", "/nodes"),
        ("GET", "/nodes/{id}"),
        ("DELETE", "/nodes/{id}"),
        ("POST", "/nodes/{id}/update"),
        ("GET", "/tasks"),
        ("GET", "/tasks/{id}"),
        ("GET", "/tasks/{id}/logs"),
        ("GET", "/secrets"),
        ("POST", "/secrets/create"),
        ("GET", "/secrets/{id}"),
        ("DELETE", "/secrets/{id}"),
        ("POST", "/secrets/{id}/update"),
        ("GET", "/configs"),
        ("POST", "/configs/create"),
        ("GET", "/configs/{id}"),
        ("DELETE", "/configs/{id}"),
        ("POST", "/configs/{id}/update"),
    ):
        out.append(Route(method, path, not_manager))
    return out
