"""berth.image.changes: ``docker import --change`` / ``commit --change`` instructions."""

from __future__ import annotations

import copy

import pytest

from berth import errdefs
from berth.image.changes import apply_changes
from berth.types.container import Config, HealthConfig
from berth.types.wire import Empty

SEC = 1_000_000_000


def apply(changes: list[str], config: Config | None = None) -> Config:
    return apply_changes(config if config is not None else Config(), changes)


def invalid(changes: list[str], config: Config | None = None) -> str:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        apply(changes, config)
    return str(exc.value)


# -- CMD / ENTRYPOINT -------------------------------------------------------------


def test_cmd_json_form() -> None:
    assert apply(['CMD ["echo", "hi there"]']).cmd == ["echo", "hi there"]


def test_cmd_shell_form() -> None:
    assert apply(["CMD echo $HOME  && ls"]).cmd == ["/bin/sh", "-c", "echo $HOME  && ls"]


def test_cmd_invalid_json_falls_back_to_shell_form() -> None:
    assert apply(['CMD ["echo", 1]']).cmd == ["/bin/sh", "-c", '["echo", 1]']
    assert apply(["CMD [not json"]).cmd == ["/bin/sh", "-c", "[not json"]


def test_cmd_requires_an_argument() -> None:
    assert invalid(["CMD"]) == "CMD requires at least one argument"


def test_keywords_are_case_insensitive() -> None:
    assert apply(['cmd ["a"]']).cmd == ["a"]
    assert apply(["Entrypoint b"]).entrypoint == ["/bin/sh", "-c", "b"]


def test_entrypoint_json_and_shell_form() -> None:
    assert apply(['ENTRYPOINT ["/app", "-v"]']).entrypoint == ["/app", "-v"]
    assert apply(["ENTRYPOINT /app -v"]).entrypoint == ["/bin/sh", "-c", "/app -v"]


def test_entrypoint_clears_an_inherited_cmd() -> None:
    cfg = apply(['ENTRYPOINT ["/app"]'], Config(cmd=["old"]))
    assert cfg.entrypoint == ["/app"]
    assert cfg.cmd is None


def test_entrypoint_keeps_a_cmd_set_in_the_same_changes() -> None:
    cfg = apply(['CMD ["x"]', 'ENTRYPOINT ["/app"]'], Config(cmd=["old"]))
    assert cfg.entrypoint == ["/app"]
    assert cfg.cmd == ["x"]
    # order: CMD after ENTRYPOINT also sticks
    cfg = apply(['ENTRYPOINT ["/app"]', 'CMD ["y"]'], Config(cmd=["old"]))
    assert cfg.cmd == ["y"]


def test_empty_entrypoint() -> None:
    cfg = apply(["ENTRYPOINT []"], Config(entrypoint=["/old"], cmd=["c"]))
    assert cfg.entrypoint == []
    assert cfg.cmd is None


# -- ENV ----------------------------------------------------------------------


def test_env_single_and_multiple() -> None:
    assert apply(["ENV A=1"]).env == ["A=1"]
    assert apply(["ENV A=1 B=2", "ENV C=3"]).env == ["A=1", "B=2", "C=3"]


def test_env_quotes_and_escapes() -> None:
    cfg = apply(['ENV A="hello world" B=\'x y\' C=a\\ b D=""'])
    assert cfg.env == ["A=hello world", "B=x y", "C=a b", "D="]


def test_env_legacy_form_keeps_the_rest_of_the_line() -> None:
    assert apply(["ENV K some value"]).env == ["K=some value"]
    assert apply(["ENV K  spaced   out "]).env == ["K=spaced   out"]


def test_env_legacy_form_needs_a_value() -> None:
    assert invalid(["ENV K"]) == "ENV must have two arguments"


def test_env_replaces_existing_keys_in_place() -> None:
    cfg = apply(["ENV B=new C=3"], Config(env=["A=1", "B=old", "PATH=/bin"]))
    assert cfg.env == ["A=1", "B=new", "PATH=/bin", "C=3"]


def test_env_expands_variables_from_before_the_instruction() -> None:
    base = Config(env=["PATH=/usr/bin", "X=1"])
    cfg = apply(["ENV PATH=$PATH:/opt/bin Y=${X}2 Z=$X"], base)
    assert cfg.env == ["PATH=/usr/bin:/opt/bin", "X=1", "Y=12", "Z=1"]
    # a later instruction sees the earlier one
    cfg = apply(["ENV A=a", "ENV B=$A-b"])
    assert cfg.env == ["A=a", "B=a-b"]
    # within one instruction, the old value is used (as dockerd does)
    cfg = apply(["ENV A=1", "ENV A=2 B=$A"])
    assert cfg.env == ["A=2", "B=1"]


def test_env_unset_variable_expands_to_empty() -> None:
    assert apply(["ENV A=x${NOPE}y$NOPE"]).env == ["A=xy"]


def test_env_no_expansion_in_single_quotes_or_after_backslash() -> None:
    cfg = apply(['ENV A=\'$X\' B=\\$X C="$X" D="\\$X"'], Config(env=["X=v"]))
    assert cfg.env == ["X=v", "A=$X", "B=$X", "C=v", "D=$X"]


