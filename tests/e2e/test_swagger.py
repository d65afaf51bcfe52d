"""What berthd answers a v1.41 client fits moby's swagger.yaml of v1.41, operation by
operation (tests/e2e/swagger.py): a representative body of each, from real objects."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from berth.testing import Berthd, unique_name
from tests.e2e import swagger

V = "1.41"


def _call(d: Berthd, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if raw is not None else None
    status, _, data = d.request(method, f"/v{V}{path}", body=raw, headers=headers)
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
    _, created = _call(berthd, "POST", f"/containers/{running}/exec", {"Cmd": ["true"]})
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
]


@pytest.mark.parametrize(("method", "path", "template"), CASES, ids=[c[1] for c in CASES])
def test_responses_fit_the_description(
    berthd: Berthd, objects: dict[str, str], method: str, path: str, template: str
) -> None:
    status, body = _call(berthd, method, path.format(**objects))
    assert status == 200, body
    swagger.check(V, method, template, status, body)
    if template == "/images/{name}/json":  # dropped only from v1.45
        assert "Container" in body and "ContainerConfig" in body


def test_creations_and_prunes_fit_the_description(berthd: Berthd) -> None:
    name = unique_name("swc")
    try:
        for path, body in (
            (f"/containers/create?name={name}", {"Image": "busybox", "Cmd": ["true"]}),
            ("/volumes/create", {"Name": name}),
            ("/networks/create", {"Name": name}),
        ):
            status, answer = _call(berthd, "POST", path, body)
            assert status == 201, answer
            swagger.check(V, "POST", path.split("?")[0], 201, answer)
    finally:
        berthd.docker("rm", name, check=False)
        berthd.docker("network", "rm", name, check=False)
        berthd.docker("volume", "rm", name, check=False)
    for what in ("containers", "images", "volumes", "networks"):
        flt = '{"label":["swagger-nothing=here"]}'
        status, body = _call(berthd, "POST", f"/{what}/prune?filters={flt}")
        assert status == 200, body
        swagger.check(V, "POST", f"/{what}/prune", 200, body)


def test_events_fit_the_description(berthd: Berthd) -> None:
    since = int(time.time()) - 600
    status, _, data = berthd.request("GET", f"/v{V}/events?since={since}&until={int(time.time())}")
    assert status == 200
    events = [json.loads(line) for line in data.splitlines() if line.strip()]
    assert events
    for event in events:
        swagger.check(V, "GET", "/events", 200, event)
