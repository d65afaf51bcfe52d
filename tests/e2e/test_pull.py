"""``docker pull`` from the local registries of tests/e2e/registries.py, with the real CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

from berth.testing import DOCKER, Berthd
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


def _docker_with_config(d: Berthd, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = d.env()
    env["DOCKER_CONFIG"] = str(config)
    return subprocess.run(
        [DOCKER, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
    ok = _docker_with_config(berthd, tmp_path, "pull", ref)
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
    pulled = _docker_with_config(berthd, tmp_path, "pull", ref)
    assert pulled.returncode == 0, pulled.stderr
