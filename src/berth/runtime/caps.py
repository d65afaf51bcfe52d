"""Linux capabilities of a container: Docker's defaults, cap-add/cap-drop, privileged.

Facts from moby's ``oci/caps``: the 14 default capabilities in Docker's
order; names are upper-cased and get a ``CAP_`` prefix; ``ALL`` adds (or
drops) everything; a privileged container gets every capability the
daemon itself holds (its effective set), which is also what ``ALL`` means.
A capability the kernel knows but the daemon lacks (here ``CAP_SYS_RESOURCE``)
is refused by name rather than passed on to fail inside runc.
"""

from __future__ import annotations

import json

from berth import errdefs

# Index = capability number (linux/capability.h), up to CAP_CHECKPOINT_RESTORE (40).
KNOWN_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL = "ALL"
PROC_STATUS = "/proc/self/status"
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def caps_from_bitmap(mask: int, last_cap: int = len(KNOWN_CAPS) - 1) -> list[str]:
    """Names of the known capabilities set in *mask*, in capability-number order."""
    limit = min(last_cap, len(KNOWN_CAPS) - 1)
    return [KNOWN_CAPS[i] for i in range(limit + 1) if mask >> i & 1]


def current_caps(status_path: str = PROC_STATUS, last_cap_path: str = CAP_LAST_CAP) -> list[str]:
    """The daemon's effective capabilities; every known one if they cannot be read."""
    last = len(KNOWN_CAPS) - 1
    try:
        with open(last_cap_path, encoding="ascii") as f:
            last = int(f.read().strip())
    except (OSError, ValueError):
        pass
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return caps_from_bitmap(int(line.split(":", 1)[1].strip(), 16), last)
    except (OSError, ValueError):
        pass
    return list(KNOWN_CAPS[: last + 1])


def normalize_caps(names: list[str], available: list[str]) -> list[str]:
    """Upper-case, add ``CAP_``, keep ``ALL``; unknown or unavailable names are refused."""
    out = []
    for raw in names:
        name = raw.upper()
        if name == ALL:
            out.append(name)
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in KNOWN_CAPS:
            raise errdefs.InvalidParameter(f"unknown capability: {json.dumps(name)}")
        if name not in available:
            raise errdefs.InvalidParameter(
                "capability not supported by your kernel or not available in the current "
                f"environment: {json.dumps(name)}"
            )
        out.append(name)
    return out


def tweak_caps(
    basics: list[str] | tuple[str, ...],
    adds: list[str] | None,
    drops: list[str] | None,
    privileged: bool,
    available: list[str],
) -> list[str]:
    """The capability list of a container (bounding = effective = permitted)."""
    if privileged:
        return list(available)
    if not adds and not drops:
        return list(basics)
    cap_drop = normalize_caps(drops or [], available)
    cap_add = normalize_caps(adds or [], available)
    if ALL in cap_add:
        caps = [c for c in available if c not in cap_drop]
    elif ALL in cap_drop:
        caps = [c for c in cap_add if c != ALL]
    else:
        caps = [c for c in basics if c not in cap_drop] + cap_add
    return list(dict.fromkeys(caps))
