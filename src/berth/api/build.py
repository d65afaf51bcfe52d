"""Build routes: ``POST /build`` (the classic builder) and ``POST /build/prune``.

``POST /build`` reads the query as moby's router does (its 400s come before the body is
read), spools the body's tar while it arrives (:mod:`berth.builder.context`) or fetches
``remote``, and runs the build in a thread of its own.  As with dockerd, an error before
the build said anything is the request's status (a bad context, a parse error, an unknown
target); after that the 200 stream ends with the error.  ``q`` holds the messages back
and answers with the image ID alone, or with everything and the error if it fails.  A
client that goes away cancels the build.

``POST /build/prune`` reads the sizes as moby's router does, then the builder removes
what only its cache holds (:mod:`berth.builder.prune`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from berth import errdefs
from berth.api._http import Request, Response, StreamingResponse
from berth.api.bodypipe import BodyPipe
from berth.api.context import Context
from berth.api.errors import classify
from berth.api.httputils import (
    bool_value,
    encode,
    filters,
    json_response,
    query,
    query_all,
)
from berth.api.router import Route
from berth.backend import BuildBackend
from berth.distribution import AuthConfig
from berth.types.container import Ulimit
from berth.utils.gostr import go_quote

if TYPE_CHECKING:  # the builder loads at the first build (berthd's idle RSS)
    from berth.builder.build import BuildOptions
    from berth.builder.context import BuildContext

_GO_INT = re.compile(r"[+-]?[0-9]+")

log = logging.getLogger(__name__)

_END = object()
#: messages waiting for the client before the build waits for it
_QUEUE_DEPTH = 256
#: how often a build waiting for room looks whether the client went away (seconds)
_SEND_POLL = 0.5


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


def _int64(req: Request, name: str) -> int:
    """moby's ``Int64ValueOrZero``: what does not parse is 0."""
    raw = query(req, name).strip()
    return int(raw) if _GO_INT.fullmatch(raw) else 0


def _json_option(req: Request, name: str, what: str, typ: Any) -> Any:
    raw = query(req, name)
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw.encode(), type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise errdefs.InvalidParameter(f"error reading {what}: {e}") from None


def _auth_configs(req: Request) -> dict[str, AuthConfig]:
    """X-Registry-Config: base64url JSON of registry → credentials; as dockerd, what does
    not decode is ignored (a pull without credentials still works for public images)."""
    raw = req.headers.get("x-registry-config", "").strip()
    if not raw:
        return {}
    text = raw.replace("+", "-").replace("/", "_")
    text += "=" * (-len(text) % 4)
    try:
        doc = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return {}
    out: dict[str, AuthConfig] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            with contextlib.suppress(errdefs.InvalidParameter):
                out[str(key)] = AuthConfig.from_json(value)
    return out


def build_options(req: Request) -> BuildOptions:
    """moby's ``newImageBuildOptions``: the query, with its refusals, before the body."""
    from berth.builder.build import BuildOptions

    v = req.api_version
    if query_all(req, "securityopt"):
        raise errdefs.InvalidParameter("security options are not supported on linux")
    force_remove = bool_value(req, "forcerm")
    remove = True if force_remove or not query(req, "rm") else bool_value(req, "rm")
    options = BuildOptions(
        tags=query_all(req, "t"),
        dockerfile=query(req, "dockerfile"),
        remote=query(req, "remote"),
        target=query(req, "target"),
        no_cache=bool_value(req, "nocache"),
        pull=bool_value(req, "pull") and v >= (1, 16),
        remove=remove,
        force_remove=force_remove,
        quiet=bool_value(req, "q"),
        network_mode=query(req, "networkmode"),
        extra_hosts=query_all(req, "extrahosts"),
        memory=_int64(req, "memory"),
        memory_swap=_int64(req, "memswap"),
        cpu_shares=_int64(req, "cpushares"),
        cpu_period=_int64(req, "cpuperiod"),
        cpu_quota=_int64(req, "cpuquota"),
        cpuset_cpus=query(req, "cpusetcpus"),
        cpuset_mems=query(req, "cpusetmems"),
        cgroup_parent=query(req, "cgroupparent"),
        platform=query(req, "platform") if v >= (1, 32) else "",
        auth_configs=_auth_configs(req),
    )
    if v >= (1, 40):
        outputs = _json_option(req, "outputs", "outputs", list[dict[str, Any]])
        if outputs:
            raise errdefs.InvalidParameter(
                "the outputs option requires BuildKit: the classic builder only makes images"
            )
    shm = query(req, "shmsize")
    if shm:
        if not _GO_INT.fullmatch(shm):
            raise errdefs.InvalidParameter(
                f"strconv.ParseInt: parsing {go_quote(shm)}: invalid syntax"
            )
        options.shm_size = int(shm)
    isolation = query(req, "isolation")
    if isolation and isolation.lower() != "default":
        raise errdefs.InvalidParameter(f"unsupported isolation: {go_quote(isolation)}")
    ulimits = _json_option(req, "ulimits", "ulimit settings", list[Ulimit] | None)
    options.ulimits = list(ulimits or [])
    build_args = _json_option(req, "buildargs", "build args", dict[str, str | None])
    options.build_args = dict(build_args or {})
    labels = _json_option(req, "labels", "labels", dict[str, str])
    options.labels = dict(labels or {})
    cache_from = _json_option(req, "cachefrom", "cache-from", list[str] | None)
    options.cache_from = list(cache_from or [])
    version = query(req, "version")
    if version not in ("", "1", "2"):
        raise errdefs.InvalidParameter(f"invalid version {go_quote(version)}")
    if version == "2":
        raise errdefs.InvalidParameter("buildkit is not enabled on daemon")
    if bool_value(req, "squash"):
        raise errdefs.InvalidParameter("squash is only supported with experimental mode")
    return options


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _error_line(exc: BaseException) -> bytes:
    """moby's ``FormatError``: a RUN's exit code goes in the detail, as the CLI exits
    with it."""
    _, message = classify(exc)
    detail: dict[str, Any] = {"message": message}
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code:
        detail = {"code": code, "message": message}
    return encode({"errorDetail": detail, "error": message}) + b"\r\n"


