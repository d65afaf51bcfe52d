"""Build routes: ``POST /build/prune``.

berth keeps no build cache (no BuildKit, and no classic builder yet), so a prune of
it removes nothing — but ``docker system prune`` always asks, and ``docker builder
prune`` too, so the request is checked as dockerd checks it (its query, then its
BuildKit backend's filters, with dockerd's messages) and answered as dockerd answers
with an empty cache: ``{"CachesDeleted":null,"SpaceReclaimed":0}`` and a ``builder
prune`` event.  The builder takes this route over when it comes, with a cache to prune.
"""

from __future__ import annotations

import re

from berth import errdefs
from berth.api._http import Request, Response
from berth.api.context import Context
from berth.api.httputils import filters, json_response, query
from berth.api.router import Route
from berth.types.build import CachePruneReport
from berth.types.filters import Filters
from berth.utils.gostr import go_quote
from berth.utils.timefmt import parse_timestamp

#: moby's builder-next ``cacheFields`` that are exposed, and the other keys its Prune
#: accepts (``label`` and ``label!`` taken and not applied, as there)
CACHE_FIELDS = ("id", "parent", "type", "description", "inuse", "shared", "private")
PRUNE_FILTERS = ("until", "unused-for", "label", "label!", *CACHE_FIELDS)

_GO_INT = re.compile(r"[+-]?[0-9]+")


class BuildCachePruneError(errdefs.InvalidParameter):
    """dockerd wraps every refusal of its build backend in these words."""

    def __init__(self, message: str) -> None:
        super().__init__(f"failed to prune build cache: {message}")


def byte_count(req: Request, name: str) -> int:
    """A size in bytes as moby's router reads it (``strconv.Atoi``; empty is 0)."""
    raw = query(req, name)
    if not raw:
        return 0
    if not _GO_INT.fullmatch(raw):
        raise errdefs.InvalidParameter(
            f"{name} is in bytes and expects an integer, got {raw}: "
            f"strconv.Atoi: parsing {go_quote(raw)}: invalid syntax"
        )
    return int(raw)


def check_prune_filters(f: Filters) -> None:
    """The checks of moby's ``Builder.Prune`` and ``toBuildkitPruneInfo``, in order."""
    try:
        f.validate(PRUNE_FILTERS)
    except errdefs.InvalidParameter as e:
        raise BuildCachePruneError(e.message) from None
    until, unused_for = f.get("until"), f.get("unused-for")
    if until and unused_for:
        raise BuildCachePruneError('conflicting filters: "until" and "unused-for"')
    key = "unused-for" if unused_for else "until"
    values = until + unused_for
    if len(values) > 1:
        raise BuildCachePruneError("filters expect only one value")
    if values:
        try:
            parse_timestamp(values[0])
        except ValueError:
            raise BuildCachePruneError(
                f"{go_quote(key)} filter expects a duration (e.g., '24h') or a timestamp: "
                f"failed to parse value as time or duration: {go_quote(values[0])}"
            ) from None
    for field in CACHE_FIELDS:
        if len(f.get(field)) > 1:
            raise BuildCachePruneError("filters expect only one value")


def routes(ctx: Context) -> list[Route]:
    async def prune(req: Request) -> Response:
        flt = filters(req)
        # The router reads the sizes before the backend looks at the filters.
        if req.api_version >= (1, 48):
            if not byte_count(req, "reserved-space"):
                byte_count(req, "keep-storage")  # deprecated; read only without the new one
            byte_count(req, "max-used-space")
            byte_count(req, "min-free-space")
        else:
            byte_count(req, "keep-storage")
        check_prune_filters(flt)
        ctx.backend.events.publish("builder", "prune", "", {"reclaimed": "0"})
        return json_response(CachePruneReport(CachesDeleted=None, SpaceReclaimed=0))

    return [Route("POST", "/build/prune", prune)]
