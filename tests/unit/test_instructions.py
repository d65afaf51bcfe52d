"""berth.builder.instructions and berth.builder.buildargs against the reference dockerd.

Every message in ``ERRORS`` is what dockerd 20.10 answered (``DOCKER_BUILDKIT=0 docker
build``) for that Dockerfile; the values in ``REFERENCE`` are what ``docker inspect``
showed of the image it built (its default ``PATH`` left out: that is the dispatcher's).
"""

from __future__ import annotations

import pytest

from berth.builder import (
    AddCommand,
    ArgCommand,
    BuildArgs,
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
    Lex,
    MaintainerCommand,
    Mount,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    ShellLexError,
    StopSignalCommand,
    UnknownInstructionError,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse,
    parse_command,
    parse_dockerfile,
    parse_onbuild_trigger,
    supports_expansion,
)
from berth.builder.instructions import parse_duration, parse_mount
from berth.errdefs import InvalidParameter
from berth.types.container import HealthConfig

ERRORS = [
    ("FROM scratch\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
    ("FROM scratch\nfoo bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
    (
        "FROM scratch a\n",
        "dockerfile parse error line 1: FROM requires either one or three arguments",
    ),
    (
        "FROM a b c d\n",
        "dockerfile parse error line 1: FROM requires either one or three arguments",
    ),
    ("FROM\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
    (
        "FROM scratch as 1x\n",
        'dockerfile parse error line 1: invalid name for build stage: "1x", '
        "name can't start with a number or contain symbols",
    ),
    (
        "FROM foo AS X!\n",
        'dockerfile parse error line 1: invalid name for build stage: "X!", '
        "name can't start with a number or contain symbols",
    ),
    (
        "FROM scratch\nRUN --network=none true\n",
        "dockerfile parse error line 2: Unknown flag: network",
    ),
    (
        "FROM scratch\nRUN --security=insecure true\n",
        "dockerfile parse error line 2: Unknown flag: security",
    ),
    ("FROM scratch\nCOPY --foo=1 a b\n", "dockerfile parse error line 2: Unknown flag: foo"),
    ("FROM scratch\nCOPY --link a b\n", "dockerfile parse error line 2: Unknown flag: link"),
    (
        "FROM scratch\nHEALTHCHECK --start-interval=1s CMD true\n",
        "dockerfile parse error line 2: Unknown flag: start-interval",
    ),
    ("ENV a=b\nFROM scratch\n", "no build stage in current context"),
    ("FROM scratch\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
    (
        "FROM scratch\nCOPY a\n",
        "dockerfile parse error line 2: COPY requires at least two arguments, but only one was "
        "provided. Destination could not be determined",
    ),
    (
        "FROM scratch\nADD a\n",
        "dockerfile parse error line 2: ADD requires at least two arguments, but only one was "
        "provided. Destination could not be determined",
    ),
    (
        "FROM scratch\nLABEL\n",
        "dockerfile parse error line 2: LABEL requires at least one argument",
    ),
    (
        "FROM scratch\nEXPOSE\n",
        "dockerfile parse error line 2: EXPOSE requires at least one argument",
    ),
    ("FROM scratch\nUSER\n", "dockerfile parse error line 2: USER requires exactly one argument"),
    (
        "FROM scratch\nWORKDIR\n",
        "dockerfile parse error line 2: WORKDIR requires exactly one argument",
    ),
    (
        "FROM scratch\nSTOPSIGNAL\n",
        "dockerfile parse error line 2: STOPSIGNAL requires exactly one argument",
    ),
    (
        "FROM scratch\nMAINTAINER\n",
        "dockerfile parse error line 2: MAINTAINER requires exactly one argument",
    ),
    ("FROM scratch\nARG\n", "dockerfile parse error line 2: ARG requires at least one argument"),
    (
        "FROM scratch\nONBUILD\n",
        "dockerfile parse error line 2: ONBUILD requires at least one argument",
    ),
    (
        "FROM scratch\nVOLUME []\n",
        "dockerfile parse error line 2: VOLUME requires at least one argument",
    ),
    (
        'FROM scratch\nVOLUME [""]\n',
        "dockerfile parse error line 2: VOLUME specified can not be an empty string",
    ),
    ("FROM scratch\nENV =x\n", "dockerfile parse error line 2: ENV names can not be blank"),
    ("FROM scratch\nARG =x\n", "dockerfile parse error line 2: ARG names can not be blank"),
    (
        "FROM scratch\nSHELL sh -c\n",
        "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form",
    ),
    (
        "FROM scratch\nSHELL []\n",
        "dockerfile parse error line 2: SHELL requires at least one argument",
    ),
    (
        "FROM scratch\nHEALTHCHECK --interval=0s CMD true\n",
        'dockerfile parse error line 2: Interval "interval" cannot be less than 1ms',
    ),
    (
        "FROM scratch\nHEALTHCHECK --interval=1 CMD true\n",
        'dockerfile parse error line 2: time: missing unit in duration "1"',
    ),
    (
        "FROM scratch\nHEALTHCHECK --retries=0 CMD true\n",
        "dockerfile parse error line 2: --retries must be at least 1 (not 0)",
    ),
    (
        "FROM scratch\nHEALTHCHECK --retries=x CMD true\n",
        'dockerfile parse error line 2: strconv.ParseInt: parsing "x": invalid syntax',
    ),
    (
        "FROM scratch\nHEALTHCHECK CMD\n",
        "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD",
    ),
    (
        "FROM scratch\nHEALTHCHECK NONE x\n",
        "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments",
    ),
    (
        "FROM scratch\nHEALTHCHECK FOO true\n",
        'dockerfile parse error line 2: Unknown type "FOO" in HEALTHCHECK (try CMD)',
    ),
    (
        "FROM scratch\nCOPY --from a b\n",
        "dockerfile parse error line 2: Missing a value on flag: from",
    ),
    (
        "FROM scratch\nCOPY --from=a --from=b a b\n",
        "dockerfile parse error line 2: Duplicate flag specified: from",
    ),
    (
        "FROM scratch\nRUN --mount\n",
        "dockerfile parse error line 2: Missing a value on flag: mount",
    ),
    (
        "FROM scratch\nRUN --mount=type=bogus true\n",
        'dockerfile parse error line 2: unsupported mount type "bogus"',
    ),
    (
        "FROM scratch\nRUN --mount=foo true\n",
        "dockerfile parse error line 2: invalid field 'foo' must be a key=value pair",
    ),
    (
        "FROM scratch\nRUN --mount=type=secret,id=x,foo=bar true\n",
        "dockerfile parse error line 2: unexpected key 'foo' in 'foo=bar'",
    ),
    (
        "FROM scratch\nONBUILD ONBUILD true\n",
        "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    ),
    (
        "FROM scratch\nONBUILD FROM x\n",
        "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger",
    ),
    ("FROM scratch\nONBUILD --foo=1 RUN x\n", "dockerfile parse error line 2: Unknown flag: foo"),
    ("FROM scratch\nEXPOSE --foo=1 80\n", "dockerfile parse error line 2: Unknown flag: foo"),
    ("FROM scratch\nCMD --foo=1 x\n", "dockerfile parse error line 2: Unknown flag: foo"),
    ("FROM scratch\nWORKDIR --foo=1 /x\n", "dockerfile parse error line 2: Unknown flag: foo"),
    (
        "FROM scratch\nRUN <<EOF\necho hi\nEOF\n",
        "dockerfile parse error line 3: unknown instruction: ECHO",
    ),
    ("FROM scratch\nENV x\n", "failed to parse Dockerfile: ENV must have two arguments"),
    (
        "# escape=x\nFROM scratch\n",
        "failed to parse Dockerfile: invalid escape token 'x' does not match ` or \\",
    ),
    ("\n\n", "failed to parse Dockerfile: file with no instructions"),
    (
        "# escape=`\n# escape=\\\nFROM scratch\n",
        "failed to parse Dockerfile: only one escape parser directive can be used",
    ),
    (
        'FROM scratch\nCMD ["a", 1]\n',
        "failed to parse Dockerfile: when using JSON array syntax, arrays must be comprised of strings only",
    ),
    ("", "the Dockerfile (Dockerfile) cannot be empty"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_reference_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        parse_dockerfile(text.encode())
    assert str(err.value) == message


def test_errors_name_the_dockerfile() -> None:
    with pytest.raises(
        DockerfileParseError, match=r"^failed to parse custom\.df: ENV must have two"
    ):
        parse_dockerfile(b"FROM x\nENV x\n", name="custom.df")
    with pytest.raises(InvalidParameter, match=r"^the Dockerfile \(custom\.df\) cannot be empty$"):
        parse_dockerfile(b"", name="custom.df")
    # the line stays available to the caller
    with pytest.raises(InstructionError) as err:
        parse_dockerfile(b"FROM x\nRUN a \\\n  b\nCOPY a\n")
    assert (err.value.start_line, err.value.end_line) == (4, 4)
    assert err.value.reason.startswith("COPY requires at least two arguments")
    with pytest.raises(UnknownInstructionError) as err2:
        parse_dockerfile(b"FROM x\nfoo \\\n bar\n")
    assert err2.value.instruction == "foo"
    assert (err2.value.start_line, err2.value.end_line) == (2, 3)


@pytest.mark.parametrize(
    "text",
    [
        # accepted by dockerd 20.10 at parse time (some refused later, at dispatch)
        "FROM scratch\nRUN --mount=type=cache true\n",
        "FROM scratch\nRUN --mount=type=cache,target=/x --mount=type=tmpfs,target=/y true\n",
        "FROM scratch\nRUN --mount=target=/x,from=y true\n",
        "FROM scratch\nCOPY --chmod=755 a b\n",
        "FROM scratch\nADD --chmod=755 a b\n",
        "FROM --platform=linux/amd64 scratch\n",
        "FROM scratch\nSTOPSIGNAL --foo=1 SIGKILL\n",  # STOPSIGNAL never parses flags
        "FROM scratch\nARG --foo=1 x\n",  # nor does ARG
        "FROM scratch\nHEALTHCHECK --foo NONE\n",  # nor HEALTHCHECK NONE
        "FROM scratch\nONBUILD RUN --foo=1 x\n",  # a trigger's flags are checked when it runs
        "FROM scratch\nONBUILD FOO bar\n",  # and so is its instruction
        "FROM scratch\nCOPY -from=a a b\n",  # one dash: an argument
        "FROM scratch\nRUN -- --foo=1 x\n",
        "FROM scratch\nHEALTHCHECK --interval=1ms CMD true\n",
        "FROM scratch\nCMD\n",
    ],
)
def test_reference_accepts(text: str) -> None:
    parse_dockerfile(text.encode())


# -- stages and commands ------------------------------------------------------------------------


def test_stages_and_meta_args() -> None:
    parsed = parse_dockerfile(
        b"ARG BASE=busybox\nARG V\n"
        b"FROM --platform=$P ${BASE} AS Build\nRUN make\n"
        b"FROM scratch\nCOPY --from=build /out /\n"
    )
    assert [a.args for a in parsed.meta_args] == [
        [KeyValuePairOptional("BASE", "busybox")],
        [KeyValuePairOptional("V")],
    ]
    first, second = parsed.stages
    assert (first.name, first.base_name, first.platform) == ("build", "${BASE}", "$P")
    assert first.source_code == "FROM --platform=$P ${BASE} AS Build"
    assert first.location == (3, 3)
    assert [str(c) for c in first.commands] == ["RUN make"]
    assert (second.name, second.base_name, second.platform) == ("", "scratch", "")
    copy = second.commands[0]
    assert isinstance(copy, CopyCommand)
    assert (copy.sources, copy.dest, copy.from_) == (["/out"], "/", "build")
    assert parsed.result.escape_token == "\\"


def test_commands() -> None:
    text = b"""FROM x
MAINTAINER  A B <a@b>
ENV a=1 b="c d"
ENV legacy value  here
LABEL l=1 "m n"=o
ADD --chown=1:2 --chmod=600 a b /dst/
COPY --from=0 --chown=u c d
WORKDIR /w
RUN ["echo", "x"]
RUN --mount=type=cache,target=/c,id=k,sharing=locked echo $x \\
    y
CMD echo hi
CMD []
ENTRYPOINT []
ENTRYPOINT exec x
HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=1.5s --retries=3 CMD curl -f x || exit 1
HEALTHCHECK cmd ["true", "x"]
HEALTHCHECK none
EXPOSE 8080 80/udp 443
USER u:g
VOLUME /a "/b c"
VOLUME ["/d"]
STOPSIGNAL SIGTERM
ARG a b=c
SHELL ["/bin/bash", "-c"]
ONBUILD  RUN echo "a  b"
"""
    (stage,) = parse_dockerfile(text).stages
    c = stage.commands
    assert c[0] == MaintainerCommand(
        name="maintainer",
        source_code="MAINTAINER  A B <a@b>",
        start_line=2,
        end_line=2,
        maintainer="A B <a@b>",
    )
    assert isinstance(c[1], EnvCommand)
    assert c[1].env == [KeyValuePair("a", "1"), KeyValuePair("b", '"c d"')]
    assert isinstance(c[2], EnvCommand)
    assert c[2].env == [KeyValuePair("legacy", "value  here")]
    assert isinstance(c[3], LabelCommand)
    assert c[3].labels == [KeyValuePair("l", "1"), KeyValuePair('"m n"', "o")]
    assert isinstance(c[4], AddCommand)
    assert (c[4].sources, c[4].dest, c[4].chown, c[4].chmod) == (["a", "b"], "/dst/", "1:2", "600")
    assert isinstance(c[5], CopyCommand)
    assert (c[5].sources, c[5].dest, c[5].from_, c[5].chown, c[5].chmod) == (
        ["c"],
        "d",
        "0",
        "u",
        "",
    )
    assert isinstance(c[6], WorkdirCommand)
    assert c[6].path == "/w"
    assert isinstance(c[7], RunCommand)
    assert (c[7].cmd_line, c[7].prepend_shell, c[7].flags_used) == (["echo", "x"], False, [])
    run = c[8]
    assert isinstance(run, RunCommand)
    assert run.cmd_line == ["echo $x     y"]
    assert run.prepend_shell
    assert run.flags_used == ["mount"]
    assert run.mounts == [Mount(type="cache", target="/c", cache_id="k", cache_sharing="locked")]
    assert run.source_code == "RUN --mount=type=cache,target=/c,id=k,sharing=locked echo $x     y"
    assert run.location == (10, 11)
    assert isinstance(c[9], CmdCommand)
    assert (c[9].cmd_line, c[9].prepend_shell) == (["echo hi"], True)
    assert isinstance(c[10], CmdCommand)
    assert (c[10].cmd_line, c[10].prepend_shell) == ([], False)
    assert isinstance(c[11], EntrypointCommand)
    assert (c[11].cmd_line, c[11].prepend_shell) == (None, False)
    assert isinstance(c[12], EntrypointCommand)
    assert (c[12].cmd_line, c[12].prepend_shell) == (["exec x"], True)
    assert isinstance(c[13], HealthCheckCommand)
    assert c[13].health == HealthConfig(
        test=["CMD-SHELL", "curl -f x || exit 1"],
        interval=90_000_000_000,
        timeout=500_000_000,
        start_period=1_500_000_000,
        retries=3,
    )
    assert isinstance(c[14], HealthCheckCommand)
    assert c[14].health == HealthConfig(test=["CMD", "true", "x"])
    assert isinstance(c[15], HealthCheckCommand)
    assert c[15].health == HealthConfig(test=["NONE"])
    assert isinstance(c[16], ExposeCommand)
    assert c[16].ports == ["443", "80/udp", "8080"]  # sorted, as buildkit does
    assert isinstance(c[17], UserCommand)
    assert c[17].user == "u:g"
    assert isinstance(c[18], VolumeCommand)
    assert c[18].volumes == ["/a", '"/b', 'c"']
    assert isinstance(c[19], VolumeCommand)
    assert c[19].volumes == ["/d"]
    assert isinstance(c[20], StopSignalCommand)
    assert c[20].signal == "SIGTERM"
    assert isinstance(c[21], ArgCommand)
    assert c[21].args == [KeyValuePairOptional("a"), KeyValuePairOptional("b", "c")]
    assert isinstance(c[22], ShellCommand)
    assert c[22].shell == ["/bin/bash", "-c"]
    assert isinstance(c[23], OnbuildCommand)
    assert c[23].expression == 'RUN echo "a  b"'
    assert c[23].source_code == 'ONBUILD  RUN echo "a  b"'


def test_onbuild_expression_keeps_the_trigger_as_written() -> None:
    # as dockerd 20.10 stored them in the image's OnBuild
    (stage,) = parse_dockerfile(
        b'FROM scratch\nONBUILD RUN echo "a  b" \\\n   && echo c\nonbuild   copy --from=x a b\n'
        b"  onbuild \t run  echo   x\nOnBuild Label a=b\n"
    ).stages
    assert [c.expression for c in stage.commands if isinstance(c, OnbuildCommand)] == [
        'RUN echo "a  b"    && echo c',
        "copy --from=x a b",
        "run  echo   x",
        "Label a=b",
    ]


def test_onbuild_triggers() -> None:
    cmd = parse_onbuild_trigger("RUN echo $HOME")
    assert isinstance(cmd, RunCommand)
    assert cmd.cmd_line == ["echo $HOME"]
    assert cmd.source_code == "RUN echo $HOME"
    copy = parse_onbuild_trigger("copy --from=x a b")
    assert isinstance(copy, CopyCommand)
    assert copy.from_ == "x"
    # errors carry no line: the trigger is not in this Dockerfile
    with pytest.raises(UnknownInstructionError, match=r"^unknown instruction: FOO$"):
        parse_onbuild_trigger("FOO bar")
    with pytest.raises(InstructionError, match=r"^Unknown flag: foo$"):
        parse_onbuild_trigger("RUN --foo=1 x")
    with pytest.raises(InvalidParameter, match=r"^onbuild trigger should be a single expression$"):
        parse_onbuild_trigger("RUN a\nRUN b")
    with pytest.raises(InvalidParameter, match=r"^ENV must have two arguments$"):
        parse_onbuild_trigger("ENV x")
    with pytest.raises(InstructionError, match=r"^\*instructions\.Stage is not a command type$"):
        parse_command(parse(b"FROM x\n").ast.children[0])


# -- expansion ----------------------------------------------------------------------------------


def _commands(text: str) -> list[Command]:
    return parse_dockerfile(b"FROM x\n" + text.encode()).stages[0].commands


def test_which_fields_expand() -> None:
    lex = Lex()
    env = ["a=A", "d=/data", "u=nobody", "P=80 443/udp"]
    commands = _commands(
        'ENV $a=$a k="$d x"\n'
        "LABEL $a=${a}\n"
        "ADD --chown=$u --chmod=$a $d/x $a /$d/\n"
        "COPY --from=$a --chown=$u:$u $d $a\n"
        "WORKDIR $d/rel\n"
        "USER $u:1\n"
        "VOLUME $d /b\n"
        "STOPSIGNAL SIG${u:+KILL}\n"
        "ARG $a=$d b\n"
        "EXPOSE $P 8080 ${Q:-9000}\n"
        "RUN echo $a\n"
        'CMD ["$a"]\n'
        "ENTRYPOINT echo $a\n"
        'SHELL ["$a"]\n'
        "ONBUILD RUN $a\n"
        "MAINTAINER $a\n"
        "HEALTHCHECK CMD $a\n"
    )
    got = [c.expand(lex, env) for c in commands]
    assert got[0].env == [KeyValuePair("A", "A"), KeyValuePair("k", "/data x")]
    assert got[1].labels == [KeyValuePair("A", "A")]
    add = got[2]
    assert isinstance(add, AddCommand)
    assert (add.chown, add.chmod, add.sources, add.dest) == (
        "nobody",
        "$a",
        ["/data/x", "A"],
        "//data/",
    )
    copy = got[3]
    assert isinstance(copy, CopyCommand)
    assert (copy.from_, copy.chown, copy.sources, copy.dest) == (
        "$a",
        "nobody:nobody",
        ["/data"],
        "A",
    )
    assert got[4].path == "/data/rel"
    assert got[5].user == "nobody:1"
    assert got[6].volumes == ["/data", "/b"]
    assert got[7].signal == "SIGKILL"
    assert got[8].args == [KeyValuePairOptional("A", "/data"), KeyValuePairOptional("b")]
    # sorted as written ($P < ${Q... < 8080), then split
    assert got[9].ports == ["80", "443/udp", "9000", "8080"]
    # not expanded: RUN/CMD/ENTRYPOINT (the shell does it), SHELL, ONBUILD, MAINTAINER, HEALTHCHECK
    assert all(g is c for g, c in zip(got[10:], commands[10:], strict=True))
    assert [supports_expansion(c) for c in got] == [True] * 10 + [False] * 7


def test_expand_returns_a_copy() -> None:
    (env,) = _commands("ENV a=$b\n")
    assert isinstance(env, EnvCommand)
    expanded = env.expand(Lex(), ["b=1"])
    assert env.env == [KeyValuePair("a", "$b")]
    assert expanded.env == [KeyValuePair("a", "1")]
    assert expanded.source_code == env.source_code == "ENV a=$b"


def test_labels_from_options_do_not_expand() -> None:
    label = LabelCommand(
        name="label", source_code="", labels=[KeyValuePair("$a", "$a")], no_expand=True
    )
    assert label.expand(Lex(), ["a=1"]) is label


def test_expansion_errors() -> None:
    (workdir,) = _commands("WORKDIR ${d:?no dir}\n")
    with pytest.raises(ShellLexError, match=r'^failed to process "\$\{d:\?no dir\}": d: no dir$'):
        workdir.expand(Lex(), [])
    (volume,) = _commands('VOLUME "/a b" /c\n')
    with pytest.raises(
        ShellLexError,
        match=r'^failed to process "\\"/a": unexpected end of statement while looking for matching double-quote$',
    ):
        volume.expand(Lex(), [])


def test_backtick_escape_expansion() -> None:
    parsed = parse_dockerfile(
        b'# escape=`\nFROM x\nENV a=c:\\dir b="q`"x" c=x` y\nLABEL d=1 `\n  e=2\n'
    )
    lex = Lex(parsed.result.escape_token)
    env, label = (c.expand(lex, []) for c in parsed.stages[0].commands)
    assert env.env == [
        KeyValuePair("a", "c:\\dir"),
        KeyValuePair("b", 'q"x'),
        KeyValuePair("c", "x y"),
    ]
    assert label.labels == [KeyValuePair("d", "1"), KeyValuePair("e", "2")]


def _final_env(text: bytes, build_args: dict[str, str | None] | None = None) -> list[str]:
    """ENV and ARG applied in order, as moby's dispatcher does, to compare with an image."""
    parsed = parse_dockerfile(text)
    lex = Lex(parsed.result.escape_token)
    args = BuildArgs(build_args or {})
    for meta in parsed.meta_args:
        meta_env = [f"{k}={v}" for k, v in args.get_all_allowed().items()]
        for kv in meta.expand(lex, meta_env).args:
            args.add_arg(kv.key, kv.value)
            args.add_meta_arg(kv.key, kv.value)
    args = args.clone()
    args.reset_allowed()
    env: list[str] = []
    for parsed_cmd in parsed.stages[-1].commands:
        cmd = parsed_cmd.expand(lex, env + args.filter_allowed(env))
        if isinstance(cmd, EnvCommand):
            for kv in cmd.env:
                keys = [e.partition("=")[0] for e in env]
                if kv.key in keys:
                    env[keys.index(kv.key)] = str(kv)
                else:
                    env.append(str(kv))
        elif isinstance(cmd, ArgCommand):
            for arg in cmd.args:
                args.add_arg(arg.key, arg.value)
    return env


# the image's Env as dockerd 20.10 built it from each Dockerfile
REFERENCE = [
    (
        b'FROM scratch\nENV a b c\nENV\tb\t c  d \nENV c "x y"  z\nENV d \\"q\\"\nENV e $a-${b}\n',
        {},
        ["a=b c", "b=c  d", "c=x y  z", 'd="q"', "e=b c-c  d"],
    ),
    (
        b'FROM scratch\nENV a=1 b="two words" c=\'$a\' d="$a" e=\\$a f=${a:-def} g=${zz:-def} '
        b"h=${a:+alt} i=${zz:+alt}\nENV j=x\\ y k= l=m=n\n",
        {},
        [
            "a=1",
            "b=two words",
            "c=$a",
            "d=",
            "e=$a",
            "f=def",
            "g=def",
            "h=",
            "i=",
            "j=x y",
            "k=",
            "l=m=n",
        ],
    ),
    (
        b'FROM scratch\nENV a="q\\"uote" b=\'s\\q\' c="back\\\\slash" d=tab\\tx e="t\\tx"\n',
        {},
        ['a=q"uote', "b=s\\q", "c=back\\slash", "d=tabtx", "e=t\\tx"],
    ),
    (
        'FROM scratch\nENV 안녕=하세요 x="é ü" y=${안녕}\n'.encode(),
        {},
        ["안녕=하세요", "x=é ü", "y="],
    ),
    (
        "FROM scratch\nENV 안녕=v\nENV a=$안녕 b=${안녕:-x} c=$안녕x\n".encode(),
        {},
        ["안녕=v", "a=v", "b=v", "c="],
    ),
    (
        b"ARG V=1\nARG W\nFROM scratch\nARG V\nARG X=dx\nARG Y\n"
        b"ENV v=$V x=$X y=${Y:-none} w=${W:-unset} hp=${HTTP_PROXY:-noproxy}\n",
        {"X": "bx", "W": "bw", "HTTP_PROXY": "http://p"},
        ["v=1", "x=bx", "y=none", "w=unset", "hp=http://p"],
    ),
    (b"ARG V=meta\nFROM scratch\nARG V\nENV v=$V\n", {}, ["v=meta"]),
    (b"ARG A=x\nARG B=${A}y\nFROM scratch\nARG B\nENV b=$B\n", {}, ["b=xy"]),
    (
        b"FROM scratch\nARG A=1\nARG B=${A}2 C\nENV b=$B c=${C:-unset}\n",
        {"C": "cc"},
        ["b=12", "c=cc"],
    ),
    (b"FROM scratch\nENV a=1 \\\n# comment\n  b=2 \\\n\n   c=3\n", {}, ["a=1", "b=2", "c=3"]),
    (b"\xef\xbb\xbfFROM scratch\r\nENV a=1 \\\r\n  b=2\r\n", {}, ["a=1", "b=2"]),
    (b"FROM scratch\nENV a=1\nENV a=2 b=$a\nENV c=$a\n", {}, ["a=2", "b=1", "c=2"]),
    (
        b"FROM scratch\nENV a=$ b=$1x c=$. d=${a}x e='${a}' f=\"$\" g=x$\n",
        {},
        ["a=$", "b=x", "c=$.", "d=x", "e=${a}", "f=$", "g=x$"],
    ),
    (
        b"FROM scratch\nENV a=\"x\"y'z' b=${q:-\"q r\"} c=${q:-'s t'} d=${q:-${r:-nest}} e=$a$b f=${a:+$a!}\n",
        {},
        ["a=xyz", "b=q r", "c=s t", "d=nest", "e=", "f="],
    ),
    (
        b'FROM scratch\nENV a="\\$x" b="\\\\$x" c="\\a" d=\'x\'\'y\' e="a\\\nb"\n',
        {},
        ["a=$x", "b=\\", "c=\\a", "d=xy", "e=ab"],
    ),
    (
        b"FROM scratch\nENV a=$@x b=${#} c=$$ d=${0:-zero} e=$1 f=${10:-ten} g=$0x\n",
        {},
        ["a=x", "b=", "c=", "d=zero", "e=", "f=ten", "g=x"],
    ),
    (b"FROM scratch\nENV a b\\ c\\\\d\nENV e='f\\ g'\n", {}, ["a=b c\\d", "e=f\\ g"]),
    (b"FROM scratch\nENV\ta\t=b\n", {}, ["a==b"]),
]


@pytest.mark.parametrize(("text", "build_args", "env"), REFERENCE)
def test_values_as_the_reference_builds_them(
    text: bytes, build_args: dict[str, str | None], env: list[str]
) -> None:
    assert _final_env(text, build_args) == env


# -- RUN --mount, durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mount"),
    [
        ("target=/x", Mount(target="/x", read_only=True)),
        ("type=cache,target=/c", Mount(type="cache", target="/c")),
        ("type=tmpfs,dst=/t,rw=false", Mount(type="tmpfs", target="/t", read_only=True)),
        (
            "type=bind,from=img,source=/s,destination=/d,rw",
            Mount(from_="img", source="/s", target="/d"),
        ),
        (
            "type=secret,id=k,required",
            Mount(type="secret", cache_id="k", read_only=True, required=True),
        ),
        (
            "type=cache,target=/c,mode=0700,uid=1,gid=2",
            Mount(type="cache", target="/c", mode=0o700, uid=1, gid=2),
        ),
        ('"type=cache","target=/a,b"', Mount(type="cache", target="/a,b")),
    ],
)
def test_mounts(value: str, mount: Mount) -> None:
    assert parse_mount(value) == mount


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "failed to parse csv mounts: EOF"),
        ("type=bind,mode=0700", 'mode not allowed for "bind" type mounts'),
        ("type=cache,uid=x", "invalid value x for uid"),
        ("type=cache,mode=9", "invalid value 9 for mode"),
        ("ro=maybe", "invalid value for ro: maybe"),
        ("required", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,sharing=locked", "invalid cache sharing set for bind mount"),
        ("type=cache,sharing=x", 'unsupported sharing value "x"'),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,from=x,id=y", "secret mount should not have a from"),
        ("type=secret,source=a,id=b", "both source and id can't be set"),
        (
            'ty"pe=cache',
            'failed to parse csv mounts: parse error on line 1, column 3: bare " in non-quoted-field',
        ),
        (
            '"type=cache"x',
            'failed to parse csv mounts: parse error on line 1, column 13: extraneous or missing " in quoted-field',
        ),
    ],
)
def test_mount_errors(value: str, message: str) -> None:
    with pytest.raises(InstructionError) as err:
        parse_mount(value)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1ns", 1),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("+2ms", 2_000_000),
        ("-1s", -1_000_000_000),
        ("1µs", 1_000),
        ("1μs", 1_000),
        ("1us", 1_000),
        ("0.000000001s", 1),
        ("2562047h47m16.854775807s", (1 << 63) - 1),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("x", 'time: invalid duration "x"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("1é", 'time: unknown unit "\\xc3\\xa9" in duration "1\\xc3\\xa9"'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
        ("2562047h47m16.854775808s", 'time: invalid duration "2562047h47m16.854775808s"'),
        ("9999999999999999999h", 'time: invalid duration "9999999999999999999h"'),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(InstructionError) as err:
        parse_duration(text)
    assert str(err.value) == message


def test_healthcheck_durations_below_the_minimum() -> None:
    with pytest.raises(InstructionError, match=r'Interval "timeout" cannot be less than 1ms$'):
        parse_dockerfile(b"FROM x\nHEALTHCHECK --timeout=999us CMD true\n")
    with pytest.raises(InstructionError, match=r'Interval "start-period" cannot be less than 1ms$'):
        parse_dockerfile(b"FROM x\nHEALTHCHECK --start-period=-1s CMD true\n")
    with pytest.raises(InstructionError, match=r"parsing \"99999999999\": value out of range$"):
        parse_dockerfile(b"FROM x\nHEALTHCHECK --retries=99999999999 CMD true\n")


# -- BuildArgs ---------------------------------------------------------------------------------


def test_unused_build_args_warning() -> None:
    args = BuildArgs({"zz": "1", "aa": "2", "HTTP_PROXY": "p", "ALL_PROXY": "x", "used": "u"})
    args.add_arg("used", None)
    # as dockerd 20.10 prints it; ALL_PROXY is not one of its builtins
    assert args.warn_on_unused_build_args() == (
        "[Warning] One or more build-args [ALL_PROXY aa zz] were not consumed\n"
    )
    assert BuildArgs({"HTTP_PROXY": "p"}).warn_on_unused_build_args() == ""


def test_allowed_args() -> None:
    args = BuildArgs({"X": "given", "HTTP_PROXY": "hp", "N": None})
    args.add_meta_arg("M", "meta")
    args.add_meta_arg("HTTPS_PROXY", "meta-proxy")
    args.add_arg("X", "default")
    args.add_arg("Y", "y-default")
    args.add_arg("M", None)  # declared without a value: the meta ARG's default
    args.add_arg("N", None)  # given without a value, declared without one: not set
    assert args.get_all_allowed() == {
        "X": "given",
        "Y": "y-default",
        "M": "meta",
        "HTTPS_PROXY": "meta-proxy",
        "HTTP_PROXY": "hp",
    }
    assert args.get_all_meta() == {"M": "meta", "HTTPS_PROXY": "meta-proxy", "HTTP_PROXY": "hp"}
    # the config's own Env wins over a build arg of the same name
    assert args.filter_allowed(["X=env", "Y"]) == [
        "M=meta",
        "HTTPS_PROXY=meta-proxy",
        "HTTP_PROXY=hp",
    ]
    # proxies are transparent unless declared in the stage
    assert not args.is_referenced_or_not_builtin("HTTP_PROXY")
    assert args.is_referenced_or_not_builtin("X")
    args.add_arg("HTTP_PROXY", None)
    assert args.is_referenced_or_not_builtin("HTTP_PROXY")


def test_stages_reset_and_merge() -> None:
    args = BuildArgs({"A": "1", "B": "2"})
    stage = args.clone()
    stage.reset_allowed()
    stage.add_arg("A", None)
    assert stage.get_all_allowed() == {"A": "1"}
    assert args.get_all_allowed() == {}
    assert args.unused_build_args() == ["A", "B"]
    args.merge_referenced_args(stage)
    assert args.unused_build_args() == ["B"]
    nxt = args.clone()
    nxt.reset_allowed()
    assert nxt.get_all_allowed() == {}
    assert nxt.referenced_args == {"A"}
