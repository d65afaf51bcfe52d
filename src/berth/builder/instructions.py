"""Typed Dockerfile instructions: buildkit's ``frontend/dockerfile/instructions``.

The second parsing pass of the classic builder: every node of
:func:`berth.builder.parser.parse` becomes a :class:`Stage` (a ``FROM``) or a command
dataclass, with the flags each instruction accepts and the argument checks and
messages of the reference dockerd (20.10).  Everything is checked before the first
step runs; nothing here touches a file, an image or a container.

Variable expansion is *not* done here: the dispatcher calls a command's
:meth:`Command.expand` with the build's environment right before running it, which
expands exactly the fields buildkit's ``SupportsSingleWordExpansion`` does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

from berth.builder.parser import Node, ParseError, ParseResult, parse
from berth.builder.shell_lex import EnvLike, Lex, go_trim_space
from berth.errdefs import InvalidParameter
from berth.types.container import HealthConfig
from berth.utils.gostr import go_parse_bool, go_quote

#: moby's ``container.MinimumDuration``: the shortest HEALTHCHECK interval accepted.
MINIMUM_DURATION_NS = 1_000_000

#: ``SingleWordExpander``: one word in, one word out.
Expander = Callable[[str], str]


class InstructionError(InvalidParameter):
    """An instruction is malformed; ``reason`` is buildkit's message without the line.

    ``str()`` is dockerd's whole message, ``dockerfile parse error line N: <reason>``,
    when the instruction is part of the Dockerfile; just the reason otherwise (an
    ONBUILD trigger, a command parsed alone).
    """

    def __init__(self, reason: str, start_line: int = 0, end_line: int = 0) -> None:
        message = f"dockerfile parse error line {start_line}: {reason}" if start_line else reason
        super().__init__(message)
        self.reason = reason
        self.start_line = start_line
        self.end_line = end_line


class UnknownInstructionError(InstructionError):
    """An instruction that is not one of the classic builder's."""

    def __init__(self, instruction: str, start_line: int = 0, end_line: int = 0) -> None:
        super().__init__(f"unknown instruction: {instruction.upper()}", start_line, end_line)
        self.instruction = instruction


class DockerfileParseError(InvalidParameter):
    """The first pass failed: dockerd's ``failed to parse <name>: <reason>``."""

    def __init__(self, name: str, cause: ParseError) -> None:
        super().__init__(f"failed to parse {name}: {cause.message}")
        self.reason = cause.message
        self.start_line = cause.start_line
        self.end_line = cause.end_line


