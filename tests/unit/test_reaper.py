"""The reaper: a discarded directory is gone at once and deleted by its thread; what a
crash left in the trash goes at the next start; where no rename can do it, the delete
happens in place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing import wait_for
from berth.utils.reaper import Reaper


def _tree(root: Path, files: int = 50) -> Path:
    (root / "a/b").mkdir(parents=True)
    for i in range(files):
        (root / "a/b" / f"f{i}").write_bytes(b"x" * i)
    os.symlink("/nonexistent", root / "a/dangling")
    return root


@pytest.fixture
def reaper(tmp_path: Path) -> Iterator[Reaper]:
    r = Reaper(tmp_path / "trash")
    r.start()
    yield r
    r.close()


def test_a_discarded_directory_is_gone_at_once_and_deleted_after(
    tmp_path: Path, reaper: Reaper
) -> None:
    victim = _tree(tmp_path / "victim")
    reaper.discard(victim)
    assert not victim.exists()
    wait_for(lambda: not any(reaper.trash.iterdir()), what="the trash emptied")
    reaper.discard(tmp_path / "never-was")  # nothing to discard is not an error


def test_before_start_it_deletes_in_place_and_makes_no_trash(tmp_path: Path) -> None:
    r = Reaper(tmp_path / "trash")
    victim = _tree(tmp_path / "victim")
    r.discard(victim)
    assert not victim.exists()
    assert not r.trash.exists()


def test_what_an_earlier_run_left_in_the_trash_is_deleted_at_start(tmp_path: Path) -> None:
    trash = tmp_path / "trash"
    _tree(trash / "0123456789abcdef")
    _tree(trash / "fedcba9876543210")
    r = Reaper(trash)
    r.start()
    try:
        wait_for(lambda: not any(trash.iterdir()), what="the leftovers deleted")
    finally:
        r.close()


def test_another_filesystem_is_deleted_in_place(reaper: Reaper) -> None:
    if os.stat("/dev/shm").st_dev == os.stat(reaper.trash).st_dev:
        pytest.skip("/dev/shm is on the trash's filesystem here")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        victim = _tree(Path(other) / "victim")
        reaper.discard(victim)  # EXDEV
        assert not victim.exists()
        assert not any(reaper.trash.iterdir())
