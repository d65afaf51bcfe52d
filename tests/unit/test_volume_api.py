"""The volume routes (api/volumes.py) over HTTP, against a fake volume service:
statuses, body decoding, filters, prune's API-version rule, the JSON of a volume."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from berth import errdefs
from berth.api.server import ApiServer
from berth.types.filters import Filters
from berth.types.volume import (
    ANONYMOUS_LABEL,
    Volume,
    VolumeCreateRequest,
    VolumeListResponse,
    VolumePruneReport,
    VolumeUsageData,
)
from berth.types.wire import to_wire

CREATED = "2025-03-04T05:06:07Z"
ANON = "4b3d" + "c" * 60


def _vol(name: str = "data", **kw: Any) -> Volume:
    return Volume(
        created_at=CREATED,
        driver="local",
        mountpoint=f"/var/lib/berth/volumes/{name}/_data",
        name=name,
        scope="local",
        **kw,
    )


class FakeVolumes:
    """A VolumeBackend that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.listed: list[Volume] = [_vol()]
        self.warnings: list[str] = []
        self.report = VolumePruneReport()

    def list_volumes(self, filters: Filters) -> tuple[list[Volume], list[str]]:
        self.calls.append(("list", filters))
        return list(self.listed), list(self.warnings)

    def inspect_volume(self, name: str) -> Volume:
        self.calls.append(("inspect", name))
        if name != "data":
            raise errdefs.NotFound(f"get {name}: no such volume")
        return _vol()

    def create_volume(self, req: VolumeCreateRequest) -> Volume:
        self.calls.append(("create", req))
        if not req.name:
            return _vol(ANON, labels={ANONYMOUS_LABEL: ""})
        return _vol(req.name, labels=req.labels, options=req.driver_opts)

    def remove_volume(self, name: str, force: bool) -> None:
        self.calls.append(("remove", name, force))
        if name == "busy":
            raise errdefs.Conflict("remove busy: volume is in use - [" + "f" * 64 + "]")
        if name == "nothing" and not force:
            raise errdefs.NotFound("get nothing: no such volume")

    def prune_volumes(self, filters: Filters, all_volumes: bool) -> VolumePruneReport:
        self.calls.append(("prune", filters, all_volumes))
        return self.report


class Api:
    """An ApiServer on a unix socket, its loop in a thread; requests with http.client."""

    def __init__(self, path: str, volumes: FakeVolumes | None) -> None:
        self.path = path
        self.volumes = volumes or FakeVolumes()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ApiServer(
            object(),  # type: ignore[arg-type]
            images=object(),  # type: ignore[arg-type]
            volumes=volumes,
        )
        self._call(self.server.http.listen_unix(path))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)

    def close(self) -> None:
        self._call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=20)
        self.loop.close()

    def request(
        self,
        method: str,
        target: str,
        body: bytes | str | dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, str], bytes]:
        conn = _UnixConnection(self.path)
        try:
            headers = {}
            data: bytes | None = None
            if body is not None:
                if isinstance(body, dict):
                    data = json.dumps(body).encode()
                else:
                    data = body.encode() if isinstance(body, str) else body
                headers["Content-Type"] = content_type
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
        finally:
            conn.close()

    def json(self, method: str, target: str, body: Any = None) -> tuple[int, Any]:
        status, _, payload = self.request(method, target, body)
        return status, json.loads(payload) if payload else None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=20)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(self._path)
        self.sock = sock


@pytest.fixture
def api() -> Iterator[Api]:
    # a short directory: a unix socket path is at most 107 bytes
    tmp = tempfile.mkdtemp(prefix="bvol-", dir="/tmp")
    server = Api(str(Path(tmp) / "api.sock"), FakeVolumes())
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _filters(doc: dict[str, Any]) -> str:
    return urllib.parse.quote(json.dumps(doc))


# -- the JSON of a volume --------------------------------------------------------------------


def test_a_volume_made_without_labels_or_options_shows_null_for_both(api: Api) -> None:
    status, headers, payload = api.request("GET", "/v1.51/volumes/data")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert payload.endswith(b"}\n")
    doc = json.loads(payload)
    # the keys and their order of dockerd's answer; Status, UsageData, ClusterVolume left out
    assert list(doc) == [
        "CreatedAt",
        "Driver",
        "Labels",
        "Mountpoint",
        "Name",
        "Options",
        "Scope",
    ]
    assert doc == {
        "CreatedAt": CREATED,
        "Driver": "local",
        "Labels": None,
        "Mountpoint": "/var/lib/berth/volumes/data/_data",
        "Name": "data",
        "Options": None,
        "Scope": "local",
    }
    assert api.volumes.calls == [("inspect", "data")]


