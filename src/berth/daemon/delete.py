"""``docker rm``: release the container's name, layers and directory."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from berth import errdefs

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon


def remove_container(d: Daemon, ref: str, force: bool, remove_volumes: bool, link: bool) -> None:
    container = d.get_container(ref)
    if link:
        raise errdefs.InvalidParameter(
            "legacy links are not supported by berth; remove the container without --link"
        )
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
        st.removal_in_progress = True
        container.record.has_been_manually_stopped = True
        d.checkpoint(container, host_config=False)
    if container.state.running:
        # Outside the lock: the exit is handled by the monitor, which needs it.
        try:
            d.kill_for_removal(container)
        except errdefs.BerthError:
            with container.lock:
                container.state.removal_in_progress = False
                d.checkpoint(container, host_config=False)
            raise
    cleanup(d, container)


def cleanup(d: Daemon, container: Container) -> None:
    with container.lock:  # after the monitor's deletion of the task and the unmount
        forget(d, container)
        release(d, container)


def forget(d: Daemon, container: Container) -> None:
    """Take the container out of the API; the record goes first so a crash cannot
    resurrect it (the boot then releases what ``release`` had not)."""
    try:
        (container.root / "config.v2.json").unlink()
    except FileNotFoundError:
        pass
    d.unregister(container)
    st = container.state
    d.notify_removed(container.id, st.exit_code, st.error or None)
    d.emit_container(container, "destroy")


def release(d: Daemon, container: Container) -> None:
    """Free what a forgotten container held on disk: its RW layer and directory."""
    ident = container.id
    d.images.release_rw_layer(ident)
    shutil.rmtree(container.root, ignore_errors=True)
    d.forget_runtime_state(ident)