# -- key/value helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValuePair:
    """One ``key=value`` of ENV or LABEL, in file order."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class KeyValuePairOptional:
    """One ARG: a name with a default value or none (``None`` ≠ empty)."""

    key: str
    value: str | None = None

    def value_string(self) -> str:
        return self.value or ""

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


def _expand_kvps(kvps: Sequence[KeyValuePair], expand: Expander) -> list[KeyValuePair]:
    return [KeyValuePair(expand(kv.key), expand(kv.value)) for kv in kvps]


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Command:
    """What every instruction has: its name, its text and where it is.

    ``name`` is the lower-cased instruction (``run``); ``source_code`` the logical line
    as written, continuations joined and outer blanks trimmed (``RUN echo hi``), which
    is what ``Step N/M : ...`` shows; lines are 1-based (0 for a trigger).
    """

    name: str
    source_code: str
    start_line: int = 0
    end_line: int = 0

    @property
    def location(self) -> tuple[int, int]:
        return self.start_line, self.end_line

    def __str__(self) -> str:
        return self.source_code

    def expand_with(self, expand: Expander) -> Self:
        """This command with its expandable fields passed through *expand* (a copy).

        EXPOSE splits words as it expands, which only :meth:`expand` does.
        """
        return self

    def expand(self, lex: Lex, env: EnvLike) -> Self:
        """This command with ``$VAR``s in its expandable fields replaced from *env*.

        *env* is what the classic builder uses: the image config's ``Env`` followed by
        the allowed build args not already set there.  Raises
        :class:`berth.builder.shell_lex.ShellLexError`.
        """
        return self.expand_with(lambda word: lex.process_word(word, env))


@dataclass(frozen=True, kw_only=True)
class EnvCommand(Command):
    """``ENV k=v ...`` (or the legacy ``ENV k v``); keys and values expand."""

    env: list[KeyValuePair]

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(self, env=_expand_kvps(self.env, expand))


@dataclass(frozen=True, kw_only=True)
class MaintainerCommand(Command):
    """``MAINTAINER text``; not expanded."""

    maintainer: str


@dataclass(frozen=True, kw_only=True)
class LabelCommand(Command):
    """``LABEL k=v ...``; keys and values expand unless ``no_expand`` (labels from options)."""

    labels: list[KeyValuePair]
    no_expand: bool = False

    def expand_with(self, expand: Expander) -> Self:
        if self.no_expand:
            return self
        return dataclasses.replace(self, labels=_expand_kvps(self.labels, expand))


@dataclass(frozen=True, kw_only=True)
class _SourcesAndDest(Command):
    """COPY's and ADD's shared part: sources, dest and ``--chown`` expand."""

    sources: list[str]
    dest: str
    chown: str = ""
    chmod: str = ""

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(
            self,
            chown=expand(self.chown),
            sources=[expand(s) for s in self.sources],
            dest=expand(self.dest),
        )


@dataclass(frozen=True, kw_only=True)
class AddCommand(_SourcesAndDest):
    """``ADD [--chown=] [--chmod=] src... dest``."""


@dataclass(frozen=True, kw_only=True)
class CopyCommand(_SourcesAndDest):
    """``COPY [--from=] [--chown=] [--chmod=] src... dest``; ``--from`` does not expand."""

    from_: str = ""


@dataclass(frozen=True, kw_only=True)
class OnbuildCommand(Command):
    """``ONBUILD <instruction>``: ``expression`` is the trigger's text, stored in the image."""

    expression: str


@dataclass(frozen=True, kw_only=True)
class WorkdirCommand(Command):
    """``WORKDIR path``; the path expands."""

    path: str

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(self, path=expand(self.path))


@dataclass(frozen=True, kw_only=True)
class ShellDependantCmdLine(Command):
    """RUN, CMD and ENTRYPOINT: the words, and whether the SHELL goes in front (shell form).

    Shell form keeps the whole text as one word (``["echo $HOME"]``); exec form is the
    JSON array.  Neither expands: the shell in the container does that.
    """

    cmd_line: list[str] | None
    prepend_shell: bool


