"""The network routes (api/networks.py) over HTTP, against a fake controller and a fake
container side: statuses, body decoding, filters, the JSON of a network."""

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
from berth.types.container import EndpointIPAMConfig, EndpointSettings
from berth.types.filters import Filters
from berth.types.network import (
    IPAM,
    EndpointResource,
    IPAMConfig,
    NetworkCreateRequest,
    NetworkCreateResponse,
    NetworkResource,
)

NID = "3f1b2c" + "a" * 58
CID = "9c0ffee" + "b" * 57
EID = "e" * 64
CREATED = "2025-03-04T05:06:07.123456789Z"


def _bridge() -> NetworkResource:
    return NetworkResource(
        name="app",
        id=NID,
        created=CREATED,
        scope="local",
        driver="bridge",
        enable_ipv4=True,
        ipam=IPAM(
            driver="default",
            options={},
            config=[IPAMConfig(subnet="172.18.0.0/16", gateway="172.18.0.1")],
        ),
        containers={
            CID: EndpointResource(
                name="web",
                endpoint_id=EID,
                mac_address="02:42:ac:12:00:02",
                ipv4_address="172.18.0.2/16",
            )
        },
    )


class FakeNetworks:
    """A NetworkBackend that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.pruned: list[str] = []

    def list_networks(self, filters: Filters) -> list[NetworkResource]:
        self.calls.append(("list", filters))
        listed = _bridge()
        listed.containers = {}
        return [listed]

    def inspect_network(self, ref: str, verbose: bool, scope: str) -> NetworkResource:
        self.calls.append(("inspect", ref, verbose, scope))
        if ref not in (NID, "app") and not NID.startswith(ref):
            raise errdefs.NotFound(f"network {ref} not found")
        return _bridge()

    def create_network(self, req: NetworkCreateRequest) -> NetworkCreateResponse:
        self.calls.append(("create", req))
        if req.name == "app":
            raise errdefs.Conflict("network with name app already exists")
        return NetworkCreateResponse(id=NID)

    def remove_network(self, ref: str) -> None:
        self.calls.append(("remove", ref))
        if ref == "bridge":
            raise errdefs.Forbidden("bridge is a pre-defined network and cannot be removed")

    def prune_networks(self, filters: Filters) -> list[str]:
        self.calls.append(("prune", filters))
        return list(self.pruned)


class FakeDaemon:
    """The container side's connect and disconnect; nothing else is called here."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def connect_network(
        self, network_ref: str, container_ref: str, endpoint: EndpointSettings | None
    ) -> None:
        self.calls.append(("connect", network_ref, container_ref, endpoint))
        if container_ref == "ghost":
            raise errdefs.NotFound("No such container: ghost")

    def disconnect_network(self, network_ref: str, container_ref: str, force: bool) -> None:
        self.calls.append(("disconnect", network_ref, container_ref, force))


