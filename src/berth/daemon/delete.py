"""``docker rm``: release the container's name, layers and directory (and with ``-v``, or
for an AutoRemove container, its anonymous volumes)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon import network as _network
from berth.daemon import volumes as _volumes

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)


def remove_container(d: Daemon, ref: str, force: bool, remove_volumes: bool, link: bool) -> None:
    if link:
        _network.remove_link(d, ref)
        return
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if st.removal_in_progress:
            raise errdefs.Conflict(f"removal of container {ref} is already in progress")
        if st.running and not force:
            if st.paused:
                raise errdefs.Conflict(
                    f'cannot remove container "{container.name}": container is paused and '
                    "must be unpaused first"
                )
            raise errdefs.Conflict(
                f'cannot remove container "{container.name}": container is {st.status()}: '
                "stop the container before removing or force remove"
            )
        container.set_removal_in_progress()
        container.record.has_been_manually_stopped = True
        if st.restarting:
            # Waiting out its back-off: no process to kill, and no restart to come.
            container.cancel_restart()
        try:
            # on disk only when a kill comes first: otherwise the record is unlinked next,
            # and a crash before that leaves the container as it was
            d.checkpoint(container, host_config=False, write=st.running)
        except OSError as e:  # a full disk must not keep a container (moby logs it too)
            log.error("saving the dying container %s: %s", container.id[:12], e)
    if container.state.running:
        # Outside the lock: the exit is handled by the monitor, which needs it.
        try:
            d.kill_for_removal(container)
        except errdefs.BerthError:
            with container.lock:
                container.reset_removal_in_progress()
                d.checkpoint(container, host_config=False)
            raise
    cleanup(d, container, remove_volumes)


def cleanup(d: Daemon, container: Container, remove_volumes: bool | None = None) -> None:
    """Forget and release *container*; *remove_volumes* as for :func:`release`."""
    if remove_volumes is None:
        remove_volumes = container.host_config.auto_remove
    with container.lock:  # after the monitor's deletion of the task and the unmount
        forget(d, container, remove_volumes=remove_volumes)
        release(d, container, remove_volumes=False)


def forget(d: Daemon, container: Container, *, remove_volumes: bool = False) -> None:
    """Take the container out of the API; the record goes first so a crash cannot
    resurrect it (the boot then releases what ``release`` had not).

    With *remove_volumes* its anonymous volumes go before the removal is announced, as
    moby's ``cleanupContainer`` does: when ``docker run --rm`` or ``rm -v`` returns they
    are gone, and their ``destroy`` events come before the container's.
    """
    try:
        (container.root / "config.v2.json").unlink()
    except FileNotFoundError:
        pass
    d.unregister(container)
    if remove_volumes:
        _volumes.remove_anonymous(d, container)
    st = container.state
    d.notify_removed(container.id, st.exit_code, st.error or None)
    d.emit_container(container, "destroy")


def release(d: Daemon, container: Container, remove_volumes: bool | None = None) -> None:
    """Free what a forgotten container held on disk: its RW layer and directory, and its
    anonymous volumes when *remove_volumes* (by default: when it is an AutoRemove
    container, which dockerd removes with ``RemoveVolume``)."""
    ident = container.id
    d.images.release_rw_layer(ident)
    d.reaper.discard(container.root)
    d.forget_runtime_state(ident)
    if remove_volumes is None:
        remove_volumes = container.host_config.auto_remove
    if remove_volumes:
        _volumes.remove_anonymous(d, container)
