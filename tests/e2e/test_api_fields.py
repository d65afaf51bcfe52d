"""Responses carry every field moby's swagger marks ``required``, for each API version a
client may pin (typed clients and schema validators reject an answer without them)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, unique_name, wait_for

# Extracted from moby's swagger files; the file names its sources.
REQUIRED: dict[str, dict[str, dict[str, list[str]]]] = {
    version: schemas
    for version, schemas in json.loads(
        (Path(__file__).parent / "data" / "api_required_fields.json").read_text()
    ).items()
    if not version.startswith("_")
}
VERSIONS = sorted(REQUIRED)


def _get(d: Berthd, path: str) -> Any:
    status, _, body = d.request("GET", path)
    assert status == 200, (path, body)
    return json.loads(body)


def _at(obj: Any, path: str) -> list[Any]:
    """The objects at *path* ('' the object, 'a.b' nested, 'a[]' each list item)."""
    found = [obj]
    for part in path.split(".") if path else []:
        each = part.endswith("[]")
        key = part.removesuffix("[]")
        step: list[Any] = []
        for o in found:
            value = o.get(key) if isinstance(o, dict) else None
            if value is None:
                continue  # an absent optional parent: nothing below it is required
            step.extend(value if each else [value])
        found = step
    return found


def _missing(obj: Any, required: dict[str, list[str]]) -> list[str]:
    out = []
    for path, keys in required.items():
        for inner in _at(obj, path):
            out.extend(f"{path}.{k}" if path else k for k in keys if k not in inner)
    return out


@pytest.fixture(scope="module")
def container(berthd: Berthd) -> Iterator[str]:
    """A running container with an exposed port and a label, on the session daemon."""
    name = unique_name("fields")
    try:
        ident = berthd.docker(
            "run", "-d", "--name", name, "--expose", "8080", "--label", "test=fields",
            "busybox", "sleep", "300",
        ).stdout.strip()  # fmt: skip
        wait_for(
            lambda: _get(berthd, f"/containers/{ident}/json")["State"]["Running"], 30, "running"
        )
        yield ident
    finally:
        berthd.docker("rm", "-f", name, check=False)


@pytest.mark.parametrize("version", VERSIONS)
def test_image_responses_have_required_fields(berthd: Berthd, version: str) -> None:
    summaries = _get(berthd, f"/v{version}/images/json?all=1")
    assert summaries
    for summary in summaries:
        assert _missing(summary, REQUIRED[version]["ImageSummary"]) == [], summary
    image = _get(berthd, f"/v{version}/images/busybox:latest/json")
    assert _missing(image, REQUIRED[version]["ImageInspect"]) == [], image


@pytest.mark.parametrize("version", VERSIONS)
def test_container_responses_have_required_fields(
    berthd: Berthd, container: str, version: str
) -> None:
    flt = urllib.parse.quote(json.dumps({"id": [container]}))
    (summary,) = _get(berthd, f"/v{version}/containers/json?all=1&filters={flt}")
    # Ports stay empty until berth has a bridge network; tests/unit/test_required_fields.py
    # checks the port items.
    assert _missing(summary, REQUIRED[version]["ContainerSummary"]) == [], summary
    inspect = _get(berthd, f"/v{version}/containers/{container}/json")
    assert _missing(inspect, REQUIRED[version]["ContainerInspect"]) == [], inspect


@pytest.mark.parametrize("version", VERSIONS)
def test_system_responses_have_required_fields(berthd: Berthd, version: str) -> None:
    info = _get(berthd, f"/v{version}/info")
    assert _missing(info, REQUIRED[version]["SystemInfo"]) == [], info
    ver = _get(berthd, f"/v{version}/version")
    assert ver["Components"]
    assert _missing(ver, REQUIRED[version]["SystemVersion"]) == [], ver


@pytest.mark.parametrize(
    ("version", "present"), [("1.41", True), ("1.44", True), ("1.45", False), ("1.51", False)]
)
def test_image_inspect_container_fields_until_1_45(
    berthd: Berthd, version: str, present: bool
) -> None:
    """moby drops ``Container`` and ``ContainerConfig`` from API 1.45 on and sends them,
    empty when the image has none, to older clients, whose types expect them."""
    image = _get(berthd, f"/v{version}/images/busybox:latest/json")
    assert ("Container" in image) is present
    assert ("ContainerConfig" in image) is present
    if present:
        assert image["Container"] == ""  # an imported image was made by no container
        assert isinstance(image["ContainerConfig"], dict)


def test_info_lists_only_the_plugins_berth_has(berthd: Berthd) -> None:
    plugins = _get(berthd, "/info")["Plugins"]
    assert plugins["Network"] == ["host", "null"]  # no bridge driver yet
    assert plugins["Volume"] == []  # no volume service yet
    assert plugins["Authorization"] is None


def test_info_counts_event_listeners(berthd: Berthd) -> None:
    def listeners() -> int:
        return int(_get(berthd, "/info")["NEventsListener"])

    before = listeners()
    conns = [berthd.http() for _ in range(2)]
    streams = []
    try:
        for conn in conns:
            conn.request("GET", "/events")
            streams.append(conn.getresponse())
            assert streams[-1].status == 200
        wait_for(lambda: listeners() == before + 2, 10, "two more event listeners")
    finally:
        for stream in streams:
            stream.close()  # the response holds the socket as well as the connection
        for conn in conns:
            conn.close()
    wait_for(lambda: listeners() == before, 10, "the listeners gone")
