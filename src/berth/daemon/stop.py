"""Stopping, killing, pausing and restarting running containers."""

from __future__ import annotations

import logging
import signal as signals
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon import health as _health
from berth.daemon.start import start_container
from berth.utils.signals import parse_signal

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10


def _not_running(container: Container) -> errdefs.Conflict:
    return errdefs.Conflict(f"Container {container.id} is not running")


def kill_container(d: Daemon, ref: str, sig: str) -> None:
    """``docker kill``: any signal (SIGKILL by default, then wait for the exit).

    As with dockerd, a killed container counts as stopped by the user: its
    restart policy does not bring it back.
    """
    num = parse_signal(sig) if sig else signals.SIGKILL
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if not st.running:
            raise _not_running(container)
        stop_signal = parse_signal(container.record.config.stop_signal or "SIGTERM")
        unpause = st.paused and num in (signals.SIGKILL, stop_signal)
        container.record.has_been_manually_stopped = True
        if st.restarting:
            _cancel_restart(d, container)
            return
        d.checkpoint(container, host_config=False)
        try:
            d.runtime.kill(container.id, num)
        except errdefs.NotFound:
            unpause = False  # it exited in between
        if unpause:
            try:
                d.runtime.resume(container.id)
            except errdefs.BerthError as e:
                log.warning("cannot unpause %s: %s", container.id[:12], e)
    d.emit_container(container, "kill", {"signal": str(num)})
    if num == signals.SIGKILL and not container.exited.wait(10):
        raise errdefs.System("tried to kill container, but did not receive an exit event")


def _cancel_restart(d: Daemon, container: Container) -> None:
    """A container waiting out its restart back-off has no process: end the loop."""
    container.cancel_restart()
    d.checkpoint(container, host_config=False)


def _signal(d: Daemon, container: Container, num: int) -> None:
    try:
        d.runtime.kill(container.id, num, all_procs=False)
    except (errdefs.NotFound, errdefs.Conflict):
        # Already gone; make sure its exit is recorded even if the event was missed.
        d.reconcile(container)
    if num == signals.SIGKILL and container.state.paused:
        # A frozen process cannot die: thaw it so the kill lands.
        try:
            d.runtime.resume(container.id)
        except errdefs.BerthError:
            pass


def stop_container(d: Daemon, ref: str, timeout: int | None, sig: str = "") -> None:
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if not st.running:
            raise errdefs.NotModified("container already stopped")
        container.record.has_been_manually_stopped = True
        if st.restarting:
            _cancel_restart(d, container)
            return
        d.checkpoint(container, host_config=False)
    stop_and_wait(d, container, timeout, sig)


def stop_and_wait(d: Daemon, container: Container, timeout: int | None, sig: str = "") -> None:
    """The stop signal, then SIGKILL after *timeout* seconds (-1: wait forever)."""
    if timeout is None:
        timeout = container.record.config.stop_timeout
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
    stop_signal = parse_signal(sig or container.record.config.stop_signal or "SIGTERM")
    if container.state.paused:
        # A paused process would only see the signal once thawed; dockerd kills it.
        stop_signal = signals.SIGKILL
    if stop_signal != signals.SIGKILL:
        try:
            _signal(d, container, stop_signal)
        except errdefs.BerthError as e:
            log.warning("stop signal to %s failed: %s", container.id[:12], e)
        if container.exited.wait(None if timeout < 0 else timeout):
            d.emit_container(container, "stop")
            return
        log.info("container %s did not stop after %ss; killing it", container.id[:12], timeout)
    try:
        _signal(d, container, signals.SIGKILL)
    except errdefs.BerthError as e:
        log.warning("kill of %s failed: %s", container.id[:12], e)
    if not container.exited.wait(30):
        raise errdefs.System(f"container {container.id[:12]} did not exit after SIGKILL")
    d.emit_container(container, "stop")


def restart_container(d: Daemon, ref: str, timeout: int | None, sig: str = "") -> None:
    container = d.get_container(ref)
    if container.state.running:
        try:
            stop_container(d, ref, timeout, sig)
        except errdefs.NotModified:
            pass
    start_container(d, container.id)
    d.emit_container(container, "restart")


def pause_container(d: Daemon, ref: str) -> None:
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if not st.running:
            raise _not_running(container)
        if st.paused:
            raise errdefs.Conflict(f"Container {container.id} is already paused")
        if st.restarting:
            raise errdefs.Conflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )
        d.runtime.pause(container.id)
        container.set_paused(True)
        _health.update_monitor(d, container)
        d.checkpoint(container, host_config=False)
    d.emit_container(container, "pause")


def unpause_container(d: Daemon, ref: str) -> None:
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if not st.paused:
            raise errdefs.Conflict(f"Container {container.id} is not paused")
        d.runtime.resume(container.id)
        container.set_paused(False)
        _health.update_monitor(d, container)
        d.checkpoint(container, host_config=False)
    d.emit_container(container, "unpause")
