"""Decoding a seccomp profile in Docker's format, as Go's ``encoding/json`` would.

dockerd decodes ``--security-opt seccomp=<json>`` into moby's Go structs, and a user
reads its errors: keys match case-insensitively, ``null`` leaves a field unset, and a
mistyped value is reported with the Go struct field and type it missed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from berth import errdefs
from berth.utils.gostr import go_quote as _go_quote

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)


# -- the parsed form ----------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[tuple[int, int, int, str], ...] = ()  # (index, value, valueTwo, op)
    includes: Filter | None = None
    excludes: Filter | None = None


@dataclass(frozen=True)
class Profile:
    """A seccomp profile in Docker's format, decoded and checked."""

    default_action: str = ""
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] = ()
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: tuple[Rule, ...] = field(default=())


# -- decoding (Go's encoding/json rules: case-insensitive keys, null = unset) --------------


class _DecodeError(Exception):
    pass


def _kind(value: Any, raw: str | None = None) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {raw if raw is not None else json.dumps(value)}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, struct: str, path: str, gotype: str) -> _DecodeError:
    return _DecodeError(
        f"json: cannot unmarshal {_kind(value)} into Go struct field {struct}.{path} "
        f"of type {gotype}"
    )


def _fields(obj: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The object's members by field name; keys match case-insensitively, the last wins."""
    by_fold = {name.lower(): name for name in known}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = by_fold.get(key.lower())
        if name is not None:
            out[name] = value
    return out


def _string(value: Any, struct: str, path: str, gotype: str = "string") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(value, struct, path, gotype)
    return value


def _strings(value: Any, struct: str, path: str, gotype: str = "string") -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _type_error(value, struct, path, f"[]{gotype}")
    return tuple(_string(v, struct, path, gotype) for v in value)


def _uint(value: Any, struct: str, path: str, bits: int = 64, gotype: str = "uint") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or isinstance(value, float)
        or not 0 <= value < 1 << bits
    ):
        raise _type_error(value, struct, path, gotype)
    return int(value)


def _object(value: Any, struct: str, path: str, gotype: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(value, struct, path, gotype)
    return value


def _kernel_version(value: Any, struct: str, path: str) -> tuple[int, int] | None:
    if value is None:
        return None
    shown = json.dumps(value, ensure_ascii=False)
    expected = 'expected "<kernel>.<major>"'
    if not isinstance(value, str):
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}")
    if value == "":
        return None
    parts = value.split(".", 2)
    if len(parts) != 2:
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}")
    out = []
    for part in parts:
        if not part.isdigit() or not part.isascii() or int(part) > 255:
            raise _DecodeError(f"invalid kernel version: {shown}, {expected}: bad number {part!r}")
        out.append(int(part))
    if out == [0, 0]:
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}: version cannot be 0.0")
    return out[0], out[1]


def _filter(value: Any, path: str) -> Filter | None:
    obj = _object(value, "Syscall", path, "seccomp.Filter")
    if obj is None:
        return None
    f = _fields(obj, ("caps", "arches", "minKernel"))
    return Filter(
        caps=_strings(f.get("caps"), "Filter", f"{path}.caps"),
        arches=_strings(f.get("arches"), "Filter", f"{path}.arches"),
        min_kernel=_kernel_version(f.get("minKernel"), "Filter", f"{path}.minKernel"),
    )


def _rule(value: Any) -> Rule:
    obj = _object(value, "Seccomp", "syscalls", "seccomp.Syscall")
    if obj is None:
        obj = {}
    f = _fields(
        obj, ("names", "action", "errnoRet", "args", "name", "comment", "includes", "excludes")
    )
    names = _strings(f.get("names"), "Syscall", "syscalls.names")
    name = _string(f.get("name"), "Syscall", "syscalls.name")
    _string(f.get("comment"), "Syscall", "syscalls.comment")
    errno_ret = f.get("errnoRet")
    args = []
    raw_args = f.get("args")
    if raw_args is not None:
        if not isinstance(raw_args, list):
            raise _type_error(raw_args, "Syscall", "syscalls.args", "[]specs.LinuxSeccompArg")
        for raw in raw_args:
            arg = _object(raw, "Syscall", "syscalls.args", "specs.LinuxSeccompArg") or {}
            a = _fields(arg, ("index", "value", "valueTwo", "op"))
            args.append(
                (
                    _uint(a.get("index", 0), "LinuxSeccompArg", "syscalls.args.index"),
                    _uint(
                        a.get("value", 0), "LinuxSeccompArg", "syscalls.args.value", 64, "uint64"
                    ),
                    _uint(
                        a.get("valueTwo", 0),
                        "LinuxSeccompArg",
                        "syscalls.args.valueTwo",
                        64,
                        "uint64",
                    ),
                    _string(
                        a.get("op"),
                        "LinuxSeccompArg",
                        "syscalls.args.op",
                        "specs.LinuxSeccompOperator",
                    ),
                )
            )
    rule = Rule(
        names=names,
        action=_string(f.get("action"), "Syscall", "syscalls.action", "specs.LinuxSeccompAction"),
        errno_ret=(
            None
            if errno_ret is None
            else _uint(errno_ret, "Syscall", "syscalls.errnoRet", 64, "uint")
        ),
        args=tuple(args),
        includes=_filter(f.get("includes"), "syscalls.includes"),
        excludes=_filter(f.get("excludes"), "syscalls.excludes"),
    )
    if name:
        if names:
            raise errdefs.InvalidParameter(
                "both 'name' and 'names' are specified in the seccomp profile, "
                "use either 'name' or 'names'"
            )
        rule = Rule(
            names=(name,),
            action=rule.action,
            errno_ret=rule.errno_ret,
            args=rule.args,
            includes=rule.includes,
            excludes=rule.excludes,
        )
    return rule


