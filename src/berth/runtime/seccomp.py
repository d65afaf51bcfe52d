"""Docker's default seccomp profile, custom profiles, and ``--security-opt`` parsing.

The facts come from moby: the profile is moby/profiles ``seccomp/default_linux.go``
(``default.json`` is generated from it; it used to live in moby's own
``profiles/seccomp``), the conversion is ``seccomp_linux.go`` (``setupSeccomp``),
and when it applies is ``daemon/seccomp_linux.go`` (``WithSeccomp``) plus
``parseSecurityOpt`` in ``daemon/daemon_unix.go``.  The data and code here are
berth's own.

A profile in Docker's format is an OCI ``linux.seccomp`` whose ``syscalls``
carry conditions: ``includes`` / ``excludes`` on the container's capabilities
(its *bounding* set), on the host architecture and on a minimum kernel
version, plus an ``archMap`` that names sub-architectures.  Converting a
profile for one container keeps the rules whose conditions hold and drops the
conditions, exactly as moby does:

* ``excludes``: the rule is dropped if the host arch is listed, if *any*
  listed capability is in the bounding set, or if the kernel is at least
  ``minKernel``;
* ``includes``: the rule is dropped unless the host arch is listed, *all*
  listed capabilities are in the bounding set and the kernel is at least
  ``minKernel``;
* ``archMap``: only the entry for the host architecture is kept, as the
  architecture followed by its sub-architectures.

When it applies (``spec_seccomp``): ``seccomp=unconfined`` → none; a
privileged container gets none unless a profile is given explicitly (moby
then loads it even for a privileged container); ``seccomp=builtin`` or
nothing → the default profile; ``seccomp=<json>`` → that profile (the CLI
reads the file and sends its content).

Where berth differs from dockerd, on purpose:

* a malformed custom profile is refused at create (``validate_security_opts``)
  as well as at start, as ``InvalidParameter`` with moby's decoding message;
  dockerd accepts it at create and fails the start.  Unknown ``action`` /
  ``op`` values are refused here instead of failing inside runc;
* ``seccomp=builtin`` on a privileged container applies the default profile
  (dockerd would try to decode the word ``builtin`` as JSON and fail);
* no ``--seccomp-profile`` daemon option yet: the built-in profile is the
  daemon default.

The profile data is in ``_seccomp_profile``, the Go-compatible decoding of a user's
profile in ``_seccomp_decode``, the conversion to ``linux.seccomp`` (with the host
facts it needs) in ``_seccomp_convert``; this module decides when a profile applies
and is the public surface.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from berth import errdefs
from berth.runtime._seccomp_convert import (
    build_seccomp,
    kernel_runs_x32,
    native_arch,
    parse_kernel_release,
)
from berth.runtime._seccomp_decode import Profile, parse_profile
from berth.runtime._seccomp_profile import (
    DENIED_SOCKET_DOMAINS,
    default_profile,
    default_profile_document,
    socket_rules,
)
from berth.utils.gostr import go_parse_bool
from berth.utils.gostr import go_quote as _go_quote

__all__ = [
    "DENIED_SOCKET_DOMAINS",
    "PROFILE_DEFAULT",
    "PROFILE_UNCONFINED",
    "Profile",
    "SecurityOptions",
    "build_seccomp",
    "default_profile",
    "default_profile_document",
    "kernel_runs_x32",
    "native_arch",
    "parse_kernel_release",
    "parse_profile",
    "parse_security_opts",
    "seccomp_supported",
    "security_options_info",
    "socket_rules",
    "spec_seccomp",
    "validate_security_opts",
]

PROFILE_UNCONFINED = "unconfined"
PROFILE_DEFAULT = "builtin"  # what the CLI sends for --security-opt seccomp=builtin


@functools.cache
def seccomp_supported(status_path: str = "/proc/self/status") -> bool:
    """Whether the kernel has seccomp filters (a ``Seccomp:`` line in /proc/self/status)."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def security_options_info() -> list[str]:
    """``docker info`` SecurityOptions for what berth applies (seccomp only, for now)."""
    return ["name=seccomp,profile=builtin"] if seccomp_supported() else []


# -- --security-opt -----------------------------------------------------------------------


@dataclass
class SecurityOptions:
    """What ``--security-opt`` asks for (moby's parseSecurityOpt)."""

    no_new_privileges: bool = False
    writable_cgroups: bool | None = None
    seccomp_profile: str = ""  # "", "unconfined", "builtin" or a JSON profile
    apparmor_profile: str = ""
    label_opts: list[str] = field(default_factory=list)


def parse_security_opts(opts: Iterable[str] | None) -> SecurityOptions:
    """Parse ``HostConfig.SecurityOpt`` with moby's rules and messages.

    ``key=value`` (or the deprecated ``key:value``); a later option overrides an
    earlier one.  SELinux labels are not checked: this host has no SELinux, and
    moby checks them only where SELinux is enabled.
    """
    out = SecurityOptions()
    for opt in opts or []:
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "writable-cgroups":
            out.writable_cgroups = True
            continue
        if opt == "disable":
            out.label_opts.append("disable")
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
        else:
            raise errdefs.InvalidParameter(f"invalid --security-opt 1: {_go_quote(opt)}")
        if key == "label":
            out.label_opts.append(value)
        elif key == "apparmor":
            out.apparmor_profile = value
        elif key == "seccomp":
            out.seccomp_profile = value
        elif key in ("no-new-privileges", "writable-cgroups"):
            flag = go_parse_bool(value)
            if flag is None:
                raise errdefs.InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
            if key == "no-new-privileges":
                out.no_new_privileges = flag
            else:
                out.writable_cgroups = flag
        else:
            raise errdefs.InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
    return out


def _is_custom(profile: str) -> bool:
    return profile not in ("", PROFILE_UNCONFINED, PROFILE_DEFAULT)


def validate_security_opts(security_opt: list[str] | None) -> None:
    """Refuse malformed ``--security-opt`` values at create, with moby's messages.

    Checks the option syntax (seccomp, apparmor, label, no-new-privileges,
    writable-cgroups) and decodes a custom seccomp profile; nothing here
    depends on the container's capabilities or the host.
    """
    opts = parse_security_opts(security_opt)
    if _is_custom(opts.seccomp_profile):
        parse_profile(opts.seccomp_profile)


def spec_seccomp(
    security_opt: list[str] | None,
    privileged: bool,
    bounding: Iterable[str],
    *,
    supported: bool | None = None,
    x32: bool | None = None,
) -> dict[str, Any] | None:
    """``linux.seccomp`` for a container, or ``None`` for none (moby's WithSeccomp).

    The default profile leaves out the x32 sub-architecture when the kernel does not
    run x32 syscalls (*x32* overrides the probe); a custom profile is used as given.
    """
    profile = parse_security_opts(security_opt).seccomp_profile
    if profile == PROFILE_UNCONFINED:
        return None
    if privileged and not profile:
        return None
    if not (seccomp_supported() if supported is None else supported):
        if _is_custom(profile):
            raise errdefs.InvalidParameter(
                "seccomp is not enabled in your kernel, cannot run a custom seccomp profile"
            )
        return None
    if _is_custom(profile):
        return build_seccomp(parse_profile(profile), bounding)
    out = build_seccomp(default_profile(), bounding)
    if out is not None and not (kernel_runs_x32() if x32 is None else x32):
        # x32 syscalls fail on this kernel whatever the filter says; without the
        # sub-architecture runc compiles the filter ~6 ms faster (every start and exec).
        out["architectures"] = [a for a in out.get("architectures", ()) if a != "SCMP_ARCH_X32"]
    return out
