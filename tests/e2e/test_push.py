"""``docker push`` to the local registries of tests/e2e/registries.py, with the real CLI and
docker-py; every pushed image is pulled back (or read from the registry) and checked."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import time
from pathlib import Path

from berth.testing import DOCKER, Berthd
from tests.e2e.archives import docker_archive, layer_tar
from tests.e2e.registries import (
    MT_DOCKER_MANIFEST,
    OciImage,
    Registry,
    free_port,
    htpasswd_registry,  # noqa: F401  (fixtures are taken from the module's namespace)
    oci_image,  # noqa: F401
    registry,  # noqa: F401
    running_registry,
    token_registry,  # noqa: F401
)


def _inspect(d: Berthd, ref: str, fmt: str) -> str:
    return d.docker("image", "inspect", "--format", fmt, ref).stdout.strip()


def _lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip()]


def _check_in_registry(
    reg: Registry, repo: str, tag: str, image_id: str, diff_ids: list[str]
) -> str:
    """The registry holds a schema 2 manifest whose config is the image's and whose layers
    decompress to the image's DiffIDs; its digest."""
    resp = reg.manifest(repo, tag)
    assert resp.status == 200, resp
    manifest = resp.json()
    assert manifest["mediaType"] == MT_DOCKER_MANIFEST
    assert manifest["config"]["digest"] == image_id
    config = reg.blob(repo, image_id)
    assert config.status == 200
    assert "sha256:" + hashlib.sha256(config.body).hexdigest() == image_id
    assert len(manifest["layers"]) == len(diff_ids)
    for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        blob = reg.blob(repo, layer["digest"])
        assert blob.status == 200
        assert len(blob.body) == layer["size"]
        assert "sha256:" + hashlib.sha256(blob.body).hexdigest() == layer["digest"]
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob.body)).hexdigest() == diff_id
    return "sha256:" + hashlib.sha256(resp.body).hexdigest()


def test_push_then_pull_back(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """An imported image goes up as a schema 2 manifest, comes back with the same ID; a
    second push is a HEAD ("Layer already exists"), a push to another repository of the
    same registry a mount ("Mounted from")."""
    ref = f"{registry.host}/bb:v1"
    other = f"{registry.host}/other/bb:v1"
    image_cleanup += [ref, other]
    berthd.docker("tag", "busybox:latest", ref)
    image_id = _inspect(berthd, ref, "{{.Id}}")
    diff_ids = json.loads(_inspect(berthd, ref, "{{json .RootFS.Layers}}"))
    short = diff_ids[0][7:19]
    since = str(int(time.time()) - 1)

    out = berthd.docker("push", ref).stdout
    lines = _lines(out)
    assert lines[0] == f"The push refers to repository [{registry.host}/bb]"
    assert f"{short}: Pushed" in lines
    digest = _check_in_registry(registry, "bb", "v1", image_id, diff_ids)
    size = len(registry.manifest("bb", "v1").body)
    assert lines[-1] == f"v1: digest: {digest} size: {size}"
    repo_digests = json.loads(_inspect(berthd, ref, "{{json .RepoDigests}}"))
    assert f"{registry.host}/bb@{digest}" in repo_digests
    events = berthd.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=image", "--filter", "event=push", "--format", "{{.Actor.ID}}",
    ).stdout.split()  # fmt: skip
    assert events == [ref]

    again = _lines(berthd.docker("push", ref).stdout)
    assert f"{short}: Layer already exists" in again
    assert again[-1] == f"v1: digest: {digest} size: {size}"

    berthd.docker("tag", ref, other)
    mounted = _lines(berthd.docker("push", other).stdout)
    assert f"{short}: Mounted from bb" in mounted
    _check_in_registry(registry, "other/bb", "v1", image_id, diff_ids)

    berthd.docker("rmi", ref, other)
    pulled = berthd.docker("pull", ref).stdout
    assert f"Digest: {digest}" in pulled
    assert _inspect(berthd, ref, "{{.Id}}") == image_id
    run = berthd.docker("run", "--rm", ref, "echo", "pushed and pulled")
    assert run.stdout == "pushed and pulled\n"


