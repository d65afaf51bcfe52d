"""``docker cp`` routes: ``HEAD``/``GET``/``PUT /containers/{name}/archive``.

The tar flows through an OS pipe between the event loop and one worker
thread, in either direction, so neither a 100 MB upload nor download is held
in memory.  ``GET`` is never compressed: the CLI accepts identity, and on a
local socket compressing costs more than it saves.
"""

from __future__ import annotations

import asyncio
import base64

import msgspec

from berth import errdefs
from berth.api._http import Request, Response, StreamingResponse
from berth.api.bodypipe import BodyPipe, piped
from berth.api.context import Context
from berth.api.httputils import bool_value, query
from berth.api.router import Route
from berth.backend import CopyBackend
from berth.types.container import PathStat

STAT_HEADER = "X-Docker-Container-Path-Stat"


def encode_stat(stat: PathStat) -> str:
    """The header value: base64 of the JSON, as dockerd's ``setContainerPathStatHeader``."""
    return base64.b64encode(msgspec.json.encode(stat)).decode("ascii")


def _path(req: Request) -> str:
    path = query(req, "path")
    if not path:
        raise errdefs.InvalidParameter("bad parameter: path cannot be empty")
    if "\x00" in path:
        raise errdefs.InvalidParameter("bad parameter: path must not contain a NUL byte")
    return path


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def head(req: Request) -> Response:
        stat = await ctx.run(backend.container_stat_path, req.params["name"], _path(req))
        return Response(200, headers=[(STAT_HEADER, encode_stat(stat))])

    async def get(req: Request) -> StreamingResponse:
        archive = await ctx.run(backend.container_archive_path, req.params["name"], _path(req))
        pipe = piped(archive, archive.write_to, "berth-archive")
        return StreamingResponse(
            pipe,
            content_type="application/x-tar",
            headers=[(STAT_HEADER, encode_stat(archive.stat))],
        )

    async def put(req: Request) -> Response:
        path = _path(req)
        pipe = BodyPipe()
        feeder = asyncio.ensure_future(pipe.feed(req.stream()))
        try:
            await ctx.run(
                _extract_body,
                backend,
                pipe,
                req.params["name"],
                path,
                bool_value(req, "copyUIDGID"),
                bool_value(req, "noOverwriteDirNonDir"),
            )
        finally:
            pipe.close_reader()
            await feeder
        return Response(200)

    return [
        Route("HEAD", "/containers/{name}/archive", head),
        Route("GET", "/containers/{name}/archive", get),
        Route("PUT", "/containers/{name}/archive", put),
    ]


def _extract_body(
    backend: CopyBackend,
    pipe: BodyPipe,
    name: str,
    path: str,
    copy_uid_gid: bool,
    no_overwrite_dir_non_dir: bool,
) -> None:
    """Extract the request body; the read end is closed at once so that a refused
    archive stops the feeder instead of leaving it blocked."""
    try:
        backend.container_extract_to_dir(
            name, path, copy_uid_gid, no_overwrite_dir_non_dir, pipe.reader
        )
    finally:
        pipe.close_reader()
