"""Health checks run as dockerd runs them: probes exec'd in the container, State.Health,
health_status events, the ps status suffix and ``health`` filter, stop and restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from berth.testing import Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect


def health(berthd: Berthd, ref: str) -> Any:
    return inspect(berthd, ref)["State"].get("Health")


def wait_health(berthd: Berthd, ref: str, status: str, timeout: float = 30) -> Any:
    def check() -> Any:
        h = health(berthd, ref)
        return h if h is not None and h["Status"] == status else None

    return wait_for(check, timeout, f"{ref} to become {status}")


def ps_status(berthd: Berthd, name: str) -> str:
    return berthd.docker(
        "ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}"
    ).stdout.strip()


def ps_health(berthd: Berthd, name: str, status: str) -> list[str]:
    out = berthd.docker(
        "ps", "--filter", f"name={name}", "--filter", f"health={status}", "--format", "{{.Names}}"
    )
    return out.stdout.split()


def health_events(berthd: Berthd, cid: str, since: float) -> list[str]:
    out = berthd.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", f"container={cid}", "--format", "{{json .}}",
    ).stdout  # fmt: skip
    actions = [json.loads(line)["Action"] for line in out.splitlines()]
    return [a for a in actions if a.startswith("health_status")]


def test_starting_healthy_unhealthy(berthd: Berthd, cleanup: list[str]) -> None:
    """Failures inside the start period keep it starting; a success makes it healthy;
    Retries failures in a row make it unhealthy."""
    name = unique_name("health")
    cleanup.append(name)
    t0 = time.time() - 1
    berthd.docker(
        "run", "-d", "--name", name,
        "--health-cmd", "cat /tmp/ok", "--health-interval", "1s", "--health-start-interval", "1s",
        "--health-start-period", "10m", "--health-retries", "2", "--health-timeout", "10s",
        "busybox", "sleep", "600",
    )  # fmt: skip
    cid = inspect(berthd, name)["Id"]
    # probes fail (no /tmp/ok) but, inside the start period, do not count
    h = wait_for(
        lambda: (x := health(berthd, name)) and len(x["Log"] or []) >= 2 and x,
        what="two probes",
    )
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    entry = h["Log"][-1]
    assert entry["ExitCode"] == 1 and "No such file" in entry["Output"]
    assert entry["Start"] <= entry["End"]
    assert "(health: starting)" in ps_status(berthd, name)
    assert ps_health(berthd, name, "starting") == [name]

    berthd.docker("exec", name, "sh", "-c", "echo fine > /tmp/ok")
    h = wait_health(berthd, name, "healthy")
    assert h["FailingStreak"] == 0 and h["Log"][-1] == {**h["Log"][-1], "ExitCode": 0}
    assert h["Log"][-1]["Output"] == "fine\n"
    assert "(healthy)" in ps_status(berthd, name)
    assert ps_health(berthd, name, "healthy") == [name]
    assert ps_health(berthd, name, "starting") == []

    berthd.docker("exec", name, "rm", "/tmp/ok")
    h = wait_health(berthd, name, "unhealthy")
    assert h["FailingStreak"] >= 2
    assert 1 <= len(h["Log"]) <= 5
    assert "(unhealthy)" in ps_status(berthd, name)
    assert ps_health(berthd, name, "unhealthy") == [name]
    events = health_events(berthd, cid, t0)
    assert events[:2] == ["health_status: healthy", "health_status: unhealthy"]


def test_start_interval_probes_during_start_period(berthd: Berthd, cleanup: list[str]) -> None:
    """With Interval ten minutes, only StartInterval (while starting, in a start period longer
    than Interval) can bring a probe within seconds; the monitor stops with the container,
    leaving it unhealthy, and starts again with it."""
    name = unique_name("health-si")
    cleanup.append(name)
    berthd.docker(
        "run", "-d", "--name", name,
        "--health-cmd", "true", "--health-interval", "10m", "--health-start-interval", "1s",
        "--health-start-period", "1h", "busybox", "sleep", "600",
    )  # fmt: skip
    h = wait_health(berthd, name, "healthy")
    assert [e["ExitCode"] for e in h["Log"]] == [0]
    berthd.docker("stop", "-t", "0", name)
    h = health(berthd, name)
    assert h is not None and h["Status"] == "unhealthy"  # as moby leaves it
    assert "Exited" in ps_status(berthd, name)
    berthd.docker("start", name)
    h = wait_health(berthd, name, "healthy")
    assert len(h["Log"]) == 2  # the log carries over a restart


def test_timeout_and_output_limit(berthd: Berthd, cleanup: list[str]) -> None:
    slow, loud = unique_name("health-slow"), unique_name("health-loud")
    cleanup += [slow, loud]
    berthd.docker(
        "run", "-d", "--name", slow, "--health-cmd", "echo started; sleep 60",
        "--health-interval", "1s", "--health-timeout", "1s", "--health-retries", "1",
        "busybox", "sleep", "600",
    )  # fmt: skip
    berthd.docker(
        "run", "-d", "--name", loud,
        "--health-cmd", "head -c 5000 /dev/zero | tr '\\0' a", "--health-interval", "1s",
        "busybox", "sleep", "600",
    )  # fmt: skip
    h = wait_health(berthd, slow, "unhealthy")
    assert h["Log"][0]["ExitCode"] == -1
    assert h["Log"][0]["Output"] == "Health check exceeded timeout (1s): started\n"
    h = wait_health(berthd, loud, "healthy")
    assert h["Log"][-1]["Output"] == "a" * 4096 + "..."


def test_image_healthcheck_and_none(berthd: Berthd, busybox_tar: Path, cleanup: list[str]) -> None:
    """HEALTHCHECK from the image runs; --no-healthcheck (NONE) turns it off."""
    image = unique_name("healthimg")
    with_hc, without = unique_name("health-img"), unique_name("health-none")
    cleanup += [with_hc, without]
    berthd.docker(
        "import", "--change", 'CMD ["sh"]',
        "--change", 'HEALTHCHECK --interval=1s --timeout=5s CMD ["sh", "-c", "exit 0"]',
        str(busybox_tar), image,
    )  # fmt: skip
    try:
        berthd.docker("run", "-d", "--name", with_hc, image, "sleep", "600")
        berthd.docker("run", "-d", "--name", without, "--no-healthcheck", image, "sleep", "600")
        h = wait_health(berthd, with_hc, "healthy")
        assert h["Log"][-1]["ExitCode"] == 0
        assert health(berthd, without) is None
        assert ps_health(berthd, without, "none") == [without]
    finally:
        berthd.docker("rm", "-f", with_hc, without, check=False)
        berthd.docker("rmi", image, check=False)


def test_pause_stops_probing_and_unpause_resumes_it(berthd: Berthd, cleanup: list[str]) -> None:
    """moby's updateHealthMonitor: a paused container is not probed and reads unhealthy;
    unpaused, its probes go on (the status is not reset to starting)."""
    name = unique_name("health-pause")
    cleanup.append(name)
    berthd.docker(
        "run", "-d", "--name", name, "--health-cmd", "true", "--health-interval", "1s",
        "--health-start-interval", "1s", "busybox", "sleep", "600",
    )  # fmt: skip
    wait_health(berthd, name, "healthy")
    berthd.docker("pause", name)
    paused = health(berthd, name)
    assert paused["Status"] == "unhealthy"
    berthd.docker("unpause", name)
    last = paused["Log"][-1]["End"]

    def probed_after_unpause() -> Any:
        h = health(berthd, name)
        return h if h["Status"] == "healthy" and h["Log"][-1]["End"] > last else None

    wait_for(probed_after_unpause, 30, "a probe after the unpause")