class Api:
    """An ApiServer on a unix socket, its loop in a thread; requests with http.client."""

    def __init__(self, path: str, networks: FakeNetworks | None) -> None:
        self.path = path
        self.networks = networks or FakeNetworks()
        self.daemon = FakeDaemon()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ApiServer(
            self.daemon,  # type: ignore[arg-type]
            images=object(),  # type: ignore[arg-type]
            networks=networks,
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
    tmp = tempfile.mkdtemp(prefix="bnet-", dir="/tmp")
    server = Api(str(Path(tmp) / "api.sock"), FakeNetworks())
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- list ------------------------------------------------------------------------------------


def test_list_passes_filters_and_shows_no_endpoints(api: Api) -> None:
    flt = urllib.parse.quote(json.dumps({"driver": {"bridge": True}, "name": ["app"]}))
    status, body = api.json("GET", f"/v1.51/networks?filters={flt}")
    assert status == 200
    assert [n["Name"] for n in body] == ["app"]
    assert body[0]["Containers"] == {}
    ((op, got),) = api.networks.calls
    assert op == "list"
    assert got.get("driver") == ["bridge"] and got.get("name") == ["app"]


def test_list_with_a_trailing_slash(api: Api) -> None:
    status, body = api.json("GET", "/networks/")
    assert status == 200 and len(body) == 1


def test_list_refuses_an_unknown_filter(api: Api) -> None:
    status, body = api.json("GET", '/networks?filters={"color":{"red":true}}')
    assert status == 400
    assert body == {"message": "invalid filter 'color'"}
    assert api.networks.calls == []


def test_list_refuses_filters_that_are_not_json(api: Api) -> None:
    status, body = api.json("GET", "/networks?filters=nope")
    assert status == 400 and "invalid filter" in body["message"]


def test_list_before_128_shows_each_networks_endpoints(api: Api) -> None:
    status, body = api.json("GET", "/v1.27/networks")
    assert status == 200
    assert list(body[0]["Containers"]) == [CID]
    assert api.networks.calls[1] == ("inspect", NID, False, "")


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_json_is_dockerds(api: Api) -> None:
    status, headers, payload = api.request("GET", f"/v1.51/networks/{NID[:12]}")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert payload.endswith(b"}\n")
    doc = json.loads(payload)
    assert list(doc) == [
        "Name",
        "Id",
        "Created",
        "Scope",
        "Driver",
        "EnableIPv4",
        "EnableIPv6",
        "IPAM",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigFrom",
        "ConfigOnly",
        "Containers",
        "Options",
        "Labels",
    ]
    assert doc["Id"] == NID and doc["Created"] == CREATED
    assert doc["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}],
    }
    assert doc["ConfigFrom"] == {"Network": ""}
    assert doc["Options"] == {} and doc["Labels"] == {}
    assert doc["Containers"] == {
        CID: {
            "Name": "web",
            "EndpointID": EID,
            "MacAddress": "02:42:ac:12:00:02",
            "IPv4Address": "172.18.0.2/16",
            "IPv6Address": "",
        }
    }
    assert api.networks.calls == [("inspect", NID[:12], False, "")]


def test_a_default_network_resource_encodes_go_zero_values() -> None:
    from berth.types.wire import to_wire

    doc = to_wire(NetworkResource(name="host", id=NID, driver="host"))
    assert doc["IPAM"] == {"Driver": "default", "Options": None, "Config": None}
    assert doc["ConfigFrom"] == {"Network": ""}
    assert doc["Containers"] == {} and doc["Options"] == {} and doc["Labels"] == {}
    assert doc["Scope"] == "local" and doc["Created"] == "0001-01-01T00:00:00Z"


def test_ipam_config_omits_empty_members() -> None:
    from berth.types.wire import to_wire

    cfg = IPAMConfig(subnet="10.0.0.0/24", aux_addresses={})
    assert to_wire(IPAM(config=[cfg]))["Config"] == [{"Subnet": "10.0.0.0/24"}]
    full = IPAMConfig("10.0.0.0/24", "10.0.0.0/25", "10.0.0.1", {"a": "10.0.0.5"})
    assert to_wire(full) == {
        "Subnet": "10.0.0.0/24",
        "IPRange": "10.0.0.0/25",
        "Gateway": "10.0.0.1",
        "AuxiliaryAddresses": {"a": "10.0.0.5"},
    }


def test_inspect_passes_verbose_and_scope(api: Api) -> None:
    status, _ = api.json("GET", "/networks/app?verbose=true&scope=local")
    assert status == 200
    assert api.networks.calls == [("inspect", "app", True, "local")]
    api.json("GET", "/networks/app?verbose=0")
    assert api.networks.calls[-1] == ("inspect", "app", False, "")


def test_inspect_refuses_a_verbose_that_is_no_bool(api: Api) -> None:
    status, body = api.json("GET", "/networks/app?verbose=yes")
    assert status == 400
    assert body["message"] == (
        'invalid value for verbose: yes: strconv.ParseBool: parsing "yes": invalid syntax'
    )
    assert api.networks.calls == []


def test_inspect_of_a_missing_network_is_404(api: Api) -> None:
    status, body = api.json("GET", "/networks/nothing")
    assert (status, body) == (404, {"message": "network nothing not found"})


# -- create ----------------------------------------------------------------------------------


def test_create_is_201_with_id_and_warning(api: Api) -> None:
    req = {
        "Name": "backend",
        "CheckDuplicate": True,
        "Driver": "bridge",
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [
                {
                    "Subnet": "10.9.0.0/24",
                    "IPRange": "10.9.0.0/25",
                    "Gateway": "10.9.0.1",
                    "AuxiliaryAddresses": {"host": "10.9.0.2"},
                }
            ],
        },
        "Internal": True,
        "Attachable": False,
        "Options": {"com.docker.network.bridge.name": "br-test"},
        "Labels": {"a": "b"},
        "Unknown": "ignored, as Go does",
    }
    status, body = api.json("POST", "/v1.51/networks/create", req)
    assert status == 201
    assert body == {"Id": NID, "Warning": ""}
    ((op, got),) = api.networks.calls
    assert op == "create"
    assert got == NetworkCreateRequest(
        name="backend",
        check_duplicate=True,
        driver="bridge",
        enable_ipv4=True,
        enable_ipv6=False,
        ipam=IPAM(
            driver="default",
            options={},
            config=[IPAMConfig("10.9.0.0/24", "10.9.0.0/25", "10.9.0.1", {"host": "10.9.0.2"})],
        ),
        internal=True,
        options={"com.docker.network.bridge.name": "br-test"},
        labels={"a": "b"},
    )


