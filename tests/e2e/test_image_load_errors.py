"""``POST /images/load`` answers 200 with a JSON stream and reports archive errors in it,
as dockerd does: docker-py's ``load_image`` and the CLI read errors from the stream."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from berth.testing import DOCKER, Berthd, unique_name
from tests.e2e.archives import docker_archive, layer_tar

_TRUNCATED = docker_archive([layer_tar({"big": os.urandom(200_000)})], ["trunc:1"])[:150_000]


@pytest.fixture
def api(berthd: Berthd) -> Iterator[Any]:
    import docker  # type: ignore[import-untyped]

    client = docker.APIClient(base_url=berthd.host, version="1.44", timeout=60)
    try:
        yield client
    finally:
        client.close()


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_truncated_archive_is_an_error_message_in_a_200_stream(berthd: Berthd) -> None:
    status, headers, body = berthd.request(
        "POST", "/v1.44/images/load?quiet=1", _TRUNCATED, {"Content-Type": "application/x-tar"}
    )
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers.get("transfer-encoding") == "chunked"
    last = _lines(body)[-1]
    assert set(last) == {"errorDetail", "error"}
    assert last["errorDetail"] == {"message": last["error"]}
    assert "invalid" in last["error"]
    assert os.listdir(berthd.data_root / "tmp") == []


def test_docker_py_reads_the_error_from_the_stream(berthd: Berthd, api: Any) -> None:
    images_before = berthd.docker("images", "-aq", "--no-trunc").stdout
    chunks = list(api.load_image(b"this is not a tarball at all" * 100))
    assert "errorDetail" in chunks[-1], chunks
    assert "invalid archive" in chunks[-1]["errorDetail"]["message"]
    assert berthd.docker("images", "-aq", "--no-trunc").stdout == images_before


def test_docker_py_high_level_load_raises_image_load_error(berthd: Berthd) -> None:
    import docker.errors  # type: ignore[import-untyped]

    client = berthd.client()
    try:
        with pytest.raises(docker.errors.ImageLoadError, match="invalid"):
            client.images.load(_TRUNCATED)
    finally:
        client.close()


def test_several_messages_are_a_json_stream(
    berthd: Berthd, api: Any, image_cleanup: list[str]
) -> None:
    """Two tags, two messages: a chunked stream docker-py decodes message by message."""
    repo = unique_name("loadmsgs")
    image_cleanup.extend([f"{repo}:1", f"{repo}:2"])
    data = docker_archive([layer_tar({"two": repo})], [f"{repo}:1", f"{repo}:2"])
    chunks = list(api.load_image(data))
    assert chunks == [
        {"stream": f"Loaded image: {repo}:1\n"},
        {"stream": f"Loaded image: {repo}:2\n"},
    ]


def test_cli_prints_the_error_and_fails(berthd: Berthd) -> None:
    p = subprocess.run(
        [DOCKER, "load"],
        input=_TRUNCATED,
        env=berthd.env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 1
    assert b"invalid archive" in p.stderr
