"""What happens when a container's process exits (moby's ``handleContainerExit``).

The output is drained first (so ``docker run echo hi`` never loses its last
line), then the state is set and waiters woken; AutoRemove forgets the
container at once.  The task is deleted and the root filesystem unmounted
after that, under the container's lock; the restart policy may then start it
again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon import delete as _delete
from berth.daemon import health as _health
from berth.daemon import network as _network
from berth.daemon import volumes as _volumes
from berth.daemon.start import start_locked

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: How long to wait for the last output of an exited process to be delivered.
IO_DRAIN_TIMEOUT = 2.0
#: State.Error of a container whose process was killed because its shim died
SHIM_LOST = (
    "containerd-shim-runc-v2 (pid {pid}) serving the container died; its processes were killed"
)


def handle_exit(
    d: Daemon,
    container: Container,
    exit_code: int,
    exited_at_ns: int,
    pid: int,
    lost_shim: int = 0,
) -> None:
    """*lost_shim*: the pid of the shim that died with the process (see ExitEvent)."""
    with container.lock:
        st = container.state
        if not st.running or st.restarting or (pid and st.pid and pid != st.pid):
            return  # a stale event (already handled, or from an earlier run)
        io = container.io
        if io is not None and not io.done.wait(IO_DRAIN_TIMEOUT):
            log.warning("output of %s not drained in time", container.id[:12])
        task_deleted = False
        if exit_code < 0:  # no status in the event: the task has it
            task_deleted = True
            status = _delete_task(d, container)
            if status is not None:
                exit_code = status
        if io is not None:
            io.close()
        container.io = None
        container.rootfs = None
        container.spec_process = None
        d.execs.forget_container(container.id)
        if container.logger is not None:
            container.logger.close()
            container.logger = None
        _health.stop_monitor(container)  # health: probing ends with the process
        # Endpoints go before the exit is announced (~1 ms: the namespace is removed
        # whole; its addresses come back once the kernel has deleted its veths).
        _network.release(d, container, _network.clear_runtime(container))
        _volumes.unmount_all(d, container)
        restart, delay = d.restart_manager.should_restart(container, exit_code)
        if restart:
            container.set_restarting(exit_code, exited_at_ns)
            container.record.restart_count += 1
        else:
            container.set_stopped(exit_code, exited_at_ns)
        if st.oom_killed and exit_code == 137:
            st.error = ""
        if lost_shim:
            # Every container of a shim group goes with its shim: say so where users look.
            st.error = SHIM_LOST.format(pid=lost_shim)
            log.warning("container %s: its shim %d died", container.id[:12], lost_shim)
        remove = not restart and container.host_config.auto_remove and not st.removal_in_progress
        if remove:
            # Not persisted: the record goes in a moment, and should berthd die
            # first, the boot finds no task and removes the container then.
            container.set_removal_in_progress()
            d.checkpoint(container, host_config=False, write=False)
        else:
            d.checkpoint(container, host_config=False)
        # Waiters (told by the checkpoint) and the events hear of the exit now.  The
        # task and the mount go after, still under the lock, so that a start or a
        # removal that follows finds them gone: the OCI runtime's delete is then off
        # the critical path of ``docker run``, ``docker stop`` and ``docker run --rm``.
        d.emit_container(container, "die", {"exitCode": str(exit_code)})
        if remove:
            _delete.forget(d, container, remove_volumes=True)
        if not task_deleted:
            _delete_task(d, container)
        try:
            rw = d.images.layers.get_rw_layer(container.id)
            d.images.layers.unmount(rw)
        except errdefs.BerthError as e:
            log.warning("unmounting %s: %s", container.id[:12], e)
        if remove:
            _delete.release(d, container, remove_volumes=False)
    if restart:
        threading.Thread(target=_restart_later, args=(d, container, delay), daemon=True).start()


def _delete_task(d: Daemon, container: Container) -> int | None:
    try:
        return d.runtime.delete(container.id)
    except errdefs.BerthError as e:
        log.warning("deleting task of %s: %s", container.id[:12], e)
        return None


def _restart_later(d: Daemon, container: Container, delay: float) -> None:
    if delay > 0:
        time.sleep(delay)
    with container.lock:
        st = container.state
        if not st.restarting or st.removal_in_progress or d.containers.get(container.id) is None:
            return  # stopped or removed meanwhile
        container.cancel_restart()
        try:
            start_locked(d, container)
        except errdefs.BerthError as e:
            log.error("restarting %s failed: %s", container.id[:12], e)
            d.checkpoint(container, host_config=False)
