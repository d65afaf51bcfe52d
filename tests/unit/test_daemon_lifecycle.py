"""The daemon's container lifecycle against a fake runtime (no containerd, no runc).

The daemon runs unchanged: real layer store (vfs) on a temporary data root, real
OCI specs, real stdio FIFOs read on an asyncio loop in a background thread; only
the processes are scripted (:mod:`tests.unit.fakeruntime`).  The tests wait for
events (exits, waiters, threads), never for a duration, and assert exact states.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.container.container import Container, Record
from berth.daemon import exec as exec_module
from berth.daemon.restart_policy import BACKOFF_MAX, RestartManager
from berth.runtime.base import Stdio, TaskStatus
from berth.types.container import Config, ExecOptions, HostConfig, RestartPolicy
from berth.utils.timefmt import ZERO_TIME, format_rfc3339_nano, now_ns
from tests.unit.daemonharness import (
    PROGRAMS,
    SIGHUP,
    SIGKILL,
    SIGTERM,
    SIGUSR1,
    TIMEOUT,
    Harness,
    open_fds_under,
    rootfs_tar,
    wait_until,
)
from tests.unit.fakeruntime import FakeRuntime, Program, exec_not_found_message


@pytest.fixture(scope="module")
def image_tar() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="berth-lifecycle-img-"))
    try:
        yield rootfs_tar(tmp / "rootfs.tar")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private root; afterwards no thread, descriptor or file of the test may be left."""
    before = set(threading.enumerate())
    root = Path(tempfile.mkdtemp(prefix="berth-lifecycle-"))
    try:
        yield root
        wait_until(lambda: not (set(threading.enumerate()) - before), "the test's threads")
        assert open_fds_under(root) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert not root.exists()


@pytest.fixture
def fake() -> Iterator[FakeRuntime]:
    rt = FakeRuntime(PROGRAMS)
    yield rt
    rt.shutdown()


@pytest.fixture
def h(workdir: Path, fake: FakeRuntime, image_tar: Path) -> Iterator[Harness]:
    harness = Harness(workdir, fake, image_tar)
    try:
        yield harness
    finally:
        harness.close()


def read_config(c: Container) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((c.root / "config.v2.json").read_text())
    return data


