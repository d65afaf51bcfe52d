"""The one mount plan of a container: moby's ``setupMounts`` with its IPC and tmpfs mounts.

What berth mounts over a container's root filesystem is decided here, once, so that
every reader agrees on it: the OCI spec (:mod:`berth.runtime.spec`) turns the whole
plan into spec mounts and adds only the kernel filesystems (/proc, /sys, /dev...);
``docker cp`` walks :meth:`MountPlan.files` through ``ContainerFS``, and so will
commit, export and diff.  Volumes and tmpfs grow here, not in each reader.

The plan is plain data computed from the container's record: its mount points,
its host config and the paths of the network files the daemon wrote.  Making
sources exist (bind directories, volumes) is the daemon's business, before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from berth import errdefs
from berth.types.container import HostConfig, Mount, MountPoint, TmpfsOptions
from berth.utils.gostr import go_clean

__all__ = [
    "DEFAULT_PROPAGATION",
    "NETWORK_FILES",
    "ContainerMount",
    "MountPlan",
    "NetworkFiles",
    "Origin",
    "clean_destination",
    "container_mounts",
    "convert_tmpfs_options",
]

DEFAULT_PROPAGATION = "rprivate"
#: In the order dockerd mounts them (after the user's mounts of the same depth).
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")

#: Where a mount comes from: the user's binds and volumes, a network file (berth's or
#: the user's mount over it, moby's TrySetNetworkMount), the IPC /dev/shm, a tmpfs.
Origin = Literal["user", "network", "ipc", "tmpfs"]


@dataclass(frozen=True, slots=True)
class NetworkFiles:
    """Host paths of the files berth writes for /etc/hostname, /etc/hosts, /etc/resolv.conf;
    "" or a missing file is not mounted."""

    hostname: str = ""
    hosts: str = ""
    resolv_conf: str = ""


@dataclass(frozen=True, slots=True)
class ContainerMount:
    """moby's ``container.Mount``: *source* on the host appears at *destination*."""

    destination: str  # cleaned, absolute
    source: str  # a host path; "tmpfs" for a tmpfs
    type: Literal["bind", "tmpfs"]
    origin: Origin
    writable: bool = True
    propagation: str = ""
    data: str = ""  # a tmpfs's options, comma-separated as --tmpfs takes them
    non_recursive: bool = False  # --mount bind-nonrecursive
    ro_non_recursive: bool = False  # --mount bind-recursive=writable
    ro_force_recursive: bool = False  # --mount bind-recursive=readonly
    #: the mount point it was made from (user mounts and a user's network file)
    point: MountPoint | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class MountPlan:
    """A container's mounts in dockerd's order: parents first, and within one depth the
    user's, then the network files, the IPC /dev/shm and the tmpfs."""

    mounts: tuple[ContainerMount, ...]

    @property
    def destinations(self) -> frozenset[str]:
        return frozenset(m.destination for m in self.mounts)

    def files(self) -> list[ContainerMount]:
        """What the daemon sees of the container from the host (moby's ``setupMounts``, as
        cp uses it): binds, volumes and network files.  A tmpfs, and the IPC /dev/shm,
        exist only in the running container's mount namespace, out of the host's reach."""
        return [m for m in self.mounts if m.origin in ("user", "network")]


def clean_destination(path: str) -> str:
    """A mount destination as Go's ``filepath.Clean`` leaves it (``//x`` is ``/x``)."""
    return go_clean(path)


def _depth(m: ContainerMount) -> int:
    return m.destination.count("/")


def convert_tmpfs_options(opt: TmpfsOptions | None, read_only: bool) -> str:
    """``--mount type=tmpfs`` options as a ``--tmpfs`` data string (size with a g/m/k suffix)."""
    raw = []
    if read_only:
        raw.append("ro")
    if opt is not None and opt.mode != 0:
        raw.append(f"mode={opt.mode:o}")
    if opt is not None and opt.size_bytes != 0:
        size, suffix = opt.size_bytes, ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        raw.append(f"size={size}{suffix}")
    if opt is not None:
        raw.extend("=".join(o) for o in opt.options or [] if o)
    return ",".join(raw)


