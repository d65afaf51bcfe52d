"""Container routes: thin handlers that parse, call the backend and encode."""

from __future__ import annotations

from typing import Any

import msgspec

from berth import errdefs
from berth.api import _versions
from berth.api._http import Request, Response, StreamingResponse
from berth.api.bodypipe import piped
from berth.api.context import Context
from berth.api.httputils import (
    bool_value,
    check_json_content_type,
    convert,
    filters,
    int_value,
    json_response,
    no_content,
    query,
    query_all,
    read_json,
    strip_nulls,
)
from berth.api.router import Route
from berth.types.commit import CommitOptions, CommitResponse
from berth.types.container import (
    CreateRequest,
    EndpointSettings,
    HostConfig,
    NetworkingConfig,
    UpdateConfig,
    UpdateResponse,
)
from berth.types.wire import encode as wire_encode

_STRSLICE_FIELDS = ("Cmd", "Entrypoint", "Shell")


def _decode_create(raw: bytes) -> CreateRequest:
    if not raw.strip():
        raise errdefs.InvalidParameter("invalid JSON: got EOF while reading request body")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise errdefs.InvalidParameter(f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise errdefs.InvalidParameter("invalid JSON: the request body must be a JSON object")
    data = strip_nulls(data)
    # Go's StrSlice accepts a bare string for a one-element list.
    for key in _STRSLICE_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    return convert(data, CreateRequest)


def _apply_version_gates(req: CreateRequest, version: tuple[int, int]) -> list[str]:
    """The adjustments moby's router makes for older API versions; returns warnings."""
    warnings: list[str] = []
    hc = req.host_config
    assert hc is not None
    if version < (1, 25):
        hc.auto_remove = False
    if version < (1, 40):
        if not hc.ipc_mode:
            hc.ipc_mode = "shareable"
        hc.kernel_memory_tcp = 0
        for m in hc.mounts or []:
            if m.bind_options:
                m.bind_options.non_recursive = False
    if version < (1, 42):
        hc.console_size = [0, 0]
        for m in hc.mounts or []:
            if m.bind_options:
                m.bind_options.create_mountpoint = False
            if m.type != "volume":
                m.volume_options = None
            if m.type != "tmpfs":
                m.tmpfs_options = None
    else:
        hc.kernel_memory = 0
        for m in hc.mounts or []:
            if m.volume_options is not None and m.type != "volume":
                raise errdefs.InvalidParameter(
                    f'VolumeOptions must not be specified on mount type "{m.type}"'
                )
            if m.bind_options is not None and m.type != "bind":
                raise errdefs.InvalidParameter(
                    f'BindOptions must not be specified on mount type "{m.type}"'
                )
            if m.tmpfs_options is not None and m.type != "tmpfs":
                raise errdefs.InvalidParameter(
                    f'TmpfsOptions must not be specified on mount type "{m.type}"'
                )
    if version < (1, 43):
        hc.annotations = None
    endpoints = (req.networking_config.endpoints_config or {}) if req.networking_config else {}
    if version < (1, 44):
        if req.healthcheck is not None:
            req.healthcheck.start_interval = 0
        if len(endpoints) > 1:
            raise errdefs.InvalidParameter(
                "Container cannot be created with multiple network endpoints: "
                + ", ".join(sorted(endpoints))
            )
    elif req.mac_address:
        warnings.append(
            "The container-wide MacAddress field is now deprecated. It should be specified in "
            "EndpointsConfig instead."
        )
    if version < (1, 48):
        for m in hc.mounts or []:
            if m.type == "image":
                raise errdefs.InvalidParameter('Mount type "Image" needs API v1.48 or newer')
    return warnings


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def create(req: Request) -> Response:
        raw = await req.body()
        if raw.strip():
            check_json_content_type(req)
        body = _decode_create(raw)
        if body.host_config is None:
            body.host_config = HostConfig()
        warnings = _apply_version_gates(body, req.api_version)
        config = body.config()
        if req.api_version >= (1, 44) and config.mac_address:
            _move_mac(body, config.mac_address)
            config.mac_address = ""
        assert body.host_config is not None
        resp = await ctx.run(
            backend.create_container,
            query(req, "name"),
            config,
            body.host_config,
            body.networking_config,
            query(req, "platform"),
        )
        resp.Warnings.extend(warnings)
        return json_response(resp, status=201)

    async def list_(req: Request) -> Response:
        limit = int_value(req, "limit", -1)
        result = backend.list_containers(
            bool_value(req, "all"),
            limit if limit is not None else -1,
            bool_value(req, "size"),
            filters(req),
        )
        return _wire_list(result)

    async def inspect(req: Request) -> Response:
        result = backend.inspect_container(req.params["name"], bool_value(req, "size"))
        return json_response(_versions.container_inspect(result, req.api_version))

    async def rename(req: Request) -> Response:
        await ctx.run(backend.rename_container, req.params["name"], query(req, "name"))
        return no_content()

    async def delete(req: Request) -> Response:
        await ctx.run(
            backend.remove_container,
            req.params["name"],
            bool_value(req, "force"),
            bool_value(req, "v"),
            bool_value(req, "link"),
        )
        return no_content()

    async def prune(req: Request) -> Response:
        report = await ctx.run(backend.prune_containers, filters(req))
        return json_response(report)

    async def update(req: Request) -> Response:
        config = await read_json(req, UpdateConfig) or UpdateConfig()
        if req.api_version < (1, 40):
            config.pids_limit = None
        if req.api_version >= (1, 42):
            config.kernel_memory = 0  # removed in API 1.42: ignored, as dockerd does
        if config.pids_limit is not None and config.pids_limit <= 0:
            config.pids_limit = 0  # 0 and any negative value: "unlimited"
        warnings = await ctx.run(backend.update_container, req.params["name"], config)
        return json_response(UpdateResponse(warnings or None))

    async def changes(req: Request) -> Response:
        """``docker diff``; dockerd answers ``null`` for no changes."""
        result = await ctx.run(backend.container_changes, req.params["name"])
        return json_response(result or None)

    async def commit(req: Request) -> Response:
        """``docker commit``: the body, if any, is a container config that stands in for
        the container's own (moby's ``postCommit``)."""
        raw = await req.body()
        config = None
        if raw.strip():
            check_json_content_type(req)
            config = _decode_create(raw).config()
        options = CommitOptions(
            container=query(req, "container"),
            repo=query(req, "repo"),
            tag=query(req, "tag"),
            author=query(req, "author"),
            comment=query(req, "comment"),
            # absent means true since API 1.13, older than any berth takes
            pause=bool_value(req, "pause") if query(req, "pause") else True,
            changes=query_all(req, "changes"),
            config=config,
        )
        image_id = await ctx.run(backend.commit_container, options)
        return json_response(CommitResponse(image_id), status=201)

    async def export(req: Request) -> StreamingResponse:
        """``docker export``: the tar flows from a worker thread through a pipe, never
        held whole; an unknown container is a 404 before any byte.  dockerd sets no type
        and Go's sniffing calls a tar ``application/octet-stream``."""
        exported = await ctx.run(backend.container_export, req.params["name"])
        pipe = piped(exported, exported.write_to, "berth-export")
        return StreamingResponse(pipe, content_type="application/octet-stream")

    return [
        Route("POST", "/containers/create", create),
        Route("GET", "/containers/{name}/export", export),
        Route("GET", "/containers/json", list_),
        Route("GET", "/containers/{name}/json", inspect),
        Route("POST", "/containers/{name}/rename", rename),
        # rm --link sends /parent/alias; at most two segments, so that a GET of
        # /containers/<registry:port/repo:tag>/json stays a 404 (the CLI then inspects an
        # image) rather than a 405
        Route("DELETE", "/containers/{name:/?[^/]+(?:/[^/]+)?}", delete),
        Route("POST", "/containers/prune", prune),
        Route("POST", "/containers/{name}/update", update),
        Route("GET", "/containers/{name}/changes", changes),
        Route("POST", "/commit", commit),
    ]


def _move_mac(body: CreateRequest, mac: str) -> None:
    hc = body.host_config
    assert hc is not None
    net = body.networking_config or NetworkingConfig()
    endpoints = dict(net.endpoints_config or {})
    mode = hc.network_mode if hc.network_mode not in ("", "default") else "bridge"
    key = mode if mode in endpoints else ("default" if "default" in endpoints else mode)
    ep = endpoints.get(key) or EndpointSettings()
    if ep.mac_address and ep.mac_address != mac:
        raise errdefs.InvalidParameter(
            "the container-wide MAC address must match the endpoint-specific MAC address for the "
            "main network, or be left empty"
        )
    ep.mac_address = mac
    endpoints[key] = ep
    net.endpoints_config = endpoints
    body.networking_config = net


def _wire_list(items: list[Any]) -> Response:
    return Response(200, wire_encode(items) + b"\n", "application/json")
