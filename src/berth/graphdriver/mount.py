"""mount(2)/umount2(2) through libc, and a reader of /proc/self/mountinfo."""

from __future__ import annotations

import os
import subprocess

from berth import errdefs
from berth.utils import syscalls
from berth.utils.mountinfo import mounts_under

MNT_DETACH = syscalls.MNT_DETACH
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    try:
        syscalls.mount(source, target, fstype, flags, data)
    except OSError as e:
        raise errdefs.System(f"mount {fstype} on {target}: {e.strerror}") from None


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
    try:
        syscalls.umount2(target, flags)  # not a mount point, or gone: fine
    except OSError as e:
        raise errdefs.System(f"unmount {target}: {e.strerror}") from None


def is_mounted(path: str) -> bool:
    return path.rstrip("/") in mounts_under(path)
