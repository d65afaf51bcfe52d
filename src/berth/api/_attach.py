"""``POST /containers/{name}/attach``, and the attach session that exec shares.

The connection is hijacked: after the head, output is copied to the client and its
input to the container until either side ends or the client sends the detach keys.
"""

from __future__ import annotations

import asyncio
import contextlib

from berth.api._http import Hijack, Request
from berth.api.context import Context
from berth.api.httputils import bool_value, query
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


async def attach(ctx: Context, req: Request) -> Hijack:
    backend = ctx.backend
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
        _, logs_maker = await ctx.run(backend.container_logs, info.container_id, 0, 0, -1, False)

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
            await attach_session(info, sub, want_stdin, keys, multiplexed, trailing, reader, writer)
        finally:
            if sub is not None:
                info.streams.unsubscribe(sub)

    return Hijack(run=run, head=hijack_head(ctype, req.wants_upgrade))


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
