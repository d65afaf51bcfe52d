"""The host platform in OCI terms, and parsing of ``--platform`` values."""

from __future__ import annotations

import os
from dataclasses import dataclass

from berth import errdefs

_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


def host_platform() -> Platform:
    arch, variant = _ARCH.get(os.uname().machine, (os.uname().machine, ""))
    return Platform("linux", arch, variant)


def parse_platform(value: str) -> Platform:
    """Parse ``os[/arch[/variant]]``; a missing part is the host's."""
    host = host_platform()
    parts = value.strip().lower().split("/")
    if not parts or not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise errdefs.InvalidParameter(f"invalid platform {value!r}: expected os[/arch[/variant]]")
    osname = parts[0]
    if len(parts) == 1:
        return Platform(osname, host.architecture, host.variant)
    arch, variant = _ARCH.get(parts[1], (parts[1], ""))
    if len(parts) == 3:
        variant = parts[2]
    elif arch != host.architecture:
        variant = ""
    return Platform(osname, arch, variant)
