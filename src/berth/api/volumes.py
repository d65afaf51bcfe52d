"""Volume routes, served by the volume service itself (``ctx.volumes``).

As moby's volume router, with the filter checks that moby's volume service
makes done here, before the service is called: list filters (dangling,
driver, label, name) and prune filters (label, label!, all).  berth is never
a swarm manager, so what dockerd hands to its cluster backend gets the answer
a dockerd outside a swarm gives: a ``ClusterVolumeSpec`` (API 1.42+) and any
``PUT /volumes/{name}`` are 503.
"""

from __future__ import annotations

from typing import Any

from berth import errdefs
from berth.api import _versions
from berth.api._http import Request, Response
from berth.api.context import Context
from berth.api.httputils import bool_value, filters, read_json
from berth.api.router import Route
from berth.backend import VolumeBackend
from berth.types.filters import Filters
from berth.types.volume import VolumeCreateRequest, VolumeListResponse
from berth.types.wire import encode as wire_encode
from berth.utils.gostr import go_parse_bool, go_quote

#: moby's ``acceptedListFilters`` (``GET /volumes``).
LIST_FILTERS = ("dangling", "driver", "label", "name")
#: moby's ``acceptedPruneFilters`` (``POST /volumes/prune``).
PRUNE_FILTERS = ("label", "label!", "all")

#: dockerd's ``errNoManager`` outside a swarm (a 503), for a cluster volume's create.
NOT_A_SWARM_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)
#: moby's ``putVolumesUpdate`` when the node is no swarm manager (a 503).
UPDATE_WITHOUT_SWARM = "volume update only valid for cluster volumes, but swarm is unavailable"


def _json(obj: Any, status: int = 200) -> Response:
    return Response(status, wire_encode(obj) + b"\n", "application/json")


def list_filters(raw: Filters) -> Filters:
    """Check ``GET /volumes`` filters as moby's ``filtersToBy``: known keys first,
    then ``dangling`` must be one of true/1/false/0."""
    raw.validate(LIST_FILTERS)
    raw.get_bool_or_default("dangling", False)
    return raw


def prune_filters(raw: Filters) -> tuple[Filters, bool]:
    """moby's ``withPrune`` then ``filtersToBy``: the filters without ``all``, and
    whether ``all`` asks for named volumes too."""
    values = raw.get("all")
    all_volumes = False
    if len(values) > 1:
        shown = " ".join(values)
        raise errdefs.InvalidParameter(
            f"invalid filter 'all=[{shown}]': only one value is expected"
        )
    if values:
        parsed = go_parse_bool(values[0])
        if parsed is None:
            raise errdefs.InvalidParameter(
                f"invalid filter 'all': strconv.ParseBool: parsing {go_quote(values[0])}: "
                "invalid syntax"
            )
        all_volumes = parsed
    raw.validate(PRUNE_FILTERS)
    keys = [key for key in raw.keys() if key != "all"]  # noqa: SIM118 (not a dict)
    rest = Filters({key: raw.get(key) for key in keys})
    return rest, all_volumes


def routes(ctx: Context, volumes: VolumeBackend) -> list[Route]:
    async def list_(req: Request) -> Response:
        try:
            flt = filters(req)
        except errdefs.InvalidParameter as e:
            raise errdefs.InvalidParameter(f"error reading volume filters: {e.message}") from None
        found, warnings = await ctx.run(volumes.list_volumes, list_filters(flt))
        return _json(VolumeListResponse(volumes=found, warnings=warnings or None))

    async def inspect(req: Request) -> Response:
        return _json(await ctx.run(volumes.inspect_volume, req.params["name"]))

    async def create(req: Request) -> Response:
        body = await read_json(req, VolumeCreateRequest) or VolumeCreateRequest()
        body = _versions.volume_create(body, req.api_version)
        if body.cluster_volume_spec is not None:
            raise errdefs.Unavailable(NOT_A_SWARM_MANAGER)
        return _json(await ctx.run(volumes.create_volume, body), 201)

    async def update(req: Request) -> Response:
        raise errdefs.Unavailable(UPDATE_WITHOUT_SWARM)

    async def delete(req: Request) -> Response:
        await ctx.run(volumes.remove_volume, req.params["name"], bool_value(req, "force"))
        return Response(204)

    async def prune(req: Request) -> Response:
        flt = _versions.volume_prune_filters(filters(req), req.api_version)
        rest, all_volumes = prune_filters(flt)
        return _json(await ctx.run(volumes.prune_volumes, rest, all_volumes))

    return [
        Route("GET", "/volumes", list_),
        Route("GET", "/volumes/{name:.*}", inspect),
        Route("POST", "/volumes/create", create),
        Route("POST", "/volumes/prune", prune),
        Route("PUT", "/volumes/{name:.*}", update),
        Route("DELETE", "/volumes/{name:.*}", delete),
    ]