@dataclass(frozen=True)
class Mount:
    """One ``RUN --mount=...`` as buildkit reads it (the classic builder refuses them)."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = False
    cache_id: str = ""
    cache_sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, kw_only=True)
class RunCommand(ShellDependantCmdLine):
    """``RUN``; ``flags_used`` names the flags given, which the classic builder refuses
    at dispatch (``the --mount option requires BuildKit...``) after they parsed."""

    cmd_line: list[str]
    flags_used: list[str] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class CmdCommand(ShellDependantCmdLine):
    """``CMD``; ``CMD`` alone is an empty command line (``[]``), not none."""

    cmd_line: list[str]


@dataclass(frozen=True, kw_only=True)
class EntrypointCommand(ShellDependantCmdLine):
    """``ENTRYPOINT``; ``ENTRYPOINT []`` (or alone) is ``None``: no entrypoint."""


@dataclass(frozen=True, kw_only=True)
class HealthCheckCommand(Command):
    """``HEALTHCHECK [--interval= ...] CMD ...`` or ``HEALTHCHECK NONE``; durations in ns."""

    health: HealthConfig


@dataclass(frozen=True, kw_only=True)
class ExposeCommand(Command):
    """``EXPOSE port[/proto] ...`` (sorted as buildkit sorts them).

    Expansion is word-splitting here, the one instruction where it is:
    ``EXPOSE $PORTS`` with ``PORTS="80 443"`` exposes two ports.
    """

    ports: list[str]

    def expand(self, lex: Lex, env: EnvLike) -> Self:
        ports: list[str] = []
        for port in self.ports:
            ports.extend(lex.process_words(port, env))
        return dataclasses.replace(self, ports=ports)


@dataclass(frozen=True, kw_only=True)
class UserCommand(Command):
    """``USER user[:group]``; expands."""

    user: str

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(self, user=expand(self.user))


@dataclass(frozen=True, kw_only=True)
class VolumeCommand(Command):
    """``VOLUME path ...`` or its JSON form; each path expands."""

    volumes: list[str]

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(self, volumes=[expand(v) for v in self.volumes])


@dataclass(frozen=True, kw_only=True)
class StopSignalCommand(Command):
    """``STOPSIGNAL signal``; expands (checked as a signal at dispatch)."""

    signal: str

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(self, signal=expand(self.signal))


@dataclass(frozen=True, kw_only=True)
class ArgCommand(Command):
    """``ARG name[=default] ...``; names and defaults expand."""

    args: list[KeyValuePairOptional]

    def expand_with(self, expand: Expander) -> Self:
        return dataclasses.replace(
            self,
            args=[
                KeyValuePairOptional(expand(a.key), None if a.value is None else expand(a.value))
                for a in self.args
            ],
        )


@dataclass(frozen=True, kw_only=True)
class ShellCommand(Command):
    """``SHELL ["exe", "arg"...]`` (JSON form only)."""

    shell: list[str]


@dataclass(kw_only=True)
class Stage:
    """One build stage: its ``FROM`` and the commands up to the next ``FROM``.

    ``name`` is the lower-cased ``AS`` name ("" when none), ``base_name`` the image or
    stage as written (expanded with the meta args at dispatch), ``platform`` the
    ``--platform`` value as written.
    """

    name: str
    base_name: str
    platform: str = ""
    commands: list[Command] = field(default_factory=list)
    source_code: str = ""
    start_line: int = 0
    end_line: int = 0

    @property
    def location(self) -> tuple[int, int]:
        return self.start_line, self.end_line

    def add_command(self, cmd: Command) -> None:
        self.commands.append(cmd)


def supports_expansion(cmd: Command) -> bool:
    """Whether the classic builder expands variables in this command before running it."""
    return (
        type(cmd).expand_with is not Command.expand_with or type(cmd).expand is not Command.expand
    )


# -- builder flags ---------------------------------------------------------------------------


class _Flag:
    __slots__ = ("kind", "name", "value", "values")

    def __init__(self, name: str, kind: str, value: str = "") -> None:
        self.name = name
        self.kind = kind  # "bool", "string" or "strings"
        self.value = value
        self.values: list[str] = []


class BFlags:
    """The ``--name[=value]`` flags of one instruction (buildkit's ``BFlags``).

    Instructions declare what they accept, then :meth:`parse` checks what was given
    with buildkit's messages (``Unknown flag: foo``, ``Missing a value on flag: from``,
    ``Duplicate flag specified: from``...).
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.flags: dict[str, _Flag] = {}
        self.used: dict[str, _Flag] = {}
        self.err = ""

    def _add(self, name: str, kind: str, value: str = "") -> _Flag:
        flag = _Flag(name, kind, value)
        if name in self.flags:
            self.err = f"Duplicate flag defined: {name}"
        else:
            self.flags[name] = flag
        return flag

    def add_bool(self, name: str, default: bool = False) -> _Flag:
        return self._add(name, "bool", "true" if default else "false")

    def add_string(self, name: str, default: str = "") -> _Flag:
        return self._add(name, "string", default)

    def add_strings(self, name: str) -> _Flag:
        return self._add(name, "strings")

    def is_used(self, name: str) -> bool:
        return name in self.used

    def parse(self) -> None:
        if self.err:
            raise InstructionError(f"Error setting up flags: {self.err}")
        for arg in self.args:
            if not arg.startswith("--"):
                raise InstructionError(f"Arg should start with -- : {arg}")
            if arg == "--":
                return
            name, eq, value = arg[2:].partition("=")
            flag = self.flags.get(name)
            if flag is None:
                raise InstructionError(f"Unknown flag: {name}")
            if name in self.used and flag.kind != "strings":
                raise InstructionError(f"Duplicate flag specified: {name}")
            self.used[name] = flag
            if flag.kind == "bool":
                if eq and value == "":
                    raise InstructionError(f"Missing a value on flag: {name}")
                lower = value.lower()
                if lower == "":
                    flag.value = "true"
                elif lower in ("true", "false"):
                    flag.value = lower
                else:
                    raise InstructionError(f"Expecting boolean value for flag {name}, not: {value}")
            elif not eq:
                raise InstructionError(f"Missing a value on flag: {name}")
            elif flag.kind == "string":
                flag.value = value
            else:
                flag.values.append(value)


