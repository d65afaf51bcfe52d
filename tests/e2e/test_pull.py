"""``docker pull`` from the local registries of tests/e2e/registries.py, with the real CLI."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from berth.testing import DOCKER, Berthd, running_berthd
from tests.e2e.faulty_proxy import Fault, FaultyProxy, Seen
from tests.e2e.pull_images import PushedImage, layer_tar, random_layer, upload_image
from tests.e2e.registries import (
    OciImage,
    Registry,
    htpasswd_registry,  # noqa: F401  (fixtures are taken from the module's namespace)
    oci_image,  # noqa: F401
    registry,  # noqa: F401
)


def test_pull_by_tag_and_digest(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    digest = registry.push(oci_image, "busybox:latest")
    ref = f"{registry.host}/busybox:latest"
    image_cleanup.append(ref)
    image_cleanup.append(f"{registry.host}/busybox@{digest}")
    since = str(int(time.time()) - 1)
    out = berthd.docker("pull", ref).stdout
    events = berthd.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=image", "--filter", "event=pull", "--format", "{{.Actor.ID}}",
    ).stdout.split()  # fmt: skip
    assert events == [ref]
    assert "Pulling from busybox" in out
    assert f"Digest: {digest}" in out
    assert f"Status: Downloaded newer image for {ref}" in out
    amd64 = oci_image.images["amd64"]
    image_id = berthd.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    assert image_id == amd64.image_id  # the host's platform from the index
    listed = berthd.docker(
        "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"
    ).stdout
    assert f"{registry.host}/busybox latest {digest}" in listed
    digests = json.loads(
        berthd.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
    )
    assert digests == [f"{registry.host}/busybox@{digest}"]

    run = berthd.docker("run", "--rm", ref, "cat", "/" + oci_image.layer2_path)
    assert run.stdout == oci_image.layer2_content.decode()

    again = berthd.docker("pull", ref).stdout
    assert f"Status: Image is up to date for {ref}" in again
    assert "Downloading" not in again

    by_digest = berthd.docker("pull", f"{registry.host}/busybox@{digest}").stdout
    assert f"Digest: {digest}" in by_digest
    got = berthd.docker(
        "image", "inspect", "--format", "{{.Id}}", f"{registry.host}/busybox@{digest}"
    )
    assert got.stdout.strip() == amd64.image_id


def test_pull_streams_layer_progress(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    registry.push(oci_image, "progress:v1")
    ref = f"{registry.host}/progress:v1"
    image_cleanup.append(ref)
    status, _, body = berthd.request(
        "POST", f"/images/create?fromImage={registry.host}/progress&tag=v1"
    )
    assert status == 200
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert not any("error" in m for m in messages), messages
    assert messages[0] == {"status": "Pulling from progress", "id": "v1"}
    layer_ids = {layer.digest[7:19] for layer in oci_image.layers}
    for lid in layer_ids:
        seen = [m["status"] for m in messages if m.get("id") == lid]
        assert seen[0] in ("Pulling fs layer", "Already exists"), seen
        if seen[0] == "Pulling fs layer":
            for step in ("Downloading", "Verifying Checksum", "Download complete", "Extracting"):
                assert step in seen, (step, seen)
            assert seen[-1] == "Pull complete"
    assert messages[-1]["status"] == f"Status: Downloaded newer image for {ref}"


def test_pull_missing_tag_and_repository(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
) -> None:
    registry.push(oci_image, "busybox:latest")
    bad = berthd.docker("pull", f"{registry.host}/busybox:nope", check=False)
    assert bad.returncode == 1
    assert f"manifest for {registry.host}/busybox:nope not found: manifest unknown" in bad.stderr
    status, _, body = berthd.request(
        "POST", f"/images/create?fromImage={registry.host}/busybox&tag=nope"
    )
    assert status == 404, body


def test_pull_with_basic_auth(
    berthd: Berthd,
    htpasswd_registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
    tmp_path: Path,
) -> None:
    reg = htpasswd_registry
    reg.push(oci_image, "private:latest")
    ref = f"{reg.host}/private:latest"
    image_cleanup.append(ref)
    # Without credentials: dockerd's answer for a Basic-auth registry, a 401 before any
    # stream (the CLI would then prompt for a login, so the API is asked directly).
    status, _, body = berthd.request(
        "POST", f"/images/create?fromImage={reg.host}/private&tag=latest"
    )
    assert status == 401, body
    assert b"no basic auth credentials" in body
    token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    ok = berthd.docker("pull", ref, config=tmp_path, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"Status: Downloaded newer image for {ref}" in ok.stdout


def test_login_checks_the_credentials_with_the_registry(
    berthd: Berthd,
    htpasswd_registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
    tmp_path: Path,
) -> None:
    """``docker login`` (POST /auth): a wrong password is refused by the registry, the
    right one is "Login Succeeded" and the CLI's stored credentials then pull."""
    reg = htpasswd_registry
    reg.push(oci_image, "private:latest")
    ref = f"{reg.host}/private:latest"
    image_cleanup.append(ref)
    wrong = subprocess.run(
        [DOCKER, "login", reg.host, "-u", reg.username, "--password-stdin"],
        env={**berthd.env(), "DOCKER_CONFIG": str(tmp_path)},
        input="not-the-password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode != 0, wrong
    assert "Login Succeeded" not in wrong.stdout
    right = subprocess.run(
        [DOCKER, "login", reg.host, "-u", reg.username, "--password-stdin"],
        env={**berthd.env(), "DOCKER_CONFIG": str(tmp_path)},
        input=reg.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert right.returncode == 0 and "Login Succeeded" in right.stdout, right
    assert reg.host in json.loads((tmp_path / "config.json").read_text())["auths"]
    pulled = berthd.docker("pull", ref, config=tmp_path, check=False)
    assert pulled.returncode == 0, pulled.stderr


# -- robustness: a registry that misbehaves (tests/e2e/faulty_proxy.py) ------------------------

LAYER = 1_200_000  # bytes of random data per layer: more than two progress steps


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultyProxy]:  # noqa: F811
    """A :class:`FaultyProxy` in front of the test's registry (behaving until told)."""
    with FaultyProxy(registry.host) as p:
        yield p


def _image_root(d: Berthd) -> Path:
    (root,) = [p for p in (d.data_root / "image").iterdir() if (p / "layerdb").is_dir()]
    return root


def _layers(d: Berthd) -> set[str]:
    """The layer store's layers (ChainIDs), as layerdb has them on disk."""
    return {p.name for p in (_image_root(d) / "layerdb" / "sha256").iterdir()}


def _downloads(d: Berthd) -> dict[str, int]:
    """The pulls' kept downloads: file name → size."""
    folder = _image_root(d) / "distribution" / "downloads"
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def _kept(digest: str) -> str:
    return digest.replace(":", "-")


def _messages(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def _pull_api(d: Berthd, image: str, tag: str = "") -> tuple[int, list[dict[str, Any]], bytes]:
    query = f"fromImage={image}" + (f"&tag={tag}" if tag else "")
    status, _, body = d.request("POST", f"/images/create?{query}")
    return status, (_messages(body) if status == 200 else []), body


def _statuses(messages: list[dict[str, Any]], ident: str) -> list[str]:
    return [str(m["status"]) for m in messages if m.get("id") == ident]


@dataclass(frozen=True)
class _Before:
    """What the daemon had before a failing pull: the failure must add nothing to it."""

    layers: set[str]
    downloads: set[str]


def _before(d: Berthd) -> _Before:
    return _Before(_layers(d), set(_downloads(d)))


def _assert_failed_cleanly(d: Berthd, ref: str, before: _Before, allowed: set[str]) -> None:
    """No image, no layer registered, no temp file; only *allowed* blobs kept to resume."""
    assert d.docker("image", "inspect", ref, check=False).returncode == 1
    assert _layers(d) == before.layers
    assert not [p.name for p in (d.data_root / "tmp").iterdir()]
    assert set(_downloads(d)) - before.downloads <= {_kept(x) for x in allowed}


def test_pull_progress_ids_order_and_concurrency(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """dockerd's messages in dockerd's order for a 4-layer image, three downloads at a
    time (the proxy makes each take a while), extraction in manifest order; read with
    docker-py's low-level API and with the CLI (non-tty: one line per message)."""
    img = upload_image(registry, "order", "v1", [random_layer(LAYER) for _ in range(4)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    proxy.add(Fault(r"/blobs/", rate=600_000))
    client = berthd.client()
    try:
        messages = list(client.api.pull(f"{proxy.host}/order", tag="v1", stream=True, decode=True))
    finally:
        client.close()
    assert not [m for m in messages if "error" in m], messages
    assert messages[0] == {"status": "Pulling from order", "id": "v1"}
    ids = [layer.short for layer in img.layers]
    pulling = [m["id"] for m in messages if m.get("status") == "Pulling fs layer"]
    assert pulling == ids
    for layer in img.layers:
        seen = _statuses(messages, layer.short)
        assert seen[0] == "Pulling fs layer", seen
        order = ["Pulling fs layer", "Downloading", "Verifying Checksum", "Download complete",
                 "Extracting", "Pull complete"]  # fmt: skip
        firsts = [seen.index(step) for step in order]
        assert firsts == sorted(firsts), seen
        assert seen[-1] == "Pull complete"
        steps = [m for m in messages if m.get("id") == layer.short and m["status"] == "Downloading"]
        assert all(m["progressDetail"]["total"] == layer.size for m in steps)
        assert steps[-1]["progressDetail"]["current"] == layer.size
        assert "Waiting" not in seen or seen.index("Waiting") < seen.index("Downloading")
    # The fourth waits for a slot; the first three go at once.
    assert "Waiting" in _statuses(messages, ids[3])
    blob_gets = proxy.seen(r"/blobs/sha256:(" + "|".join(x.digest[7:] for x in img.layers) + ")")
    assert len(blob_gets) == 4
    assert FaultyProxy.most_at_once(blob_gets) == 3
    done = [m["id"] for m in messages if m.get("status") == "Pull complete"]
    assert done == ids  # registered in order, each on its parent
    assert messages[-2] == {"status": f"Digest: {img.manifest_digest}"}
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
    assert _downloads(berthd).keys().isdisjoint({_kept(x.digest) for x in img.layers})
    inspect = json.loads(berthd.docker("image", "inspect", ref).stdout)[0]
    assert inspect["Id"] == img.config_digest
    assert inspect["RepoDigests"] == [f"{proxy.host}/order@{img.manifest_digest}"]

    # Pulled again: the manifest is read, nothing else (moby: the image is there).
    mark = proxy.mark()
    status, again, _ = _pull_api(berthd, f"{proxy.host}/order", "v1")
    assert status == 200
    assert [m["status"] for m in again] == [
        "Pulling from order",
        f"Digest: {img.manifest_digest}",
        f"Status: Image is up to date for {ref}",
    ]
    assert not proxy.since(mark, r"/blobs/")
    # By digest: the whole reference is the first message's id, as dockerd shows it.
    by_digest = f"{proxy.host}/order@{img.manifest_digest}"
    status, digested, _ = _pull_api(berthd, f"{proxy.host}/order", img.manifest_digest)
    assert status == 200
    assert digested[0] == {"status": "Pulling from order", "id": by_digest}
    assert digested[-1] == {"status": f"Status: Image is up to date for {by_digest}"}

    # The CLI without a terminal prints each message as a line.
    berthd.docker("rmi", ref)
    proxy.clear()
    out = berthd.docker("pull", ref).stdout.splitlines()
    assert out[0] == "v1: Pulling from order"
    for layer in img.layers:
        assert f"{layer.short}: Pulling fs layer" in out
        assert f"{layer.short}: Pull complete" in out
    assert out[-3:] == [
        f"Digest: {img.manifest_digest}",
        f"Status: Downloaded newer image for {ref}",
        ref,
    ]


def test_pull_all_tags_and_quiet(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """``docker pull -a``: fromImage without a tag pulls every tag, one image each with
    its RepoDigest, "Pulling from" and "Digest:" per tag, one status for the repository."""
    one = upload_image(registry, "multi", "one", [random_layer(4096)])
    two = upload_image(registry, "multi", "two", [random_layer(4096), random_layer(4096)])
    three = upload_image(registry, "multi", "three", [])  # another tag, its own image
    repo = f"{registry.host}/multi"
    image_cleanup += [f"{repo}:one", f"{repo}:two", f"{repo}:three"]
    out = berthd.docker("pull", "--all-tags", repo).stdout.splitlines()
    by_tag = {x.tag: x for x in (one, two, three)}
    tags = registry.tags("multi")  # pulled in the registry's order
    assert sorted(tags) == sorted(by_tag)
    assert [line for line in out if "Pulling from" in line] == [
        f"{t}: Pulling from multi" for t in tags
    ]
    assert [line for line in out if line.startswith("Digest:")] == [
        f"Digest: {by_tag[t].manifest_digest}" for t in tags
    ]
    assert out[-2:] == [f"Status: Downloaded newer image for {repo}", repo]
    listed = berthd.docker(
        "images", "--digests", "--format", "{{.Tag}} {{.Digest}} {{.ID}}", repo
    ).stdout.split("\n")
    for img in (one, two, three):
        assert f"{img.tag} {img.manifest_digest} {img.config_digest[7:19]}" in listed
        digests = json.loads(
            berthd.docker("image", "inspect", "--format", "{{json .RepoDigests}}",
                          f"{repo}:{img.tag}").stdout
        )  # fmt: skip
        assert f"{repo}@{img.manifest_digest}" in digests
    quiet = berthd.docker("pull", "-a", "-q", repo)
    assert quiet.stdout == repo + "\n"
    status, messages, _ = _pull_api(berthd, repo)
    assert status == 200
    assert messages[-1] == {"status": f"Status: Image is up to date for {repo}"}


def test_run_pulls_a_missing_image(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """``docker run`` of an image that is not here: the CLI pulls it on the create 404."""
    registry.push(oci_image, "runme:v1")
    ref = f"{registry.host}/runme:v1"
    image_cleanup.append(ref)
    run = berthd.docker("run", "--rm", ref, "cat", "/" + oci_image.layer2_path)
    assert run.stdout == oci_image.layer2_content.decode()
    assert f"Unable to find image '{ref}' locally" in run.stderr
    assert f"Status: Downloaded newer image for {ref}" in run.stderr


_DENIED = b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
_UNAUTHORIZED = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
_UNKNOWN = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
_TOO_MANY = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests"}]}'


@pytest.mark.parametrize(
    ("status", "body", "answer", "message"),
    [
        (404, _UNKNOWN, 404, "manifest for {host}/gate:v1 not found: manifest unknown: "
                             "manifest unknown"),
        (403, _DENIED, 404, "pull access denied for {host}/gate, repository does not exist or "
                            "may require 'docker login': denied: requested access to the "
                            "resource is denied"),
        (401, _UNAUTHORIZED, 401, "unauthorized: authentication required"),
        (429, _TOO_MANY, 503, "toomanyrequests: too many requests"),
        (500, b"", 503, "received unexpected HTTP status: 500 Internal Server Error"),
    ],
)  # fmt: skip
def test_manifest_errors_come_before_the_stream(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    status: int,
    body: bytes,
    answer: int,
    message: str,
) -> None:
    """What the registry says of the manifest is an HTTP error with dockerd's words."""
    upload_image(registry, "gate", "v1", [random_layer(4096)])
    before = _before(berthd)
    proxy.add(Fault(r"/manifests/", status=status, body=body))
    got, _, raw = _pull_api(berthd, f"{proxy.host}/gate", "v1")
    assert got == answer, raw
    assert json.loads(raw) == {"message": message.format(host=proxy.host)}
    assert not proxy.seen(r"/blobs/")
    _assert_failed_cleanly(berthd, f"{proxy.host}/gate:v1", before, set())
    if status in (403, 404):  # the CLI shows it (a 401 would make it ask for a login)
        cli = berthd.docker("pull", f"{proxy.host}/gate:v1", check=False)
        assert cli.returncode == 1
        assert cli.stderr.strip() == "Error response from daemon: " + message.format(
            host=proxy.host
        )
    assert berthd.docker("version", "--format", "{{.Server.Version}}").returncode == 0


def test_oversized_manifest_is_refused(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
) -> None:
    upload_image(registry, "huge", "v1", [random_layer(4096)])
    padding = b" " * (5 << 20)
    proxy.add(
        Fault(
            r"/manifests/v1",
            status=200,
            body=b'{"schemaVersion":2,' + padding + b'"layers":[]}',
            headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
        )
    )
    got, _, raw = _pull_api(berthd, f"{proxy.host}/huge", "v1")
    assert got == 400, raw
    assert json.loads(raw)["message"] == (
        f"manifest {proxy.host}/huge:v1 is larger than the limit of 4194304 bytes"
    )


def _failing_pull(
    d: Berthd, proxy: FaultyProxy, img: PushedImage
) -> tuple[list[dict[str, Any]], str]:
    """Pull *img* expecting a 200 whose last message is an error; (messages, error)."""
    status, messages, raw = _pull_api(d, f"{proxy.host}/{img.repo}", img.tag)
    assert status == 200, raw
    last = messages[-1]
    assert set(last) == {"errorDetail", "error"}, messages
    assert last["errorDetail"] == {"message": last["error"]}
    assert not [m for m in messages[:-1] if "error" in m]
    return messages, str(last["error"])


def _assert_resumed(
    kept: dict[str, int], img: PushedImage, gets: list[Seen], again: list[dict[str, Any]]
) -> None:
    """The second pull fetched only what the first had not: a blob kept whole not at all
    (and showed no "Downloading"), a partial one from where it stopped."""
    for layer in img.layers:
        have = kept.get(_kept(layer.digest), 0)
        asked = [s.range for s in gets if layer.digest in s.path]
        if have == layer.size:
            assert asked == [], layer
            assert "Downloading" not in _statuses(again, layer.short)
            assert "Pull complete" in _statuses(again, layer.short)
        elif have:
            assert asked == [f"bytes={have}-"], layer
            steps = [
                m for m in again if m.get("id") == layer.short and m["status"] == "Downloading"
            ]
            assert steps[0]["progressDetail"]["current"] > have
        else:
            assert asked == [""], layer


def test_blob_missing_mid_pull(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """A layer the registry does not have (404 after the stream started): an error in the
    stream, nothing registered; the layers that arrived are kept and not fetched again."""
    img = upload_image(registry, "holes", "v1", [random_layer(LAYER) for _ in range(3)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    before = _before(berthd)
    missing = img.layers[1]
    body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}'
    # Late, so that the other two have arrived by then.
    proxy.add(Fault(r"/blobs/" + missing.digest, status=404, body=body, delay=1.0))
    messages, error = _failing_pull(berthd, proxy, img)
    assert messages[0] == {"status": "Pulling from holes", "id": "v1"}
    assert error == "blob unknown: blob unknown to registry"
    _assert_failed_cleanly(berthd, ref, before, {img.layers[0].digest, img.layers[2].digest})
    kept = _downloads(berthd)
    assert kept[_kept(img.layers[0].digest)] == img.layers[0].size

    proxy.clear()
    mark = proxy.mark()
    status, again, _ = _pull_api(berthd, f"{proxy.host}/holes", "v1")
    assert status == 200
    assert again[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
    _assert_resumed(kept, img, proxy.since(mark, r"/blobs/sha256:"), again)
    assert _downloads(berthd).keys().isdisjoint({_kept(x.digest) for x in img.layers})


def test_digest_mismatch_mid_pull(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """A layer whose bytes do not hash to its digest: dockerd's error, and the bad bytes
    are not kept."""
    img = upload_image(registry, "rotten", "v1", [random_layer(LAYER), random_layer(LAYER)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    before = _before(berthd)
    bad = img.layers[0]
    proxy.add(Fault(r"/blobs/" + bad.digest, corrupt_at=100_000))
    _, error = _failing_pull(berthd, proxy, img)
    assert error == f"filesystem layer verification failed for digest {bad.digest}"
    _assert_failed_cleanly(berthd, ref, before, {img.layers[1].digest})
    proxy.clear()
    berthd.docker("pull", ref)


def test_connection_cut_mid_layer_is_retried_resuming(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """The registry's connection cut half-way through a layer: as dockerd, the transfer is
    tried again after "Retrying in 5 seconds", asking only for the rest (Range), and the
    pull succeeds."""
    img = upload_image(registry, "retried", "v1", [random_layer(LAYER) for _ in range(2)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    victim = img.layers[1]
    proxy.add(Fault(r"/blobs/" + victim.digest, cut_after=700_000, times=1))
    mark = proxy.mark()
    status, messages, raw = _pull_api(berthd, f"{proxy.host}/retried", "v1")
    assert status == 200, raw
    assert not [m for m in messages if "error" in m], messages
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
    retries = [m["status"] for m in messages if m.get("id") == victim.short]
    assert "Retrying in 5 seconds" in retries and "Retrying in 1 second" in retries, retries
    asked = [x.range for x in proxy.since(mark, r"/blobs/" + victim.digest)]
    assert asked == ["", "bytes=700000-"], asked
    layers = berthd.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref)
    assert json.loads(layers.stdout) == [x.diff_id for x in img.layers]


def test_connection_cut_mid_layer_then_resume(
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
) -> None:
    """With ``--max-download-attempts 1`` a cut ends the pull: an error in the stream; the
    next pull asks only for the rest of that layer (Range) and nothing of the others."""
    with running_berthd(["--max-download-attempts", "1"]) as d:
        img = upload_image(registry, "cut", "v1", [random_layer(LAYER) for _ in range(3)])
        ref = img.ref(proxy.host)
        before = _before(d)
        victim = img.layers[1]
        # Slow, so that the other two have arrived when it is cut.
        proxy.add(Fault(r"/blobs/" + victim.digest, cut_after=700_000, rate=500_000, times=1))
        messages, error = _failing_pull(d, proxy, img)
        assert error.startswith(f"error pulling blob {victim.digest}"), error
        assert not [m for m in messages if str(m.get("status", "")).startswith("Retrying")]
        _assert_failed_cleanly(d, ref, before, {x.digest for x in img.layers})
        kept = _downloads(d)
        assert kept[_kept(victim.digest)] == 700_000
        assert kept[_kept(img.layers[0].digest)] == img.layers[0].size

        mark = proxy.mark()
        status, again, _ = _pull_api(d, f"{proxy.host}/cut", "v1")
        assert status == 200
        assert again[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
        _assert_resumed(kept, img, proxy.since(mark, r"/blobs/sha256:"), again)
        assert _downloads(d).keys().isdisjoint({_kept(x.digest) for x in img.layers})
        layers = d.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref)
        assert json.loads(layers.stdout) == [x.diff_id for x in img.layers]
        d.docker("rmi", ref)


def test_layer_with_an_escaping_path_is_refused(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """A layer whose tar says ``../../etc/x``: refused, nothing written outside, the blob
    not kept."""
    name = f"berth-escape-{uuid.uuid4().hex[:12]}"
    evil = layer_tar({f"../../etc/{name}": b"escaped\n", f"../../{name}": b"escaped\n"})
    img = upload_image(registry, "evil", "v1", [random_layer(4096), evil])
    ref = img.ref(registry.host)
    image_cleanup.append(ref)
    before = _before(berthd)
    status, messages, raw = _pull_api(berthd, f"{registry.host}/evil", "v1")
    assert status == 200, raw
    error = messages[-1]["error"]
    assert error == (
        f"failed to register layer: invalid tar entry '../../etc/{name}': "
        "path escapes the layer root"
    )
    _assert_failed_cleanly(berthd, ref, before, {img.layers[0].digest})
    assert _kept(img.layers[1].digest) not in _downloads(berthd)
    written = subprocess.run(
        ["find", "/etc", "/tmp", "/var/lib", "/", "-maxdepth", "1", "-name", name],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert written == ""
    assert not list(berthd.root.rglob(name))


def test_slow_registry_leaves_the_daemon_responsive(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """While a layer trickles in, other requests are answered (the pull is still on)."""
    img = upload_image(registry, "slow", "v1", [random_layer(LAYER)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    stall = proxy.add(Fault(r"/blobs/" + img.layers[0].digest, stall_after=300_000))
    with subprocess.Popen(
        [DOCKER, "pull", ref], env=berthd.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as pull:
        try:
            assert stall.stalling.wait(60)
            assert berthd.docker("ps").returncode == 0
            assert berthd.docker("images", "-q").returncode == 0
            assert pull.poll() is None  # still pulling: the answers did not wait for it
        finally:
            stall.release()
        out, err = pull.communicate(timeout=120)
    assert pull.returncode == 0, err
    assert f"Status: Downloaded newer image for {ref}" in out.decode()


def test_client_gone_stops_the_pull_and_keeps_the_partial(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
    image_cleanup: list[str],
) -> None:
    """Ctrl-C on ``docker pull``: berthd cuts the download at once (the registry is still
    sending, a byte at a time), registers nothing and keeps what arrived; the next pull
    asks for the rest with Range."""
    img = upload_image(registry, "quit", "v1", [random_layer(2 * LAYER), random_layer(4096)])
    ref = img.ref(proxy.host)
    image_cleanup.append(ref)
    before = _before(berthd)
    big = img.layers[0]
    # Past berthd's first 1 MiB read, which is on disk when the second one is cut short.
    stall = proxy.add(Fault(r"/blobs/" + big.digest, stall_after=1_500_000, times=1))
    with subprocess.Popen(
        [DOCKER, "pull", ref], env=berthd.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as pull:
        assert stall.stalling.wait(60)
        pull.send_signal(signal.SIGINT)
        pull.communicate(timeout=60)
    (transfer,) = proxy.seen(r"/blobs/" + big.digest)
    # Only berthd closing its connection ends this transfer: the proxy never stops dripping.
    assert transfer.done.wait(60)
    assert transfer.client_gone
    _assert_failed_cleanly(berthd, ref, before, {x.digest for x in img.layers})
    partial = _downloads(berthd)[_kept(big.digest)]
    assert 1 << 20 <= partial <= transfer.sent

    mark = proxy.mark()
    out = berthd.docker("pull", ref).stdout
    assert f"Status: Downloaded newer image for {ref}" in out
    (resumed,) = proxy.since(mark, r"/blobs/" + big.digest)
    assert resumed.range == f"bytes={partial}-"


def test_pull_resumes_after_a_daemon_restart(
    fresh_berthd: Berthd,
    registry: Registry,  # noqa: F811
    proxy: FaultyProxy,
) -> None:
    """berthd stopped in the middle of a pull: what it had downloaded is still there after
    the restart (layers complete are hashed again, not fetched; the partial one is asked
    for from where it stopped), and kept downloads older than a day are swept."""
    d = fresh_berthd
    img = upload_image(
        registry, "again", "v1", [random_layer(4096), random_layer(2 * LAYER), random_layer(4096)]
    )
    ref = img.ref(proxy.host)
    before = _layers(d)
    big = img.layers[1]
    stall = proxy.add(Fault(r"/blobs/" + big.digest, stall_after=1_500_000, times=1))
    small = {_kept(x.digest): x.size for x in (img.layers[0], img.layers[2])}
    with subprocess.Popen(
        [DOCKER, "pull", ref], env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as pull:
        assert stall.stalling.wait(60)
        deadline = time.monotonic() + 60
        while not small.items() <= _downloads(d).items():
            assert time.monotonic() < deadline, _downloads(d)
            time.sleep(0.05)
        assert d.stop() == 0  # SIGTERM: the pull is stopped on the way out
        pull.communicate(timeout=60)
    assert pull.returncode != 0
    kept = _downloads(d)
    assert kept[_kept(big.digest)] >= 1 << 20
    assert small.items() <= kept.items()
    folder = _image_root(d) / "distribution" / "downloads"
    stale, recent = folder / ("sha256-" + "0" * 64), folder / ("sha256-" + "1" * 64)
    for path in (stale, recent):
        path.write_bytes(b"left by a pull long ago")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))

    d.start()
    assert not stale.exists()
    assert recent.exists()
    recent.unlink()
    assert _layers(d) == before
    proxy.clear()
    mark = proxy.mark()
    status, again, raw = _pull_api(d, f"{proxy.host}/again", "v1")
    assert status == 200, raw
    assert again[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
    _assert_resumed(kept, img, proxy.since(mark, r"/blobs/sha256:"), again)
    assert not _downloads(d)
    layers = d.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref)
    assert json.loads(layers.stdout) == [x.diff_id for x in img.layers]
    d.docker("rmi", ref)
