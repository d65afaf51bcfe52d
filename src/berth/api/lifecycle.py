"""Routes of running containers: start/stop/kill, wait, attach, logs, resize, top, stats.

Handlers are module-level functions of ``(ctx, req)``; :func:`routes` binds the
context.  The long-lived streams live apart: attach (and the session exec shares) in
``_attach``, logs and stats in ``_logs``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from berth import errdefs
from berth.api._attach import attach, attach_session
from berth.api._http import AnyResponse, Request, Response, StreamingResponse
from berth.api._logs import logs, stats
from berth.api.context import Context
from berth.api.httputils import encode, int_value, json_response, no_content, query
from berth.api.router import Route

__all__ = ["attach_session", "routes"]


def _timeout(req: Request) -> int | None:
    return int_value(req, "t", None)


async def start(ctx: Context, req: Request) -> Response:
    body = await req.body()
    if body.strip() and body.strip() not in (b"null", b"{}"):
        raise errdefs.InvalidParameter(
            "starting container with non-empty request body was deprecated since API v1.22 "
            "and removed in v1.24"
        )
    await ctx.run(ctx.backend.start_container, req.params["name"])
    return no_content()


async def stop(ctx: Context, req: Request) -> Response:
    await ctx.run(
        ctx.backend.stop_container, req.params["name"], _timeout(req), query(req, "signal")
    )
    return no_content()


async def restart(ctx: Context, req: Request) -> Response:
    await ctx.run(
        ctx.backend.restart_container, req.params["name"], _timeout(req), query(req, "signal")
    )
    return no_content()


async def kill(ctx: Context, req: Request) -> Response:
    await ctx.run(ctx.backend.kill_container, req.params["name"], query(req, "signal"))
    return no_content()


async def pause(ctx: Context, req: Request) -> Response:
    await ctx.run(ctx.backend.pause_container, req.params["name"])
    return no_content()


async def unpause(ctx: Context, req: Request) -> Response:
    await ctx.run(ctx.backend.unpause_container, req.params["name"])
    return no_content()


async def resize(ctx: Context, req: Request) -> Response:
    h = int_value(req, "h", 0) or 0
    w = int_value(req, "w", 0) or 0
    await ctx.run(ctx.backend.resize_container, req.params["name"], h, w)
    return Response(200, b"", "text/plain; charset=utf-8")


async def top(ctx: Context, req: Request) -> Response:
    result = await ctx.run(ctx.backend.top_container, req.params["name"], query(req, "ps_args"))
    return json_response(result)


async def wait(ctx: Context, req: Request) -> StreamingResponse:
    # Registered before the headers go out (the client starts the container once it
    # has them); the body comes at exit.
    condition = query(req, "condition") or "not-running"
    fut = ctx.backend.wait_container(req.params["name"], condition)
    return StreamingResponse(_wait_body(fut, req.api_version), content_type="application/json")


async def _wait_body(
    fut: asyncio.Future[tuple[int, str | None]], version: tuple[int, int]
) -> AsyncIterator[bytes]:
    try:
        code, error = await fut
    finally:
        if not fut.done():
            fut.cancel()
    result: dict[str, object] = {"StatusCode": code}
    if version >= (1, 30):
        result["Error"] = {"Message": error} if error else None
    yield encode(result) + b"\n"


_Handler = Callable[[Context, Request], Awaitable[AnyResponse]]

_ROUTES: tuple[tuple[str, str, _Handler], ...] = (
    ("POST", "/containers/{name}/start", start),
    ("POST", "/containers/{name}/stop", stop),
    ("POST", "/containers/{name}/restart", restart),
    ("POST", "/containers/{name}/kill", kill),
    ("POST", "/containers/{name}/pause", pause),
    ("POST", "/containers/{name}/unpause", unpause),
    ("POST", "/containers/{name}/resize", resize),
    ("GET", "/containers/{name}/top", top),
    ("POST", "/containers/{name}/wait", wait),
    ("POST", "/containers/{name}/attach", attach),
    ("GET", "/containers/{name}/logs", logs),
    ("GET", "/containers/{name}/stats", stats),
)


def routes(ctx: Context) -> list[Route]:
    return [Route(method, pattern, functools.partial(h, ctx)) for method, pattern, h in _ROUTES]
