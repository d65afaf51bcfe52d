"""Distribution routes that are not about one local image: ``GET /images/search``.

Registered before the image routes, so that ``/images/search`` is never read as an
image named ``search``.
"""

from __future__ import annotations

from berth import errdefs
from berth.api._http import Request, Response
from berth.api.context import Context
from berth.api.httputils import filters, json_response, query
from berth.api.router import Route
from berth.distribution import search as _search
from berth.distribution.registry import AuthConfig


def _auth(req: Request) -> AuthConfig:
    """X-Registry-Auth; for a search an undecodable one is ignored, as dockerd does."""
    try:
        return AuthConfig.from_header(req.headers.get("x-registry-auth", ""))
    except errdefs.InvalidParameter:
        return AuthConfig()


def routes(ctx: Context) -> list[Route]:
    async def search(req: Request) -> Response:
        """``docker search``: limit and filters are checked before the registry is asked;
        the answer is a JSON array of results."""
        limit = _search.parse_limit(query(req, "limit"))
        options = _search.parse_options(filters(req))
        if ctx.registry is None:
            raise errdefs.NotImplementedFeature(
                "searching registries is not supported by this daemon"
            )
        found = await ctx.run(
            _search.search, ctx.registry, query(req, "term"), limit, options, _auth(req)
        )
        return json_response(found)

    return [Route("GET", "/images/search", search)]
