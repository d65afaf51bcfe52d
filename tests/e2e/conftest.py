"""End-to-end fixtures: a real berthd on temp paths, driven by the real docker CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing import BUSYBOX, DOCKER, Berthd, busybox_rootfs_tar, running_berthd


def _requirements() -> str | None:
    if os.geteuid() != 0:
        return "end-to-end tests need root (overlay mounts, chown)"
    if not os.path.exists(DOCKER):
        return f"the docker CLI is not at {DOCKER}"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} is missing (Debian's busybox-static)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _requirements()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"CI must run the end-to-end tests, but {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("img") / "busybox.tar")


@pytest.fixture(scope="session")
def berthd(busybox_tar: Path) -> Iterator[Berthd]:
    """One daemon for the session, with ``busybox:latest`` imported."""
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


@pytest.fixture
def fresh_berthd(busybox_tar: Path) -> Iterator[Berthd]:
    """A daemon of the test's own, for restarts, kills and bad configurations."""
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


@pytest.fixture
def cleanup(berthd: Berthd) -> Iterator[list[str]]:
    """Containers a test made on the session daemon, removed after it."""
    made: list[str] = []
    yield made
    for ref in made:
        berthd.docker("rm", "-f", ref, check=False)
