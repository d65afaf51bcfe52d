"""Device nodes and device-cgroup rules of the OCI spec (after moby's ``oci`` and containerd).

Entries are JSON-ready dicts in the runtime-spec's spelling:
``linux.devices[]`` = ``{"path", "type", "major", "minor", "fileMode", "uid", "gid"}`` and
``linux.resources.devices[]`` = ``{"allow", "type", "major", "minor", "access"}``.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from typing import Any

from berth import errdefs

DEV_ROOT = "/dev"  # where host devices are read from (tests point it elsewhere)
CONTAINER_DEV = "/dev"
ERR_NOT_A_DEVICE = "not a device node"

# What dockerd's default spec allows (moby oci.DefaultLinuxSpec); runc appends its
# own defaults (pts 136:*, ptmx 5:2, tun 10:200, ...) after the spec's rules.
DEFAULT_DEVICE_RULES: tuple[tuple[bool, str, int, int], ...] = (
    (True, "c", 1, 5),  # /dev/zero
    (True, "c", 1, 3),  # /dev/null
    (True, "c", 1, 9),  # /dev/urandom
    (True, "c", 1, 8),  # /dev/random
    (True, "c", 5, 0),  # /dev/tty
    (True, "c", 5, 1),  # /dev/console
    (False, "c", 10, 229),  # /dev/fuse
)

# containerd's HostDevices skips these directories and /dev/console.
_SKIP_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
_INT64_MAX = (1 << 63) - 1
_CGROUP_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})")


def default_device_rules() -> list[dict[str, Any]]:
    """Deny everything, then allow the few devices every container gets."""
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for allow, kind, major, minor in DEFAULT_DEVICE_RULES:
        rules.append(
            {"allow": allow, "type": kind, "major": major, "minor": minor, "access": "rwm"}
        )
    return rules


def device_from_path(path: str) -> dict[str, Any] | None:
    """The device at *path* (not following a final symlink); None when it is not a device.

    OSError propagates when *path* cannot be lstat'ed.
    """
    st = os.lstat(path)
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def device_rule(dev: dict[str, Any], access: str) -> dict[str, Any]:
    return {
        "allow": True,
        "type": dev["type"],
        "major": dev["major"],
        "minor": dev["minor"],
        "access": access,
    }


def _in_dev(path: str) -> bool:
    return path == DEV_ROOT or path.startswith(DEV_ROOT + "/")


def resolved_device_path(path: str) -> str:
    """Follow a symlink only when it ends at a path under /dev (like /dev/disk/by-id/...)."""
    path = posixpath.normpath(path)
    if not path.startswith("/"):
        return path
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
    except OSError:
        return path
    target = os.path.realpath(path)
    if not os.path.exists(target) or not _in_dev(target):
        return path
    return target


def _walk(top: str) -> list[str]:
    """Every path under *top* (itself first), directories entered as met, in name order."""
    out = [top]
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return out
    for name in names:
        path = os.path.join(top, name)
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        except OSError:
            continue
        if is_dir:
            out.extend(_walk(path))
        else:
            out.append(path)
    return out


def devices_from_path(
    host_path: str, container_path: str, access: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--device HOST:CONTAINER:PERMS``: the nodes to create and the cgroup rules to allow.

    A directory adds every device below it, mapped under *container_path*.
    """
    resolved = resolved_device_path(host_path)
    reason = ERR_NOT_A_DEVICE
    try:
        dev = device_from_path(resolved)
    except OSError as e:
        dev = None
        reason = os.strerror(e.errno) if e.errno else str(e)
        reason = reason[:1].lower() + reason[1:]
    else:
        if dev is not None:
            dev["path"] = container_path
            return [dev], [device_rule(dev, access)]
    devs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if reason == ERR_NOT_A_DEVICE and os.path.isdir(resolved):
        for path in _walk(resolved):
            try:
                child = device_from_path(resolved_device_path(path))
            except OSError:
                continue
            if child is None:
                continue
            child["path"] = path.replace(resolved, container_path, 1)
            devs.append(child)
            rules.append(device_rule(child, access))
    if devs:
        return devs, rules
    raise errdefs.InvalidParameter(
        f'error gathering device information while adding custom device "{host_path}": {reason}'
    )


def host_devices(root: str | None = None) -> list[dict[str, Any]]:
    """Every char and block device under /dev, as a privileged container gets them."""
    top = DEV_ROOT if root is None else root
    out: list[dict[str, Any]] = []
    _host_devices(top, top, out)
    return out


def _host_devices(top: str, directory: str, out: list[dict[str, Any]]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        raise errdefs.System(f"listing host devices in {directory}: {e.strerror}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DIRS:
                _host_devices(top, entry.path, out)
            continue
        if entry.name == "console":
            continue
        try:
            dev = device_from_path(entry.path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue
            raise errdefs.System(f"reading host device {entry.path}: {e.strerror}") from None
        if dev is None or dev["type"] == "p":
            continue
        dev["path"] = CONTAINER_DEV + entry.path[len(top) :]
        out.append(dev)


def rules_from_cgroup_rules(rules: list[str] | None) -> list[dict[str, Any]]:
    """``--device-cgroup-rule 'c 1:3 rwm'`` (``*`` is -1, a wildcard; ``a`` alone means all)."""
    out = []
    for raw in rules or []:
        rule = "a *:* rwm" if raw == "a" else raw
        m = _CGROUP_RULE.fullmatch(rule)
        if m is None:
            raise errdefs.InvalidParameter(f"invalid device cgroup rule format: '{raw}'")
        kind, major, minor, access = m.groups()
        numbers = []
        for name, text in (("major", major), ("minor", minor)):
            value = -1 if text == "*" else int(text)
            if value > _INT64_MAX:
                raise errdefs.InvalidParameter(
                    f"invalid {name} value in device cgroup rule format: '{raw}'"
                )
            numbers.append(value)
        out.append(
            {
                "allow": True,
                "type": kind,
                "major": numbers[0],
                "minor": numbers[1],
                "access": access,
            }
        )
    return out
