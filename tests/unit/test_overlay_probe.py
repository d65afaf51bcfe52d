"""overlay2's support probe: answered by a mount, undone off the start-up path, and a
probe a killed berthd left behind is undone by the next one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from berth.graphdriver import mount as mnt
from berth.graphdriver import new_driver, overlay2
from berth.graphdriver.overlay2 import Overlay2
from berth.utils.mountinfo import mounts_under

pytestmark = pytest.mark.skipif(
    "overlay" not in Path("/proc/filesystems").read_text(), reason="needs overlayfs"
)


def _wait_for_probes() -> None:
    for th in threading.enumerate():
        if th.name == "overlay-probe":
            th.join(10)


def test_the_probe_answers_and_leaves_nothing(tmp_path: Path) -> None:
    assert overlay2.supported(tmp_path)
    _wait_for_probes()
    assert list(tmp_path.iterdir()) == []
    assert mounts_under(str(tmp_path)) == []


def test_a_probe_left_mounted_is_undone_by_the_next(tmp_path: Path) -> None:
    stale = tmp_path / ".overlay-probe-left"
    for d in ("lower", "upper", "work", "merged"):
        (stale / d).mkdir(parents=True)
    mnt.mount(
        "overlay",
        str(stale / "merged"),
        "overlay",
        0,
        f"lowerdir={stale / 'lower'},upperdir={stale / 'upper'},workdir={stale / 'work'}",
    )
    try:
        assert overlay2.supported(tmp_path)
        _wait_for_probes()
        assert not stale.exists()
        assert mounts_under(str(tmp_path)) == []
    finally:
        for mp in mounts_under(str(tmp_path)):
            mnt.unmount(mp)


def test_the_default_driver_is_overlay2_probed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = overlay2.supported

    def counted(root: Path) -> bool:
        calls.append(root)
        return real(root)

    monkeypatch.setattr(overlay2, "supported", counted)
    assert isinstance(new_driver("", tmp_path), Overlay2)
    _wait_for_probes()
    assert calls == [tmp_path]


def test_cleanup_waits_for_the_probe(tmp_path: Path) -> None:
    """A driver made and cleaned up at once (a tool reading a stopped berthd's layers)
    leaves no probe mounted."""
    driver = new_driver("", tmp_path)
    driver.cleanup()
    assert mounts_under(str(tmp_path)) == []
    assert not list(tmp_path.glob(".overlay-probe-*"))
