"""``GET /containers/{name}/logs`` and ``/stats``: a container's long-lived streams.

Log messages come from the log driver's blocking reader in a thread, in batches;
stats are sampled once a second, as by dockerd's collector.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import quote_plus

from berth import errdefs
from berth.api._http import Request, Response, StreamingResponse
from berth.api.context import Context
from berth.api.httputils import bool_value, bool_value_or_default, encode, json_response, query
from berth.api.streams import MULTIPLEXED, RAW, STREAM_IDS, frame, iterate_batches_in_thread
from berth.logger import LogMessage
from berth.utils.timefmt import ZERO_TIME, format_rfc3339_nano, parse_timestamp

#: how often a stats stream samples, as dockerd's collector
STATS_INTERVAL = 1.0
#: The docker CLI's User-Agent prefix ("Docker-Client/28.2.2 (linux)").
CLI_AGENT = "Docker-Client/"
#: At most this many log messages share one frame for the CLI.
COALESCE_MESSAGES = 512


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


async def logs(ctx: Context, req: Request) -> StreamingResponse:
    follow = bool_value(req, "follow")
    want = {s for s in ("stdout", "stderr") if bool_value(req, s)}
    if not want:
        raise errdefs.InvalidParameter("Bad parameters: you must choose at least one stream")
    timestamps = bool_value(req, "timestamps")
    details = bool_value(req, "details")
    tty, make = await ctx.run(
        ctx.backend.container_logs,
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
    body = _log_body(make, want, details, timestamps, multiplexed, coalesce)
    ctype = MULTIPLEXED if multiplexed and req.api_version >= (1, 42) else RAW
    return StreamingResponse(body, content_type=ctype)


async def _log_body(
    make: Callable[[threading.Event], Iterator[LogMessage]],
    want: set[str],
    details: bool,
    timestamps: bool,
    multiplexed: bool,
    coalesce: bool,
) -> AsyncIterator[bytes]:
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


async def stats(ctx: Context, req: Request) -> Response | StreamingResponse:
    stream = bool_value_or_default(req, "stream", True)
    one_shot = bool_value_or_default(req, "one-shot", False)
    if stream and one_shot:
        raise errdefs.InvalidParameter("cannot have stream=true and one-shot=true")
    sampler = await ctx.run(ctx.backend.container_stats, req.params["name"])
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