def test_empty_maps_stay_objects_and_status_and_usage_show_when_set() -> None:
    doc = to_wire(
        _vol(
            labels={},
            options={"type": "tmpfs", "device": "tmpfs", "o": "size=64m"},
            status={"hello": "world"},
            usage_data=VolumeUsageData(ref_count=2, size=4096),
        )
    )
    assert doc["Labels"] == {}
    assert doc["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"}
    assert doc["Status"] == {"hello": "world"}
    assert doc["UsageData"] == {"RefCount": 2, "Size": 4096}
    assert list(doc["UsageData"]) == ["RefCount", "Size"]
    assert "ClusterVolume" not in doc


def test_response_types_encode_dockerds_nulls() -> None:
    assert to_wire(VolumeListResponse()) == {"Volumes": [], "Warnings": None}
    assert to_wire(VolumePruneReport()) == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    assert to_wire(VolumeUsageData()) == {"RefCount": -1, "Size": -1}


# -- list ------------------------------------------------------------------------------------


def test_list_answers_volumes_and_null_warnings(api: Api) -> None:
    status, body = api.json("GET", "/v1.51/volumes")
    assert status == 200
    assert list(body) == ["Volumes", "Warnings"]
    assert body["Warnings"] is None
    assert [v["Name"] for v in body["Volumes"]] == ["data"]
    assert body["Volumes"][0]["Labels"] is None and "Status" not in body["Volumes"][0]


def test_list_of_nothing_is_an_empty_list(api: Api) -> None:
    api.volumes.listed = []
    status, body = api.json("GET", "/volumes")
    assert (status, body) == (200, {"Volumes": [], "Warnings": None})


def test_list_passes_the_warnings(api: Api) -> None:
    api.volumes.warnings = ["list: driver x failed"]
    _, body = api.json("GET", "/volumes")
    assert body["Warnings"] == ["list: driver x failed"]


def test_list_passes_filters(api: Api) -> None:
    flt = _filters(
        {"dangling": {"true": True}, "driver": ["local"], "label": ["a=b"], "name": ["da"]}
    )
    status, _ = api.json("GET", f"/volumes?filters={flt}")
    assert status == 200
    ((op, got),) = api.volumes.calls
    assert op == "list"
    assert got.get("dangling") == ["true"] and got.get("driver") == ["local"]
    assert got.get("label") == ["a=b"] and got.get("name") == ["da"]


def test_list_refuses_an_unknown_filter(api: Api) -> None:
    status, body = api.json("GET", f"/volumes?filters={_filters({'x': {'y': True}})}")
    assert (status, body) == (400, {"message": "invalid filter 'x'"})
    # label! is a prune filter only
    status, body = api.json("GET", f"/volumes?filters={_filters({'label!': ['a']})}")
    assert (status, body) == (400, {"message": "invalid filter 'label!'"})
    assert api.volumes.calls == []


def test_list_refuses_a_dangling_that_is_no_bool(api: Api) -> None:
    status, body = api.json("GET", f"/volumes?filters={_filters({'dangling': ['maybe']})}")
    assert (status, body) == (400, {"message": "invalid filter 'dangling=[maybe]'"})
    both = _filters({"dangling": ["true", "false"]})
    status, body = api.json("GET", f"/volumes?filters={both}")
    assert (status, body) == (400, {"message": "invalid filter 'dangling=[false true]'"})
    for ok in ("1", "0", "false"):
        status, _ = api.json("GET", f"/volumes?filters={_filters({'dangling': [ok]})}")
        assert status == 200
    assert len(api.volumes.calls) == 3


def test_list_refuses_filters_that_are_not_json(api: Api) -> None:
    status, body = api.json("GET", "/volumes?filters=nope")
    assert status == 400
    assert body["message"].startswith("error reading volume filters: invalid filter")
    assert api.volumes.calls == []


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_of_a_missing_volume_is_404(api: Api) -> None:
    status, body = api.json("GET", "/volumes/nothing")
    assert (status, body) == (404, {"message": "get nothing: no such volume"})


# -- create ----------------------------------------------------------------------------------


