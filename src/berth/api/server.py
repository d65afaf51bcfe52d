"""The Engine API server: versions, routing and errors, once for every route."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING

from berth import API_VERSION, ENGINE_COMPAT_VERSION, MIN_API_VERSION, metrics
from berth.api import archive, build, containers, events, execs, lifecycle, system
from berth.api import distribution as distribution_routes
from berth.api import images as image_routes
from berth.api import networks as network_routes
from berth.api import volumes as volume_routes
from berth.api._http import AnyResponse, ClientGone, Hijack, HTTPServer, Request, Response
from berth.api.context import Context, Lazy
from berth.api.errors import classify
from berth.api.httputils import encode
from berth.api.router import Router
from berth.backend import Backend, BuildBackend, ImageBackend, NetworkBackend, VolumeBackend

if TYPE_CHECKING:  # loaded at the first pull, push, login or search
    from berth.distribution.service import DistributionService

log = logging.getLogger(__name__)

_VERSIONED = re.compile(r"^/v([0-9]+)\.([0-9]+)(/.*)$")
#: the first path segments the requests metric names (others count as "other")
_RESOURCES = frozenset(
    [
        "_ping",
        "auth",
        "build",
        "commit",
        "containers",
        "distribution",
        "events",
        "exec",
        "images",
        "info",
        "networks",
        "plugins",
        "session",
        "swarm",
        "system",
        "version",
        "volumes",
    ]
)
MAX_VERSION = tuple(int(p) for p in API_VERSION.split("."))
MIN_VERSION = tuple(int(p) for p in MIN_API_VERSION.split("."))


def error_response(status: int, message: str) -> Response:
    return Response(
        status=status,
        body=encode({"message": message}) + b"\n" if status != 304 else b"",
        content_type="application/json" if status != 304 else None,
    )


class ApiServer:
    def __init__(
        self,
        backend: Backend,
        *,
        images: ImageBackend,
        networks: NetworkBackend | None = None,
        volumes: VolumeBackend | None = None,
        distribution: Lazy[DistributionService] | None = None,
        builds: Lazy[BuildBackend] | None = None,
    ) -> None:
        """*backend* serves the container routes; each service serves its own routes
        (*images*, *networks*, *volumes*, *distribution*, *builds*).  Without *networks*
        there are no network routes (404), without *volumes* no volume routes, without
        *distribution* no pull, push, login or search, without *builds* no build (501).
        *distribution* and *builds* are called for their service at first use."""
        self.backend = backend
        self.router = Router()
        self.context = Context(
            backend,
            images=images,
            networks=networks,
            volumes=volumes,
            distribution=distribution,
            builds=builds,
        )
        self.router.extend(distribution_routes.routes(self.context))  # before /images/{name}
        for module in (system, events, containers, lifecycle, archive, execs, image_routes, build):
            self.router.extend(module.routes(self.context))
        if networks is not None:
            self.router.extend(network_routes.routes(self.context, networks))
        if volumes is not None:
            self.router.extend(volume_routes.routes(self.context, volumes))
        self.http = HTTPServer(
            self.handle,
            [
                ("Api-Version", API_VERSION),
                ("Docker-Experimental", "false"),
                ("Ostype", "linux"),
                ("Server", f"Docker/{ENGINE_COMPAT_VERSION} (linux)"),
            ],
        )

    async def handle(self, req: Request) -> AnyResponse:
        started = time.monotonic()
        response: AnyResponse | None = None
        try:
            response = await self._handle(req)
            return response
        finally:
            if response is None:
                status = 499  # the client went away (or the handler was cancelled)
            elif isinstance(response, Hijack):
                status = int(response.head.split(b" ", 2)[1])  # 101, or 200 without upgrade
            else:
                status = response.status
            parts = req.path.split("/", 2)
            resource = parts[1] if len(parts) > 1 and parts[1] else "-"
            if resource not in _RESOURCES:
                resource = "other"
            metrics.api_requests.labels(req.method, resource, str(status)).inc()
            metrics.api_seconds.labels(req.method).observe(time.monotonic() - started)

    async def _handle(self, req: Request) -> AnyResponse:
        m = _VERSIONED.match(req.path)
        if m:
            version = (int(m.group(1)), int(m.group(2)))
            req.path = m.group(3)
            shown = f"{m.group(1)}.{m.group(2)}"
            if version < MIN_VERSION:
                return error_response(
                    400,
                    f"client version {shown} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version",
                )
            if version > MAX_VERSION:
                return error_response(
                    400,
                    f"client version {shown} is too new. Maximum supported API version is "
                    f"{API_VERSION}",
                )
            req.api_version = version
        else:
            req.api_version = (MAX_VERSION[0], MAX_VERSION[1])
        found = self.router.match(req.method, req.path)
        if not isinstance(found, tuple):
            if found:
                return error_response(405, "method not allowed")
            return error_response(404, "page not found")
        handler, params = found
        req.params = params
        try:
            return await handler(req)
        except (asyncio.CancelledError, ClientGone):
            raise  # a client gone mid-upload has nobody to read an error
        except Exception as e:
            status, message = classify(e)
            if status >= 500:
                log.warning("%s %s: %s", req.method, req.path, message)
            return error_response(status, message)

    async def close(self) -> None:
        await self.http.close()
        self.context.close()