# -- parsing nodes -----------------------------------------------------------------------------


class _Request:
    """buildkit's ``parseRequest``: what a node says, ready for one instruction's parser."""

    def __init__(self, node: Node) -> None:
        self.command = node.value
        self.args = _node_args(node)
        self.attributes = node.attributes
        self.original = node.original
        self.flags = BFlags(node.flags)
        self.start_line = node.start_line
        self.end_line = node.end_line

    def base(self) -> dict[str, Any]:
        return {
            "name": self.command,
            "source_code": go_trim_space(self.original),
            "start_line": self.start_line,
            "end_line": self.end_line,
        }


def _node_args(node: Node) -> list[str]:
    """The argument words of a node; ONBUILD's sub-instruction flattens into them."""
    out: list[str] = []
    for arg in node.args():
        if not arg.children:
            out.append(arg.value)
        elif len(arg.children) == 1:
            out.append(arg.children[0].value)
            out.extend(_node_args(arg.children[0]))
    return out


def _handle_json_args(args: list[str], attributes: dict[str, bool]) -> list[str]:
    """Exec form as is; shell form as one word, its parts joined by one space."""
    if not args:
        return []
    if attributes.get("json"):
        return list(args)
    return [" ".join(args)]


def _err_at_least_one(cmd: str) -> InstructionError:
    return InstructionError(f"{cmd} requires at least one argument")


def _err_exactly_one(cmd: str) -> InstructionError:
    return InstructionError(f"{cmd} requires exactly one argument")


def _err_no_destination(cmd: str) -> InstructionError:
    return InstructionError(
        f"{cmd} requires at least two arguments, but only one was provided. "
        "Destination could not be determined"
    )


def _err_blank_names(cmd: str) -> InstructionError:
    return InstructionError(f"{cmd} names can not be blank")


def _parse_kvps(args: list[str], cmd: str) -> list[KeyValuePair]:
    if not args:
        raise _err_at_least_one(cmd)
    if len(args) % 2:
        raise InstructionError(f"Bad input to {cmd}, too many arguments")
    out: list[KeyValuePair] = []
    for i in range(0, len(args), 2):
        if not args[i]:
            raise _err_blank_names(cmd)
        out.append(KeyValuePair(args[i], args[i + 1]))
    return out


def _parse_env(req: _Request) -> EnvCommand:
    req.flags.parse()
    return EnvCommand(**req.base(), env=_parse_kvps(req.args, "ENV"))


def _parse_maintainer(req: _Request) -> MaintainerCommand:
    if len(req.args) != 1:
        raise _err_exactly_one("MAINTAINER")
    req.flags.parse()
    return MaintainerCommand(**req.base(), maintainer=req.args[0])


def _parse_label(req: _Request) -> LabelCommand:
    req.flags.parse()
    return LabelCommand(**req.base(), labels=_parse_kvps(req.args, "LABEL"))


def _parse_add(req: _Request) -> AddCommand:
    if len(req.args) < 2:
        raise _err_no_destination("ADD")
    chown = req.flags.add_string("chown")
    chmod = req.flags.add_string("chmod")
    req.flags.parse()
    return AddCommand(
        **req.base(),
        sources=req.args[:-1],
        dest=req.args[-1],
        chown=chown.value,
        chmod=chmod.value,
    )


def _parse_copy(req: _Request) -> CopyCommand:
    if len(req.args) < 2:
        raise _err_no_destination("COPY")
    chown = req.flags.add_string("chown")
    from_ = req.flags.add_string("from")
    chmod = req.flags.add_string("chmod")
    req.flags.parse()
    return CopyCommand(
        **req.base(),
        sources=req.args[:-1],
        dest=req.args[-1],
        from_=from_.value,
        chown=chown.value,
        chmod=chmod.value,
    )


_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*\Z")