# -- start, output, exit ----------------------------------------------------------------------
def test_run_output_and_exit(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("talk")
    _, esub = h.d.events.subscribe(lambda m: m.actor_id == c.id, lambda: None, None)
    sub = h.subscribe(c)  # attached before the start, as `docker run` does
    rw = h.d.images.layers.get_rw_layer(c.id)
    assert rw._mounts == 0

    h.d.start_container(c.id)

    proc = fake.process(c.id)
    st = read_config(c)["State"]
    assert st["Running"] is True
    assert st["Pid"] == proc.pid
    assert st["StartedAt"] != ZERO_TIME
    assert st["FinishedAt"] == ZERO_TIME
    assert read_config(c)["HasBeenStartedBefore"] is True
    assert h.d.view.snapshot().find(c.id).record.state.status() == "running"
    assert rw._mounts == 1
    assert not c.exited.is_set()
    assert h.fifo_files(c) == ["init-stderr", "init-stdout"]
    assert fake.state(c.id) is not None and fake.state(c.id).status == TaskStatus.RUNNING  # type: ignore[union-attr]

    fake.exit(c.id, 3)
    got = h.collect(sub)
    h.wait_exited(c)

    out = b"".join(data for stream, data in got if stream == "stdout")
    err = b"".join(data for stream, data in got if stream == "stderr")
    assert out == b"one\ntwo\nthree\n"
    assert err == b"oops\n"
    logged = h.log_lines(c)
    assert [line for stream, line in logged if stream == "stdout"] == ["one\n", "two\n", "three\n"]
    assert [line for stream, line in logged if stream == "stderr"] == ["oops\n"]
    assert read_config(c)["LogPath"] == str(h.d.log_path(c))

    st = read_config(c)["State"]
    assert st["Running"] is False
    assert st["ExitCode"] == 3
    assert st["Pid"] == 0
    assert st["FinishedAt"] != ZERO_TIME
    assert st["Error"] == ""
    assert c.state.status() == "exited"
    assert h.d.view.snapshot().find(c.id).record.state.exit_code == 3
    h.settle(c)
    assert rw._mounts == 0  # every mount of the run was put back
    assert not fake.has_task(c.id)  # the task was deleted
    assert h.fifo_files(c) == []
    assert c.io is None and c.logger is None
    wait_until(lambda: any(m.action == "die" for m in esub.queue), "the die event")
    h.d.events.unsubscribe(esub)
    events = [(m.action, m.attributes.get("exitCode", "")) for m in esub.queue]
    assert [a for a, _ in events if a in ("start", "die")] == ["start", "die"]
    assert ("die", "3") in events


def test_spec_given_to_runtime(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server", "--port", "80", env=["FOO=bar"], working_dir="/tmp")
    spec = fake.specs[c.id]
    proc = spec["process"]
    assert proc["args"] == ["server", "--port", "80"]
    assert "FOO=bar" in proc["env"]
    assert f"HOSTNAME={c.id[:12]}" in proc["env"]
    assert any(e.startswith("PATH=") for e in proc["env"])
    assert proc["cwd"] == "/tmp"
    assert proc.get("terminal", False) is False
    assert proc["user"]["uid"] == 0 and proc["user"]["gid"] == 0
    assert spec["hostname"] == c.id[:12]
    rootfs = h.d.driver.get(h.d.images.layers.get_rw_layer(c.id).mount_id)
    assert spec["root"]["path"] == str(rootfs)
    assert (rootfs / "bin" / "server").exists()
    dests = {m["destination"]: m for m in spec["mounts"]}
    assert dests["/etc/hostname"]["source"] == read_config(c)["HostnamePath"]
    assert dests["/etc/hosts"]["source"] == read_config(c)["HostsPath"]
    assert dests["/etc/resolv.conf"]["source"] == read_config(c)["ResolvConfPath"]
    assert (c.root / "hostname").read_text().strip() == c.id[:12]
    # the exec base is the spec's process
    assert c.spec_process == proc


def test_stdin_is_connected_and_closed(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("cat", open_stdin=True, stdin_once=True)
    sub = h.subscribe(c)
    h.d.start_container(c.id)
    assert fake.process(c.id).stdio.stdin.endswith("init-stdin")

    async def feed() -> None:
        assert await c.streams.write_stdin(b"ping\n")
        assert await c.streams.write_stdin(b"pong\n")
        await c.streams.close_stdin()

    h.run(feed())
    got = h.collect(sub)
    h.wait_exited(c)
    assert b"".join(d for _, d in got) == b"ping\npong\n"
    assert fake.stdin_closed == [(c.id, "")]
    assert c.state.exit_code == 0
    assert [line for _, line in h.log_lines(c)] == ["ping\n", "pong\n"]


# -- wait ------------------------------------------------------------------------------------
def test_wait_not_running_is_immediate_when_stopped(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("false")
    assert h.waiter(c.id, "not-running").result(TIMEOUT) == (0, None)  # created
    h.d.start_container(c.id)
    h.wait_exited(c)
    assert h.waiter(c.id, "not-running").result(TIMEOUT) == (1, None)


def test_wait_not_running_resolves_at_exit(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    fut = h.waiter(c.name, "not-running")
    assert not fut.done()
    fake.exit(c.id, 4)
    assert fut.result(TIMEOUT) == (4, None)


def test_wait_next_exit_waits_for_the_next_run(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    fake.exit(c.id, 2)
    h.wait_exited(c)
    fut = h.waiter(c.id, "next-exit")  # the container is stopped: wait for the next run
    h.d.start_container(c.id)
    assert not fut.done()
    fake.exit(c.id, 5)
    assert fut.result(TIMEOUT) == (5, None)


def test_wait_removed(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    removed = h.waiter(c.id, "removed")
    next_exit = h.waiter(c.id, "next-exit")
    fake.exit(c.id, 6)
    assert next_exit.result(TIMEOUT) == (6, None)
    h.wait_exited(c)
    assert not removed.done()
    h.d.remove_container(c.id, False, False, False)
    assert removed.result(TIMEOUT) == (6, None)
    assert not c.root.exists()
    with pytest.raises(errdefs.NotFound):
        h.d.get_container(c.id)


def test_wait_invalid_condition(h: Harness) -> None:
    c = h.create("server")
    with pytest.raises(errdefs.InvalidParameter):
        h.on_loop(lambda: h.d.wait_container(c.id, "whenever"))
    with pytest.raises(errdefs.NotFound):
        h.on_loop(lambda: h.d.wait_container("nosuchcontainer", "not-running"))


# -- stop, kill ------------------------------------------------------------------------------
def test_stop_honouring_sigterm(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    fut = h.waiter(c.id, "not-running")
    h.d.stop_container(c.id, int(TIMEOUT), "")
    assert c.exited.is_set()
    assert fut.result(TIMEOUT) == (143, None)
    assert [(s, a) for _, s, _, a in fake.signals] == [(SIGTERM, False)]
    cfg = read_config(c)
    assert cfg["State"]["ExitCode"] == 143
    assert cfg["State"]["Running"] is False
    assert cfg["HasBeenManuallyStopped"] is True
    h.settle(c)
    assert h.mount_count(c) == 0


@pytest.mark.parametrize("timeout", [0, 1])
def test_stop_ignoring_sigterm_is_killed(h: Harness, fake: FakeRuntime, timeout: int) -> None:
    c = h.run_container("stubborn")
    h.d.stop_container(c.id, timeout, "")
    assert c.state.exit_code == 137
    assert c.state.running is False
    assert [s for _, s, _, _ in fake.signals] == [SIGTERM, SIGKILL]
    assert read_config(c)["HasBeenManuallyStopped"] is True


def test_stop_uses_the_configured_stop_signal(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("graceful", stop_signal="SIGUSR1")
    h.d.stop_container(c.id, int(TIMEOUT), "")
    assert c.state.exit_code == 0
    assert [s for _, s, _, _ in fake.signals] == [SIGUSR1]
    # a signal given to stop wins over the configured one
    h.d.start_container(c.id)
    h.d.stop_container(c.id, 0, "SIGHUP")
    assert c.state.exit_code == 137
    assert [s for _, s, _, _ in fake.signals][1:] == [SIGHUP, SIGKILL]


def test_kill_with_signal_then_default_sigkill(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("stubborn")
    h.d.kill_container(c.id, "SIGHUP")  # ignored by the program: it keeps running
    assert c.state.running is True
    assert fake.process(c.id).signals == [SIGHUP]
    assert read_config(c)["HasBeenManuallyStopped"] is True
    h.d.kill_container(c.id, "")  # SIGKILL, and wait for the exit
    assert c.exited.is_set()
    assert c.state.exit_code == 137
    assert [s for _, s, _, _ in fake.signals] == [SIGHUP, SIGKILL]


def test_kill_with_fatal_signal_number(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    fut = h.waiter(c.id, "not-running")
    h.d.kill_container(c.id, "15")
    assert fut.result(TIMEOUT) == (143, None)


def test_kill_and_stop_of_a_stopped_container(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("server")
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is not running$"):
        h.d.kill_container(c.id, "")
    with pytest.raises(errdefs.NotModified):
        h.d.stop_container(c.id, 1, "")
    h.d.start_container(c.id)
    with pytest.raises(errdefs.NotModified):
        h.d.start_container(c.id)
    h.d.stop_container(c.id, int(TIMEOUT), "")
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is not running$"):
        h.d.kill_container(c.id, "SIGTERM")
    with pytest.raises(errdefs.NotModified):
        h.d.stop_container(c.id, 1, "")
    assert [s for _, s, _, _ in fake.signals] == [SIGTERM]


def test_restart_container(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    first = c.state.pid
    h.d.restart_container(c.id, int(TIMEOUT), "")
    assert c.state.running is True
    assert c.state.pid != first
    assert fake.starts[c.id] == 2
    assert c.record.restart_count == 0  # a user restart is no policy restart
    assert read_config(c)["HasBeenManuallyStopped"] is False


# -- pause -----------------------------------------------------------------------------------
def test_pause_and_unpause(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("server")
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is not running$"):
        h.d.pause_container(c.id)
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is not paused$"):
        h.d.unpause_container(c.id)
    h.d.start_container(c.id)
    h.d.pause_container(c.id)
    assert fake.state(c.id).status == TaskStatus.PAUSED  # type: ignore[union-attr]
    assert read_config(c)["State"]["Paused"] is True
    assert c.state.status() == "paused"
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is already paused$"):
        h.d.pause_container(c.id)
    with pytest.raises(errdefs.Conflict, match="cannot start a paused container"):
        h.d.start_container(c.id)
    with pytest.raises(errdefs.Conflict, match="unpause the container before attach"):
        h.d.attach_info(c.id)
    with pytest.raises(errdefs.Conflict, match="container is paused and must be unpaused first"):
        h.d.remove_container(c.id, False, False, False)
    h.d.unpause_container(c.id)
    assert fake.state(c.id).status == TaskStatus.RUNNING  # type: ignore[union-attr]
    assert read_config(c)["State"]["Paused"] is False
    assert c.state.status() == "running"
    with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is not paused$"):
        h.d.unpause_container(c.id)


def test_stop_of_a_paused_container_kills_it(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    h.d.pause_container(c.id)
    h.d.stop_container(c.id, int(TIMEOUT), "")
    # A frozen process cannot act on a signal: the daemon kills and thaws it.
    assert c.state.exit_code == 137
    assert c.state.paused is False and c.state.running is False
    assert [s for _, s, _, _ in fake.signals] == [SIGKILL]


def test_kill_of_a_paused_container_thaws_it(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    h.d.pause_container(c.id)
    h.d.kill_container(c.id, "")
    assert c.state.exit_code == 137
    assert c.state.paused is False and c.state.running is False


# -- restart policies ------------------------------------------------------------------------
def test_on_failure_retries_then_stops(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("false", restart="on-failure", retries=2)
    h.d.start_container(c.id)
    fut = h.waiter(c.id, "not-running")  # (before the start it would resolve at once)
    # The first exit wakes it though the policy restarts the container (moby's
    # SetRestarting notifies the waiters as SetStopped does).
    assert fut.result(TIMEOUT) == (1, None)

    def retries_over() -> bool:
        with c.lock:  # a restart holds it from the start to the running state
            return fake.starts[c.id] >= 3 and not c.state.running

    wait_until(retries_over, "the retries to end")
    h.wait_exited(c)
    assert fake.starts[c.id] == 3  # the start and two retries
    cfg = read_config(c)
    assert cfg["RestartCount"] == 2
    assert cfg["State"]["Running"] is False
    assert cfg["State"]["Restarting"] is False
    assert cfg["State"]["ExitCode"] == 1
    assert h.mount_count(c) == 0
    assert not fake.has_task(c.id)


def test_on_failure_does_not_restart_a_success(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("true", restart="on-failure")
    h.d.start_container(c.id)
    fut = h.waiter(c.id, "not-running")
    assert fut.result(TIMEOUT) == (0, None)
    assert fake.starts[c.id] == 1
    assert read_config(c)["RestartCount"] == 0


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_policy_restarts_after_exit_not_after_stop(
    h: Harness, fake: FakeRuntime, policy: str, how: str
) -> None:
    c = h.run_container("server", restart=policy)
    first = c.state.pid
    next_exit = h.waiter(c.id, "next-exit")
    fake.exit(c.id, 0)
    assert next_exit.result(TIMEOUT) == (0, None)
    fake.wait_starts(c.id, 2)
    with c.lock:  # the restart holds the lock until the container runs
        assert c.state.running and not c.state.restarting
        assert c.state.pid != first
        assert c.record.restart_count == 1
    assert read_config(c)["RestartCount"] == 1

    if how == "stop":
        h.d.stop_container(c.id, int(TIMEOUT), "")
        assert c.state.exit_code == 143
    else:
        h.d.kill_container(c.id, "")
        assert c.state.exit_code == 137
    # The exit is fully handled, and the policy said no: nothing will start it again.
    assert c.state.running is False and c.state.restarting is False
    assert read_config(c)["HasBeenManuallyStopped"] is True
    assert read_config(c)["RestartCount"] == 1
    assert fake.starts[c.id] == 2
    with c.lock:  # the task is deleted after the waiters hear of the exit, under the lock
        assert not fake.has_task(c.id)


def restart_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("(_restart_later)")]


@pytest.mark.parametrize("how", ["stop", "kill", "rm"])
def test_stop_while_restarting_cancels_the_restart(h: Harness, fake: FakeRuntime, how: str) -> None:
    c = h.create("false", restart="always")
    h.d.start_container(c.id)

    def locked_while_restarting() -> bool:
        # Holding the container's lock keeps the pending restart from happening.
        c.lock.acquire()
        if c.state.restarting:
            return True
        c.lock.release()
        return False

    wait_until(locked_while_restarting, "the restarting state")
    try:
        assert c.state.status() == "restarting"
        assert read_config(c)["State"]["Restarting"] is True
        assert read_config(c)["State"]["Running"] is True
        with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is restarting"):
            h.d.pause_container(c.id)
        with pytest.raises(errdefs.Conflict, match=f"^Container {c.id} is restarting"):
            h.d.exec_create(c.id, ExecOptions(cmd=["greet"]))
        starts = fake.starts[c.id]
        count = c.record.restart_count
        fut = h.waiter(c.id, "not-running")
        if how == "stop":
            h.d.stop_container(c.id, 1, "")
        elif how == "kill":
            h.d.kill_container(c.id, "")
        else:
            h.d.remove_container(c.id, True, False, False)
        assert c.state.running is False and c.state.restarting is False
    finally:
        c.lock.release()
    assert fut.result(TIMEOUT) == (1, None)
    # The pending restart sees the stop (or the removal) and gives up.
    wait_until(lambda: not restart_threads(), "the pending restart")
    assert fake.starts[c.id] == starts
    assert c.record.restart_count == count
    if how == "rm":
        assert not c.root.exists()
        with pytest.raises(errdefs.NotFound):
            h.d.get_container(c.id)
        assert not fake.has_task(c.id)
        return
    assert read_config(c)["State"]["Restarting"] is False
    assert read_config(c)["HasBeenManuallyStopped"] is True
    assert not fake.has_task(c.id)
    assert h.mount_count(c) == 0


def _container(
    policy: str = "always", retries: int = 0, started_ns: int | None = None
) -> Container:
    record = Record(
        id="c" * 64,
        created=format_rfc3339_nano(now_ns()),
        path="server",
        args=[],
        config=Config(),
        image="",
        name="/x",
        driver="vfs",
    )
    record.state.started_at = format_rfc3339_nano(started_ns if started_ns else now_ns())
    record.state.running = True
    hc = HostConfig(restart_policy=RestartPolicy(policy, retries))
    return Container(Path("/nonexistent"), record, hc)


def test_backoff_doubles_up_to_a_minute() -> None:
    rm = RestartManager()
    c = _container()
    delays = [rm.should_restart(c, 1) for _ in range(12)]
    assert all(restart for restart, _ in delays)
    assert [d for _, d in delays] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        6.4,
        12.8,
        25.6,
        51.2,
        BACKOFF_MAX,
        BACKOFF_MAX,
    ]


def test_backoff_resets_after_ten_seconds_of_running() -> None:
    rm = RestartManager()
    c = _container()
    assert [rm.should_restart(c, 0)[1] for _ in range(3)] == [0.1, 0.2, 0.4]
    c.state.started_at = format_rfc3339_nano(now_ns() - 11 * 1_000_000_000)
    assert rm.should_restart(c, 0) == (True, 0.1)
    c.state.started_at = format_rfc3339_nano(now_ns() - 9 * 1_000_000_000)
    assert rm.should_restart(c, 0) == (True, 0.2)


def test_restart_manager_decisions() -> None:
    rm = RestartManager()
    assert rm.should_restart(_container("no"), 1) == (False, 0.0)
    assert rm.should_restart(_container("on-failure"), 0) == (False, 0.0)
    assert rm.should_restart(_container("on-failure"), 1) == (True, 0.1)
    limited = _container("on-failure", retries=2)
    limited.record.restart_count = 2
    assert rm.should_restart(limited, 1) == (False, 0.0)
    stopped = _container("always")
    stopped.record.has_been_manually_stopped = True
    assert rm.should_restart(stopped, 0) == (False, 0.0)
    removing = _container("unless-stopped")
    removing.state.removal_in_progress = True
    assert rm.should_restart(removing, 0) == (False, 0.0)
    # a refused restart forgets the back-off
    c = _container("on-failure")
    assert rm.should_restart(c, 1) == (True, 0.1)
    assert rm.should_restart(c, 1) == (True, 0.2)
    assert rm.should_restart(c, 0) == (False, 0.0)
    assert rm.should_restart(c, 1) == (True, 0.1)


def _hold_task_deletes(fake: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    gate = threading.Event()
    real = fake.delete

    def held(container_id: str) -> int | None:
        assert gate.wait(TIMEOUT)
        return real(container_id)

    monkeypatch.setattr(fake, "delete", held)
    return gate


def test_waiters_hear_the_exit_before_the_task_is_deleted(
    h: Harness, fake: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = h.run_container("server")
    gate = _hold_task_deletes(fake, monkeypatch)
    next_exit = h.waiter(c.id, "next-exit")
    fake.exit(c.id, 3)
    assert next_exit.result(TIMEOUT) == (3, None)  # while the OCI runtime's delete is held
    assert h.d.inspect_container(c.id, False)["State"]["Status"] == "exited"
    assert fake.has_task(c.id)
    restart = threading.Thread(target=h.d.start_container, args=(c.id,))
    restart.start()  # waits for the delete (and the unmount) under the container's lock
    gate.set()
    restart.join(TIMEOUT)
    assert fake.starts[c.id] == 2
    assert c.state.running


def test_run_rm_is_removed_before_the_task_is_deleted(
    h: Harness, fake: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = h.create("server", name="quick", auto_remove=True)
    removed = h.waiter(c.id, "removed")
    h.d.start_container(c.id)
    gate = _hold_task_deletes(fake, monkeypatch)
    fake.exit(c.id, 5)
    assert removed.result(TIMEOUT) == (5, None)
    with pytest.raises(errdefs.NotFound):
        h.d.get_container("quick")  # the name is free for the next run already
    assert fake.has_task(c.id) and c.root.exists()
    gate.set()
    h.settle(c)
    assert not fake.has_task(c.id)
    assert not c.root.exists()
    assert h.d.images.layers.rw_layer_names() == []


# -- auto-remove -----------------------------------------------------------------------------
def test_auto_remove_after_exit(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("server", name="gone", auto_remove=True)
    removed = h.waiter(c.id, "removed")
    h.d.start_container(c.id)
    fake.exit(c.id, 7)
    assert removed.result(TIMEOUT) == (7, None)
    h.settle(c)
    assert not c.root.exists()
    with pytest.raises(errdefs.NotFound):
        h.d.get_container(c.id)
    with pytest.raises(errdefs.NotFound):
        h.d.images.layers.get_rw_layer(c.id)
    assert not h.d.fifo_dir(c.id).exists()
    assert not fake.has_task(c.id)
    # the name is free again
    again = h.create("server", name="gone")
    assert again.name == "/gone"


# -- failed starts ---------------------------------------------------------------------------
def test_start_of_a_missing_executable(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("nope")
    with pytest.raises(errdefs.InvalidParameter, match='exec: "nope": executable file not found'):
        h.d.start_container(c.id)
    cfg = read_config(c)
    assert cfg["State"]["ExitCode"] == 127
    assert cfg["State"]["Running"] is False
    assert "executable file not found" in cfg["State"]["Error"]
    assert cfg["State"]["StartedAt"] == ZERO_TIME
    assert c.state.status() == "created"
    assert fake.creates[c.id] == 1
    assert not fake.has_task(c.id)
    assert h.fifo_files(c) == []
    assert h.mount_count(c) == 0
    assert c.io is None and c.logger is None
    assert c.exited.is_set()
    assert h.waiter(c.id, "not-running").result(TIMEOUT)[0] == 127


def test_start_failing_after_create(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("denied")
    with pytest.raises(errdefs.InvalidParameter, match="permission denied"):
        h.d.start_container(c.id)
    assert c.state.exit_code == 126
    assert c.state.running is False
    assert not fake.has_task(c.id)  # created, then deleted again
    assert h.fifo_files(c) == []
    assert h.mount_count(c) == 0
    # the container can still be started once the program is fixed
    fake.programs["denied"] = Program(run_ms=None)
    h.d.start_container(c.id)
    assert c.state.running is True and c.state.exit_code == 0 and c.state.error == ""


def test_auto_remove_after_a_failed_start(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("nope", auto_remove=True)
    removed = h.waiter(c.id, "removed")
    with pytest.raises(errdefs.InvalidParameter):
        h.d.start_container(c.id)
    code, error = removed.result(TIMEOUT)
    assert code == 127
    assert error is not None and "executable file not found" in error
    h.settle(c)
    assert not c.root.exists()
    with pytest.raises(errdefs.NotFound):
        h.d.get_container(c.id)


def test_force_remove_of_a_running_container(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("stubborn", name="busy")
    with pytest.raises(errdefs.Conflict, match="stop the container before removing"):
        h.d.remove_container(c.id, False, False, False)
    h.d.remove_container(c.id, True, False, False)
    assert [s for _, s, _, _ in fake.signals] == [SIGKILL]
    assert not c.root.exists()
    assert not fake.has_task(c.id)
    with pytest.raises(errdefs.NotFound):
        h.d.images.layers.get_rw_layer(c.id)


# -- exec ------------------------------------------------------------------------------------
def test_exec_lifecycle(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server", env=["FOO=bar"])
    wait_until(lambda: h.log_lines(c) == [("stdout", "ready\n")], "the container's output")
    eid = h.d.exec_create(
        c.id,
        ExecOptions(cmd=["greet", "x"], env=["FOO=baz"], attach_stdout=True, attach_stderr=True),
    )
    assert h.d.exec_ids(c.id) == [eid]
    ex = h.d.exec_get(eid)
    sub = h.on_loop(lambda: ex.streams.subscribe(frozenset({"stdout", "stderr"})))
    h.d.exec_start(eid)
    got = h.collect(sub)
    assert ex.done.wait(TIMEOUT)
    assert b"".join(d for s, d in got if s == "stdout") == b"hello from exec\n"
    assert b"".join(d for s, d in got if s == "stderr") == b"warn\n"
    info = h.d.exec_inspect(eid)
    assert info["ExitCode"] == 3
    assert info["Running"] is False
    assert info["Pid"] == ex.pid and ex.pid not in (0, c.state.pid)
    assert info["ProcessConfig"]["entrypoint"] == "greet"
    spec = fake.exec_specs[(c.id, eid)]
    assert spec["args"] == ["greet", "x"]
    assert "FOO=baz" in spec["env"] and "FOO=bar" not in spec["env"]
    assert spec["cwd"] == fake.specs[c.id]["process"]["cwd"]
    # the exec output is not the container's
    assert h.log_lines(c) == [("stdout", "ready\n")]
    assert sorted(os.listdir(h.d.fifo_dir(c.id))) == ["init-stderr", "init-stdout"]
    # exec IDs are listed while the container runs...
    assert h.d.exec_ids(c.id) == [eid]
    assert h.d.inspect_container(c.id, False)["ExecIDs"] == [eid]
    with pytest.raises(errdefs.Conflict, match="already running"):
        h.d.exec_start(eid)
    h.d.stop_container(c.id, int(TIMEOUT), "")
    # ...and forgotten once it stops
    assert h.d.exec_ids(c.id) is None
    assert h.d.inspect_container(c.id, False)["ExecIDs"] is None
    with pytest.raises(errdefs.NotFound):
        h.d.exec_get(eid)


def test_exec_stdin(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    eid = h.d.exec_create(c.id, ExecOptions(cmd=["cat"], attach_stdin=True, attach_stdout=True))
    ex = h.d.exec_get(eid)
    sub = h.on_loop(lambda: ex.streams.subscribe(frozenset({"stdout", "stderr"})))
    h.d.exec_start(eid)

    async def feed() -> None:
        assert await ex.streams.write_stdin(b"hello\n")
        await ex.streams.close_stdin()

    h.run(feed())
    got = h.collect(sub)
    assert ex.done.wait(TIMEOUT)
    assert b"".join(d for _, d in got) == b"hello\n"
    assert ex.exit_code == 0
    assert (c.id, eid) in fake.stdin_closed


def test_exec_of_a_missing_executable(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("server")
    eid = h.d.exec_create(c.id, ExecOptions(cmd=["nope"]))
    with pytest.raises(errdefs.InvalidParameter) as raised:
        h.d.exec_start(eid)
    assert str(raised.value) == exec_not_found_message("nope")  # containerd's words, once
    assert h.d.exec_inspect(eid)["ExitCode"] == 127
    assert h.d.exec_inspect(eid)["Running"] is False
    assert sorted(os.listdir(h.d.fifo_dir(c.id))) == ["init-stderr", "init-stdout"]
    with pytest.raises(errdefs.NotFound):
        fake.process(c.id, eid)  # the runtime's process was deleted


@pytest.mark.parametrize("exec_exits_first", [True, False])
def test_exec_dies_with_its_container(
    h: Harness, fake: FakeRuntime, exec_exits_first: bool
) -> None:
    fake.exec_exits_first = exec_exits_first
    c = h.run_container("server")
    eid = h.d.exec_create(c.id, ExecOptions(cmd=["server"]))
    ex = h.d.exec_get(eid)
    h.d.exec_start(eid)
    assert (ex.running, ex.done.is_set()) == (True, False)
    assert sorted(fake.pids(c.id)) == sorted([c.state.pid, ex.pid])
    h.d.kill_container(c.id, "")
    assert ex.done.wait(TIMEOUT)
    assert (ex.running, ex.exit_code) == (False, 137)
    assert h.d.exec_ids(c.id) is None


def test_exec_whose_exit_is_lost_ends_with_its_container(
    h: Harness, fake: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_module, "EXEC_EXIT_GRACE", 0.05)
    c = h.run_container("server")
    eid = h.d.exec_create(c.id, ExecOptions(cmd=["lost"], attach_stdout=True))
    ex = h.d.exec_get(eid)
    sub = h.on_loop(lambda: ex.streams.subscribe(frozenset({"stdout"})))
    h.d.exec_start(eid)
    h.d.stop_container(c.id, int(TIMEOUT), "")
    # No exit event comes for the exec: it is recorded as killed with its container,
    # so an attached `docker exec` returns instead of waiting forever.
    assert h.collect(sub) == []
    assert ex.done.wait(TIMEOUT)
    h.run(ex.wait_exit())
    assert (ex.running, ex.exit_code, ex.io) == (False, 137, None)


def test_exec_into_a_stopped_or_paused_container(h: Harness, fake: FakeRuntime) -> None:
    c = h.create("server", name="web")
    with pytest.raises(errdefs.Conflict, match=f"^container {c.id} is not running$"):
        h.d.exec_create(c.id, ExecOptions(cmd=["greet"]))
    h.d.start_container(c.id)
    eid = h.d.exec_create("web", ExecOptions(cmd=["greet"]))
    h.d.pause_container(c.id)
    with pytest.raises(
        errdefs.Conflict, match=r"^Container web is paused, unpause the container before exec$"
    ):
        h.d.exec_create("web", ExecOptions(cmd=["greet"]))
    with pytest.raises(
        errdefs.Conflict, match=f"^Container {c.id} is paused, unpause the container before exec$"
    ):
        h.d.exec_start(eid)
    h.d.unpause_container(c.id)
    h.d.stop_container(c.id, int(TIMEOUT), "")
    with pytest.raises(errdefs.Conflict, match=f"^container {c.id} is not running$"):
        h.d.exec_create("web", ExecOptions(cmd=["greet"]))
    h.d.start_container(c.id)
    with pytest.raises(errdefs.InvalidParameter, match="No exec command specified"):
        h.d.exec_create(c.id, ExecOptions(cmd=[]))


# -- missed exits ----------------------------------------------------------------------------
def test_missed_exit_is_found_by_resync(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("lost")
    fake.exit(c.id, 9)
    fake.wait_exited(c.id)
    assert c.state.running is True  # the daemon heard nothing
    fake.resync()  # the event stream is back: the daemon asks for what it missed
    h.wait_exited(c)
    assert c.state.exit_code == 9
    assert read_config(c)["State"]["Running"] is False
    assert not fake.has_task(c.id)
    assert h.mount_count(c) == 0


def test_missed_exit_is_found_by_reconcile(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("lost")
    h.d.reconcile(c)  # still running: nothing to do
    assert c.state.running is True
    fake.exit(c.id, 12)
    fake.wait_exited(c.id)
    h.d.reconcile(c)
    h.wait_exited(c)
    assert c.state.exit_code == 12


def test_stop_finds_a_missed_exit(h: Harness, fake: FakeRuntime) -> None:
    c = h.run_container("lost")
    fake.exit(c.id, 5)
    fake.wait_exited(c.id)
    # The stop signal finds no process: the daemon records the exit it missed.
    h.d.stop_container(c.id, int(TIMEOUT), "")
    assert c.state.exit_code == 5
    assert c.state.running is False


# -- restore ---------------------------------------------------------------------------------
@pytest.fixture
def fresh(workdir: Path, image_tar: Path) -> Iterator[Callable[..., Harness]]:
    """Make daemons one after the other on the same roots and one fake containerd."""
    made: list[Harness] = []
    rt = FakeRuntime(PROGRAMS)

    def make(*, live_restore: bool, image: bool = False) -> Harness:
        harness = Harness(workdir, rt, image_tar if image else None, live_restore=live_restore)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        try:
            for harness in made:
                harness.close()
        finally:
            rt.shutdown()


def test_restore_with_live_restore_reattaches(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    wait_until(lambda: h1.log_lines(c1) == [("stdout", "ready\n")], "the first output")
    pid = c1.state.pid
    h1.crash()

    h2 = fresh(live_restore=True)
    fake = h2.fake
    c = h2.d.get_container(c1.id)
    assert c is not c1
    assert c.state.running is True
    assert c.state.pid == pid
    assert h2.mount_count(c) == 1
    assert fake.signals == []
    assert c.io is not None and c.spec_process is not None
    sub = h2.subscribe(c)
    fake.write(c.id, "stdout", b"still here\n")
    wait_until(lambda: len(h2.log_lines(c)) == 2, "the new output")
    assert h2.log_lines(c) == [("stdout", "ready\n"), ("stdout", "still here\n")]
    fake.exit(c.id, 7)
    got = h2.collect(sub)
    h2.wait_exited(c)
    assert b"".join(d for _, d in got) == b"still here\n"
    assert c.state.exit_code == 7
    assert read_config(c)["State"]["Running"] is False
    h2.settle(c)
    assert h2.mount_count(c) == 0
    assert h2.fifo_files(c) == []


def test_restore_of_a_paused_container(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    h1.d.pause_container(c1.id)
    h1.crash()
    h2 = fresh(live_restore=True)
    c = h2.d.get_container(c1.id)
    assert c.state.running is True and c.state.paused is True
    h2.d.unpause_container(c.id)
    h2.d.stop_container(c.id, int(TIMEOUT), "")
    assert c.state.exit_code == 143


def test_restore_keeps_a_task_that_does_not_answer(fresh: Callable[..., Harness]) -> None:
    """containerd answers "unknown" for a task whose shim is stuck: that is no exit."""
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    pid = c1.state.pid
    h1.crash()
    h1.fake.unanswered.add(c1.id)

    h2 = fresh(live_restore=True)
    c = h2.d.get_container(c1.id)
    assert c.state.running is True and c.state.pid == pid
    assert read_config(c)["State"]["Running"] is True
    assert h2.fake.has_task(c.id) and h2.fake.process(c.id).alive
    assert h2.mount_count(c) == 1
    # It answers again: still running; then it exits and the exit is recorded once.
    h2.fake.unanswered.discard(c.id)
    h2.fake.write(c.id, "stdout", b"again\n")
    wait_until(lambda: ("stdout", "again\n") in h2.log_lines(c), "output after the restore")
    assert c.state.running is True
    h2.fake.exit(c.id, 3)
    h2.wait_exited(c)
    assert c.state.exit_code == 3 and read_config(c)["State"]["ExitCode"] == 3


def test_restore_settles_a_task_that_stopped_unanswered(fresh: Callable[..., Harness]) -> None:
    """A task that could not be asked at start-up and exited meanwhile, its event lost:
    the daemon asks again until containerd can tell, then records the exit."""
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    h1.crash()
    h1.fake.unanswered.add(c1.id)

    h2 = fresh(live_restore=True)
    c = h2.d.get_container(c1.id)
    assert c.state.running is True
    h2.fake.drop_exits = True
    h2.fake.exit(c.id, 7)
    h2.fake.wait_exited(c.id)
    h2.fake.unanswered.discard(c.id)
    wait_until(lambda: not c.state.running, "the exit to be found")
    h2.wait_exited(c)
    assert c.state.exit_code == 7
    assert not h2.fake.has_task(c.id)
    assert h2.mount_count(c) == 0


def test_restore_without_live_restore_kills(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=False, image=True)
    c1 = h1.run_container("server")
    h1.crash()

    h2 = fresh(live_restore=False)
    fake = h2.fake
    c = h2.d.get_container(c1.id)
    assert fake.signals == [(c.id, SIGKILL, "", True)]
    assert c.state.running is False
    assert c.state.exit_code == 137
    assert c.state.finished_at != ZERO_TIME
    assert read_config(c)["State"]["Running"] is False
    assert not fake.has_task(c.id)
    assert h2.mount_count(c) == 0
    # The kill's exit is handled as any exit, and only once.
    for thread in list(fake._threads):
        thread.join(TIMEOUT)  # every exit event was delivered...
    h2.d._workers.shutdown(wait=True)  # ...and handled
    past, sub = h2.d.events.subscribe(lambda m: m.actor_id == c.id, lambda: None, 0)
    h2.d.events.unsubscribe(sub)
    assert [m.action for m in past] == ["die"]
    assert c.state.exit_code == 137 and c.state.running is False
    assert h2.fifo_files(c) == []


def test_restore_of_a_task_that_exited(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    h1.crash()
    h1.fake.exit(c1.id, 42)  # exits while no daemon listens
    h1.fake.wait_exited(c1.id)

    h2 = fresh(live_restore=True)
    c = h2.d.get_container(c1.id)
    assert c.state.running is False
    assert c.state.exit_code == 42
    assert read_config(c)["State"]["ExitCode"] == 42
    assert not h2.fake.has_task(c.id)
    assert h2.fake.signals == []
    assert h2.fifo_files(c) == []


def test_restore_without_a_task(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=True, image=True)
    c1 = h1.run_container("server")
    h1.crash()
    h1.fake.forget(c1.id)  # containerd lost it

    h2 = fresh(live_restore=True)
    c = h2.d.get_container(c1.id)
    assert c.state.running is False
    assert c.state.exit_code == 255
    assert read_config(c)["State"]["ExitCode"] == 255
    assert h2.mount_count(c) == 0


def test_restore_removes_tasks_no_running_container_owns(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=True, image=True)
    kept = h1.run_container("server")
    created = h1.create("server")
    # The crash came after the runtime made these tasks and before berthd recorded it:
    # a start of a container still "created", and one whose removal was cut short.
    h1.fake.create(created.id, {"process": {"args": ["server"]}}, Stdio())
    h1.fake.start(created.id)
    unknown = "f" * 64
    h1.fake.create(unknown, {"process": {"args": ["server"]}}, Stdio())
    h1.crash()

    h2 = fresh(live_restore=True)
    assert h2.fake.container_ids() == [kept.id]
    assert h2.d.get_container(kept.id).state.running
    c = h2.d.get_container(created.id)
    assert c.state.running is False and c.state.status() == "created"
    assert h2.mount_count(c) == 0


def test_restore_restarts_by_policy(fresh: Callable[..., Harness]) -> None:
    h1 = fresh(live_restore=False, image=True)
    always = h1.run_container("server", restart="always")
    stopped = h1.run_container("server", restart="unless-stopped")
    h1.d.stop_container(stopped.id, int(TIMEOUT), "")
    never = h1.run_container("server")
    h1.close()  # a clean shutdown stops everything
    fake = h1.fake
    assert not any(fake.has_task(c.id) for c in (always, stopped, never))
    starts = dict(fake.starts)

    h2 = fresh(live_restore=False)
    fake.wait_starts(always.id, starts[always.id] + 1)
    c = h2.d.get_container(always.id)
    with c.lock:
        assert c.state.running is True
    assert fake.starts[stopped.id] == starts[stopped.id]
    assert fake.starts[never.id] == starts[never.id]
    assert h2.d.get_container(stopped.id).state.running is False
    assert h2.d.get_container(never.id).state.running is False
