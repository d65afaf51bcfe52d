"""A container's volumes: the container side of the volume store.

moby's ``registerMountPoints`` and ``setupMounts`` for volumes: at create each
volume the container names (``-v name:/x``, ``--mount``) or gets (``-v /x``,
``VOLUME``) is made in the store; at start each is mounted for it (an option
volume's device is mounted on the first use), a new one gets the image's
content at that path copied in unless ``nocopy``, and ``volume mount`` events
are sent; at exit each is unmounted.  Which containers use a volume is read
from the containers' records, so it survives restarts and crashes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from berth import errdefs
from berth.types.container import HostConfig, MountPoint
from berth.types.volume import ANONYMOUS_LABEL
from berth.utils.symlink import resolve_in_root
from berth.volume.mounts import anonymous_volumes

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)


def _volume_options(hc: HostConfig, destination: str) -> tuple[dict[str, str], dict[str, str]]:
    """(driver options, labels) a ``--mount type=volume`` gives its volume."""
    for m in hc.mounts or []:
        if m.type == "volume" and os.path.normpath(m.target) == destination:
            vo = m.volume_options
            if vo is None:
                break
            opts = dict(vo.driver_config.options or {}) if vo.driver_config else {}
            return opts, dict(vo.labels or {})
    return {}, {}


def _nocopy(hc: HostConfig, mp: MountPoint) -> bool:
    if "nocopy" in (mp.mode or "").split(","):
        return True
    return any(
        m.type == "volume"
        and os.path.normpath(m.target) == mp.destination
        and m.volume_options is not None
        and m.volume_options.no_copy
        for m in hc.mounts or []
    )


def register(d: Daemon, hc: HostConfig, mount_points: dict[str, MountPoint]) -> list[str]:
    """Make (or find) each volume of a new container in the store; its mount points
    get the store's paths.  Returns the anonymous volumes made, for a rollback."""
    anonymous = {mp.name for mp in anonymous_volumes(hc, mount_points)}
    made: list[str] = []
    try:
        for mp in mount_points.values():
            if mp.type != "volume" or not mp.name:
                continue
            options, labels = _volume_options(hc, mp.destination)
            if mp.name in anonymous:
                labels[ANONYMOUS_LABEL] = ""
            known = _exists(d, mp.name)
            rec = d.volume_store.create(
                mp.name,
                driver=mp.driver or "local",
                labels=labels or None,
                options=options or None,
                anonymous=mp.name in anonymous,
            )
            if not known and mp.name in anonymous:
                made.append(rec.name)
            mp.source = d.volume_store.path(rec.name)
    except BaseException:
        forget(d, made)
        raise
    return made


def _exists(d: Daemon, name: str) -> bool:
    try:
        d.volume_store.get(name)
    except errdefs.NotFound:
        return False
    return True


def forget(d: Daemon, names: list[str]) -> None:
    """Remove volumes made for a container that was not created after all."""
    for name in names:
        try:
            d.volume_store.remove(name, force=True)
        except errdefs.BerthError as e:
            log.warning("removing volume %s: %s", name, e)


def ensure(d: Daemon, mp: MountPoint) -> str:
    """The volume's path, made in the store when a container older than the store
    names it."""
    try:
        return d.volume_store.path(mp.name)
    except errdefs.NotFound:
        d.volume_store.create(mp.name, driver=mp.driver or "local")
        return d.volume_store.path(mp.name)


def mount_all(d: Daemon, container: Container, rootfs: Path | None) -> None:
    """Mount every volume of a starting container; a new, empty one gets what the image
    has at its destination (unless ``nocopy``).  All or none."""
    mounted: list[MountPoint] = []
    try:
        for mp in container.record.mount_points.values():
            if mp.type != "volume" or not mp.name:
                continue
            ensure(d, mp)
            mp.source = d.volume_store.mount(mp.name, container.id)
            mounted.append(mp)
            if rootfs is not None and not _nocopy(container.host_config, mp):
                _copy_up(d, mp, rootfs)
            d.events.publish(
                "volume",
                "mount",
                mp.name,
                {
                    "container": container.id,
                    "destination": mp.destination,
                    "driver": mp.driver or "local",
                    "propagation": mp.propagation,
                    "read/write": "true" if mp.rw else "false",
                },
            )
    except BaseException:
        _unmount(d, container, mounted)
        raise


def _copy_up(d: Daemon, mp: MountPoint, rootfs: Path) -> None:
    try:
        source = resolve_in_root(str(rootfs), mp.destination)
    except (OSError, errdefs.BerthError):
        return
    if os.path.isdir(source) and not os.path.islink(source):
        d.volume_store.copy_up(mp.name, source)


def unmount_all(d: Daemon, container: Container) -> None:
    _unmount(
        d,
        container,
        [mp for mp in container.record.mount_points.values() if mp.type == "volume" and mp.name],
    )


def _unmount(d: Daemon, container: Container, points: list[MountPoint]) -> None:
    for mp in points:
        try:
            d.volume_store.unmount(mp.name, container.id)
        except errdefs.BerthError as e:
            log.warning("unmounting volume %s of %s: %s", mp.name, container.id[:12], e)
            continue
        d.events.publish(
            "volume",
            "unmount",
            mp.name,
            {"container": container.id, "driver": mp.driver or "local"},
        )


def remove_anonymous(d: Daemon, container: Container) -> None:
    """``rm -v``: the container's anonymous volumes go; named ones and binds stay, and
    one another container still uses is kept (dockerd logs it and goes on)."""
    for mp in anonymous_volumes(container.host_config, container.record.mount_points):
        try:
            d.volume_store.remove(mp.name)
        except errdefs.NotFound:
            continue
        except errdefs.BerthError as e:
            log.warning("volume %s of %s is not removed: %s", mp.name, container.id[:12], e)
