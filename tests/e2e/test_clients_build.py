"""docker build as the real clients drive it: Compose v1 and v2 (``build`` and
``up --build``), testcontainers' image builder and python-on-whales, all through the
classic builder (POST /build) on images the daemon has: nothing is pulled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, unique_name
from tests.e2e.compose import compose_binary

DOCKERFILE = """\
FROM busybox:latest
ARG GREETING=hello
COPY message.txt /message.txt
RUN echo "$GREETING from the build" > /built.txt
CMD ["cat", "/built.txt", "/message.txt"]
"""


def _context(path: Path, message: str = "from the context\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "message.txt").write_text(message)
    return path


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_compose_build_and_up_build(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path, version: str
) -> None:
    binary = compose_binary(version)
    _context(tmp_path / "app")
    project = unique_name(f"bld{version}")
    image = f"{project}-built:v1"
    image_cleanup.append(image)
    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  app:\n"
        f"    image: {image}\n"
        "    build:\n"
        "      context: ./app\n"
        "      args:\n"
        "        GREETING: hi\n"
    )
    # Compose v2 would use BuildKit (through buildx) unless told otherwise.
    env = {**berthd.env(), "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "-f", str(tmp_path / "compose.yaml"), "-p", project, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    try:
        built = compose("build")
        assert built.returncode == 0, built.stdout + built.stderr
        run = berthd.docker("run", "--rm", image)
        assert run.stdout == "hi from the build\nfrom the context\n"

        (tmp_path / "app" / "message.txt").write_text("changed\n")
        up = compose("up", "--build", "--abort-on-container-exit")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "changed" in up.stdout, up.stdout
    finally:
        compose("down")
        berthd.docker("rmi", image, check=False)
        # The first build's image lost its tag to the second: a dangling chain, as with
        # dockerd, which prune removes.
        berthd.docker("image", "prune", "-f")


def test_testcontainers_builds_an_image(
    testcontainers_env: Berthd,
    tmp_path: Path,
) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage

    d = testcontainers_env
    ctx = _context(tmp_path / "ctx", "from testcontainers\n")
    tag = unique_name("tc-built").lower() + ":v1"
    with (
        DockerImage(path=str(ctx), tag=tag) as image,
        DockerContainer(str(image)).with_command("sleep 60") as container,
    ):
        result = container.get_wrapped_container().exec_run(["cat", "/message.txt"])
        assert result.output == b"from testcontainers\n"
    assert d.docker("image", "inspect", tag, check=False).returncode != 0  # removed


def test_python_on_whales_build(berthd: Berthd, image_cleanup: list[str], tmp_path: Path) -> None:
    from python_on_whales import DockerClient

    docker = DockerClient(
        host=berthd.host, config=berthd.env()["DOCKER_CONFIG"], client_call=[DOCKER]
    )
    ctx = _context(tmp_path / "ctx")
    tag = unique_name("pow-built").lower() + ":v1"
    image_cleanup.append(tag)
    image = docker.legacy_build(ctx, tags=[tag], build_args={"GREETING": "hey"})
    assert image.repo_tags == [tag]
    assert docker.run(tag, remove=True) == "hey from the build\nfrom the context"