def _parse_build_stage_name(args: list[str]) -> str:
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise InstructionError(
                f"invalid name for build stage: {go_quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
        return name
    if len(args) != 1:
        raise InstructionError("FROM requires either one or three arguments")
    return ""


def _parse_from(req: _Request) -> Stage:
    name = _parse_build_stage_name(req.args)
    platform = req.flags.add_string("platform")
    req.flags.parse()
    return Stage(
        name=name,
        base_name=req.args[0],
        platform=platform.value,
        source_code=go_trim_space(req.original),
        start_line=req.start_line,
        end_line=req.end_line,
    )


_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)


def _parse_onbuild(req: _Request) -> OnbuildCommand:
    if not req.args:
        raise _err_at_least_one("ONBUILD")
    req.flags.parse()
    trigger = go_trim_space(req.args[0]).upper()
    if trigger == "ONBUILD":
        raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", req.original, count=1)
    return OnbuildCommand(**req.base(), expression=expression)


def _parse_workdir(req: _Request) -> WorkdirCommand:
    if len(req.args) != 1:
        raise _err_exactly_one("WORKDIR")
    req.flags.parse()
    return WorkdirCommand(**req.base(), path=req.args[0])


def _cmd_line(req: _Request, empty_as_none: bool) -> tuple[list[str] | None, bool]:
    args: list[str] | None = _handle_json_args(req.args, req.attributes)
    if empty_as_none and not args:
        args = None
    return args, not req.attributes.get("json")


def _parse_run(req: _Request) -> RunCommand:
    mount = req.flags.add_strings("mount")
    req.flags.parse()
    mounts = [parse_mount(value) for value in mount.values]
    cmd_line, prepend = _cmd_line(req, False)
    return RunCommand(
        **req.base(),
        cmd_line=cmd_line or [],
        prepend_shell=prepend,
        flags_used=list(req.flags.used),
        mounts=mounts,
    )


def _parse_cmd(req: _Request) -> CmdCommand:
    req.flags.parse()
    cmd_line, prepend = _cmd_line(req, False)
    return CmdCommand(**req.base(), cmd_line=cmd_line or [], prepend_shell=prepend)


def _parse_entrypoint(req: _Request) -> EntrypointCommand:
    req.flags.parse()
    cmd_line, prepend = _cmd_line(req, True)
    return EntrypointCommand(**req.base(), cmd_line=cmd_line, prepend_shell=prepend)


def _parse_opt_interval(flag: _Flag) -> int:
    """A HEALTHCHECK duration flag in ns: 0 when not given, at least 1ms when given."""
    if flag.value == "":
        return 0
    ns = parse_duration(flag.value)
    if ns < MINIMUM_DURATION_NS:
        raise InstructionError(f"Interval {go_quote(flag.name)} cannot be less than 1ms")
    return ns


def _parse_healthcheck(req: _Request) -> HealthCheckCommand:
    if not req.args:
        raise _err_at_least_one("HEALTHCHECK")
    typ = req.args[0].upper()
    args = req.args[1:]
    if typ == "NONE":
        if args:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        return HealthCheckCommand(**req.base(), health=HealthConfig(test=["NONE"]))
    interval = req.flags.add_string("interval")
    timeout = req.flags.add_string("timeout")
    start_period = req.flags.add_string("start-period")
    retries_flag = req.flags.add_string("retries")
    req.flags.parse()
    if typ != "CMD":
        raise InstructionError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    cmd = _handle_json_args(args, req.attributes)
    if not cmd:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    test = ["CMD" if req.attributes.get("json") else "CMD-SHELL", *cmd]
    durations = [_parse_opt_interval(f) for f in (interval, timeout, start_period)]
    retries = 0
    if retries_flag.value != "":
        retries = _parse_int32(retries_flag.value)
        if retries < 1:
            raise InstructionError(f"--retries must be at least 1 (not {retries})")
    health = HealthConfig(
        test=test,
        interval=durations[0],
        timeout=durations[1],
        start_period=durations[2],
        retries=retries,
    )
    return HealthCheckCommand(**req.base(), health=health)


def _parse_expose(req: _Request) -> ExposeCommand:
    if not req.args:
        raise _err_at_least_one("EXPOSE")
    req.flags.parse()
    ports = sorted(req.args, key=lambda p: p.encode("utf-8", "surrogateescape"))
    return ExposeCommand(**req.base(), ports=ports)


