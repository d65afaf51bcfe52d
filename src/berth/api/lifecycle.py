"""Routes of running containers: start/stop/kill, wait, attach, logs, resize, top, stats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote_plus

from berth import errdefs
from berth.api._http import Hijack, Request, Response, StreamingResponse
from berth.api.context import Context
from berth.api.httputils import (
    bool_value,
    bool_value_or_default,
    encode,
    int_value,
    json_response,
    no_content,
    query,
)
from berth.api.router import Route
from berth.api.streams import (
    MULTIPLEXED,
    RAW,
    STREAM_IDS,
    DetachFilter,
    frame,
    hijack_head,
    iterate_batches_in_thread,
    parse_detach_keys,
)
from berth.container.stream import AttachInfo, Subscription
from berth.utils.timefmt import ZERO_TIME, format_rfc3339_nano, parse_timestamp

log = logging.getLogger(__name__)

#: how often a stats stream samples, as dockerd's collector
STATS_INTERVAL = 1.0
#: The docker CLI's User-Agent prefix ("Docker-Client/28.2.2 (linux)").
CLI_AGENT = "Docker-Client/"
#: At most this many log messages share one frame for the CLI.
COALESCE_MESSAGES = 512


def _timeout(req: Request) -> int | None:
    return int_value(req, "t", None)


def _time_arg(req: Request, name: str) -> int:
    raw = query(req, name)
    if not raw or raw == "0":
        return 0
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid value for {name}: {raw!r}") from None


def _tail(req: Request) -> int:
    raw = query(req, "tail", "all")
    if raw in ("", "all"):
        return -1
    try:
        n = int(raw)
    except ValueError:
        return -1  # dockerd treats an unparsable tail as "all"
    return n if n >= 0 else -1


def _details(attrs: tuple[tuple[str, str], ...]) -> bytes:
    """``--details``: the message's attrs as moby prints them before the line (sorted,
    query-escaped ``k=v`` joined by commas, then a space, even when there are none)."""
    pairs = sorted(attrs)
    return (
        ",".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in pairs) + " "
    ).encode()


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def start(req: Request) -> Response:
        body = await req.body()
        if body.strip() and body.strip() not in (b"null", b"{}"):
            raise errdefs.InvalidParameter(
                "starting container with non-empty request body was deprecated since API v1.22 "
                "and removed in v1.24"
            )
        await ctx.run(backend.start_container, req.params["name"])
        return no_content()

    async def stop(req: Request) -> Response:
        await ctx.run(
            backend.stop_container, req.params["name"], _timeout(req), query(req, "signal")
        )
        return no_content()

    async def restart(req: Request) -> Response:
        await ctx.run(
            backend.restart_container, req.params["name"], _timeout(req), query(req, "signal")
        )
        return no_content()

    async def kill(req: Request) -> Response:
        await ctx.run(backend.kill_container, req.params["name"], query(req, "signal"))
        return no_content()

    async def pause(req: Request) -> Response:
        await ctx.run(backend.pause_container, req.params["name"])
        return no_content()

    async def unpause(req: Request) -> Response:
        await ctx.run(backend.unpause_container, req.params["name"])
        return no_content()

    async def resize(req: Request) -> Response:
        h = int_value(req, "h", 0) or 0
        w = int_value(req, "w", 0) or 0
        await ctx.run(backend.resize_container, req.params["name"], h, w)
        return Response(200, b"", "text/plain; charset=utf-8")

    async def top(req: Request) -> Response:
        result = await ctx.run(backend.top_container, req.params["name"], query(req, "ps_args"))
        return json_response(result)

    async def wait(req: Request) -> StreamingResponse:
        condition = query(req, "condition") or "not-running"
        fut = backend.wait_container(req.params["name"], condition)
        version = req.api_version

        async def body() -> AsyncIterator[bytes]:
            try:
                code, error = await fut
            finally:
                if not fut.done():
                    fut.cancel()
            result: dict[str, object] = {"StatusCode": code}
            if version >= (1, 30):
                result["Error"] = {"Message": error} if error else None
            yield encode(result) + b"\n"

        return StreamingResponse(body(), content_type="application/json")

    async def attach(req: Request) -> Hijack:
        info = backend.attach_info(req.params["name"])
        want_stdin = bool_value(req, "stdin")
        wanted = frozenset(s for s in ("stdout", "stderr") if bool_value(req, s))
        keys = parse_detach_keys(query(req, "detachKeys"))
        replay_logs = bool_value(req, "logs")
        stream = bool_value(req, "stream")
        multiplexed = not info.tty
        ctype = MULTIPLEXED if multiplexed and req.api_version >= (1, 42) else RAW
        sub = info.streams.subscribe(wanted) if stream else None
        logs_maker = None
        if replay_logs:
            _, logs_maker = await ctx.run(
                backend.container_logs, info.container_id, 0, 0, -1, False
            )

        async def run(
            trailing: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            try:
                if logs_maker is not None:
                    async for batch in iterate_batches_in_thread(logs_maker):
                        for msg in batch:
                            if msg.stream in wanted:
                                data = msg.line
                                writer.write(
                                    frame(STREAM_IDS[msg.stream], data) if multiplexed else data
                                )
                        await writer.drain()
                if sub is None:
                    return
                await attach_session(
                    info, sub, want_stdin, keys, multiplexed, trailing, reader, writer
                )
            finally:
                if sub is not None:
                    info.streams.unsubscribe(sub)

        return Hijack(run=run, head=hijack_head(ctype, req.wants_upgrade))

    async def logs(req: Request) -> StreamingResponse:
        follow = bool_value(req, "follow")
        want = {s for s in ("stdout", "stderr") if bool_value(req, s)}
        if not want:
            raise errdefs.InvalidParameter("Bad parameters: you must choose at least one stream")
        timestamps = bool_value(req, "timestamps")
        details = bool_value(req, "details")
        tty, make = await ctx.run(
            backend.container_logs,
            req.params["name"],
            _time_arg(req, "since"),
            _time_arg(req, "until"),
            _tail(req),
            follow,
        )
        multiplexed = not tty
        # The docker CLI copies frame payloads to its stdout/stderr, so consecutive
        # messages of one stream can share a frame: a 50 MB log is then a few
        # thousand writes in the CLI instead of a million.  Other clients (docker-py's
        # stream=True yields frames) get one frame per message, as from dockerd.
        coalesce = multiplexed and req.headers.get("user-agent", "").startswith(CLI_AGENT)

        async def body() -> AsyncIterator[bytes]:
            async for batch in iterate_batches_in_thread(make):
                out = bytearray()
                run: list[bytes] = []
                run_stream = -1
                for msg in batch:
                    if msg.stream not in want:
                        continue
                    data = msg.line
                    if details:
                        data = _details(msg.attrs) + data
                    if timestamps:
                        data = format_rfc3339_nano(msg.time_ns).encode() + b" " + data
                    if not multiplexed:
                        out += data
                    elif not coalesce:
                        out += frame(STREAM_IDS[msg.stream], data)
                    else:
                        sid = STREAM_IDS[msg.stream]
                        if sid != run_stream or len(run) >= COALESCE_MESSAGES:
                            if run:
                                out += frame(run_stream, b"".join(run))
                            run, run_stream = [], sid
                        run.append(data)
                if run:
                    out += frame(run_stream, b"".join(run))
                if out:
                    yield bytes(out)

        ctype = MULTIPLEXED if multiplexed and req.api_version >= (1, 42) else RAW
        return StreamingResponse(body(), content_type=ctype)

    async def stats(req: Request) -> Response | StreamingResponse:
        stream = bool_value_or_default(req, "stream", True)
        one_shot = bool_value_or_default(req, "one-shot", False)
        if stream and one_shot:
            raise errdefs.InvalidParameter("cannot have stream=true and one-shot=true")
        sampler = await ctx.run(backend.container_stats, req.params["name"])
        if not stream:
            first = await ctx.run(sampler.sample)
            if first is None or first["read"] == ZERO_TIME:
                return json_response(sampler.empty())  # not running: nothing to prime
            if one_shot:
                return json_response(first)
            # A second sample, so precpu_stats is filled and the CPU % has a delta.
            await asyncio.sleep(STATS_INTERVAL)
            return json_response(await ctx.run(sampler.sample) or sampler.empty())

        async def body() -> AsyncIterator[bytes]:
            # One object a second, zeroed while the container is not running, until
            # the client goes away or the container is removed (as dockerd does).
            while (sample := await ctx.run(sampler.sample)) is not None:
                yield encode(sample) + b"\n"
                await asyncio.sleep(STATS_INTERVAL)

        return StreamingResponse(body(), content_type=None)

    return [
        Route("POST", "/containers/{name}/start", start),
        Route("POST", "/containers/{name}/stop", stop),
        Route("POST", "/containers/{name}/restart", restart),
        Route("POST", "/containers/{name}/kill", kill),
        Route("POST", "/containers/{name}/pause", pause),
        Route("POST", "/containers/{name}/unpause", unpause),
        Route("POST", "/containers/{name}/resize", resize),
        Route("GET", "/containers/{name}/top", top),
        Route("POST", "/containers/{name}/wait", wait),
        Route("POST", "/containers/{name}/attach", attach),
        Route("GET", "/containers/{name}/logs", logs),
        Route("GET", "/containers/{name}/stats", stats),
    ]


async def attach_session(
    info: AttachInfo,
    sub: Subscription,
    want_stdin: bool,
    keys: bytes,
    multiplexed: bool,
    trailing: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Copy output to the client and its input to the container until either ends."""
    detached = asyncio.Event()

    async def pump_stdin() -> None:
        detach = DetachFilter(keys)
        data = trailing
        while True:
            if data:
                # Detach keys only apply to a terminal, as in dockerd: binary input
                # must pass through untouched.
                out, hit = detach.feed(data) if info.tty else (data, False)
                if out and info.open_stdin:
                    await info.streams.write_stdin(out)
                if hit:
                    detached.set()
                    return
            data = await reader.read(64 * 1024)
            if not data:
                break
        # The client's input ended.  With a terminal that ends the attach (the CLI
        # also ends it this way when it sees the detach keys itself) and the
        # container keeps running; without one, StdinOnce closes the container's input.
        if info.tty:
            detached.set()
        elif info.stdin_once:
            await info.streams.close_stdin()

    async def pump_output() -> None:
        while True:
            item = await sub.get()
            if item is None:
                return
            stream, data = item
            writer.write(frame(STREAM_IDS[stream], data) if multiplexed else data)
            await writer.drain()

    out_task = asyncio.ensure_future(pump_output())
    in_task = asyncio.ensure_future(pump_stdin()) if want_stdin else None
    detach_task = asyncio.ensure_future(detached.wait())
    try:
        waiting = {out_task, detach_task}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done:
            with contextlib.suppress(ConnectionError, OSError):
                out_task.result()
    finally:
        for task in (out_task, in_task, detach_task):
            if task is not None and not task.done():
                task.cancel()
        for task in (out_task, in_task, detach_task):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