def test_create_leaves_unset_pointers_none(api: Api) -> None:
    status, _ = api.json("POST", "/networks/create", {"Name": "n1", "IPAM": None})
    assert status == 201
    got = api.networks.calls[0][1]
    assert got.enable_ipv4 is None and got.enable_ipv6 is None
    assert got.ipam is None and got.config_from is None
    assert got.options is None and got.labels is None


def test_create_reads_member_names_without_regard_to_case(api: Api) -> None:
    status, _ = api.json("POST", "/networks/create", {"name": "n2", "driver": "bridge"})
    assert status == 201
    got = api.networks.calls[0][1]
    assert (got.name, got.driver) == ("n2", "bridge")


def test_create_before_148_drops_enable_ipv4(api: Api) -> None:
    api.json("POST", "/v1.47/networks/create", {"Name": "n3", "EnableIPv4": False})
    assert api.networks.calls[0][1].enable_ipv4 is None
    api.json("POST", "/v1.48/networks/create", {"Name": "n3", "EnableIPv4": False})
    assert api.networks.calls[1][1].enable_ipv4 is False


def test_create_with_an_empty_body_reaches_the_service(api: Api) -> None:
    # Go's ReadJSON takes an empty body as an empty request; the service refuses the name.
    status, _, _ = api.request("POST", "/networks/create")
    assert status == 201
    assert api.networks.calls == [("create", NetworkCreateRequest())]


def test_create_refuses_a_body_that_is_not_json(api: Api) -> None:
    status, body = api.json("POST", "/networks/create", "{not json")
    assert status == 400
    assert body["message"].startswith("invalid JSON:")
    assert api.networks.calls == []


def test_create_refuses_wrong_types(api: Api) -> None:
    status, body = api.json("POST", "/networks/create", {"Name": 5})
    assert status == 400
    assert body["message"] == "invalid JSON: Expected `str`, got `int` for field Name"
    status, body = api.json("POST", "/networks/create", {"Name": "x", "Internal": "yes"})
    assert status == 400 and "Internal" in body["message"]
    status, body = api.json("POST", "/networks/create", {"IPAM": {"Config": [{"Subnet": 1}]}})
    assert status == 400 and "IPAM.Config[0].Subnet" in body["message"]
    status, body = api.json("POST", "/networks/create", "[1, 2]")
    assert status == 400 and body["message"].startswith("invalid JSON:")
    assert api.networks.calls == []


def test_create_refuses_another_content_type(api: Api) -> None:
    status, _, payload = api.request(
        "POST", "/networks/create", '{"Name": "x"}', content_type="text/plain"
    )
    assert status == 400
    assert "Content-Type" in json.loads(payload)["message"]


def test_create_conflict_is_409(api: Api) -> None:
    status, body = api.json("POST", "/networks/create", {"Name": "app"})
    assert (status, body) == (409, {"message": "network with name app already exists"})


# -- remove ----------------------------------------------------------------------------------


def test_remove_is_204_without_a_body(api: Api) -> None:
    status, _, payload = api.request("DELETE", f"/v1.51/networks/{NID}")
    assert (status, payload) == (204, b"")
    assert api.networks.calls == [("remove", NID)]


def test_remove_of_a_predefined_network_is_403(api: Api) -> None:
    status, body = api.json("DELETE", "/networks/bridge")
    assert status == 403
    assert body["message"] == "bridge is a pre-defined network and cannot be removed"


# -- connect and disconnect ------------------------------------------------------------------


