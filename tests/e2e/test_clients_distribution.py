"""Pull and push as the real clients do them: Compose v1 and v2, testcontainers and
python-on-whales, against a local registry on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, unique_name
from tests.e2e.compose import compose_binary
from tests.e2e.registries import (
    OciImage,
    Registry,
    oci_image,  # noqa: F401  (fixtures are taken from the module's namespace)
    registry,  # noqa: F401
)


def _has_image(d: Berthd, ref: str) -> bool:
    return d.docker("image", "inspect", ref, check=False).returncode == 0


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_compose_pull_and_push(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
    tmp_path: Path,
    version: str,
) -> None:
    """``compose pull`` fetches the services' images from the registry and ``compose run``
    uses what was pulled.  (``compose push`` only pushes services that have a ``build``
    section: it waits for docker build.)"""
    binary = compose_binary(version)
    registry.push(oci_image, "composed:v1")
    pulled = f"{registry.host}/composed:v1"
    image_cleanup.append(pulled)
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  app:\n    image: {pulled}\n    command: [cat, /etc/berth-layer2.txt]\n"
    )
    project = unique_name(f"dist{version}")

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "-f", str(tmp_path / "compose.yaml"), "-p", project, *args],
            env=berthd.env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    try:
        p = compose("pull")
        assert p.returncode == 0, p.stderr
        assert _has_image(berthd, pulled)
        image_id = berthd.docker("image", "inspect", "--format", "{{.Id}}", pulled).stdout
        assert image_id.strip() == oci_image.images["amd64"].image_id
        run = compose("run", "--rm", "app")
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().endswith("second layer"), run.stdout

    finally:
        compose("down")


def test_testcontainers_pulls_a_missing_image(
    testcontainers_env: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    """testcontainers (docker-py under it) pulls an image that is not there yet."""
    from testcontainers.core.container import DockerContainer

    d = testcontainers_env
    registry.push(oci_image, "tc:v1")
    ref = f"{registry.host}/tc:v1"
    image_cleanup.append(ref)
    assert not _has_image(d, ref)
    with DockerContainer(ref).with_command("sleep 60") as container:
        wrapped = container.get_wrapped_container()
        result = wrapped.exec_run(["cat", "/etc/berth-layer2.txt"])
        assert result.exit_code == 0
        assert result.output == oci_image.layer2_content
    assert _has_image(d, ref)


def test_python_on_whales_pull_and_push(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    from python_on_whales import DockerClient

    registry.push(oci_image, "whales:v1")
    src, dst = f"{registry.host}/whales:v1", f"{registry.host}/whales-out:v2"
    image_cleanup += [src, dst]
    docker = DockerClient(
        host=berthd.host, config=berthd.env()["DOCKER_CONFIG"], client_call=[DOCKER]
    )
    image = docker.pull(src, quiet=True)
    assert image is not None and image.id == oci_image.images["amd64"].image_id
    docker.tag(src, dst)
    docker.push(dst, quiet=True)
    manifest = registry.manifest("whales-out", "v2")
    assert manifest.status == 200
    assert manifest.json()["config"]["digest"] == image.id
    digests = json.loads(
        berthd.docker("image", "inspect", "--format", "{{json .RepoDigests}}", dst).stdout
    )
    assert any(r.startswith(f"{registry.host}/whales-out@sha256:") for r in digests)
