"""End-to-end fixtures: a real berthd on temp paths, driven by the real docker CLI."""

from __future__ import annotations

import gc
import json
import os
import warnings
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


class LeakWarning(UserWarning):
    """A test left containers, images or volumes on the session daemon."""


def _objects(d: Berthd) -> set[str]:
    """Everything on the daemon, through the API (a CLI call per kind would cost more)."""
    found: set[str] = set()
    for kind, path in (("container", "/containers/json?all=1"), ("image", "/images/json?all=1")):
        status, _, body = d.request("GET", path)
        if status == 200:
            found |= {f"{kind} {obj['Id'][:19]} {obj.get('Names') or obj.get('RepoTags')}"
                      for obj in json.loads(body)}  # fmt: skip
    status, _, body = d.request("GET", "/volumes")
    if status == 200:
        found |= {f"volume {v['Name']}" for v in json.loads(body)["Volumes"] or []}
    return found


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Warn, naming the test, about what it left on the session daemon after its cleanup;
    such objects are what makes the counts of later tests depend on the order."""
    if "berthd" not in request.fixturenames:
        yield
        gc.collect()
        return
    d: Berthd = request.getfixturevalue("berthd")
    before = _objects(d)
    yield
    # A socket or file a test forgot is reported when it is collected: here, by its test,
    # rather than as an unraisable warning in whichever test runs when the GC does.
    gc.collect()
    left = _objects(d) - before
    if left:
        warnings.warn(f"{request.node.nodeid} left {sorted(left)}", LeakWarning, stacklevel=1)


@pytest.fixture
def testcontainers_env(berthd: Berthd, monkeypatch: pytest.MonkeyPatch) -> Berthd:
    """testcontainers (and the docker-py under it) on berthd's socket, Ryuk disabled:
    its image would have to be pulled."""
    env = berthd.env()
    monkeypatch.setenv("DOCKER_HOST", berthd.host)
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.delenv("TC_HOST", raising=False)
    monkeypatch.delenv("TESTCONTAINERS_HOST_OVERRIDE", raising=False)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.config import testcontainers_config

    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "tc_host_override", None)
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", None)
    return berthd
