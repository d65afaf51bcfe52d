"""What berthd answers a client of API version V fits moby's swagger.yaml of V, operation
by operation (tests/e2e/swagger.py), for each version vendored: the oldest a current docker
CLI still speaks (1.41), the one ImageInspect lost ``Container`` and ``ContainerConfig`` in
(1.45) and berth's own.  A representative body of each operation that answers JSON, from
real objects, and the error body of a failed one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from berth import API_VERSION
from berth.testing import Berthd, unique_name
from tests.e2e import swagger


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(n) for n in v.split("."))


@pytest.fixture(params=swagger.VERSIONS)
def v(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


def test_the_descriptions_are_there() -> None:
    assert swagger.VERSIONS == ("1.41", "1.45", API_VERSION)


def _call(d: Berthd, v: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if raw is not None else None
    status, _, data = d.request(method, f"/v{v}{path}", body=raw, headers=headers)
    return status, json.loads(data) if data.strip() else None


@pytest.fixture(scope="module")
def objects(berthd: Berthd) -> Iterator[dict[str, str]]:
    """A running container with an exec, a stopped one, a network and a volume."""
    name = unique_name("sw")
    running = berthd.docker("run", "-d", "--name", name, "-l", "k=v", "busybox",
                            "sh", "-c", "echo hi > /changed; sleep 600").stdout.strip()  # fmt: skip
    stopped = berthd.docker("create", "busybox", "true").stdout.strip()
    network = berthd.docker("network", "create", name).stdout.strip()
    volume = berthd.docker("volume", "create", name).stdout.strip()
    _, created = _call(berthd, "1.41", "POST", f"/containers/{running}/exec", {"Cmd": ["true"]})
    yield {"running": running, "stopped": stopped, "network": network, "volume": volume,
           "exec": created["Id"], "name": name}  # fmt: skip
    berthd.docker("rm", "-f", running, stopped)
    berthd.docker("network", "rm", network)
    berthd.docker("volume", "rm", volume)


CASES = [
    ("GET", "/version", "/version"),
    ("GET", "/info", "/info"),
    ("GET", "/containers/json?all=1&size=1", "/containers/json"),
    ("GET", "/containers/{running}/json?size=1", "/containers/{id}/json"),
    ("GET", "/containers/{stopped}/json", "/containers/{id}/json"),
    ("GET", "/containers/{running}/top", "/containers/{id}/top"),
    ("GET", "/containers/{running}/changes", "/containers/{id}/changes"),
    ("GET", "/containers/{running}/stats?stream=false", "/containers/{id}/stats"),
    ("GET", "/exec/{exec}/json", "/exec/{id}/json"),
    ("GET", "/images/json", "/images/json"),
    ("GET", "/images/busybox/json", "/images/{name}/json"),
    ("GET", "/images/busybox/history", "/images/{name}/history"),
    ("GET", "/networks", "/networks"),
    ("GET", "/networks/{network}", "/networks/{id}"),
    ("GET", "/volumes", "/volumes"),
    ("GET", "/volumes/{volume}", "/volumes/{name}"),
    ("GET", "/system/df", "/system/df"),
    ("GET", "/plugins", "/plugins"),
]


@pytest.mark.parametrize(("method", "path", "template"), CASES, ids=[c[1] for c in CASES])
def test_responses_fit_the_description(
    berthd: Berthd, objects: dict[str, str], v: str, method: str, path: str, template: str
) -> None:
    status, body = _call(berthd, v, method, path.format(**objects))
    assert status == 200, body
    swagger.check(v, method, template, status, body)
    if template == "/images/{name}/json":  # dropped from v1.45 on
        kept = _version_key(v) < (1, 45)
        assert ("Container" in body, "ContainerConfig" in body) == (kept, kept)


def test_errors_fit_the_description(berthd: Berthd, v: str) -> None:
    status, body = _call(berthd, v, "GET", "/containers/swagger-no-such/json")
    assert status == 404, body
    swagger.check(v, "GET", "/containers/{id}/json", 404, body)
    status, body = _call(berthd, v, "POST", "/containers/create", {"Image": "busybox", "Cmd": 7})
    assert status == 400, body
    swagger.check(v, "POST", "/containers/create", 400, body)


def test_creations_and_prunes_fit_the_description(berthd: Berthd, v: str) -> None:
    name = unique_name("swc")
    try:
        for path, body in (
            (f"/containers/create?name={name}", {"Image": "busybox", "Cmd": ["sleep", "60"]}),
            ("/volumes/create", {"Name": name}),
            ("/networks/create", {"Name": name}),
            (f"/containers/{name}/start", None),
            (f"/containers/{name}/exec", {"Cmd": ["true"]}),
            (f"/commit?container={name}&repo={name}", {}),
        ):
            status, answer = _call(berthd, v, "POST", path, body)
            if path.endswith("/start"):
                assert status == 204, answer
                continue
            assert status == 201, answer
            template = path.split("?")[0].replace(name, "{id}")
            swagger.check(v, "POST", template, 201, answer)
        status, answer = _call(berthd, v, "POST", f"/containers/{name}/update", {"CpuShares": 512})
        assert status == 200, answer
        swagger.check(v, "POST", "/containers/{id}/update", 200, answer)
        assert _call(berthd, v, "POST", f"/containers/{name}/kill")[0] == 204
        status, answer = _call(berthd, v, "POST", f"/containers/{name}/wait")
        assert status == 200 and answer["StatusCode"] == 137, answer
        swagger.check(v, "POST", "/containers/{id}/wait", 200, answer)
        status, answer = _call(berthd, v, "DELETE", f"/images/{name}")
        assert status == 200, answer
        swagger.check(v, "DELETE", "/images/{name}", 200, answer)
    finally:
        berthd.docker("rm", "-f", name, check=False)
        berthd.docker("rmi", name, check=False)
        berthd.docker("network", "rm", name, check=False)
        berthd.docker("volume", "rm", name, check=False)
    for what in ("containers", "images", "volumes", "networks"):
        flt = '{"label":["swagger-nothing=here"]}'
        status, body = _call(berthd, v, "POST", f"/{what}/prune?filters={flt}")
        assert status == 200, body
        swagger.check(v, "POST", f"/{what}/prune", 200, body)
    status, body = _call(berthd, v, "POST", '/build/prune?filters={"until":["1s"]}')
    assert status == 200, body
    swagger.check(v, "POST", "/build/prune", 200, body)


def test_events_fit_the_description(berthd: Berthd, v: str) -> None:
    since = int(time.time()) - 600
    path = f"/v{v}/events?since={since}&until={int(time.time())}"
    status, _, data = berthd.request("GET", path)
    assert status == 200
    events = [json.loads(line) for line in data.splitlines() if line.strip()]
    assert events
    for event in events:
        swagger.check(v, "GET", "/events", 200, event)
