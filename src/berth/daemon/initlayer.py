"""The init layer: what every container's root needs before it first starts.

Mount points for /proc, /sys, /dev/pts and /dev/shm, empty files that the
daemon bind-mounts over (/etc/hosts, /etc/hostname, /etc/resolv.conf,
/dev/console), /.dockerenv, and /etc/mtab → /proc/mounts.  Whatever the image
has at those paths is shadowed, as moby's ``initlayer.Setup`` does by
unlinking through the mounted layer.

With overlay2 the layer starts empty and *lowers* are the image's layers: a
directory that the image already has is left to show through, and parents
created here copy the image's owner and mode so the merged view keeps them.
With vfs the layer is a full copy and *lowers* is empty.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

ENTRIES: tuple[tuple[str, str], ...] = (
    ("/dev/pts", "dir"),
    ("/dev/shm", "dir"),
    ("/proc", "dir"),
    ("/sys", "dir"),
    ("/.dockerenv", "file"),
    ("/etc/resolv.conf", "file"),
    ("/etc/hosts", "file"),
    ("/etc/hostname", "file"),
    ("/dev/console", "file"),
    ("/etc/mtab", "/proc/mounts"),
)


def _lookup(lowers: list[Path], rel: str) -> os.stat_result | None:
    """Stat *rel* as the image shows it: the first layer (top down) that has it."""
    parts = rel.split("/")
    for lower in lowers:
        path = lower / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            # An opaque or whited-out parent hides everything below it.
            if _hidden(lower, parts):
                return None
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None  # whiteout
        return st
    return None


def _hidden(lower: Path, parts: list[str]) -> bool:
    cur = lower
    for part in parts[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return False
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return True
        if not stat.S_ISDIR(st.st_mode):
            return True
        try:
            if os.getxattr(cur, "trusted.overlay.opaque") == b"y":
                return True
        except OSError:
            pass
    return False


def _ensure_parent(root: Path, lowers: list[Path], rel_dir: str) -> None:
    cur = root
    rel = ""
    for part in [p for p in rel_dir.split("/") if p]:
        rel = f"{rel}/{part}" if rel else part
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            continue
        if st is not None:
            os.unlink(cur)
        below = _lookup(lowers, rel) if lowers else None
        os.mkdir(cur, 0o755)
        if below is not None and stat.S_ISDIR(below.st_mode):
            os.chmod(cur, stat.S_IMODE(below.st_mode))
            os.lchown(cur, below.st_uid, below.st_gid)


def setup(root: Path, lowers: list[Path]) -> None:
    for path, kind in ENTRIES:
        rel = path.lstrip("/")
        target = root / rel
        _ensure_parent(root, lowers, os.path.dirname(rel))
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if kind == "dir":
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if st is not None:
                os.unlink(target)
            below = _lookup(lowers, rel) if lowers else None
            if below is not None and stat.S_ISDIR(below.st_mode):
                continue  # the image's directory shows through
            os.mkdir(target, 0o755)
            continue
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if kind == "file":
            fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_NOFOLLOW, 0o755)
            os.close(fd)
        else:
            os.symlink(kind, target)