def test_push_a_pulled_image_to_another_registry_and_all_tags(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """Layers that came from a registry (gzip made by another tool) are pushed elsewhere
    from their exact tars: the image pulled back has the same ID.  ``push -a`` pushes every
    tag of the repository."""
    registry.push(oci_image, "src:latest")
    src = f"{registry.host}/src:latest"
    image_cleanup.append(src)
    berthd.docker("pull", src)
    image_id = _inspect(berthd, src, "{{.Id}}")
    # The pull recorded where its layers came from: pushing them to another repository of
    # the same registry mounts them instead of uploading.
    copy = f"{registry.host}/copy:latest"
    image_cleanup.append(copy)
    berthd.docker("tag", src, copy)
    mounted = _lines(berthd.docker("push", copy).stdout)
    for diff_id in oci_image.diff_ids:
        assert f"{diff_id[7:19]}: Mounted from src" in mounted, mounted
    with running_registry() as second:
        one, two = f"{second.host}/multi:one", f"{second.host}/multi:two"
        image_cleanup += [one, two]
        berthd.docker("tag", src, one)
        berthd.docker("tag", "busybox:latest", two)
        out = _lines(berthd.docker("push", "--all-tags", f"{second.host}/multi").stdout)
        assert out[0] == f"The push refers to repository [{second.host}/multi]"
        finals = [line for line in out if ": digest: sha256:" in line]
        assert [f.split(":", 1)[0] for f in finals] == ["one", "two"]
        _check_in_registry(second, "multi", "one", image_id, list(oci_image.diff_ids))
        assert sorted(second.tags("multi")) == ["one", "two"]

        berthd.docker("rmi", one, two, src, copy)
        berthd.docker("pull", one)
        assert _inspect(berthd, one, "{{.Id}}") == image_id
        cat = berthd.docker("run", "--rm", one, "cat", "/" + oci_image.layer2_path)
        assert cat.stdout == oci_image.layer2_content.decode()


def test_push_errors(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    missing = berthd.docker("push", f"{registry.host}/nothing:here", check=False)
    assert missing.returncode == 1
    assert f"An image does not exist locally with the tag: {registry.host}/nothing" in (
        missing.stderr
    )
    ref = f"{registry.host}/errs:v1"
    image_cleanup.append(ref)
    berthd.docker("tag", "busybox:latest", ref)
    no_tag = berthd.docker("push", f"{registry.host}/errs:nope", check=False)
    assert no_tag.returncode == 1
    assert f"tag does not exist: {registry.host}/errs:nope" in no_tag.stderr
    # A bad name is an HTTP error before any stream.
    status, _, body = berthd.request("POST", "/images/Not_Valid/push?tag=x")
    assert status == 400, body
    # A registry that is not there: the stream's last message, berthd still answers.
    down = f"127.0.0.1:{free_port()}/errs:v1"
    image_cleanup.append(down)
    berthd.docker("tag", "busybox:latest", down)
    refused = berthd.docker("push", down, check=False)
    assert refused.returncode == 1
    assert "connection refused" in refused.stderr
    assert berthd.docker("version", "--format", "{{.Server.Version}}").stdout.strip()


def test_push_with_basic_auth(
    berthd: Berthd,
    htpasswd_registry: Registry,  # noqa: F811
    image_cleanup: list[str],
    tmp_path: Path,
) -> None:
    reg = htpasswd_registry
    ref = f"{reg.host}/private:v1"
    image_cleanup.append(ref)
    berthd.docker("tag", "busybox:latest", ref)
    status, _, body = berthd.request("POST", f"/images/{reg.host}/private/push?tag=v1")
    assert status == 200
    last = json.loads(body.splitlines()[-1])
    assert "no basic auth credentials" in last["error"], last
    token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    ok = berthd.docker("push", ref, config=tmp_path, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "v1: digest: sha256:" in ok.stdout


def test_push_with_token_auth_and_docker_py(
    berthd: Berthd,
    token_registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """The Bearer challenge flow with push and pull scopes, through docker-py, whose
    stream ends with the ``aux`` result."""
    reg = token_registry
    repo = f"{reg.host}/tokens"
    image_cleanup.append(f"{repo}:v1")
    client = berthd.client()
    try:
        client.images.get("busybox:latest").tag(repo, "v1")
        auth = {"username": reg.username, "password": reg.password}
        messages = list(client.api.push(repo, tag="v1", auth_config=auth, stream=True, decode=True))
        assert not any("error" in m for m in messages), messages
        aux = [m["aux"] for m in messages if "aux" in m]
        assert len(aux) == 1 and aux[0]["Tag"] == "v1", messages
        assert aux[0]["Digest"].startswith("sha256:") and aux[0]["Size"] > 0
        denied = list(client.api.push(repo, tag="v1", stream=True, decode=True))
        assert "error" in denied[-1], denied
    finally:
        client.close()


def test_push_a_loaded_image_of_several_layers(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """An image of several layers made by ``docker load`` (a whiteout, a directory, a
    symlink among them): each layer is Preparing then Pushed, in dockerd's top-first order,
    and the registry's layers decompress to the image's DiffIDs."""
    layers = [
        layer_tar({"data/": None, "data/a.txt": "a\n" * 1000, "data/gone.txt": "x"}),
        layer_tar({"data/.wh.gone.txt": "", "data/b.txt": "b\n"}, symlinks={"link": "data/a.txt"}),
        layer_tar({"etc/": None, "etc/layer3": "three\n"}),
    ]
    name = f"{registry.host}/loaded:v1"
    image_cleanup.append(name)
    subprocess.run(
        [DOCKER, "load"],
        input=docker_archive(layers, [name]),
        env=berthd.env(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    diff_ids = json.loads(_inspect(berthd, name, "{{json .RootFS.Layers}}"))
    assert len(diff_ids) == 3
    status, _, body = berthd.request("POST", f"/images/{registry.host}/loaded/push?tag=v1")
    assert status == 200
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert not any("error" in m for m in messages), messages
    preparing = [m["id"] for m in messages if m.get("status") == "Preparing"]
    assert preparing == [d[7:19] for d in reversed(diff_ids)]
    pushed = {m["id"] for m in messages if m.get("status") == "Pushed"}
    assert pushed == {d[7:19] for d in diff_ids}
    _check_in_registry(registry, "loaded", "v1", _inspect(berthd, name, "{{.Id}}"), diff_ids)
