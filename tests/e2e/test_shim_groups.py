"""``--shim-group``: containers sharing one containerd shim run, survive a daemon restart
(live-restore) and the removal of the container their shim was started for; when the
shim dies, every container in it is reported exited with the reason and restarted by its
policy; Compose v2 projects get one shim each. No shim socket is left behind."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.runtime import _strays
from berth.runtime.supervisor import Supervisor
from berth.testing import Berthd, inspect_container, running_berthd, unique_name, wait_for
from tests.e2e.compose import COMPOSE_FILE, Project, compose_binary


def _shims(d: Berthd) -> dict[int, str]:
    """pid -> container ID named on the command line, of the shims serving *d*."""
    socket = Supervisor(d.data_root, d.exec_root).socket
    return {s.pid: s.container_id for s in _strays.shims(socket, "berth")}


def _shim_of(d: Berthd, ref: str) -> int:
    """The shim a running container's process runs under (it is the process's parent)."""
    pid = inspect_container(d, ref)["State"]["Pid"]
    assert pid, f"{ref} is not running"
    parent = _strays.parent_pid(pid)
    assert parent is not None
    return parent


def _sockets() -> set[str]:
    try:
        return set(os.listdir(_strays.SHIM_SOCKET_DIR))
    except FileNotFoundError:
        return set()


@pytest.fixture
def sockets_kept() -> Iterator[None]:
    """The daemons of the test leave no shim socket behind (a group's shim cannot
    remove its own once the container it started for is gone)."""
    before = _sockets()
    yield
    assert _sockets() - before == set()


def _daemon(busybox_tar: Path, *args: str) -> Iterator[Berthd]:
    with running_berthd(extra_args=list(args)) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


@pytest.fixture
def grouped(busybox_tar: Path, sockets_kept: None) -> Iterator[Berthd]:
    yield from _daemon(busybox_tar, "--shim-group", "all", "--live-restore")


def test_one_shim_for_all_through_restart_and_its_death(grouped: Berthd) -> None:
    d = grouped
    first = d.docker("run", "-d", "busybox", "sleep", "600").stdout.strip()
    kept = d.docker("run", "-d", "--restart", "always", "busybox", "sleep", "600").stdout.strip()
    plain = d.docker("run", "-d", "busybox", "sleep", "600").stdout.strip()
    try:
        shim = _shim_of(d, first)
        assert _shims(d) == {shim: first}
        assert _shim_of(d, kept) == _shim_of(d, plain) == shim

        # The shim is named after the first container; it serves on once that is gone,
        # and a restarted daemon (which kills stray shims) keeps it and the containers.
        d.docker("rm", "-f", first)
        assert d.docker("exec", plain, "echo", "in").stdout == "in\n"
        pids = {c: inspect_container(d, c)["State"]["Pid"] for c in (kept, plain)}
        d.kill()
        d.start()
        assert {c: inspect_container(d, c)["State"]["Pid"] for c in (kept, plain)} == pids
        assert list(_shims(d)) == [shim]
        assert d.docker("exec", kept, "echo", "in").stdout == "in\n"

        # The shim dies: both are reported exited, with the reason, and the policy
        # restarts the one that has one (in a new shim).
        os.kill(shim, signal.SIGKILL)
        state = wait_for(
            lambda: (s := inspect_container(d, plain)["State"])["Status"] == "exited" and s,
            what="the container of the dead shim to be reported exited",
        )
        assert state["ExitCode"] == 137
        assert f"containerd-shim-runc-v2 (pid {shim})" in state["Error"], state
        assert "died" in state["Error"]
        restarted = wait_for(
            lambda: (
                (c := inspect_container(d, kept))["RestartCount"] == 1
                and c["State"]["Status"] == "running"
                and c
            ),
            what="the container with a restart policy to run again",
        )
        assert _shim_of(d, kept) != shim
        assert restarted["State"]["Error"] == ""
        dies = d.docker(
            "events", "--since", "60s", "--until", f"{time.time() + 1:.0f}", "--filter", "event=die",
            "--format", "{{.ID}} {{index .Actor.Attributes \"exitCode\"}}",
        ).stdout.split("\n")  # fmt: skip
        assert f"{plain} 137" in dies and f"{kept} 137" in dies

        # The new shim was started for `kept`: once that is removed, the shim serves
        # `late` alone and, when that goes too, exits without the bundle it would find
        # its socket's name in: berthd removes the socket at shutdown (sockets_kept).
        late = d.docker("run", "-d", "busybox", "sleep", "600").stdout.strip()
        assert _shim_of(d, late) == _shim_of(d, kept)
        d.docker("rm", "-f", kept)
        assert d.docker("exec", late, "echo", "in").stdout == "in\n"
        d.docker("rm", "-f", late)
    finally:
        d.docker("rm", "-f", first, kept, plain, check=False)
    wait_for(lambda: not _shims(d), what="the shims to exit")


@pytest.fixture
def by_project(busybox_tar: Path, sockets_kept: None) -> Iterator[Berthd]:
    yield from _daemon(busybox_tar, "--shim-group", "project")


def test_a_compose_project_shares_one_shim(by_project: Berthd, tmp_path: Path) -> None:
    d = by_project
    shutil.copy(COMPOSE_FILE, tmp_path / "compose.yaml")
    project = Project(d, compose_binary("v2"), unique_name("shimgrp"), tmp_path)
    alone = ""
    try:
        project.run("up", "-d")
        web, client = (
            project.run("ps", "-q", service).stdout.strip() for service in ("web", "client")
        )
        # Names resolve and packets flow between the containers of the one shim.
        wait_for(
            lambda: "client-done" in d.docker("logs", client).stdout,
            timeout=30,
            what="the client to reach the web service",
        )
        assert _shim_of(d, web) == _shim_of(d, client)
        alone = d.docker("run", "-d", "busybox", "sleep", "600").stdout.strip()
        assert _shim_of(d, alone) != _shim_of(d, web)
        assert len(_shims(d)) == 2
        # The project's shim is killed: both services exit with the reason, the other
        # container runs on; the dead shim's socket is berthd's to remove (sockets_kept).
        shim = _shim_of(d, web)
        os.kill(shim, signal.SIGKILL)
        for service in (web, client):
            state = wait_for(
                lambda s=service: (
                    (st := inspect_container(d, s)["State"])["Status"] == "exited" and st
                ),
                what="the project's containers to be reported exited",
            )
            assert f"(pid {shim})" in state["Error"], state
        assert inspect_container(d, alone)["State"]["Status"] == "running"
        project.run("down")
        assert list(_shims(d)) == [_shim_of(d, alone)]
    finally:
        project.remove()
        if alone:
            d.docker("rm", "-f", alone, check=False)


def test_containers_started_at_once_share_the_one_shim(grouped: Berthd) -> None:
    """Compose starts a project's services in parallel: the first task of a group makes its
    shim, and one started meanwhile must join it, not set up a second that serves nothing
    (the shim's own start can miss a socket still being set up; seen under CI's load)."""
    d = grouped
    for _ in range(3):
        ids = [d.docker("create", "busybox", "sleep", "600").stdout.strip() for _ in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda cid: d.docker("start", cid), ids))
        assert len({_shim_of(d, cid) for cid in ids}) == 1
        assert len(_shims(d)) == 1
        d.docker("rm", "-f", *ids)
        wait_for(lambda: not _shims(d), what="the shim to exit with its last task")