def _parse_user(req: _Request) -> UserCommand:
    if len(req.args) != 1:
        raise _err_exactly_one("USER")
    req.flags.parse()
    return UserCommand(**req.base(), user=req.args[0])


def _parse_volume(req: _Request) -> VolumeCommand:
    if not req.args:
        raise _err_at_least_one("VOLUME")
    req.flags.parse()
    volumes: list[str] = []
    for arg in req.args:
        value = go_trim_space(arg)
        if value == "":
            raise InstructionError("VOLUME specified can not be an empty string")
        volumes.append(value)
    return VolumeCommand(**req.base(), volumes=volumes)


def _parse_stopsignal(req: _Request) -> StopSignalCommand:
    # buildkit never parses STOPSIGNAL's flags: any are ignored
    if len(req.args) != 1:
        raise _err_exactly_one("STOPSIGNAL")
    return StopSignalCommand(**req.base(), signal=req.args[0])


def _parse_arg(req: _Request) -> ArgCommand:
    # nor ARG's
    if not req.args:
        raise _err_at_least_one("ARG")
    pairs: list[KeyValuePairOptional] = []
    for arg in req.args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            if not key:
                raise _err_blank_names("ARG")
            pairs.append(KeyValuePairOptional(key, value))
        else:
            pairs.append(KeyValuePairOptional(arg))
    return ArgCommand(**req.base(), args=pairs)


def _parse_shell(req: _Request) -> ShellCommand:
    req.flags.parse()
    shell = _handle_json_args(req.args, req.attributes)
    if not shell:
        raise _err_at_least_one("SHELL")
    if not req.attributes.get("json"):
        raise InstructionError("SHELL requires the arguments to be in JSON form")
    return ShellCommand(**req.base(), shell=shell)


_PARSERS: dict[str, Callable[[_Request], Command | Stage]] = {
    "env": _parse_env,
    "maintainer": _parse_maintainer,
    "label": _parse_label,
    "add": _parse_add,
    "copy": _parse_copy,
    "from": _parse_from,
    "onbuild": _parse_onbuild,
    "workdir": _parse_workdir,
    "run": _parse_run,
    "cmd": _parse_cmd,
    "healthcheck": _parse_healthcheck,
    "entrypoint": _parse_entrypoint,
    "expose": _parse_expose,
    "user": _parse_user,
    "volume": _parse_volume,
    "stopsignal": _parse_stopsignal,
    "arg": _parse_arg,
    "shell": _parse_shell,
}


def parse_instruction(node: Node) -> Command | Stage:
    """One instruction node as a command or, for ``FROM``, a stage.

    Raises :class:`InstructionError` with the bare reason (no line prefix).
    """
    fn = _PARSERS.get(node.value.lower())
    if fn is None:
        raise UnknownInstructionError(node.value)
    return fn(_Request(node))


def parse_command(node: Node) -> Command:
    """As :func:`parse_instruction`, refusing ``FROM`` (as an ONBUILD trigger must)."""
    cmd = parse_instruction(node)
    if isinstance(cmd, Stage):
        raise InstructionError("*instructions.Stage is not a command type")
    return cmd


def parse_stages(ast: Node) -> tuple[list[Stage], list[ArgCommand]]:
    """The root's instructions as stages, and the ARGs before the first ``FROM``.

    Errors are ``dockerfile parse error line N: <reason>``; a command before any
    ``FROM`` is ``no build stage in current context``.
    """
    stages: list[Stage] = []
    meta_args: list[ArgCommand] = []
    for node in ast.children:
        try:
            cmd = parse_instruction(node)
        except UnknownInstructionError as exc:
            raise UnknownInstructionError(exc.instruction, node.start_line, node.end_line) from None
        except InstructionError as exc:
            raise InstructionError(exc.reason, node.start_line, node.end_line) from None
        if isinstance(cmd, Stage):
            stages.append(cmd)
            continue
        if not stages:
            if isinstance(cmd, ArgCommand):
                meta_args.append(cmd)
                continue
            raise InvalidParameter("no build stage in current context")
        stages[-1].add_command(cmd)
    return stages, meta_args