def test_create_is_201_with_the_volume(api: Api) -> None:
    req = {
        "Name": "cache",
        "Driver": "local",
        "DriverOpts": {"type": "tmpfs", "device": "tmpfs"},
        "Labels": {"com.example": "x"},
        "Unknown": "ignored, as Go does",
    }
    status, body = api.json("POST", "/v1.51/volumes/create", req)
    assert status == 201
    assert body["Name"] == "cache" and body["Labels"] == {"com.example": "x"}
    assert body["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert api.volumes.calls == [
        (
            "create",
            VolumeCreateRequest(
                name="cache",
                driver="local",
                driver_opts={"type": "tmpfs", "device": "tmpfs"},
                labels={"com.example": "x"},
            ),
        )
    ]


def test_create_with_an_empty_body_makes_an_anonymous_volume(api: Api) -> None:
    status, _, payload = api.request("POST", "/volumes/create")
    assert status == 201
    assert json.loads(payload)["Labels"] == {ANONYMOUS_LABEL: ""}
    assert api.volumes.calls == [("create", VolumeCreateRequest())]


def test_create_leaves_nulls_and_absent_members_none(api: Api) -> None:
    body = {"name": "n1", "driver": None, "DriverOpts": None, "Labels": None}
    status, _ = api.json("POST", "/volumes/create", body)
    assert status == 201
    got = api.volumes.calls[0][1]
    assert got == VolumeCreateRequest(name="n1")
    assert got.labels is None and got.driver_opts is None and got.cluster_volume_spec is None


def test_create_refuses_bodies_that_are_not_a_create_request(api: Api) -> None:
    status, body = api.json("POST", "/volumes/create", "{not json")
    assert status == 400 and body["message"].startswith("invalid JSON:")
    status, body = api.json("POST", "/volumes/create", {"Name": 5})
    assert (status, body) == (
        400,
        {"message": "invalid JSON: Expected `str`, got `int` for field Name"},
    )
    status, body = api.json("POST", "/volumes/create", {"Labels": {"a": 1}})
    assert status == 400 and "Labels" in body["message"]
    status, _, payload = api.request(
        "POST", "/volumes/create", '{"Name": "x"}', content_type="text/plain"
    )
    assert status == 400 and "Content-Type" in json.loads(payload)["message"]
    assert api.volumes.calls == []


def test_create_of_a_cluster_volume_is_503_outside_a_swarm(api: Api) -> None:
    req = {"Name": "cv", "ClusterVolumeSpec": {"Group": "g"}}
    status, body = api.json("POST", "/v1.42/volumes/create", req)
    assert status == 503
    assert body["message"] == (
        'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
        "to connect this node to swarm and try again."
    )
    status, _ = api.json("POST", "/volumes/create", {"Name": "cv", "ClusterVolumeSpec": {}})
    assert status == 503
    assert api.volumes.calls == []


def test_create_before_142_ignores_a_cluster_volume_spec(api: Api) -> None:
    req = {"Name": "cv", "ClusterVolumeSpec": {"Group": "g"}}
    status, body = api.json("POST", "/v1.41/volumes/create", req)
    assert status == 201 and body["Name"] == "cv"
    assert api.volumes.calls == [("create", VolumeCreateRequest(name="cv"))]


# -- update ----------------------------------------------------------------------------------


def test_update_is_503_outside_a_swarm(api: Api) -> None:
    status, body = api.json("PUT", "/v1.51/volumes/data?version=3", {"Spec": {}})
    assert status == 503
    assert body == {
        "message": "volume update only valid for cluster volumes, but swarm is unavailable"
    }
    assert api.volumes.calls == []


# -- remove ----------------------------------------------------------------------------------


def test_remove_is_204_without_a_body(api: Api) -> None:
    status, _, payload = api.request("DELETE", "/v1.51/volumes/data")
    assert (status, payload) == (204, b"")
    assert api.volumes.calls == [("remove", "data", False)]


@pytest.mark.parametrize(
    ("query", "force"),
    [
        ("", False),
        ("?force=1", True),  # the docker CLI
        ("?force=true", True),
        ("?force=True", True),  # docker-py
        ("?force=yes", True),
        ("?force=0", False),
        ("?force=false", False),
        ("?force=no", False),
        ("?force=", False),
    ],
)
def test_remove_reads_force_as_dockerds_bool_value(api: Api, query: str, force: bool) -> None:
    status, _, _ = api.request("DELETE", f"/volumes/data{query}")
    assert status == 204
    assert api.volumes.calls == [("remove", "data", force)]


