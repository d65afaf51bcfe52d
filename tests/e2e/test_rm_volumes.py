"""``docker rm -v`` and ``--rm`` remove the container's anonymous volumes (``-v /path``,
``--mount type=volume`` without a source, the image's ``VOLUME``s); named volumes and binds stay."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing import Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect


@pytest.fixture
def image(berthd: Berthd, busybox_tar: Path) -> Iterator[str]:
    """busybox with a ``VOLUME /imgvol``."""
    name = unique_name("volimg")
    berthd.docker(
        "import", "--change", 'CMD ["sh"]', "--change", "VOLUME /imgvol", str(busybox_tar), name
    )
    yield name
    berthd.docker("rmi", name, check=False)


@pytest.fixture
def named(berthd: Berthd, volume_cleanup: list[str]) -> str:
    """A named volume's name, removed after the test."""
    name = unique_name("named")
    volume_cleanup.append(name)
    return name


def volumes(berthd: Berthd, ref: str) -> dict[str, dict[str, str]]:
    """Destination -> mount of the container's volumes."""
    return {m["Destination"]: m for m in inspect(berthd, ref)["Mounts"] if m["Type"] == "volume"}


def volume_dir(berthd: Berthd, name: str) -> Path:
    return berthd.data_root / "volumes" / name


def run_with_volumes(
    berthd: Berthd, name: str, image: str, named: str, bind: Path, *extra: str
) -> dict[str, dict[str, str]]:
    script = "for d in /anon /mnt /imgvol /named /bind; do echo x > $d/f; done"
    berthd.docker(
        "run", *extra, "--name", name, "-v", "/anon", "--mount", "type=volume,target=/mnt",
        "-v", f"{named}:/named", "-v", f"{bind}:/bind", image, "sh", "-c", script,
    )  # fmt: skip
    vols = volumes(berthd, name)
    assert set(vols) == {"/anon", "/mnt", "/imgvol", "/named"}
    for dest, m in vols.items():
        assert (Path(m["Source"]) / "f").read_text() == "x\n", dest
    return vols


def test_rm_v_removes_anonymous_volumes_only(
    berthd: Berthd, cleanup: list[str], image: str, named: str, tmp_path: Path
) -> None:
    name = unique_name("rmv")
    cleanup.append(name)
    since = time.time() - 1
    vols = run_with_volumes(berthd, name, image, named, tmp_path)
    anonymous = [vols[d]["Name"] for d in ("/anon", "/mnt", "/imgvol")]
    berthd.docker("rm", "-v", name)
    for vol in anonymous:
        assert not volume_dir(berthd, vol).exists(), vol
    assert (volume_dir(berthd, named) / "_data" / "f").read_text() == "x\n"
    assert (tmp_path / "f").read_text() == "x\n"
    out = berthd.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", "type=volume", "--format", "{{json .}}",
    ).stdout  # fmt: skip
    destroyed = {
        e["Actor"]["ID"] for e in map(json.loads, out.splitlines()) if e["Action"] == "destroy"
    }
    assert set(anonymous) <= destroyed and named not in destroyed


def test_rm_without_v_keeps_volumes(
    berthd: Berthd, cleanup: list[str], image: str, named: str, tmp_path: Path
) -> None:
    name = unique_name("rmkeep")
    cleanup.append(name)
    vols = run_with_volumes(berthd, name, image, named, tmp_path)
    try:
        berthd.docker("rm", name)
        for m in vols.values():
            assert (Path(m["Source"]) / "f").read_text() == "x\n"
    finally:
        for d in ("/anon", "/mnt", "/imgvol"):
            berthd.docker("volume", "rm", "-f", vols[d]["Name"], check=False)


def test_auto_remove_removes_anonymous_volumes(
    berthd: Berthd, cleanup: list[str], image: str, named: str, tmp_path: Path
) -> None:
    name = unique_name("autorm")
    cleanup.append(name)  # if --rm failed to
    gate = "while [ ! -e /anon/go ]; do sleep 0.05; done"
    berthd.docker(
        "run", "-d", "--rm", "--name", name, "-v", "/anon", "-v", f"{named}:/named", image,
        "sh", "-c", f"echo x > /named/f; echo x > /imgvol/f; {gate}",
    )  # fmt: skip
    vols = volumes(berthd, name)
    anon = Path(vols["/anon"]["Source"])
    (anon / "go").touch()  # the container exits, and --rm removes it
    wait_for(
        lambda: berthd.docker("ps", "-aq", "--filter", f"name={name}").stdout == "",
        what="auto-removal",
    )
    wait_for(lambda: not volume_dir(berthd, vols["/anon"]["Name"]).exists(), what="/anon gone")
    assert not volume_dir(berthd, vols["/imgvol"]["Name"]).exists()
    assert (volume_dir(berthd, named) / "_data" / "f").read_text() == "x\n"
