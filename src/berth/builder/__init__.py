"""The classic Dockerfile builder behind ``POST /build`` (moby's ``builder/dockerfile``).

The parser (instructions, directives, variable expansion) is kept apart from
dispatch; steps run as containers and commit through the layer store.

The parsing half is pure and re-exported here: :func:`parse_dockerfile` (both passes,
every error before anything runs), the instruction dataclasses, the shell lexer
:class:`Lex` that expands a command at dispatch, and :class:`BuildArgs`.  They load at
first use: berthd starts without them (20 ms and 0.6 MB), and importing
``berth.builder.build`` does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from berth.builder.buildargs import BUILTIN_ALLOWED_BUILD_ARGS, BuildArgs
    from berth.builder.instructions import (
        AddCommand,
        ArgCommand,
        BFlags,
        CmdCommand,
        Command,
        CopyCommand,
        DockerfileParseError,
        EntrypointCommand,
        EnvCommand,
        ExposeCommand,
        HealthCheckCommand,
        InstructionError,
        KeyValuePair,
        KeyValuePairOptional,
        LabelCommand,
        MaintainerCommand,
        Mount,
        OnbuildCommand,
        ParsedDockerfile,
        RunCommand,
        ShellCommand,
        ShellDependantCmdLine,
        Stage,
        StopSignalCommand,
        UnknownInstructionError,
        UserCommand,
        VolumeCommand,
        WorkdirCommand,
        parse_command,
        parse_dockerfile,
        parse_instruction,
        parse_onbuild_trigger,
        parse_stages,
        supports_expansion,
    )
    from berth.builder.parser import DEFAULT_ESCAPE_TOKEN, Node, ParseError, ParseResult, parse
    from berth.builder.shell_lex import Lex, ShellLexError, WordResult, envs_from_list

#: each re-exported name: the submodule that defines it
_SOURCES = {
    "BUILTIN_ALLOWED_BUILD_ARGS": "berth.builder.buildargs",
    "BuildArgs": "berth.builder.buildargs",
    "AddCommand": "berth.builder.instructions",
    "ArgCommand": "berth.builder.instructions",
    "BFlags": "berth.builder.instructions",
    "CmdCommand": "berth.builder.instructions",
    "Command": "berth.builder.instructions",
    "CopyCommand": "berth.builder.instructions",
    "DockerfileParseError": "berth.builder.instructions",
    "EntrypointCommand": "berth.builder.instructions",
    "EnvCommand": "berth.builder.instructions",
    "ExposeCommand": "berth.builder.instructions",
    "HealthCheckCommand": "berth.builder.instructions",
    "InstructionError": "berth.builder.instructions",
    "KeyValuePair": "berth.builder.instructions",
    "KeyValuePairOptional": "berth.builder.instructions",
    "LabelCommand": "berth.builder.instructions",
    "MaintainerCommand": "berth.builder.instructions",
    "Mount": "berth.builder.instructions",
    "OnbuildCommand": "berth.builder.instructions",
    "ParsedDockerfile": "berth.builder.instructions",
    "RunCommand": "berth.builder.instructions",
    "ShellCommand": "berth.builder.instructions",
    "ShellDependantCmdLine": "berth.builder.instructions",
    "Stage": "berth.builder.instructions",
    "StopSignalCommand": "berth.builder.instructions",
    "UnknownInstructionError": "berth.builder.instructions",
    "UserCommand": "berth.builder.instructions",
    "VolumeCommand": "berth.builder.instructions",
    "WorkdirCommand": "berth.builder.instructions",
    "parse_command": "berth.builder.instructions",
    "parse_dockerfile": "berth.builder.instructions",
    "parse_instruction": "berth.builder.instructions",
    "parse_onbuild_trigger": "berth.builder.instructions",
    "parse_stages": "berth.builder.instructions",
    "supports_expansion": "berth.builder.instructions",
    "DEFAULT_ESCAPE_TOKEN": "berth.builder.parser",
    "Node": "berth.builder.parser",
    "ParseError": "berth.builder.parser",
    "ParseResult": "berth.builder.parser",
    "parse": "berth.builder.parser",
    "Lex": "berth.builder.shell_lex",
    "ShellLexError": "berth.builder.shell_lex",
    "WordResult": "berth.builder.shell_lex",
    "envs_from_list": "berth.builder.shell_lex",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILTIN_ALLOWED_BUILD_ARGS",
    "DEFAULT_ESCAPE_TOKEN",
    "AddCommand",
    "ArgCommand",
    "BFlags",
    "BuildArgs",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "DockerfileParseError",
    "EntrypointCommand",
    "EnvCommand",
    "ExposeCommand",
    "HealthCheckCommand",
    "InstructionError",
    "KeyValuePair",
    "KeyValuePairOptional",
    "LabelCommand",
    "Lex",
    "MaintainerCommand",
    "Mount",
    "Node",
    "OnbuildCommand",
    "ParseError",
    "ParseResult",
    "ParsedDockerfile",
    "RunCommand",
    "ShellCommand",
    "ShellDependantCmdLine",
    "ShellLexError",
    "Stage",
    "StopSignalCommand",
    "UnknownInstructionError",
    "UserCommand",
    "VolumeCommand",
    "WordResult",
    "WorkdirCommand",
    "envs_from_list",
    "parse",
    "parse_command",
    "parse_dockerfile",
    "parse_instruction",
    "parse_onbuild_trigger",
    "parse_stages",
    "supports_expansion",
]
