"""Image routes, served by the image service itself (``ctx.images``)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import h11
import msgspec

from berth import errdefs
from berth.api import _versions
from berth.api._http import ClientGone, Request, Response, StreamingResponse
from berth.api.bodypipe import BodyPipe, ResponsePipe, piped
from berth.api.context import Context
from berth.api.distribution import progress_stream
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
from berth.backend import ImageBackend
from berth.distribution import AuthConfig
from berth.distribution.progress import Progress
from berth.types.image import ImportOptions
from berth.types.wire import encode as wire_encode
from berth.utils.platform import Platform, parse_platform

log = logging.getLogger(__name__)


def _json_lines(messages: list[dict[str, str]]) -> bytes:
    return b"".join(encode(m) + b"\r\n" for m in messages)


def _error_line(exc: BaseException) -> bytes:
    """An error as the last message of a JSON stream (moby's streamformatter.FormatError)."""
    _, message = classify(exc)
    return encode({"errorDetail": {"message": message}, "error": message}) + b"\r\n"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def routes(ctx: Context) -> list[Route]:
    images = ctx.images

    async def list_(req: Request) -> Response:
        flt = filters(req)
        legacy = query(req, "filter")
        if legacy and req.api_version < (1, 41):
            flt = flt.with_values("reference", [legacy])
        shared = bool_value(req, "shared-size") and req.api_version >= (1, 42)
        result = await ctx.run(images.list_images, flt, bool_value(req, "all"), shared)
        result = _versions.image_summaries(result, req.api_version)
        return Response(200, wire_encode(result) + b"\n", "application/json")

    async def inspect(req: Request) -> Response:
        doc = await ctx.run(images.inspect, req.params["name"])
        return json_response(_versions.image_inspect(doc, req.api_version))

    async def history(req: Request) -> Response:
        return json_response(await ctx.run(images.history, req.params["name"]))

    async def tag(req: Request) -> Response:
        await ctx.run(images.tag, req.params["name"], query(req, "repo"), query(req, "tag"))
        return Response(201)

    async def delete(req: Request) -> Response:
        items = await ctx.run(
            images.delete,
            req.params["name"],
            bool_value(req, "force"),
            not bool_value(req, "noprune"),
        )
        return json_response(items)

    async def prune(req: Request) -> Response:
        return json_response(await ctx.run(images.prune_images, filters(req)))

    async def create(req: Request) -> Response | StreamingResponse:
        from_image = query(req, "fromImage")
        if from_image:
            return await _pull(req, from_image)
        src = query(req, "fromSrc")
        if not src:
            raise errdefs.InvalidParameter("either fromImage or fromSrc must be given")
        options = ImportOptions(
            repo=query(req, "repo"),
            tag=query(req, "tag"),
            message=query(req, "message") or f"Imported from {src}",
            changes=query_all(req, "changes"),
            platform=query(req, "platform"),
        )
        await ctx.run(images.check_import, options)
        if src == "-":
            pipe = BodyPipe()
            feeder = asyncio.ensure_future(pipe.feed(req.stream()))
            try:
                image_id = await ctx.run(_import_body, images, pipe, options)
            finally:
                pipe.close_reader()
                await feeder
        else:
            url = src if "://" in src else "http://" + src
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise errdefs.InvalidParameter(f"unsupported import source {src!r}")
            image_id = await ctx.run(_import_url, images, url, options)
        return Response(200, _json_lines([{"status": image_id}]), "application/json")

    async def _pull(req: Request, from_image: str) -> StreamingResponse:
        """As dockerd: what is known before any layer moves (no such repository, tag or
        digest; access denied; registry unreachable) is an HTTP error; after that,
        errors are the stream's last message.  No tag and no digest pulls every tag
        (``docker pull -a``).  A client that goes away stops the pull; what it had
        downloaded is kept for the next one."""
        service = ctx.distribution
        if service is None:
            raise errdefs.NotImplementedFeature(
                f"pulling {from_image} from a registry is not supported by this daemon"
            )
        try:
            auth = AuthConfig.from_header(req.headers.get("x-registry-auth", ""))
        except errdefs.InvalidParameter:
            auth = AuthConfig()  # dockerd ignores an undecodable header on pull
        from berth.distribution.pull import normalize_reference  # at first use: idle RSS

        ref = normalize_reference(from_image, query(req, "tag"))
        value = query(req, "platform")
        platform = parse_platform(value) if value else None
        plan = await ctx.run(service.prepare_pull, ref, auth, platform)

        def work(progress: Progress, cancel: threading.Event) -> None:
            service.pull(plan, progress, cancel)

        return progress_stream(ctx, work)

    async def load(req: Request) -> StreamingResponse:
        """As dockerd: 200 and a JSON stream, whose last message carries any error
        with the archive (docker-py raises ImageLoadError, the CLI exits 1).

        ``quiet`` (true unless given) only silences dockerd's "Loading layer"
        progress messages, which berth does not send.
        """
        try:
            path = Path(await _spool(req.stream(), images.tmp_dir))
            try:
                messages = await ctx.run(images.load, path)
            finally:
                await ctx.run(_unlink, path)
            body = _json_lines([{"stream": m} for m in messages])
        except (ClientGone, ConnectionError, h11.ProtocolError):
            raise  # the client is gone or broke the upload: nobody to answer
        except Exception as e:
            body = _error_line(e)
        return StreamingResponse(_once(body), content_type="application/json")

    async def save(req: Request) -> StreamingResponse:
        """``docker save``: every name is resolved and every layer checked before the
        first byte, so that a missing image is a 404.  A failure after it cuts the
        connection: the client reports an error instead of keeping a short tarball
        (dockerd appends a JSON error to the tar, which no tar reader notices)."""
        name = req.params.get("name")
        names = [name] if name is not None else query_all(req, "names")
        archive = await ctx.run(images.prepare_save, names, _save_platform(req))
        failed = threading.Event()

        def produce(fd: int) -> None:
            try:
                archive.write_to(fd)
            except BaseException as e:
                if _client_gone(e):
                    log.info("docker save: the client went away")
                    return
                failed.set()
                raise

        pipe = piped(archive, produce, "berth-save")
        return StreamingResponse(_CutOnFailure(pipe, failed), content_type="application/x-tar")

    return [
        Route("GET", "/images/json", list_),
        Route("GET", "/images/get", save),
        Route("GET", "/images/{name:.*}/get", save),
        Route("POST", "/images/create", create),
        Route("POST", "/images/load", load),
        Route("POST", "/images/prune", prune),
        Route("GET", "/images/{name:.*}/json", inspect),
        Route("GET", "/images/{name:.*}/history", history),
        Route("POST", "/images/{name:.*}/tag", tag),
        Route("DELETE", "/images/{name:.*}", delete),
    ]


class _PlatformQuery(msgspec.Struct):
    """An OCI platform as the ``platform`` query parameter carries it (JSON)."""

    os: str = ""
    architecture: str = ""
    variant: str = ""
    os_version: str = msgspec.field(default="", name="os.version")
    os_features: list[str] = msgspec.field(default_factory=list, name="os.features")


def _save_platform(req: Request) -> Platform | None:
    """moby's ``DecodePlatforms`` for save (API 1.48 on; one platform before 1.52)."""
    if req.api_version < (1, 48):
        return None
    values = query_all(req, "platform")
    if not values:
        return None
    if len(values) > 1:
        raise errdefs.InvalidParameter(
            "multiple platform parameters are not supported in this API version; "
            "use API version 1.52 or later"
        )
    try:
        p = msgspec.json.decode(values[0], type=_PlatformQuery)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise errdefs.InvalidParameter(f"failed to parse platform: {e}") from None
    if not p.os and not p.architecture and (p.variant or p.os_version or p.os_features):
        raise errdefs.InvalidParameter(
            "optional platform fields provided, but OS and Architecture are missing"
        )
    if not p.os or not p.architecture:
        raise errdefs.InvalidParameter("both OS and Architecture must be provided")
    return Platform(p.os, p.architecture, p.variant)


def _client_gone(e: BaseException | None) -> bool:
    """Whether *e* (or what it wraps) says the reader of the response went away."""
    while e is not None:
        if isinstance(e, (BrokenPipeError, ConnectionResetError)):
            return True
        e = e.__cause__ or e.__context__
    return False


class _CutOnFailure:
    """The pipe's chunks; if its producer failed, an error instead of the end, so that
    the HTTP layer drops the connection without the chunked body's last chunk.  Closing
    it (the client went away) closes the pipe, and the producer stops on EPIPE."""

    def __init__(self, pipe: ResponsePipe, failed: threading.Event) -> None:
        self._pipe = pipe
        self._failed = failed

    def __aiter__(self) -> _CutOnFailure:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._pipe.__anext__()
        except StopAsyncIteration:
            if self._failed.is_set():
                raise ConnectionAbortedError("the response could not be written whole") from None
            raise

    async def aclose(self) -> None:
        self._pipe.close()


def _import_body(images: ImageBackend, pipe: BodyPipe, options: ImportOptions) -> str:
    """Import from the request body; the read end is closed at once so that a
    refused tarball stops the feeder instead of leaving it blocked."""
    try:
        return images.import_image(pipe.reader, options)
    finally:
        pipe.close_reader()


def _import_url(images: ImageBackend, url: str, options: ImportOptions) -> str:
    import urllib.request  # at first use: with http.client and email, 1 MB of idle RSS

    try:
        resp = urllib.request.urlopen(url, timeout=60)
    except OSError as e:
        raise errdefs.InvalidParameter(f"cannot download {url}: {e}") from None
    with resp:
        stream: IO[bytes] = resp
        return images.import_image(stream, options)


async def _spool(chunks: AsyncIterator[bytes], directory: os.PathLike[str] | str) -> str:
    fd, path = tempfile.mkstemp(prefix="load-", suffix=".tar", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in chunks:
                try:
                    f.write(chunk)
                except OSError as e:
                    raise errdefs.System(f"cannot store the archive: {e}") from None
    except BaseException:
        os.unlink(path)
        raise
    return path


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
