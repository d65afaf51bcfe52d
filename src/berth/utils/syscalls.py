"""The Linux calls Python 3.11's ``os`` lacks (mount, umount2, unshare, setns, and glibc's
mallopt and malloc_trim), through libc.

One binding for the graph driver, the volume store and the network sandboxes; each
turns the ``OSError`` into its own words.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

MS_BIND = 0x1000
MNT_DETACH = 2
CLONE_NEWNET = 0x40000000


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), what)


def _b(value: str | None) -> bytes | None:
    return os.fsencode(value) if value is not None else None


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """mount(2); OSError with the errno on failure."""
    if _libc.mount(_b(source), os.fsencode(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail(target)


def umount2(target: str, flags: int = MNT_DETACH, *, missing_ok: bool = True) -> None:
    """umount2(2), lazily by default; a path that is no mount point (EINVAL) or is gone
    (ENOENT) is fine unless *missing_ok* is false."""
    if _libc.umount2(os.fsencode(target), flags) != 0:
        err = _fail(target)
        if missing_ok and err.errno in (errno.EINVAL, errno.ENOENT):
            return
        raise err


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread."""
    if _libc.unshare(flags) != 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread."""
    if _libc.setns(fd, nstype) != 0:
        raise _fail("setns")


#: glibc's mallopt(3) parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(3); whether it took (False where the C library has no such call)."""
    call = getattr(_libc, "mallopt", None)
    return bool(call(param, value)) if call is not None else False


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): give the free pages of every arena back to the kernel;
    whether any were (False, too, where the C library has no such call)."""
    trim = getattr(_libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
