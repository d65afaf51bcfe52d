"""mount(2)/umount2(2) through libc, and a reader of /proc/self/mountinfo."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess

from berth import errdefs
from berth.utils.mountinfo import unescape as unescape_mountinfo

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise errdefs.System(f"mount {fstype} on {target}: {os.strerror(err)}")


def mount_from(cwd: str, source: str, target: str, fstype: str, data: str) -> None:
    """Mount with options relative to *cwd*, for option strings longer than a page.

    The working directory is per process, so the mount runs in a child.
    """
    proc = subprocess.run(
        ["mount", "-t", fstype, "-o", data, source, target],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise errdefs.System(f"mount {fstype} on {target}: {proc.stderr.strip()}")


def unmount(target: str, flags: int = MNT_DETACH) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        err = ctypes.get_errno()
        if err in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            return
        raise errdefs.System(f"unmount {target}: {os.strerror(err)}")


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below *prefix*, deepest first (the order to unmount them)."""
    prefix = prefix.rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = unescape_mountinfo(line.split(" ", 5)[4])
            if mp == prefix or mp.startswith(prefix + "/"):
                found.append(mp)
    found.sort(key=len, reverse=True)
    return found


def is_mounted(path: str) -> bool:
    return path.rstrip("/") in mounts_under(path)