def test_remove_errors(api: Api) -> None:
    status, body = api.json("DELETE", "/volumes/busy")
    assert status == 409 and body["message"].startswith("remove busy: volume is in use")
    status, body = api.json("DELETE", "/volumes/nothing")
    assert (status, body) == (404, {"message": "get nothing: no such volume"})
    status, _ = api.json("DELETE", "/volumes/nothing?force=1")
    assert status == 204


# -- prune -----------------------------------------------------------------------------------


def test_prune_of_nothing_is_an_empty_list(api: Api) -> None:
    status, _, payload = api.request("POST", "/v1.51/volumes/prune")
    assert status == 200
    assert json.loads(payload) == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    ((op, flt, all_volumes),) = api.volumes.calls
    assert (op, flt.keys(), all_volumes) == ("prune", [], False)


def test_prune_answers_the_report(api: Api) -> None:
    api.volumes.report = VolumePruneReport(volumes_deleted=[ANON, "old"], space_reclaimed=8192)
    status, body = api.json("POST", "/volumes/prune")
    assert (status, body) == (200, {"VolumesDeleted": [ANON, "old"], "SpaceReclaimed": 8192})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("t", True), ("TRUE", True), ("false", False), ("0", False)],
)
def test_prune_all_filter_since_142(api: Api, value: str, expected: bool) -> None:
    flt = _filters({"all": {value: True}, "label": {"a=b": True}})
    status, _ = api.json("POST", f"/v1.42/volumes/prune?filters={flt}")
    assert status == 200
    ((_, got, all_volumes),) = api.volumes.calls
    assert all_volumes is expected
    # the service gets the label filters only, "all" taken out
    assert got.keys() == ["label"] and got.get("label") == ["a=b"]


def test_prune_before_142_removes_named_volumes_too(api: Api) -> None:
    status, _ = api.json("POST", "/v1.41/volumes/prune")
    assert status == 200
    # the "true" an old client sends merges with the one the router adds
    flt = _filters({"label!": ["keep"], "all": ["true"]})
    status, _ = api.json("POST", f"/v1.24/volumes/prune?filters={flt}")
    assert status == 200
    assert [(c[2], c[1].keys()) for c in api.volumes.calls] == [(True, []), (True, ["label!"])]


def test_prune_before_142_with_all_false_conflicts_as_in_dockerd(api: Api) -> None:
    status, body = api.json("POST", f"/v1.41/volumes/prune?filters={_filters({'all': ['0']})}")
    assert (status, body) == (
        400,
        {"message": "invalid filter 'all=[0 true]': only one value is expected"},
    )
    assert api.volumes.calls == []


def test_prune_refuses_a_bad_all(api: Api) -> None:
    status, body = api.json("POST", f"/volumes/prune?filters={_filters({'all': ['maybe']})}")
    assert (status, body) == (
        400,
        {"message": "invalid filter 'all': strconv.ParseBool: parsing \"maybe\": invalid syntax"},
    )
    both = _filters({"all": ["true", "false"]})
    status, body = api.json("POST", f"/volumes/prune?filters={both}")
    assert (status, body) == (
        400,
        {"message": "invalid filter 'all=[false true]': only one value is expected"},
    )
    assert api.volumes.calls == []


def test_prune_refuses_an_unknown_filter(api: Api) -> None:
    for key in ("dangling", "until", "name"):
        status, body = api.json("POST", f"/volumes/prune?filters={_filters({key: ['x']})}")
        assert (status, body) == (400, {"message": f"invalid filter '{key}'"})
    assert api.volumes.calls == []


# -- wiring ----------------------------------------------------------------------------------


def test_without_a_volume_service_there_are_no_volume_routes() -> None:
    tmp = tempfile.mkdtemp(prefix="bvol-", dir="/tmp")
    server = Api(str(Path(tmp) / "api.sock"), None)
    try:
        for method, path in (("GET", "/volumes"), ("POST", "/volumes/create")):
            status, body = server.json(method, path)
            assert (status, body) == (404, {"message": "page not found"})
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_wrong_method_is_405(api: Api) -> None:
    status, _ = api.json("POST", "/volumes/data")
    assert status == 405


def test_request_type_round_trips_with_engine_names() -> None:
    req = VolumeCreateRequest(name="n", driver="local", driver_opts={"o": "x"}, labels={})
    doc = json.loads(msgspec.json.encode(req))
    assert list(doc) == ["Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec"]
    assert msgspec.json.decode(msgspec.json.encode(req), type=VolumeCreateRequest) == req
