"""Resolve a path inside a directory as if it were the root (a chroot without one).

Layers and container filesystems are untrusted: their symlinks must never
lead berthd outside them.
"""

from __future__ import annotations

import os
import stat

from berth import errdefs

_MAX_SYMLINKS = 255


def secure_join(root: str, rel: str) -> str:
    """Resolve *rel* under *root*, following symlinks as if *root* were ``/``.

    The last component is resolved too; a dangling final component is fine.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise errdefs.InvalidParameter(
                    f"too many levels of symbolic links resolving {rel!r}"
                )
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)