def _mount_spec(hc: HostConfig, kind: str, destination: str) -> Mount | None:
    """The ``--mount`` a mount point was recorded from, for the options it does not keep."""
    for m in hc.mounts or []:
        if m.type == kind and clean_destination(m.target) == destination:
            return m
    return None


def _tmpfs_mounts(hc: HostConfig, points: list[MountPoint]) -> list[ContainerMount]:
    """moby's ``TmpfsMounts``: ``--tmpfs`` by destination, then ``--mount type=tmpfs``."""
    out = [
        ContainerMount(clean_destination(dest), "tmpfs", "tmpfs", "tmpfs", data=data)
        for dest, data in sorted((hc.tmpfs or {}).items())
    ]
    for mp in points:
        if mp.type != "tmpfs":
            continue
        dest = clean_destination(mp.destination)
        spec = _mount_spec(hc, "tmpfs", dest)
        read_only = spec.read_only if spec is not None else not mp.rw
        data = convert_tmpfs_options(spec.tmpfs_options if spec else None, read_only)
        out.append(ContainerMount(dest, "tmpfs", "tmpfs", "tmpfs", data=data, point=mp))
    return out


def container_mounts(
    mount_points: Iterable[MountPoint],
    hc: HostConfig,
    network_files: NetworkFiles = NetworkFiles(),
    shm_path: str = "",
) -> MountPlan:
    """The plan of a container with these mount points (binds, volumes, ``--mount``
    tmpfs; sources on the host) and host config.

    A tmpfs wins over a bind at its destination; a user's mount over a network
    file replaces berth's file (keeping rprivate propagation); the IPC /dev/shm
    yields to any user mount there.  *shm_path* is the directory shared for
    ``--ipc shareable`` / ``container:`` ("" = none; ``--ipc host`` binds the host's).
    """
    points = list(mount_points)
    tmpfs = _tmpfs_mounts(hc, points)
    tmpfs_dests = {m.destination for m in tmpfs}
    writable = not hc.readonly_rootfs
    net: dict[str, tuple[str, bool, MountPoint | None]] = {
        "/etc/resolv.conf": (network_files.resolv_conf, writable, None),
        "/etc/hostname": (network_files.hostname, writable, None),
        "/etc/hosts": (network_files.hosts, writable, None),
    }
    binds: list[ContainerMount] = []
    for mp in points:
        dest = clean_destination(mp.destination)
        if mp.type == "tmpfs" or dest in tmpfs_dests:
            continue
        if mp.type not in ("bind", "volume", ""):
            raise errdefs.NotImplementedFeature(
                f'mount type "{mp.type}" at {dest} is not supported by berth'
            )
        if not mp.source:
            raise errdefs.InvalidParameter(f"mount at {dest} has no source")
        if dest in net:
            net[dest] = (mp.source, mp.rw, mp)
            continue
        bo = None
        if mp.type == "bind":
            spec = _mount_spec(hc, "bind", dest)
            bo = spec.bind_options if spec is not None else None
        binds.append(
            ContainerMount(
                dest,
                mp.source,
                "bind",
                "user",
                writable=mp.rw,
                propagation=mp.propagation,
                non_recursive=bool(bo and bo.non_recursive),
                ro_non_recursive=bool(bo and bo.read_only_non_recursive),
                ro_force_recursive=bool(bo and bo.read_only_force_recursive),
                point=mp,
            )
        )
    ms = sorted(binds, key=_depth)
    for dest in NETWORK_FILES:
        source, rw, point = net[dest]
        if source and os.path.exists(source):
            ms.append(
                ContainerMount(
                    dest, source, "bind", "network", rw, DEFAULT_PROPAGATION, point=point
                )
            )
    ipc = hc.ipc_mode
    if ipc not in ("", "private", "none"):
        has_shm = "/dev/shm" in tmpfs_dests or any(
            clean_destination(mp.destination) == "/dev/shm" for mp in points
        )
        source = shm_path or ("/dev/shm" if ipc == "host" else "")
        if source and not has_shm:
            ms.append(ContainerMount("/dev/shm", source, "bind", "ipc", True, DEFAULT_PROPAGATION))
    ms.extend(tmpfs)
    ms.sort(key=_depth)
    return MountPlan(tuple(ms))