def test_env_expansion_modifiers() -> None:
    base = Config(env=["SET=v", "EMPTY="])
    cfg = apply(
        ["ENV A=${UNSET:-dflt} B=${SET:-dflt} C=${EMPTY:-dflt} D=${EMPTY-dflt} "
         "E=${SET:+alt} F=${UNSET:+alt} G=${EMPTY:+alt} H=${EMPTY+alt}"],
        base,
    )  # fmt: skip
    assert cfg.env == [
        "SET=v",
        "EMPTY=",
        "A=dflt",
        "B=v",
        "C=dflt",
        "D=",
        "E=alt",
        "F=",
        "G=",
        "H=alt",
    ]


def test_env_errors() -> None:
    assert invalid(["ENV"]) == "ENV requires at least one argument"
    assert invalid(["ENV =x"]) == "ENV names can not be blank"
    assert invalid(["ENV A=1 B"]) == (
        "Syntax error - can't find = in 'B'. Must be of the form: name=value"
    )
    assert invalid(['ENV A="open']).startswith("unmatched quote")


# -- LABEL ----------------------------------------------------------------------


def test_label() -> None:
    cfg = apply(['LABEL a=1 "b c"="d e"', "LABEL a=2 x=y"], Config(labels={"keep": "k"}))
    assert cfg.labels == {"keep": "k", "a": "2", "b c": "d e", "x": "y"}


def test_label_legacy_form_and_expansion() -> None:
    cfg = apply(["LABEL maintainer some one", "LABEL v=$V"], Config(env=["V=1.0"]))
    assert cfg.labels == {"maintainer": "some one", "v": "1.0"}


# -- EXPOSE ----------------------------------------------------------------------


def test_expose() -> None:
    cfg = apply(["EXPOSE 80 53/udp 443/TCP 8000-8002"], Config(exposed_ports={"22/tcp": Empty()}))
    assert cfg.exposed_ports is not None
    assert sorted(cfg.exposed_ports) == [
        "22/tcp",
        "443/tcp",
        "53/udp",
        "80/tcp",
        "8000/tcp",
        "8001/tcp",
        "8002/tcp",
    ]
    assert all(isinstance(v, Empty) for v in cfg.exposed_ports.values())


def test_expose_sctp_range() -> None:
    cfg = apply(["EXPOSE 10-11/sctp"])
    assert cfg.exposed_ports is not None
    assert sorted(cfg.exposed_ports) == ["10/sctp", "11/sctp"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("80/icmp", "invalid proto: icmp"),
        ("http", "invalid containerPort: http"),
        ("0", "invalid containerPort: 0"),
        ("65536", "invalid containerPort: 65536"),
        ("90-80", "invalid containerPort: 90-80"),
    ],
)
def test_expose_errors(arg: str, message: str) -> None:
    assert invalid([f"EXPOSE {arg}"]) == message


# -- USER / WORKDIR / VOLUME / STOPSIGNAL / ONBUILD --------------------------------


def test_user() -> None:
    assert apply(["USER nobody:nogroup"]).user == "nobody:nogroup"
    assert apply(["USER $U"], Config(env=["U=app"])).user == "app"
    assert invalid(["USER"]) == "USER requires exactly one argument"


def test_workdir() -> None:
    assert apply(["WORKDIR /srv/app"]).working_dir == "/srv/app"
    assert apply(["WORKDIR /srv//app/../x/"]).working_dir == "/srv/x"
    assert apply(["WORKDIR rel"]).working_dir == "/rel"
    assert apply(["WORKDIR rel"], Config(working_dir="/base")).working_dir == "/base/rel"
    assert apply(["WORKDIR /a", "WORKDIR b", "WORKDIR ../c"]).working_dir == "/a/c"
    assert apply(["WORKDIR $D/x"], Config(env=["D=/data"])).working_dir == "/data/x"
    assert apply(['WORKDIR "/my dir"']).working_dir == "/my dir"
    assert invalid(["WORKDIR"]) == "WORKDIR requires exactly one argument"


def test_volume() -> None:
    cfg = apply(['VOLUME ["/data", "/logs"]', "VOLUME /a /b"], Config(volumes={"/old": Empty()}))
    assert cfg.volumes is not None
    assert sorted(cfg.volumes) == ["/a", "/b", "/data", "/logs", "/old"]
    assert invalid(['VOLUME ["/a", ""]']) == "VOLUME specified can not be an empty string"
    assert invalid(["VOLUME"]) == "VOLUME requires at least one argument"


def test_stopsignal() -> None:
    assert apply(["STOPSIGNAL SIGINT"]).stop_signal == "SIGINT"
    assert apply(["STOPSIGNAL 9"]).stop_signal == "9"
    assert apply(["STOPSIGNAL $S"], Config(env=["S=SIGQUIT"])).stop_signal == "SIGQUIT"
    assert invalid(["STOPSIGNAL SIGNOPE"]) == "invalid signal: SIGNOPE"
    assert invalid(["STOPSIGNAL 0"]) == "invalid signal: 0"


