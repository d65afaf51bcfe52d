"""``docker run -w``: dockerd makes the working directory itself, inside the container's root,
before the runtime starts (moby's ``SetupWorkingDirectory``).  runc's own mkdir does not follow
a symlink to a missing directory (``mkdir /d: file exists``), and berthd's must follow every
link as the kernel would in the container: never onto the host.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from berth.testing import Berthd, unique_name
from tests.e2e.archives import docker_archive, layer_tar

_UP = "../" * 40  # more than any berthd path on the host is deep


@pytest.fixture
def load_image(
    berthd: Berthd, busybox_tar: Path, image_cleanup: list[str], tmp_path: Path
) -> Callable[[bytes], str]:
    """``docker load`` of busybox with one layer on top; the tag, removed after the test."""

    def load(layer: bytes) -> str:
        tag = unique_name("berth-workdir") + ":1"
        image_cleanup.append(tag)
        archive = tmp_path / f"{tag}.tar"
        archive.write_bytes(docker_archive([busybox_tar.read_bytes(), layer], [tag]))
        berthd.docker("load", "-i", str(archive))
        return tag

    return load


def run(d: Berthd, cleanup: list[str], *args: str) -> tuple[int, str, str]:
    name = unique_name("berth-workdir")
    cleanup.append(name)
    p = d.docker("run", "--name", name, *args, check=False)
    return p.returncode, p.stdout, p.stderr


def test_workdir_under_a_dangling_link(
    berthd: Berthd, cleanup: list[str], load_image: Callable[[bytes], str]
) -> None:
    img = load_image(layer_tar({}, symlinks={"d": "/missing"}))
    rc, out, err = run(berthd, cleanup, "-w", "/d/work", img, "pwd")
    assert (rc, out, err) == (0, "/missing/work\n", "")
    # The link's target is a directory of the container now, as dockerd leaves it.
    rc, out, _ = run(berthd, cleanup, "-w", "/d", img, "pwd")
    assert (rc, out) == (0, "/missing\n")


def test_workdir_under_a_link_that_climbs_out(
    berthd: Berthd, cleanup: list[str], load_image: Callable[[bytes], str]
) -> None:
    canary = Path("/tmp") / unique_name("berth-workdir-canary")
    img = load_image(layer_tar({}, symlinks={"e": _UP + str(canary).lstrip("/")}))
    try:
        rc, out, err = run(berthd, cleanup, "-w", "/e/work", img, "sh", "-c", "pwd; ls -ld .")
        assert rc == 0, err
        assert out.splitlines()[0] == f"{canary}/work"
        assert out.splitlines()[1].split()[:4] == ["drwxr-xr-x", "2", "root", "root"]
        assert not canary.exists()
    finally:
        if canary.exists():
            canary.rmdir() if canary.is_dir() else canary.unlink()


@pytest.mark.parametrize("workdir", ["/etc/passwd", "/f", "/etc/passwd/x"])
def test_workdir_onto_a_file(
    berthd: Berthd, cleanup: list[str], load_image: Callable[[bytes], str], workdir: str
) -> None:
    img = load_image(layer_tar({}, symlinks={"f": "etc/group"}))
    rc, out, err = run(berthd, cleanup, "-w", workdir, img, "pwd")
    assert rc == 125, (rc, out, err)  # the CLI's code for a start the daemon refused
    assert out == ""
    assert f"Cannot mkdir: {workdir} is not a directory" in err


def test_plain_missing_workdir_is_made(berthd: Berthd, cleanup: list[str]) -> None:
    rc, out, err = run(berthd, cleanup, "-w", "/new/dir", "busybox", "sh", "-c", "pwd; ls -ld .")
    assert rc == 0, err
    assert out.splitlines()[0] == "/new/dir"
    assert out.splitlines()[1].split()[:4] == ["drwxr-xr-x", "2", "root", "root"]


def test_existing_workdir_is_left_alone(berthd: Berthd, cleanup: list[str]) -> None:
    rc, out, err = run(berthd, cleanup, "-w", "/tmp", "busybox", "sh", "-c", "pwd; ls -ld .")
    assert rc == 0, err
    assert out.splitlines()[0] == "/tmp"
    assert out.splitlines()[1].startswith("drwxrwxrwt")
