"""Fields of /proc/self/mountinfo, the kernel's table of mount points."""

from __future__ import annotations


def unescape(field: str) -> str:
    """A mount point or source as written: mountinfo escapes space, tab, newline and
    backslash as three octal digits (``\\040``)."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below *prefix*, deepest first (the order to unmount them)."""
    prefix = prefix.rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = unescape(line.split(" ", 5)[4])
            if mp == prefix or mp.startswith(prefix + "/"):
                found.append(mp)
    found.sort(key=len, reverse=True)
    return found
