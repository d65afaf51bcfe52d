"""End-to-end fixtures: a real berthd on temp paths, driven by the real docker CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class Owned:
    """What one test made on the session daemon, removed after it whether it passed or not,
    so that one failure never leaves names taken or objects counted for the tests after."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def release(self, d: Berthd) -> None:
        # Containers first: they hold their image and volumes.
        for ref in self.containers:
            d.docker("rm", "-f", "-v", ref, check=False)
        for ref in self.images:
            d.docker("rmi", "-f", ref, check=False)
        for name in self.volumes:
            d.docker("volume", "rm", "-f", name, check=False)


@pytest.fixture
def owned(berthd: Berthd) -> Iterator[Owned]:
    made = Owned()
    yield made
    made.release(berthd)


@pytest.fixture
def cleanup(owned: Owned) -> list[str]:
    """Containers (names or IDs) a test made on the session daemon, removed with their
    anonymous volumes after it. Append a name before the command that makes it."""
    return owned.containers


@pytest.fixture
def image_cleanup(owned: Owned) -> list[str]:
    """Image references a test made on the session daemon, removed after its containers."""
    return owned.images


@pytest.fixture
def volume_cleanup(owned: Owned) -> list[str]:
    """Named volumes a test made on the session daemon, removed after its containers."""
    return owned.volumes