async def post_build(
    ctx: Context, service: BuildBackend, req: Request
) -> Response | StreamingResponse:
    options = build_options(req)
    loop = asyncio.get_running_loop()
    # bounded: a client that reads slowly slows the build (and its RUN) down, as dockerd's
    # writes to the connection do, instead of growing berthd's memory
    queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_DEPTH)
    first: asyncio.Future[None] = loop.create_future()
    cancel = threading.Event()

    async def put(item: Any) -> None:
        await queue.put(item)
        _resolve(first)

    def send(item: Any) -> None:
        """From a thread that is not the loop's: wait for room, or drop the message once
        the client is gone (nobody will read it)."""
        fut = asyncio.run_coroutine_threadsafe(put(item), loop)
        while True:
            try:
                fut.result(_SEND_POLL)
                return
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    fut.cancel()
                    return

    def emit(msg: dict[str, Any]) -> None:
        send(encode(msg) + b"\r\n")

    from berth.builder.build import BuildOutput
    from berth.builder.context import open_local_context
    from berth.builder.remote import fetch_remote

    output = BuildOutput(emit, want_aux=req.api_version >= (1, 30))
    pipe: BodyPipe | None = None
    feeder: asyncio.Future[None] | None = None
    open_ctx: Callable[[], BuildContext]
    if options.remote:
        remote = options.remote

        def open_ctx() -> BuildContext:
            return fetch_remote(remote, service.tmp_dir, options.dockerfile, output.message, cancel)

    else:
        body = pipe = BodyPipe()
        feeder = asyncio.ensure_future(body.feed(req.stream()))

        def open_ctx() -> BuildContext:
            try:
                return open_local_context(body.reader, service.tmp_dir, options.dockerfile)
            finally:
                body.close_reader()

    outcome: dict[str, Any] = {}

    done: asyncio.Future[None] = loop.create_future()

    def work() -> None:
        try:
            outcome["id"] = service.build(options, open_ctx, output, cancel)
        except BaseException as e:
            outcome["error"] = e
        finally:
            send(_END)
            loop.call_soon_threadsafe(_resolve, done)

    threading.Thread(target=work, name="berth-build", daemon=True).start()
    try:
        await asyncio.shield(first)
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        if pipe is not None:
            pipe.close_reader()
        if feeder is not None:
            # the body is read to its end before the answer, so that the stream can
            # watch for the client going away
            await feeder
    head = queue.get_nowait()
    if head is _END and "error" in outcome:
        raise outcome["error"]
    return StreamingResponse(_chunks(head, queue, outcome, options.quiet, cancel, done))


async def _chunks(
    head: Any,
    queue: asyncio.Queue[Any],
    outcome: dict[str, Any],
    quiet: bool,
    cancel: threading.Event,
    done: asyncio.Future[None],
) -> AsyncIterator[bytes]:
    held: list[bytes] = []
    finished = False
    try:
        item = head
        while item is not _END:
            if quiet:
                held.append(item)
            else:
                yield item
            item = await queue.get()
        finished = True
        error = outcome.get("error")
        if error is not None:
            if held:
                yield b"".join(held)
            yield _error_line(error)
        elif quiet:
            yield encode({"stream": outcome["id"] + "\n"}) + b"\r\n"
    finally:
        if not finished:
            cancel.set()  # the client went away: the build stops, its step is removed
        await asyncio.shield(done)


def routes(ctx: Context) -> list[Route]:
    def builder() -> BuildBackend:
        if ctx.builds is None:
            raise errdefs.NotImplementedFeature("this daemon has no builder")
        return ctx.builds

    async def build(req: Request) -> Response | StreamingResponse:
        return await post_build(ctx, builder(), req)

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
        everything = bool_value(req, "all")
        return json_response(await ctx.run(builder().prune_cache, flt, everything))

    return [Route("POST", "/build", build), Route("POST", "/build/prune", prune)]