def _decode(doc: Any) -> Profile:
    if not isinstance(doc, dict):
        raise _DecodeError(
            f"json: cannot unmarshal {_kind(doc)} into Go value of type seccomp.Seccomp"
        )
    f = _fields(
        doc,
        (
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "flags",
            "listenerPath",
            "listenerMetadata",
            "archMap",
            "syscalls",
        ),
    )
    errno_ret = f.get("defaultErrnoRet")
    arch_map = []
    raw_map = f.get("archMap")
    if raw_map is not None:
        if not isinstance(raw_map, list):
            raise _type_error(raw_map, "Seccomp", "archMap", "[]seccomp.Architecture")
        for raw in raw_map:
            entry = _object(raw, "Seccomp", "archMap", "seccomp.Architecture") or {}
            a = _fields(entry, ("architecture", "subArchitectures"))
            arch_map.append(
                (
                    _string(
                        a.get("architecture"), "Architecture", "archMap.architecture", "specs.Arch"
                    ),
                    _strings(
                        a.get("subArchitectures"),
                        "Architecture",
                        "archMap.subArchitectures",
                        "specs.Arch",
                    ),
                )
            )
    raw_calls = f.get("syscalls")
    rules: list[Rule] = []
    if raw_calls is not None:
        if not isinstance(raw_calls, list):
            raise _type_error(raw_calls, "Seccomp", "syscalls", "[]*seccomp.Syscall")
        rules = [_rule(raw) for raw in raw_calls]
    return Profile(
        default_action=_string(
            f.get("defaultAction"), "Seccomp", "defaultAction", "specs.LinuxSeccompAction"
        ),
        default_errno_ret=(
            None
            if errno_ret is None
            else _uint(errno_ret, "Seccomp", "defaultErrnoRet", 64, "uint")
        ),
        architectures=_strings(f.get("architectures"), "Seccomp", "architectures", "specs.Arch"),
        arch_map=tuple(arch_map),
        flags=_strings(f.get("flags"), "Seccomp", "flags", "specs.LinuxSeccompFlag"),
        listener_path=_string(f.get("listenerPath"), "Seccomp", "listenerPath"),
        listener_metadata=_string(f.get("listenerMetadata"), "Seccomp", "listenerMetadata"),
        syscalls=tuple(rules),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def check(profile: Profile) -> None:
    """What runc would refuse later, refused now with a message that says where."""
    if profile.architectures and profile.arch_map:
        raise errdefs.InvalidParameter(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    if profile.default_action == "" and not profile.syscalls:
        return  # seccomp disabled
    if profile.default_action not in ACTIONS:
        raise errdefs.InvalidParameter(
            f"invalid seccomp profile: defaultAction {_go_quote(profile.default_action)} "
            "is not a valid seccomp action"
        )
    for i, rule in enumerate(profile.syscalls):
        if rule.action not in ACTIONS:
            raise errdefs.InvalidParameter(
                f"invalid seccomp profile: syscalls[{i}]: action {_go_quote(rule.action)} "
                "is not a valid seccomp action"
            )
        for _, _, _, op in rule.args:
            if op not in OPERATORS:
                raise errdefs.InvalidParameter(
                    f"invalid seccomp profile: syscalls[{i}]: op {_go_quote(op)} "
                    "is not a valid seccomp operator"
                )


def parse_profile(body: str | bytes | dict[str, Any]) -> Profile:
    """Decode a profile in Docker's format (``--security-opt seccomp=<json>``).

    Raises :class:`berth.errdefs.InvalidParameter` with moby's
    ``Decoding seccomp profile failed: ...`` for malformed input.
    """
    try:
        doc = body if isinstance(body, dict) else json.loads(body, parse_constant=_reject_constant)
        profile = _decode(doc)
    except (ValueError, _DecodeError) as e:
        raise errdefs.InvalidParameter(f"Decoding seccomp profile failed: {e}") from None
    check(profile)
    return profile
