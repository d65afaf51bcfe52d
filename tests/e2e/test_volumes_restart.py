"""Volumes across berthd restarts (issue 12): named, anonymous and option volumes survive
a SIGTERM and a SIGKILL of the daemon; a volume a stopped container references is still
refused to ``docker volume rm``; with ``--live-restore`` a running container's tmpfs volume
stays mounted and usable, and is unmounted once that container stops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, inspect_container, running_berthd, wait_for


def _volume_mounts(d: Berthd) -> list[str]:
    vroot = str(d.data_root / "volumes") + "/"
    return [m for m in d.mounts() if m.startswith(vroot)]


def _volumes(d: Berthd) -> dict[str, Any]:
    names = d.docker("volume", "ls", "-q").stdout.split()
    if not names:
        return {}
    return {v["Name"]: v for v in json.loads(d.docker("volume", "inspect", *names).stdout)}


@pytest.fixture
def live(busybox_tar: Path) -> Iterator[Berthd]:
    with running_berthd(["--live-restore"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d
        # live-restore keeps containers running through berthd's stop: remove them even
        # after a failure, so that the daemon's stop leaves no mount behind
        if d.proc is not None:
            d.docker("rm", "-f", "-v", "runner", "holder", check=False)


def _setup(d: Berthd) -> dict[str, Any]:
    """named (with a file, used by the stopped container ``holder``), an anonymous volume of
    ``holder``, and a tmpfs volume used by the running container ``runner``."""
    d.docker("volume", "create", "--label", "keep=1", "named")
    d.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", "tmp")
    d.docker(
        "run", "--name", "holder", "-v", "named:/n", "-v", "/anon", "busybox",
        "sh", "-c", "echo kept > /n/f; echo anon > /anon/f",
    )  # fmt: skip
    d.docker(
        "run", "-d", "--name", "runner", "-v", "tmp:/t", "busybox",
        "sh", "-c", "echo before > /t/f; exec sleep 300",
    )  # fmt: skip
    wait_for(
        lambda: d.docker("exec", "runner", "cat", "/t/f", check=False).stdout == "before\n",
        what="the runner's file",
    )
    anon = next(
        m["Name"] for m in inspect_container(d, "holder")["Mounts"] if m["Destination"] == "/anon"
    )
    before = _volumes(d)
    assert set(before) == {"named", "tmp", anon}
    return {"anon": anon, "volumes": before}


def _check(d: Berthd, state: dict[str, Any], what: str) -> None:
    after = _volumes(d)
    assert after == state["volumes"], f"after {what}: {after} != {state['volumes']}"
    assert after["tmp"]["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    out = d.docker("run", "--rm", "-v", "named:/n", "busybox", "cat", "/n/f").stdout
    assert out == "kept\n", what
    data = Path(after[state["anon"]]["Mountpoint"])
    assert (data / "f").read_text() == "anon\n", what
    # still in use by the stopped holder
    proc = d.docker("volume", "rm", "named", check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr, (what, proc.stderr)
    proc = d.docker("volume", "rm", state["anon"], check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr, (what, proc.stderr)
    # the running container's tmpfs volume: still the same mount, still usable
    assert inspect_container(d, "runner")["State"]["Running"], what
    out = d.docker("exec", "runner", "sh", "-c", "cat /t/f; grep ' /t ' /proc/mounts").stdout
    lines = out.splitlines()
    assert lines[0] == "before" and lines[-1].split()[:3] == ["tmpfs", "/t", "tmpfs"], (what, out)
    d.docker("exec", "runner", "sh", "-c", f"echo {what} >> /t/f")
    # the host side: the volume's _data is still a mount, once
    tmp_data = str(d.data_root / "volumes" / "tmp" / "_data")
    assert _volume_mounts(d).count(tmp_data) == 1, (what, _volume_mounts(d))
    proc = d.docker("volume", "rm", "tmp", check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr, (what, proc.stderr)


def test_volumes_survive_sigterm_and_sigkill_with_live_restore(live: Berthd) -> None:
    d = live
    state = _setup(d)
    pid = inspect_container(d, "runner")["State"]["Pid"]

    assert d.stop() == 0
    d.start()
    _check(d, state, "sigterm")
    d.kill()
    d.start()
    _check(d, state, "sigkill")
    assert inspect_container(d, "runner")["State"]["Pid"] == pid

    out = d.docker("exec", "runner", "cat", "/t/f").stdout
    assert out == "before\nsigterm\nsigkill\n"
    d.docker("stop", "-t", "0", "runner")
    wait_for(lambda: not _volume_mounts(d), what="the tmpfs volume unmounted after the stop")
    d.docker("rm", "runner", "holder")
    d.docker("volume", "rm", "named", "tmp", state["anon"])
    assert _volumes(d) == {}
    assert not _volume_mounts(d)


def test_sigkill_without_live_restore_unmounts_the_volumes_of_stopped_leftovers(
    fresh_berthd: Berthd,
) -> None:
    """Without live-restore a container left running is stopped at boot; its option
    volume is unmounted then, and nothing else is lost."""
    d = fresh_berthd
    d.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", "tmp")
    d.docker("run", "-d", "--name", "runner", "-v", "tmp:/t", "-v", "/anon", "busybox",
             "sleep", "300")  # fmt: skip
    wait_for(lambda: _volume_mounts(d), what="the tmpfs volume mounted")
    anon = next(
        m["Name"] for m in inspect_container(d, "runner")["Mounts"] if m["Destination"] == "/anon"
    )
    d.kill()
    d.start()
    wait_for(lambda: not inspect_container(d, "runner")["State"]["Running"], what="runner stopped")
    wait_for(lambda: not _volume_mounts(d), what="the tmpfs volume unmounted at boot")
    assert set(_volumes(d)) == {"tmp", anon}
    proc = d.docker("volume", "rm", "tmp", check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr, proc.stderr
    # the volume can be mounted again by the restarted container
    d.docker("start", "runner")
    out = d.docker("exec", "runner", "grep", " /t ", "/proc/mounts").stdout
    assert out.split()[:3] == ["tmpfs", "/t", "tmpfs"], out
    d.docker("rm", "-f", "-v", "runner")
    wait_for(lambda: not _volume_mounts(d), what="the tmpfs volume unmounted after rm -f")
    assert set(_volumes(d)) == {"tmp"}
    d.docker("volume", "rm", "tmp")
