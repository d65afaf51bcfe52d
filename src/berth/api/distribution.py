"""Distribution routes served by the distribution service: ``GET /images/search`` and
``POST /images/{name}/push`` (pull shares ``POST /images/create`` with import, in the image
routes).

Registered before the image routes, so that ``/images/search`` is never read as an
image named ``search``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from berth import errdefs
from berth.api._http import Request, Response, StreamingResponse
from berth.api.context import Context
from berth.api.errors import classify
from berth.api.httputils import encode, filters, json_response, query
from berth.api.router import Route
from berth.distribution import AuthConfig
from berth.distribution.progress import Progress

Work = Callable[[Progress, threading.Event], object]


def error_line(exc: BaseException) -> bytes:
    """An error as the last message of a JSON stream (moby's streamformatter.FormatError)."""
    _, message = classify(exc)
    return encode({"errorDetail": {"message": message}, "error": message}) + b"\r\n"


def progress_stream(ctx: Context, work: Work) -> StreamingResponse:
    """Run *work* in a thread, streaming its progress messages as JSON lines; an error
    becomes the stream's last message.  A client that goes away sets the cancel event
    (dockerd's request context) and the response waits for the work to stop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    cancel = threading.Event()

    def progress(msg: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, encode(msg) + b"\r\n")

    def run() -> None:
        try:
            work(progress, cancel)
        except Exception as e:
            loop.call_soon_threadsafe(queue.put_nowait, error_line(e))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    task = asyncio.ensure_future(ctx.run(run))

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
        finally:
            cancel.set()  # a no-op once the work is done
            await asyncio.shield(task)

    return StreamingResponse(chunks(), content_type="application/json")


def _auth(req: Request) -> AuthConfig:
    """X-Registry-Auth; for a search or a push an undecodable one is ignored, as
    dockerd does."""
    try:
        return AuthConfig.from_header(req.headers.get("x-registry-auth", ""))
    except errdefs.InvalidParameter:
        return AuthConfig()


def routes(ctx: Context) -> list[Route]:
    async def search(req: Request) -> Response:
        """``docker search``: limit and filters are checked before the registry is asked;
        the answer is a JSON array of results."""
        from berth.distribution import search as _search  # at first use: idle RSS

        limit = _search.parse_limit(query(req, "limit"))
        options = _search.parse_options(filters(req))
        if ctx.distribution is None:
            raise errdefs.NotImplementedFeature(
                "searching registries is not supported by this daemon"
            )
        client = ctx.distribution.client
        found = await ctx.run(
            _search.search, client, query(req, "term"), limit, options, _auth(req)
        )
        return json_response(found)

    async def push(req: Request) -> StreamingResponse:
        """As dockerd: a bad name is an HTTP error; everything after "The push refers to
        repository" (a missing tag included) is the stream's last message."""
        service = ctx.distribution
        if service is None:
            raise errdefs.NotImplementedFeature("pushing images is not supported by this daemon")
        from berth.distribution.push import push_reference  # at first use: idle RSS

        ref = push_reference(req.params["name"], query(req, "tag"))
        auth = _auth(req)

        def work(progress: Progress, cancel: threading.Event) -> None:
            service.push(ref, auth, progress, cancel)

        return progress_stream(ctx, work)

    return [
        Route("GET", "/images/search", search),
        Route("POST", "/images/{name:.*}/push", push),
    ]
