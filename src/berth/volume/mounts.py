"""Parsing and validation of ``-v`` (Binds), ``--mount`` (Mounts) and image volumes.

Produces the mount points a container records at create; the rules and
messages follow moby's Linux mount parser.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets

from berth import errdefs
from berth.types.container import HostConfig, Mount, MountPoint

_PROPAGATION = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}
_CONSISTENCY = {"consistent", "cached", "delegated", "default"}
_LABEL = {"z", "Z"}
_RW = {"rw", "ro"}
_COPY = {"nocopy"}


class MountError(errdefs.InvalidParameter):
    pass


def _mount_config_error(kind: str, msg: str) -> MountError:
    return MountError(f'invalid mount config for type "{kind}": {msg}')


def _valid_mode(mode: str) -> bool:
    if not mode:
        return True
    seen: dict[str, int] = {}
    for opt in mode.split(","):
        for name, group in (
            ("rw", _RW),
            ("label", _LABEL),
            ("propagation", _PROPAGATION),
            ("copy", _COPY),
            ("consistency", _CONSISTENCY),
        ):
            if opt in group:
                seen[name] = seen.get(name, 0) + 1
                if seen[name] > 1:
                    return False
                break
        else:
            return False
    return True


def _mode_has(mode: str, opts: set[str]) -> str:
    for opt in mode.split(","):
        if opt in opts:
            return opt
    return ""


#: moby's ``names.RestrictedNamePattern``, which the local volume driver requires
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def validate_volume_name(name: str) -> None:
    """moby's local driver ``validateName``: a name is one safe path component (``..`` or
    ``a/b`` would put the volume's directory outside ``<data-root>/volumes``)."""
    if len(name) == 1:
        raise MountError(
            "volume name is too short, names should be at least two alphanumeric characters"
        )
    if not _VOLUME_NAME.fullmatch(name):
        raise MountError(
            f'"{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path"
        )


def volume_source(data_root: str, name: str) -> str:
    return os.path.join(data_root, "volumes", name, "_data")


def volume_dir(data_root: str, name: str) -> str | None:
    """``<data-root>/volumes/<name>``, or None for a name that is not one path component."""
    if not name or "/" in name or name in (".", ".."):
        return None
    return os.path.join(data_root, "volumes", name)


def anonymous_volumes(hc: HostConfig, mount_points: dict[str, MountPoint]) -> list[MountPoint]:
    """The container's anonymous volumes: those it got a generated name for (``-v /path``,
    ``--mount type=volume`` without a source, the image's ``VOLUME``s), which ``rm -v``
    removes; a volume the user named is never among them.

    There is no volume store to keep moby's ``anonymous`` label, so this is decided from the
    container's own configuration: a volume is named when a bind or ``--mount`` names it.
    """
    named: set[str] = set()
    for raw in hc.binds or []:
        source = raw.split(":", 1)[0] if ":" in raw else ""
        if source and not source.startswith("/"):
            named.add(source)
    for m in hc.mounts or []:
        if m.type == "volume" and m.source:
            named.add(m.source)
    return [
        mp
        for mp in mount_points.values()
        if mp.type == "volume" and mp.name and mp.name not in named
    ]


def parse_bind(raw: str, data_root: str, volume_driver: str = "") -> MountPoint:
    """One ``-v`` entry: ``src:dst[:mode]`` or ``name:dst[:mode]``."""
    invalid = MountError(f"invalid volume specification: '{raw}'")
    arr = raw.split(":", 3)
    if not arr[0] or len(arr) > 3:
        raise invalid
    if len(arr) == 1:
        source, dest, mode = "", arr[0], ""
    elif len(arr) == 2:
        if _valid_mode(arr[1]):  # "/dst:ro" (and "/src:") name no destination
            raise invalid
        source, dest, mode = arr[0], arr[1], ""
    else:
        source, dest, mode = arr
    if not _valid_mode(mode):
        raise MountError(f"invalid mode: {mode}")
    try:
        _check_target(dest, "bind" if source.startswith("/") else "volume")
    except MountError as e:
        raise MountError(f"invalid volume specification: '{raw}': {e}") from None
    rw = _mode_has(mode, _RW) != "ro"
    if source.startswith("/"):
        return MountPoint(
            type="bind",
            source=posixpath.normpath(source),
            destination=posixpath.normpath(dest),
            mode=mode,
            rw=rw,
            propagation=_mode_has(mode, _PROPAGATION) or "rprivate",
        )
    if source:
        validate_volume_name(source)
    name = source or secrets.token_hex(32)
    return MountPoint(
        type="volume",
        name=name,
        source=volume_source(data_root, name),
        destination=posixpath.normpath(dest),
        driver=volume_driver or "local",
        mode=mode or "z",
        rw=rw,
        propagation="",
    )