def test_onbuild() -> None:
    cfg = apply(["ONBUILD RUN echo hi", "ONBUILD copy . /app"], Config(on_build=["ADD x y"]))
    assert cfg.on_build == ["ADD x y", "RUN echo hi", "COPY . /app"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("FROM busybox", "FROM isn't allowed as an ONBUILD trigger"),
        ("maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ],
)
def test_onbuild_errors(arg: str, message: str) -> None:
    assert invalid([f"ONBUILD {arg}"]) == message


# -- HEALTHCHECK --------------------------------------------------------------------


def test_healthcheck_none() -> None:
    cfg = apply(["HEALTHCHECK NONE"], Config(healthcheck=HealthConfig(test=["CMD", "x"])))
    assert cfg.healthcheck == HealthConfig(test=["NONE"])
    assert invalid(["HEALTHCHECK NONE extra"]) == "HEALTHCHECK NONE takes no arguments"
    assert invalid(["HEALTHCHECK --interval=1s NONE"]) == "HEALTHCHECK NONE takes no arguments"


def test_healthcheck_cmd_shell_form_with_flags() -> None:
    cfg = apply(
        [
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms "
            "--start-interval=2s --retries=3 CMD curl -f http://localhost/ || exit 1"
        ]
    )
    assert cfg.healthcheck == HealthConfig(
        test=["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
        interval=30 * SEC,
        timeout=90 * SEC,
        start_period=500_000_000,
        start_interval=2 * SEC,
        retries=3,
    )


def test_healthcheck_cmd_exec_form() -> None:
    cfg = apply(['HEALTHCHECK CMD ["/bin/check", "--quick"]'])
    assert cfg.healthcheck == HealthConfig(test=["CMD", "/bin/check", "--quick"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK --interval=1s", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK CMD []", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --bogus=1 CMD x", "unknown flag: --bogus=1"),
        ("HEALTHCHECK --interval=soon CMD x", "invalid duration for --interval: 'soon'"),
        ("HEALTHCHECK --timeout=-1s CMD x", "invalid duration for --timeout: '-1s'"),
        ("HEALTHCHECK --interval=10us CMD x", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --retries=x CMD x", "invalid --retries value 'x'"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ],
)
def test_healthcheck_errors(line: str, message: str) -> None:
    assert invalid([line]) == message


# -- the whole -------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["RUN", "FROM", "COPY", "ADD", "ARG", "SHELL", "MAINTAINER"])
def test_only_config_instructions_are_valid(keyword: str) -> None:
    assert invalid([f"{keyword} x"]) == f"{keyword.lower()} is not a valid change command"


def test_run_is_not_a_valid_change_command() -> None:
    assert invalid(["run echo hi"]) == "run is not a valid change command"


def test_comments_blank_lines_and_continuations() -> None:
    cfg = apply(["# a comment", "", "ENV A=1 \\", "    B=2", "   ", "USER me"])
    assert cfg.env == ["A=1", "B=2"]
    assert cfg.user == "me"


def test_multi_line_change_string() -> None:
    cfg = apply(["ENV A=1\nUSER u\nLABEL l=v"])
    assert (cfg.env, cfg.user, cfg.labels) == (["A=1"], "u", {"l": "v"})


def test_no_instructions() -> None:
    assert invalid(["# only a comment", ""]) == "file with no instructions"
    # no changes at all is fine and a no-op
    cfg = Config(user="u")
    assert apply([], cfg) == cfg


def test_input_config_is_not_mutated() -> None:
    original = Config(
        user="root",
        env=["A=1", "B=2"],
        cmd=["old"],
        labels={"l": "1"},
        exposed_ports={"22/tcp": Empty()},
        volumes={"/v": Empty()},
        on_build=["RUN x"],
        working_dir="/w",
        healthcheck=HealthConfig(test=["CMD", "old"], interval=SEC),
        stop_signal="SIGTERM",
    )
    snapshot = copy.deepcopy(original)
    out = apply(
        [
            "ENV A=9 C=3",
            "LABEL l=2 m=3",
            "EXPOSE 80",
            "VOLUME /w2",
            "ONBUILD RUN y",
            "WORKDIR sub",
            "USER nobody",
            "ENTRYPOINT /e",
            "HEALTHCHECK --retries=5 CMD true",
            "STOPSIGNAL SIGKILL",
        ],
        original,
    )
    assert original == snapshot
    assert out is not original
    assert out.env == ["A=9", "B=2", "C=3"]
    assert out.labels == {"l": "2", "m": "3"}
    assert out.exposed_ports is not None
    assert sorted(out.exposed_ports) == ["22/tcp", "80/tcp"]
    assert out.volumes is not None
    assert sorted(out.volumes) == ["/v", "/w2"]
    assert out.on_build == ["RUN x", "RUN y"]
    assert out.working_dir == "/w/sub"
    assert out.user == "nobody"
    assert out.entrypoint == ["/bin/sh", "-c", "/e"]
    assert out.cmd is None
    assert out.healthcheck == HealthConfig(test=["CMD-SHELL", "true"], retries=5)
    assert out.stop_signal == "SIGKILL"
