"""Exec routes: create, start (hijacked or detached), resize, inspect."""

from __future__ import annotations

import asyncio
import contextlib

from berth import API_VERSION, errdefs
from berth.api._http import Hijack, Request, Response
from berth.api.context import Context
from berth.api.httputils import int_value, json_response, read_json
from berth.api.lifecycle import attach_session
from berth.api.router import Route
from berth.api.streams import MULTIPLEXED, RAW, STDOUT, frame, hijack_head
from berth.container.stream import AttachInfo
from berth.types.container import ExecOptions, ExecStartConfig


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def create(req: Request) -> Response:
        opts = await read_json(req, ExecOptions, required=True)
        assert opts is not None
        exec_id = await ctx.run(backend.exec_create, req.params["name"], opts)
        return json_response({"Id": exec_id}, status=201)

    async def start(req: Request) -> Response | Hijack:
        cfg = await read_json(req, ExecStartConfig) or ExecStartConfig()
        ex = backend.exec_get(req.params["id"])
        if cfg.detach:
            await ctx.run(backend.exec_start, ex.id)
            return Response(200, b"", None)
        opts = ex.options
        wanted = frozenset(
            s for s, on in (("stdout", opts.attach_stdout), ("stderr", opts.attach_stderr)) if on
        )
        sub = ex.streams.subscribe(wanted)
        # The process has a terminal (and detach keys apply) as the exec was created;
        # the output is framed unless *this* request says Tty, as with dockerd: a
        # client reads the stream as it asked for it (docker-py's exec_start(tty=False)
        # after exec_create(tty=True) reads frames, of stdout only).
        info = AttachInfo(ex.id, opts.tty, opts.attach_stdin, True, ex.streams)
        multiplexed = not cfg.tty
        ctype = MULTIPLEXED if multiplexed and req.api_version >= (1, 42) else RAW
        head = hijack_head(
            ctype,
            req.wants_upgrade,
            [("Api-Version", API_VERSION), ("Docker-Experimental", "false"), ("Ostype", "linux")],
        )

        async def run(
            trailing: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            try:
                try:
                    await ctx.run(backend.exec_start, ex.id)
                except errdefs.BerthError as e:
                    # The 101 is out: the error goes in-band on stdout, as dockerd writes it.
                    text = f"{e}\r\n".encode()
                    writer.write(frame(STDOUT, text) if multiplexed else text)
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                    return
                await attach_session(
                    info,
                    sub,
                    opts.attach_stdin,
                    ex.detach_keys,
                    multiplexed,
                    trailing,
                    reader,
                    writer,
                )
                if sub.ended:
                    # Held open until the exit is recorded, so that the client's
                    # inspect right after has the exit code.
                    await ex.wait_exit()
                elif opts.tty and opts.attach_stdin and not reader.at_eof():
                    # The client typed the detach keys: the connection closes and
                    # the process runs on (its input was not closed).
                    ex.detached()
            finally:
                ex.streams.unsubscribe(sub)

        return Hijack(run=run, head=head)

    async def resize(req: Request) -> Response:
        h = int_value(req, "h", 0) or 0
        w = int_value(req, "w", 0) or 0
        await ctx.run(backend.exec_resize, req.params["id"], h, w)
        return Response(200, b"", "text/plain; charset=utf-8")

    async def inspect(req: Request) -> Response:
        return json_response(backend.exec_inspect(req.params["id"]))

    return [
        Route("POST", "/containers/{name}/exec", create),
        Route("POST", "/exec/{id}/start", start),
        Route("POST", "/exec/{id}/resize", resize),
        Route("GET", "/exec/{id}/json", inspect),
    ]
