"""``wait`` on a container with a restart policy: the exit of each run wakes it, as
moby's ``SetRestarting`` does, though the container goes on restarting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from berth.testing import Berthd, inspect_container, unique_name, wait_for


@pytest.fixture
def restarting(berthd: Berthd) -> Iterator[str]:
    """A container that exits 3 as soon as it runs, forever restarted; its back-off grows,
    so it soon spends most of its time in the restarting state."""
    name = unique_name("restarting")
    berthd.docker(
        "run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "exit 3"
    )
    try:
        yield name
    finally:
        berthd.docker("rm", "-f", name, check=False)


def _restarting(d: Berthd, name: str) -> bool:
    st = inspect_container(d, name)["State"]
    return bool(st["Restarting"]) and st["Status"] == "restarting"


def test_docker_wait_returns_the_exit_code_of_a_restarting_container(
    berthd: Berthd, restarting: str
) -> None:
    wait_for(lambda: inspect_container(berthd, restarting)["RestartCount"] >= 1, 30, "a restart")
    proc = berthd.docker("wait", restarting, timeout=90)
    assert proc.stdout.strip() == "3"
    # It is still there and still restarting: wait did not stop it.
    assert inspect_container(berthd, restarting)["HostConfig"]["RestartPolicy"]["Name"] == "always"
    wait_for(lambda: inspect_container(berthd, restarting)["RestartCount"] >= 2, 90, "next restart")


@pytest.mark.parametrize("condition", ["not-running", "next-exit"])
def test_api_wait_returns_when_the_policy_restarts_the_container(
    berthd: Berthd, restarting: str, condition: str
) -> None:
    import docker  # type: ignore[import-untyped]

    client = docker.APIClient(base_url=berthd.host, timeout=90)
    try:
        wait_for(lambda: _restarting(berthd, restarting), 30, "the restarting state")
        # Registered while restarting (Running is true then): the next run's exit ends it.
        result = client.wait(restarting, condition=condition)
    finally:
        client.close()
    assert result == {"StatusCode": 3, "Error": None}


def test_rm_of_a_restarting_container_without_force_is_refused(
    berthd: Berthd, restarting: str
) -> None:
    # The back-off doubles from 100 ms: after a few runs the restarting window is long.
    wait_for(lambda: inspect_container(berthd, restarting)["RestartCount"] >= 4, 60, "restarts")

    def refused_while_restarting() -> str:
        # Between two runs, as the back-off has it: a run lasts a moment, a wait seconds.
        wait_for(lambda: _restarting(berthd, restarting), 30, "the restarting state")
        proc = berthd.docker("rm", restarting, check=False)
        assert proc.returncode != 0, "rm without force removed a restarting container"
        return proc.stderr if "restarting" in proc.stderr else ""

    stderr = wait_for(refused_while_restarting, 60, "a refusal while restarting")
    assert (
        f'cannot remove container "/{restarting}": container is restarting: '
        "stop the container before removing or force remove"
    ) in stderr
    assert inspect_container(berthd, restarting)["State"]["Status"] in ("restarting", "running")
