"""Start-up: the containers on disk, then what containerd still runs (moby's ``restore``).

:func:`load_containers` runs before the runtime is connected: it loads every
container record, finishes removals a crash cut short and releases what no
container owns.  :func:`restore_running` runs once the runtime is there: it adopts
the tasks that kept running (live-restore) or stops them, records the exits that
happened while berthd was away, and removes what containerd holds for no container.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import TYPE_CHECKING

from berth import errdefs
from berth.container.container import CONFIG_FILE, Container
from berth.container.fifos import HeldReaders
from berth.container.stream import ProcessIO
from berth.daemon import delete as _delete
from berth.daemon import health as _health
from berth.daemon import network as _network
from berth.daemon import start as _start
from berth.daemon import volumes as _volumes
from berth.runtime.base import TaskStatus

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: How long start-up waits for containers being restored before it serves the API.
RESTORE_WAIT = 10.0


def load_containers(d: Daemon) -> None:
    layers = d.images.layers
    rw_names = set(layers.rw_layer_names())
    for entry in os.scandir(d.repository):
        if not entry.is_dir():
            continue
        root = Path(entry.path)
        if not (root / CONFIG_FILE).exists():
            log.info("removing half-created container %s", entry.name)
            d.images.release_rw_layer(entry.name)
            shutil.rmtree(root, ignore_errors=True)
            continue
        try:
            container = Container.from_disk(root)
        except Exception as e:
            log.error("cannot load container %s: %s", entry.name, e)
            continue
        if container.id != entry.name or container.id not in rw_names:
            log.error("container %s has no RW layer; removing it", entry.name)
            d.images.release_rw_layer(entry.name)
            shutil.rmtree(root, ignore_errors=True)
            continue
        if container.state.removal_in_progress:
            _delete.cleanup(d, container)
            continue
        try:
            d.view.reserve_name(container.name, container.id)
        except errdefs.Conflict:
            log.error(
                "container %s: name %s is taken; it is not loaded", container.id, container.name
            )
            continue
        d.containers[container.id] = container
        # A stopped container keeps no address (a crash may have left them recorded).
        stale = not container.state.running and bool(_network.clear_runtime(container))
        d.checkpoint(container, write=stale)
    for name in set(layers.rw_layer_names()) - set(d.containers):
        log.info("releasing RW layer of unknown container %s", name)
        d.images.release_rw_layer(name)
    layers.release_unreferenced()
    layers.sweep_orphans()
    d.images.drop_dangling_references()


def restore_running(d: Daemon) -> None:
    """moby's ``restore``: adopt live tasks (live-restore) or stop them; record exits.

    Containers are restored concurrently, and start-up waits for them only up to
    :data:`RESTORE_WAIT`: one that is slower finishes in the background, shown as it
    was persisted meanwhile (its lock held, so operations on it wait).  A container is
    marked exited only when containerd says its task stopped or is gone; a task that
    does not answer is taken as alive and asked again until it does.
    """
    held = HeldReaders(d.options.exec_root / "containerd")
    try:
        running = [c for c in d.containers.values() if c.state.running]
        # Before any restore remounts: the mounts of the containers that ran stay.
        d.driver.unmount_all(except_ids=_mount_ids(d, running))
        futures = [d.submit(_restore_container, d, c) for c in running]
        _, pending = wait_futures(futures, timeout=RESTORE_WAIT)
        if pending:
            log.warning("%d containers are still being restored; serving meanwhile", len(pending))
        for container in list(d.containers.values()):
            if container not in running and should_restart_on_boot(container):
                d.submit(_boot_restart, d, container)
        # Whatever still counts as running is kept: a pending restore decides it.
        live = {c.id for c in d.containers.values() if c.state.running}
        _sweep_runtime(d, live)
    finally:
        held.release({c.id for c in d.containers.values() if c.state.running})


def _mount_ids(d: Daemon, containers: list[Container]) -> set[str]:
    ids = set()
    for container in containers:
        try:
            ids.add(d.images.layers.get_rw_layer(container.id).mount_id)
        except errdefs.NotFound:
            pass
    return ids


def _restore_container(d: Daemon, container: Container) -> None:
    """Restore one container that was running when berthd stopped."""
    # Under the lock: the exit event of a task killed here is then seen as stale
    # by the monitor instead of being handled a second time.
    with container.lock:
        alive, known = _restore_locked(d, container)
    if not alive:
        if container.host_config.auto_remove:
            d.auto_remove(container)
        elif should_restart_on_boot(container):
            _boot_restart(d, container)
        return
    if not known:
        _settle(d, container)
    if not d.options.live_restore:
        _stop_at_boot(d, container)


def _restore_locked(d: Daemon, container: Container) -> tuple[bool, bool]:
    """(alive, known): adopt the task unless containerd says it stopped or is gone."""
    try:
        task = d.runtime.state(container.id)
        known = task is None or task.status != TaskStatus.UNKNOWN
    except errdefs.BerthError as e:
        log.warning("cannot query task of %s: %s", container.id[:12], e)
        task, known = None, False
    dead = known and (task is None or task.status == TaskStatus.STOPPED)
    if dead:
        try:
            status = d.runtime.delete(container.id)
        except errdefs.Conflict as e:
            # It is running after all (the state raced a start): adopt it.
            log.warning("task of %s is not stopped: %s", container.id[:12], e)
            dead = known = False
        except errdefs.BerthError as e:
            log.warning("deleting task of %s: %s", container.id[:12], e)
            status = None
    if not dead:
        _reattach(d, container, task is not None and task.status == TaskStatus.PAUSED)
        return True, known
    exit_code = 255
    if status is not None and task is not None:
        exit_code = status
    # The FIFOs of the dead run (a new run makes its own).
    shutil.rmtree(d.fifo_dir(container.id), ignore_errors=True)
    _release_mount(d, container)
    _network.clear_runtime(container)
    d.networks.remove_sandbox(container.id)
    container.set_stopped(exit_code)
    d.checkpoint(container, host_config=False)
    return False, True


def _release_mount(d: Daemon, container: Container) -> None:
    """Unmount the root filesystem a container that died while we were away kept."""
    try:
        rw = d.images.layers.get_rw_layer(container.id)
        d.images.layers.mount(rw)  # adopts the mount left behind, or makes one
        d.images.layers.unmount(rw)
    except errdefs.BerthError as e:
        log.warning("unmounting %s: %s", container.id[:12], e)


def _settle(d: Daemon, container: Container) -> None:
    """Ask again about a task whose state containerd could not tell, until it can;
    its exit is then handled as if its event had come."""

    def ask() -> None:
        delay = 0.5
        while not d.stopping.wait(delay):
            if d.containers.get(container.id) is None or d.reconcile(container):
                return
            delay = min(delay * 2, 10.0)

    d.submit(ask)


def _stop_at_boot(d: Daemon, container: Container) -> None:
    """Without live-restore, a container found running is killed; its exit is then
    handled as any other (restart policy, auto-removal)."""
    log.info("stopping container %s left running (live-restore is off)", container.id[:12])
    try:
        if container.state.paused:
            d.runtime.resume(container.id)
        d.runtime.kill(container.id, 9, all_procs=True)
    except errdefs.NotFound:
        d.reconcile(container)
    except errdefs.BerthError as e:
        log.warning("cannot stop %s at start-up: %s", container.id[:12], e)
        return
    if not container.exited.wait(RESTORE_WAIT):
        log.warning("container %s did not exit at start-up yet", container.id[:12])
        return
    with container.lock:  # the exit's tail (task delete, unmount) is done under it
        pass


def _sweep_runtime(d: Daemon, adopted: set[str]) -> None:
    """End what containerd holds that no running container owns: the leftovers of a
    start or a removal cut short by a crash (dockerd leaks these shims and cgroups)."""
    # The containers, and the shim groups they may have run in (a group's shim that died
    # or exited after its first container's bundle went leaves its socket).
    groups: set[str] = set()
    for c in d.containers.values():
        labels = c.record.config.labels or {}
        groups.update(_start.shim_group(mode, labels) for mode in ("project", "all"))
    groups.discard("")
    try:
        removed = d.runtime.remove_leftovers(adopted, known=[*d.containers, *groups])
    except errdefs.BerthError as e:
        log.warning("cannot remove what containerd holds for no container: %s", e)
    else:
        if removed:
            log.info("removed the runtime's leftovers of %d containers", len(removed))
    fifo_root = d.options.exec_root / "containerd"
    for entry in os.scandir(fifo_root) if fifo_root.is_dir() else ():
        if len(entry.name) == 64 and entry.is_dir() and entry.name not in adopted:
            shutil.rmtree(entry.path, ignore_errors=True)


def should_restart_on_boot(container: Container) -> bool:
    policy = container.host_config.restart_policy.name
    rec = container.record
    if not rec.has_been_started_before or container.host_config.auto_remove:
        return False
    if policy == "always":
        return True
    if policy == "unless-stopped":
        return not rec.has_been_manually_stopped
    if policy == "on-failure":
        return container.state.exit_code != 0 and not rec.has_been_manually_stopped
    return False


def _boot_restart(d: Daemon, container: Container) -> None:
    try:
        _start.start_container(d, container.id)
    except errdefs.BerthError as e:
        log.error("restarting %s at start-up failed: %s", container.id[:12], e)


def _reattach(d: Daemon, container: Container, paused: bool) -> None:
    """Pick up a container that kept running while berthd was away."""
    rec = container.record
    _network.adopt(d, container)
    _volumes.mount_all(d, container, None)  # mounted again for it; nothing copied
    rw = d.images.layers.get_rw_layer(container.id)
    rootfs = d.images.layers.mount(rw)
    container.rootfs = rootfs
    container.spec_process = _start.container_spec(d, container, rootfs)["process"]
    logger = d.open_logger(container)
    io = ProcessIO(
        d.fifo_dir(container.id),
        "init",
        stdin=rec.config.open_stdin,
        tty=rec.config.tty,
        hub=container.streams,
        close_io=lambda: d.runtime.close_stdin(container.id),
        sink=logger.sink if logger is not None else None,
    )
    io.open()
    assert d.loop is not None
    io.start(d.loop)
    io.connected()
    container.io = io
    container.logger = logger
    container.set_paused(paused)
    if not paused:  # as moby's restore: probing starts over (a paused one waits for unpause)
        _health.init_monitor(d, container)
    d.checkpoint(container, host_config=False)
    log.info("restored running container %s", container.id[:12])


def resync_exits(d: Daemon) -> None:
    """containerd came back: exits it saw while we were not listening are lost, so ask."""
    for container in list(d.containers.values()):
        d.reconcile(container)
