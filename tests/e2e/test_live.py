"""berthd and containerd going away: live restore, containerd restarts, terminals."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from berth.runtime.supervisor import Supervisor
from berth.testing import (
    DOCKER,
    Berthd,
    read_pty_until,
    running_berthd,
    unique_name,
    wait_for,
    wait_for_log,
)
from berth.testing import inspect_container as inspect


def containerd_pid(d: Berthd) -> int:
    return int((d.exec_root / "containerd" / "containerd.pid").read_text())


def test_live_restore_keeps_containers_running(busybox_tar: Path) -> None:
    with running_berthd(["--live-restore"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        d.docker(
            "run",
            "-d",
            "--name",
            "survivor",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.1; done",
        )
        pid = inspect(d, "survivor")["State"]["Pid"]
        wait_for(lambda: "n3" in d.docker("logs", "survivor").stdout, what="output")
        d.kill()  # berthd gone without a word; containerd and the shim stay
        os.kill(pid, 0)
        time.sleep(0.5)  # output produced meanwhile waits in the FIFO
        d.start()
        st = inspect(d, "survivor")["State"]
        assert st["Running"] and st["Pid"] == pid
        before = len(d.docker("logs", "survivor").stdout.split())
        wait_for(
            lambda: len(d.docker("logs", "survivor").stdout.split()) > before + 5,
            what="more output",
        )
        numbers = [int(w[1:]) for w in d.docker("logs", "survivor").stdout.split()]
        assert numbers == list(range(len(numbers)))  # nothing lost while berthd was away
        assert d.docker("exec", "survivor", "echo", "still here").stdout == "still here\n"
        d.docker("stop", "-t", "0", "survivor")
        assert inspect(d, "survivor")["State"]["ExitCode"] == 137
        d.docker("rm", "survivor")


def test_health_checks_go_on_after_a_live_restore(busybox_tar: Path) -> None:
    """moby's restore starts a restored container's health monitor again."""
    with running_berthd(["--live-restore"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        d.docker(
            "run", "-d", "--name", "probed", "--health-cmd", "true",
            "--health-interval", "1s", "--health-start-interval", "1s",
            "busybox", "sleep", "300",
        )  # fmt: skip
        wait_for(lambda: (inspect(d, "probed")["State"].get("Health") or {}).get("Status")
                 == "healthy", what="healthy")  # fmt: skip
        before = inspect(d, "probed")["State"]["Health"]["Log"][-1]["End"]
        d.kill()
        d.start()

        def probed_again() -> bool:
            health = inspect(d, "probed")["State"]["Health"]
            return (
                health["Status"] == "healthy"
                and (health["Log"] or [{}])[-1].get("End", "") > before
            )

        wait_for(probed_again, what="a probe after the restore")
        d.docker("rm", "-f", "probed")


def test_without_live_restore_leftovers_are_stopped(busybox_tar: Path) -> None:
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        d.docker("run", "-d", "--name", "orphan", "busybox", "sleep", "300")
        pid = inspect(d, "orphan")["State"]["Pid"]
        d.kill()
        d.start()
        st = inspect(d, "orphan")["State"]
        assert not st["Running"] and st["Status"] == "exited"
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the process to die")
        d.docker("rm", "orphan")


def test_containerd_is_restarted_when_it_dies(busybox_tar: Path) -> None:
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        d.docker("run", "-d", "--name", "through-crash", "busybox", "sleep", "300")
        old = containerd_pid(d)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: containerd_pid(d) != old, what="a new containerd")
        wait_for(
            lambda: (
                d.docker("run", "--rm", "busybox", "echo", "back", check=False).stdout == "back\n"
            ),
            what="runs again",
        )
        assert inspect(d, "through-crash")["State"]["Running"]
        d.docker("kill", "through-crash")
        assert inspect(d, "through-crash")["State"]["ExitCode"] == 137
        d.docker("rm", "through-crash")


def test_interactive_tty_and_detach_keys(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("interactive")
    cleanup.append(name)
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(DOCKER, [DOCKER, "run", "-it", "--name", name, "busybox", "sh"], berthd.env())
    try:
        read_pty_until(fd, b"#")
        os.write(fd, b"echo $((40+2))\r")
        assert b"42" in read_pty_until(fd, b"42")
        os.write(fd, b"\x10\x11")  # ctrl-p ctrl-q: detach, leave it running
        read_pty_until(fd, b"read escape sequence")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        os.close(fd)
    assert inspect(berthd, name)["State"]["Running"]
    # Attach again and leave through the shell this time.
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(DOCKER, [DOCKER, "attach", name], berthd.env())
    try:
        os.write(fd, b"echo attached-again\r")
        read_pty_until(fd, b"attached-again")
        os.write(fd, b"exit 9\r")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 9
    finally:
        os.close(fd)
    assert inspect(berthd, name)["State"]["ExitCode"] == 9
    logs = berthd.docker("logs", name).stdout
    assert "attached-again" in logs  # a TTY's output is logged raw


def test_log_rotation(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("rotating")
    cleanup.append(name)
    berthd.docker(
        "run", "--name", name, "--log-opt", "max-size=10k", "--log-opt", "max-file=3",
        "busybox", "sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
    )  # fmt: skip
    try:
        c = inspect(berthd, name)
        log = Path(c["LogPath"])
        rotated = sorted(p.name for p in log.parent.iterdir() if p.name.startswith(log.name))
        assert rotated == [log.name, log.name + ".1", log.name + ".2"]
        for p in log.parent.iterdir():
            if p.name.startswith(log.name):
                assert p.stat().st_size < 12 * 1024
        lines = berthd.docker("logs", name).stdout.split()
        assert lines[-1] == "line-1999"
        numbers = [int(x.split("-")[1]) for x in lines]
        assert numbers == list(range(numbers[0], 2000))  # contiguous across the rotated files
        assert berthd.docker("logs", "--tail", "3", name).stdout.split() == [
            "line-1997",
            "line-1998",
            "line-1999",
        ]
    finally:
        berthd.docker("rm", "-f", name)


def test_stop_uses_the_stop_signal(berthd: Berthd) -> None:
    name = unique_name("graceful")
    berthd.docker(
        "run", "-d", "--name", name, "--stop-signal", "SIGUSR2", "busybox", "sh", "-c",
        "trap 'echo bye; exit 0' USR2; echo trap-set; while true; do sleep 0.1; done",
    )  # fmt: skip
    try:
        wait_for_log(berthd, name, "trap-set")
        berthd.docker("stop", name)
        st = inspect(berthd, name)["State"]
        assert st["ExitCode"] == 0  # the trap ran: no SIGKILL fallback (that would be 137)
        assert "bye" in berthd.docker("logs", name).stdout
    finally:
        berthd.docker("rm", "-f", name)


def test_events_stream(berthd: Berthd) -> None:
    since = str(int(time.time()) - 1)
    name = unique_name("eventful")
    berthd.docker("run", "--rm", "--name", name, "busybox", "true")
    out = berthd.docker(
        "events",
        "--since",
        since,
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        f"container={name}",
        "--format",
        "{{.Action}}",
    ).stdout.split()
    assert out[:1] == ["create"]
    assert {"start", "die", "destroy"} <= set(out)
    proc = subprocess.run(
        [
            DOCKER,
            "events",
            "--since",
            since,
            "--until",
            str(int(time.time()) + 1),
            "--format",
            "{{json .}}",
        ],
        env=berthd.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    first = json.loads(proc.stdout.splitlines()[0])
    assert first["Type"] in ("container", "image") and "timeNano" in first


def test_logs_since_and_until(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("timed")
    cleanup.append(name)
    berthd.docker("run", "--name", name, "busybox", "sh", "-c", "echo early; sleep 1.5; echo late")
    try:
        lines = berthd.docker("logs", "-t", name).stdout.splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["early", "late"]
        late_at = lines[1].split(" ", 1)[0]
        assert berthd.docker("logs", "--since", late_at, name).stdout == "late\n"
        assert berthd.docker("logs", "--until", late_at[:19] + "Z", name).stdout == "early\n"
        assert berthd.docker("logs", "--since", "1h", name).stdout == "early\nlate\n"
    finally:
        berthd.docker("rm", "-f", name)


def test_exec_with_a_terminal(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("exec-tty")
    cleanup.append(name)
    berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    try:
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(DOCKER, [DOCKER, "exec", "-it", name, "sh"], berthd.env())
        try:
            read_pty_until(fd, b"#")
            os.write(fd, b"tty; exit 3\r")
            assert b"/dev/pts/" in read_pty_until(fd, b"/dev/pts/")
            _, status = os.waitpid(pid, 0)
            assert os.WEXITSTATUS(status) == 3
        finally:
            os.close(fd)
    finally:
        berthd.docker("rm", "-f", name)


def test_an_external_containerd_is_used_not_started(busybox_tar: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="berth-ctrd-"))
    external = Supervisor(base / "data", base / "exec")
    external.start()
    try:
        with running_berthd(["--containerd", "unix://" + external.socket]) as d:
            d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
            assert (
                d.docker("run", "--rm", "busybox", "echo", "via external").stdout
                == "via external\n"
            )
            assert not (d.exec_root / "containerd" / "containerd.pid").exists()
        os.kill(int(external.pidfile.read_text()), 0)  # berthd left it running
    finally:
        external.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_restart_policies_after_a_daemon_restart(busybox_tar: Path) -> None:
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        for name, policy in (("always", "always"), ("unless", "unless-stopped"), ("never", "no")):
            d.docker(
                "run", "-d", "--name", name, "--restart", policy, "--stop-timeout", "1",
                "busybox", "sleep", "300",
            )  # fmt: skip
        d.docker(
            "run",
            "-d",
            "--name",
            "stopped",
            "--restart",
            "unless-stopped",
            "busybox",
            "sleep",
            "300",
        )
        d.docker("stop", "-t", "0", "stopped")
        assert d.stop() == 0  # dockerd's shutdown: every container is stopped
        d.start()
        wait_for(
            lambda: (
                inspect(d, "always")["State"]["Running"]
                and inspect(d, "unless")["State"]["Running"]
            ),
            what="the policies to bring containers back",
        )
        assert not inspect(d, "never")["State"]["Running"]
        assert not inspect(d, "stopped")["State"]["Running"]
        assert d.docker("exec", "always", "echo", "back").stdout == "back\n"
        d.docker("rm", "-f", "always", "unless", "never", "stopped")