class ParsedDockerfile(NamedTuple):
    """What :func:`parse_dockerfile` gives: stages, meta ARGs and the first pass's result
    (escape token, directives, warnings for the build's stderr)."""

    stages: list[Stage]
    meta_args: list[ArgCommand]
    result: ParseResult


def parse_dockerfile(data: bytes, name: str = "Dockerfile") -> ParsedDockerfile:
    """Both passes over a Dockerfile's bytes, every error before anything runs.

    *name* is the Dockerfile's name in the context, which dockerd puts in its
    first-pass errors (``failed to parse Dockerfile: ...``).
    """
    if not data:
        raise InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    try:
        result = parse(data)
    except ParseError as exc:
        raise DockerfileParseError(name, exc) from None
    stages, meta_args = parse_stages(result.ast)
    return ParsedDockerfile(stages, meta_args, result)


def parse_onbuild_trigger(trigger: str) -> Command:
    """An ONBUILD trigger from a parent image, as the child build dispatches it.

    Parsed alone with the default escape token; it must be one instruction, and its
    errors carry no line (dockerd's ``dispatchTriggeredOnBuild``).
    """
    try:
        result = parse(trigger.encode("utf-8", "surrogateescape"))
    except ParseError as exc:
        raise InvalidParameter(exc.message) from None
    if len(result.ast.children) != 1:
        raise InvalidParameter("onbuild trigger should be a single expression")
    return parse_command(result.ast.children[0])


# -- RUN --mount ---------------------------------------------------------------------------

_MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
_SHARING = frozenset({"shared", "private", "locked"})


def parse_mount(value: str) -> Mount:
    """One ``--mount`` value, checked as buildkit checks it while parsing."""
    fields = _csv_fields(value)
    kind = "bind"
    values: dict[str, Any] = {}
    read_only: bool | None = None
    required = False
    for item in fields:
        key, eq, val = item.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                read_only = True
                continue
            if key in ("readwrite", "rw"):
                read_only = False
                continue
            if key == "required":
                if kind in ("secret", "ssh"):
                    required = True
                    continue
                raise InstructionError(f"unexpected key '{key}' for mount type '{kind}'")
            raise InstructionError(f"invalid field '{item}' must be a key=value pair")
        if key == "type":
            if val.lower() not in _MOUNT_TYPES:
                raise InstructionError(f"unsupported mount type {go_quote(val)}")
            kind = val.lower()
        elif key == "from":
            values["from_"] = val
        elif key in ("source", "src"):
            values["source"] = val
        elif key in ("target", "dst", "destination", "dest"):
            values["target"] = val
        elif key in ("readonly", "ro", "readwrite", "rw"):
            flag = go_parse_bool(val)
            if flag is None:
                raise InstructionError(f"invalid value for {key}: {val}")
            read_only = flag if key in ("readonly", "ro") else not flag
        elif key == "required":
            if kind not in ("secret", "ssh"):
                raise InstructionError(f"unexpected key '{key}' for mount type '{kind}'")
            flag = go_parse_bool(val)
            if flag is None:
                raise InstructionError(f"invalid value for {key}: {val}")
            required = flag
        elif key == "id":
            values["cache_id"] = val
        elif key == "sharing":
            if val.lower() not in _SHARING:
                raise InstructionError(f"unsupported sharing value {go_quote(val)}")
            values["cache_sharing"] = val.lower()
        elif key in ("mode", "uid", "gid"):
            number = _parse_uint32(val, 8 if key == "mode" else 10)
            if number is None:
                raise InstructionError(f"invalid value {val} for {key}")
            values[key] = number
        else:
            raise InstructionError(f"unexpected key '{key}' in '{item}'")
    file_info = kind in ("secret", "ssh", "cache")
    for key in ("mode", "uid", "gid"):
        if key in values and not file_info:
            raise InstructionError(f"{key} not allowed for {go_quote(kind)} type mounts")
    if read_only is None:
        read_only = kind not in ("cache", "tmpfs")
    if values.get("cache_sharing") and kind != "cache":
        raise InstructionError(f"invalid cache sharing set for {kind} mount")
    if kind == "secret":
        if values.get("from_"):
            raise InstructionError("secret mount should not have a from")
        if not (values.get("source") or values.get("target") or values.get("cache_id")):
            raise InstructionError("invalid secret mount. one of source, target required")
        if values.get("source") and values.get("cache_id"):
            raise InstructionError("both source and id can't be set")
    return Mount(type=kind, read_only=read_only, required=required, **values)