def _check_target(target: str, kind: str) -> None:
    if not target:
        raise _mount_config_error(kind, "field Target must not be empty")
    if posixpath.normpath(target) == "/":
        raise _mount_config_error(kind, "invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise _mount_config_error(
            kind, f"invalid mount path: '{target}' mount path must be absolute"
        )


def validate_mount(m: Mount, check_bind_source: bool = True) -> None:
    """The checks of ``ValidateMountConfig`` for one ``--mount``."""
    kind = m.type
    _check_target(m.target, kind)
    if kind == "bind":
        if not m.source:
            raise _mount_config_error(kind, "field Source must not be empty")
        if (
            m.bind_options
            and m.bind_options.propagation
            and (m.bind_options.propagation not in _PROPAGATION)
        ):
            raise _mount_config_error(
                kind, f"invalid propagation mode: {m.bind_options.propagation}"
            )
        if m.volume_options is not None:
            raise _mount_config_error(kind, "field VolumeOptions must not be specified")
        if not m.source.startswith("/"):
            raise _mount_config_error(
                kind, f"invalid mount path: '{m.source}' mount path must be absolute"
            )
        create = bool(m.bind_options and m.bind_options.create_mountpoint)
        if check_bind_source and not create and not os.path.exists(m.source):
            raise _mount_config_error(kind, f"bind source path does not exist: {m.source}")
    elif kind == "volume":
        if m.bind_options is not None:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
        subpath = m.volume_options.subpath if m.volume_options else ""
        if subpath and not m.source:
            raise _mount_config_error(kind, "must not set Subpath when using anonymous volumes")
        clean_sub = posixpath.normpath(subpath)
        escapes = clean_sub == ".." or clean_sub.startswith("../")
        if subpath and (subpath.startswith("/") or escapes):
            raise _mount_config_error(kind, "subpath must be a relative path within the volume")
        if m.read_only and not m.source:
            raise _mount_config_error(
                kind, "must not set ReadOnly mode when using anonymous volumes"
            )
    elif kind == "tmpfs":
        if m.bind_options is not None:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
        if m.source:
            raise _mount_config_error(kind, "field Source must not be specified")
        opts = m.tmpfs_options.options if m.tmpfs_options else None
        for opt in opts or []:
            if len(opt) not in (1, 2):
                raise _mount_config_error(kind, "invalid option array length")
            if opt[0] not in ("exec", "noexec"):
                raise _mount_config_error(kind, f"invalid option: {opt[0]}")
    elif kind == "image":
        if m.bind_options is not None:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
        if not m.source:
            raise _mount_config_error(kind, "field Source must not be empty")
    elif kind == "npipe":
        raise _mount_config_error(kind, "mount type unknown")
    else:
        raise _mount_config_error(kind, "mount type unknown")


def mount_point(m: Mount, data_root: str) -> MountPoint:
    """What a validated ``--mount`` records."""
    rw = not m.read_only
    if m.type == "bind":
        propagation = (m.bind_options.propagation if m.bind_options else "") or "rprivate"
        return MountPoint(
            type="bind",
            source=posixpath.normpath(m.source),
            destination=posixpath.normpath(m.target),
            rw=rw,
            propagation=propagation,
        )
    if m.type == "volume":
        if m.source:
            validate_volume_name(m.source)
        name = m.source or secrets.token_hex(32)
        driver = ""
        if m.volume_options and m.volume_options.driver_config:
            driver = m.volume_options.driver_config.name
        return MountPoint(
            type="volume",
            name=name,
            source=volume_source(data_root, name),
            destination=posixpath.normpath(m.target),
            driver=driver or "local",
            mode="z",
            rw=rw,
        )
    return MountPoint(
        type=m.type,
        source=m.source,
        destination=posixpath.normpath(m.target),
        rw=rw,
    )