def test_connect_passes_the_endpoint_config_through(api: Api) -> None:
    req = {
        "Container": "web",
        "EndpointConfig": {
            "IPAMConfig": {"IPv4Address": "172.18.0.9", "LinkLocalIPs": ["169.254.0.9"]},
            "Links": ["db:database"],
            "Aliases": ["www", "front"],
            "MacAddress": "02:42:ac:12:00:09",
            "DriverOpts": {"com.docker.network.endpoint.sysctls": "x=1"},
            "GwPriority": 10,
        },
    }
    status, _, payload = api.request("POST", "/v1.51/networks/app/connect", req)
    assert (status, payload) == (200, b"")
    ((op, network, container, endpoint),) = api.daemon.calls
    assert (op, network, container) == ("connect", "app", "web")
    assert endpoint == EndpointSettings(
        ipam_config=EndpointIPAMConfig(i_pv4_address="172.18.0.9", link_local_i_ps=["169.254.0.9"]),
        links=["db:database"],
        aliases=["www", "front"],
        mac_address="02:42:ac:12:00:09",
        driver_opts={"com.docker.network.endpoint.sysctls": "x=1"},
        gw_priority=10,
    )


def test_connect_without_endpoint_config_passes_none(api: Api) -> None:
    status, _, _ = api.request("POST", f"/networks/{NID}/connect", {"Container": "web"})
    assert status == 200
    assert api.daemon.calls == [("connect", NID, "web", None)]
    api.request("POST", "/networks/app/connect", {"container": "w2", "EndpointConfig": None})
    assert api.daemon.calls[-1] == ("connect", "app", "w2", None)


def test_connect_errors(api: Api) -> None:
    status, body = api.json("POST", "/networks/app/connect", {"Container": "ghost"})
    assert (status, body) == (404, {"message": "No such container: ghost"})
    status, body = api.json(
        "POST", "/networks/app/connect", {"Container": "web", "EndpointConfig": {"Aliases": "x"}}
    )
    assert status == 400 and "EndpointConfig.Aliases" in body["message"]


def test_disconnect_passes_force(api: Api) -> None:
    status, _, payload = api.request(
        "POST", "/networks/app/disconnect", {"Container": "web", "Force": True}
    )
    assert (status, payload) == (200, b"")
    api.request("POST", "/networks/app/disconnect", {"Container": "db"})
    assert api.daemon.calls == [
        ("disconnect", "app", "web", True),
        ("disconnect", "app", "db", False),
    ]


def test_disconnect_refuses_wrong_types(api: Api) -> None:
    status, body = api.json("POST", "/networks/app/disconnect", {"Container": "w", "Force": 1})
    assert status == 400 and "Force" in body["message"]
    assert api.daemon.calls == []


# -- prune -----------------------------------------------------------------------------------


def test_prune_nothing_is_null(api: Api) -> None:
    status, _, payload = api.request("POST", "/v1.51/networks/prune")
    assert status == 200
    assert json.loads(payload) == {"NetworksDeleted": None}


def test_prune_lists_names_and_passes_filters(api: Api) -> None:
    api.networks.pruned = ["old", "older"]
    flt = urllib.parse.quote(json.dumps({"until": {"24h": True}, "label!": {"keep": True}}))
    status, body = api.json("POST", f"/networks/prune?filters={flt}")
    assert (status, body) == (200, {"NetworksDeleted": ["old", "older"]})
    ((op, got),) = api.networks.calls
    assert op == "prune" and got.get("until") == ["24h"] and got.get("label!") == ["keep"]


def test_prune_refuses_an_unknown_filter(api: Api) -> None:
    status, body = api.json("POST", '/networks/prune?filters={"driver":{"bridge":true}}')
    assert (status, body) == (400, {"message": "invalid filter 'driver'"})
    assert api.networks.calls == []


# -- wiring ----------------------------------------------------------------------------------


def test_without_a_network_service_there_are_no_network_routes() -> None:
    tmp = tempfile.mkdtemp(prefix="bnet-", dir="/tmp")
    server = Api(str(Path(tmp) / "api.sock"), None)
    try:
        status, body = server.json("GET", "/networks")
        assert (status, body) == (404, {"message": "page not found"})
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_wrong_method_is_405(api: Api) -> None:
    status, _ = api.json("PUT", "/networks/app")
    assert status == 405


def test_request_types_round_trip_with_engine_names() -> None:
    raw = msgspec.json.encode(
        NetworkCreateRequest(name="n", enable_ipv4=True, enable_ipv6=True, ipam=IPAM())
    )
    doc = json.loads(raw)
    assert {"Name", "CheckDuplicate", "EnableIPv4", "EnableIPv6", "IPAM", "ConfigOnly"} <= set(doc)
    assert msgspec.json.decode(raw, type=NetworkCreateRequest).ipam == IPAM()