def _csv_fields(value: str) -> list[str]:
    """One record of Go's ``encoding/csv``: comma-separated, ``"`` quotes, ``""`` inside.

    A quote out of place is an error as in Go; its column there is the byte after it
    (not pinned against Go for a quote left open at the end).
    """
    if value == "":
        raise InstructionError("failed to parse csv mounts: EOF")
    fields: list[str] = []
    i, n = 0, len(value)
    while True:
        if value[i : i + 1] == '"':
            buf: list[str] = []
            i += 1
            while True:
                q = value.find('"', i)
                if q < 0:
                    raise _csv_error(value, n, 'extraneous or missing " in quoted-field')
                buf.append(value[i:q])
                i = q + 1
                if value[i : i + 1] == '"':
                    buf.append('"')
                    i += 1
                elif i < n and value[i] != ",":
                    raise _csv_error(value, i, 'extraneous or missing " in quoted-field')
                else:
                    break
            fields.append("".join(buf))
        else:
            stop = value.find(",", i)
            stop = n if stop < 0 else stop
            quote = value.find('"', i, stop)
            if quote >= 0:
                raise _csv_error(value, quote, 'bare " in non-quoted-field')
            fields.append(value[i:stop])
            i = stop
        if i >= n:
            return fields
        i += 1  # the comma


def _csv_error(value: str, at: int, what: str) -> InstructionError:
    column = len(value[: at + 1].encode("utf-8", "surrogateescape"))
    return InstructionError(
        f"failed to parse csv mounts: parse error on line 1, column {column}: {what}"
    )


def _parse_uint32(text: str, base: int) -> int | None:
    """``strconv.ParseUint(text, base, 32)``, None where Go errs."""
    if not text or not all(c in "0123456789"[:base] for c in text):
        return None
    value = int(text, base)
    return value if value < 1 << 32 else None


def _parse_int32(text: str) -> int:
    """``strconv.ParseInt(text, 10, 32)`` with Go's error text."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise InstructionError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text)
    if not -(1 << 31) <= value < 1 << 31:
        raise InstructionError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


# -- Go's time.ParseDuration -----------------------------------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def _time_quote(text: str) -> str:
    """The ``quote`` of Go's time package: ``"..."`` with non-ASCII bytes as ``\\xNN``."""
    out = ['"']
    for ch in text:
        if ord(ch) >= 0x80 or ord(ch) < 0x20:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in ns, raising its messages as :class:`InstructionError`."""
    orig = text
    invalid = InstructionError(f"time: invalid duration {_time_quote(orig)}")
    neg = False
    s = text
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole_text, s = s[:i], s[i:]
        whole = int(whole_text) if whole_text else 0
        if whole > 1 << 63:
            raise invalid
        pre = bool(whole_text)
        frac_text = ""
        post = False
        if s[:1] == ".":
            s = s[1:]
            j = 0
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac_text, s = s[:j], s[j:]
            post = bool(frac_text)
        if not pre and not post:
            raise invalid
        j = 0
        while j < len(s) and not (s[j] == "." or "0" <= s[j] <= "9"):
            j += 1
        if j == 0:
            raise InstructionError(f"time: missing unit in duration {_time_quote(orig)}")
        unit_text, s = s[:j], s[j:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise InstructionError(
                f"time: unknown unit {_time_quote(unit_text)} in duration {_time_quote(orig)}"
            )
        if whole > (1 << 63) // unit:
            raise invalid
        value = whole * unit
        if frac_text:
            # Go scales with a float64 (accurate to the ns for fractions of an hour)
            digits = frac_text[:19]
            scale = 10 ** len(digits)
            value += int(int(digits) * (unit / scale))
            if value > 1 << 63:
                raise invalid
        total += value
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > (1 << 63) - 1:
        raise invalid
    return total
