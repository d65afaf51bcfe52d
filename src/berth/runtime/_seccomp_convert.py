"""Converting a profile to the OCI spec's ``linux.seccomp`` for one container and host.

Profile conditions (capabilities, architecture, kernel version, ``archMap``) are
resolved here, against the host facts they need: its architecture, its kernel
release, and whether it runs x32 syscalls at all.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from berth import errdefs
from berth.runtime._seccomp_decode import Profile, check

# uname -m → the libseccomp-style arch name that "arches" filters use (moby's goToNative).
_MACHINE_TO_NATIVE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc": "ppc",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "s390": "s390",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "mipsel": "mipsle",
    "loongarch64": "loong64",
}
# native name → OCI/libseccomp architecture (moby's nativeToSeccomp).
_NATIVE_TO_SECCOMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}


# -- host facts ---------------------------------------------------------------------------


def native_arch(machine: str | None = None) -> str:
    """The host architecture as profile ``arches`` filters name it (``amd64``, ``arm64``)."""
    m = machine if machine is not None else platform.machine()
    return _MACHINE_TO_NATIVE.get(m, m)


def parse_kernel_release(release: str) -> tuple[int, int]:
    """``"6.18.44-fc"`` → ``(6, 18)``; ``"3.12-1-amd64"`` → ``(3, 12)``."""
    match = re.match(r"\s*[+-]?(\d+)\.[+-]?(\d+)", release)
    if match is None:
        raise errdefs.System(f'failed to parse kernel version "{release}"')
    return int(match.group(1)), int(match.group(2))


@functools.cache
def _host_kernel() -> tuple[int, int]:
    return parse_kernel_release(os.uname().release)


_X32_PROBE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "r = libc.syscall(ctypes.c_long(0x40000000 | 39))\n"  # x32 getpid
    "sys.exit(0 if r >= 0 else 1 if ctypes.get_errno() == 38 else 2)\n"  # 38: ENOSYS
)


@functools.cache
def kernel_runs_x32() -> bool:
    """Whether the kernel runs x32-ABI syscalls (most kernels ship with x32 off).

    Probed in a child: under an outer seccomp filter without x32 the probe itself
    would be killed.  Anything but a clean ENOSYS counts as "runs x32".
    """
    if platform.machine() != "x86_64":
        return False
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _X32_PROBE], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return proc.returncode != 1


# -- conversion ---------------------------------------------------------------------------


def _listed(arch: str, arches: Sequence[str]) -> bool:
    return arch in arches


def build_seccomp(
    profile: Profile,
    capabilities: Iterable[str],
    *,
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The OCI ``linux.seccomp`` for a container whose bounding set is *capabilities*.

    ``None`` when the profile disables seccomp (no defaultAction and no syscalls).
    """
    check(profile)
    if profile.default_action == "" and not profile.syscalls:
        return None
    native = arch if arch is not None else native_arch()
    caps = frozenset(capabilities)

    def kernel_at_least(version: tuple[int, int]) -> bool:
        return (kernel if kernel is not None else _host_kernel()) >= version

    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        out["defaultErrnoRet"] = profile.default_errno_ret
    architectures = list(profile.architectures)
    seccomp_arch = _NATIVE_TO_SECCOMP.get(native)
    if seccomp_arch is not None:
        for name, subs in profile.arch_map:
            if name == seccomp_arch:
                architectures.append(name)
                architectures.extend(subs)
                break
    if architectures:
        out["architectures"] = architectures
    if profile.flags:
        out["flags"] = list(profile.flags)
    if profile.listener_path:
        out["listenerPath"] = profile.listener_path
    if profile.listener_metadata:
        out["listenerMetadata"] = profile.listener_metadata

    syscalls: list[dict[str, Any]] = []
    for rule in profile.syscalls:
        ex = rule.excludes
        if ex is not None:
            if ex.arches and _listed(native, ex.arches):
                continue
            if any(c in caps for c in ex.caps):
                continue
            if ex.min_kernel is not None and kernel_at_least(ex.min_kernel):
                continue
        inc = rule.includes
        if inc is not None:
            if inc.arches and not _listed(native, inc.arches):
                continue
            if not all(c in caps for c in inc.caps):
                continue
            if inc.min_kernel is not None and not kernel_at_least(inc.min_kernel):
                continue
        call: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno_ret is not None:
            call["errnoRet"] = rule.errno_ret
        if rule.args:
            args = []
            for index, value, value_two, op in rule.args:
                arg: dict[str, Any] = {"index": index, "value": value}
                if value_two:
                    arg["valueTwo"] = value_two
                arg["op"] = op
                args.append(arg)
            call["args"] = args
        syscalls.append(call)
    if syscalls:
        out["syscalls"] = syscalls
    return out
