"""Dispatching a parsed Dockerfile (moby's ``builder/dockerfile``: ``evaluator.go``,
``dispatchers.go``, ``internals.go``, ``imagecontext.go``).

Each stage starts from its base image (``FROM``: scratch, an earlier stage, or an image,
pulled when missing or asked to) and each instruction makes one image:

* the metadata instructions (ENV, LABEL, CMD, ...) change the stage's run config and
  commit a container made with the ``#(nop)`` comment as its command, which adds no layer
  (``empty_layer``) — and the comment becomes the image's ``created_by``;
* RUN runs its command in a container of the current image (the build's network mode,
  extra hosts, shm size and limits; the build args in its environment) and commits its
  changes, with the command line (prefixed by ``|N ARG=value...`` when build args apply)
  as the cache key and ``created_by``;
* WORKDIR makes its directory in a container and commits it;
* COPY and ADD copy (:mod:`berth.builder.copy`) into a RW layer of the current image —
  no container, as in moby — and register its changes as the image's new layer.

Before each step the cache (:mod:`berth.builder.cache`) is probed with the config the step
would commit; a hit takes the cached image instead (`` ---> Using cache``).  Intermediate
containers go after each step with ``rm`` (the default) when it succeeded, always with
``forcerm``.  The output is dockerd's, message for message.
"""

from __future__ import annotations

import io
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from berth import errdefs
from berth.archive import PIPE_SIZE, ContainerFS, WriterPipe
from berth.builder import copy as copyop
from berth.builder.buildargs import BuildArgs
from berth.builder.cache import ImageCache, ImageProber, LocalImageCache, SourcesImageCache
from berth.builder.context import BuildContext
from berth.builder.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    KeyValuePair,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    ShellDependantCmdLine,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse_dockerfile,
    parse_onbuild_trigger,
)
from berth.builder.shell_lex import Lex
from berth.distribution.registry import AuthConfig
from berth.image.commit import CommitConfig
from berth.image.reference import parse_normalized_named
from berth.image.store import Image
from berth.layer.changes import export_rw_changes, rw_changes
from berth.types.container import Config, HealthConfig
from berth.types.wire import Empty
from berth.utils.gostr import go_clean, go_quote
from berth.utils.platform import Platform, host_platform, parse_platform
from berth.utils.signals import parse_signal
from berth.utils.stringid import truncate_id

if TYPE_CHECKING:
    from berth.builder.build import BuildOptions, BuildOutput, BuildService
    from berth.layer import RWLayer

log = logging.getLogger(__name__)

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_BASE_IMAGE = "scratch"
STEP_FORMAT = "Step {}/{} : {}"

_config_decoder = msgspec.json.Decoder(Config)
_config_encoder = msgspec.json.Encoder()


def copy_config(config: Config, **changes: Any) -> Config:
    """A deep copy of *config* with *changes* (moby's ``copyRunConfig`` + modifiers)."""
    copied = _config_decoder.decode(_config_encoder.encode(config))
    for key, value in changes.items():
        setattr(copied, key, value)
    return copied


# -- Go's fmt verbs, as the #(nop) comments use them ---------------------------------------


def go_list_v(values: list[str] | None) -> str:
    """``fmt.Sprintf("%v", []string)``."""
    return "[" + " ".join(values or []) + "]"


def go_list_q(values: list[str] | None) -> str:
    """``fmt.Sprintf("%q", []string)``."""
    return "[" + " ".join(go_quote(v) for v in values or []) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u < 1_000:
            text = f"{u}ns"
        elif u < 1_000_000:
            text = _go_frac(u, 1_000) + "µs"
        else:
            text = _go_frac(u, 1_000_000) + "ms"
    else:
        secs, frac = divmod(u, 1_000_000_000)
        text = _go_frac(frac + (secs % 60) * 1_000_000_000, 1_000_000_000) + "s"
        minutes = secs // 60
        if minutes:
            hours, minutes = divmod(minutes, 60)
            text = (f"{hours}h" if hours else "") + f"{minutes}m" + text
    return "-" + text if neg else text


def _go_frac(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_quote_rune(value: int) -> str:
    """``fmt.Sprintf("%q", int)``: Go's ``strconv.QuoteRune``."""
    escapes = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    if value == 0x27:
        return "'\\''"
    if value == 0x5C:
        return "'\\\\'"
    if value in escapes:
        return f"'{escapes[value]}'"
    if value < 0 or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        return "'\\ufffd'"
    ch = chr(value)
    if ch.isprintable():
        return f"'{ch}'"
    if value < 0x80:
        return f"'\\x{value:02x}'"
    if value < 0x10000:
        return f"'\\u{value:04x}'"
    return f"'\\U{value:08x}'"


def health_q(h: HealthConfig | None) -> str:
    """``fmt.Sprintf("%q", *container.HealthConfig)`` (moby 28's fields)."""
    if h is None:
        return "%!q(<nil>)"
    parts = [
        go_list_q(h.test),
        go_quote(go_duration(h.interval)),
        go_quote(go_duration(h.timeout)),
        go_quote(go_duration(h.start_period)),
        go_quote(go_duration(h.start_interval)),
        go_quote_rune(h.retries),
    ]
    return "&{" + " ".join(parts) + "}"


# -- ports, workdir ----------------------------------------------------------------------------


def parse_port_specs(ports: list[str]) -> list[str]:
    """go-connections' ``ParsePortSpecs`` as EXPOSE uses it: the ``port/proto`` keys."""
    out: list[str] = []
    for raw in ports:
        container_part = raw.rsplit(":", 1)[-1] if raw.count(":") <= 2 else raw
        pieces = container_part.split("/")
        if not container_part or not pieces[0]:
            if not container_part:
                raise errdefs.InvalidParameter(f"No port specified: {raw}<empty>")
            proto, port = "", ""
        elif len(pieces) == 1 or not pieces[1]:
            proto, port = "tcp", pieces[0]
        else:
            proto, port = pieces[1], pieces[0]
        start, _, end = port.partition("-")
        try:
            first = int(start)
            last = int(end) if end else first
            if not start.isdigit() or (end and not end.isdigit()) or first > last:
                raise ValueError
            if first < 0 or last > 65535:
                raise ValueError
        except ValueError:
            raise errdefs.InvalidParameter(f"Invalid containerPort: {port}") from None
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise errdefs.InvalidParameter(f"Invalid proto: {proto}")
        out.extend(f"{p}/{proto.lower()}" for p in range(first, last + 1))
    return out


def normalize_workdir(current: str, requested: str) -> str:
    """moby's ``normalizeWorkdir``."""
    if not requested:
        raise errdefs.InvalidParameter("cannot normalize nothing")
    if not requested.startswith("/"):
        return go_clean("/" + "/".join(p for p in (current, requested) if p))
    return go_clean(requested)


# -- state ---------------------------------------------------------------------------------------


class BuildCancelled(errdefs.Unavailable):
    def __init__(self) -> None:
        super().__init__("Build cancelled")


@dataclass
class StageState:
    """moby's ``dispatchState``: what the instructions of one stage change."""

    build_args: BuildArgs
    run_config: Config = field(default_factory=Config)
    maintainer: str = ""
    cmd_set: bool = False
    image_id: str = ""
    #: the base image ("" for scratch), None before FROM
    base: Image | None = None
    scratch: bool = False
    stage_name: str = ""
    os: str = "linux"
    platform: Platform = field(default_factory=host_platform)

    def has_from_image(self) -> bool:
        return bool(self.image_id) or self.scratch

    def update_run_config(self) -> None:
        self.run_config.image = self.image_id


@dataclass
class _StageResult:
    image_id: str
    config: Config


class Dispatcher:
    """One build's dispatch of its Dockerfile; see the module docstring."""

    def __init__(
        self,
        service: BuildService,
        options: BuildOptions,
        context: BuildContext,
        output: BuildOutput,
        cancel: threading.Event,
        platform: Platform | None,
    ) -> None:
        self.service = service
        self.images = service.images
        self.options = options
        self.context = context
        self.output = output
        self.cancel = cancel
        self.platform = platform
        self.prober = ImageProber(self._make_cache, options.no_cache)
        self.tmp_containers: list[str] = []
        self.stages: list[_StageResult] = []
        self.stages_by_name: dict[str, _StageResult] = {}
        #: RW layers holding images' roots for COPY --from, released after the build
        self._rw_mounts: list[RWLayer] = []
        self._image_roots: dict[str, str] = {}
        self._temp_dirs: list[str] = []
        self.lex = Lex()
        self.state = StageState(BuildArgs(options.build_args))

    # -- the build -------------------------------------------------------------------------
    def run(self) -> str:
        """Parse, then dispatch every stage up to the target; the last image's ID."""
        try:
            return self._run()
        finally:
            self._release_mounts()

    def _run(self) -> str:
        parsed = parse_dockerfile(self.context.dockerfile, self.context.dockerfile_name)
        stages, meta_args = parsed.stages, parsed.meta_args
        if not stages:
            raise errdefs.InvalidParameter("file with no instructions")
        if self.options.target:
            index = _stage_index(stages, self.options.target)
            if index is None:
                raise errdefs.InvalidParameter(
                    f"failed to reach build target {self.options.target} in Dockerfile"
                )
            stages = stages[: index + 1]
            skipped = _unneeded_stages(stages)
        else:
            skipped = set()
        for key in sorted(self.options.labels):
            value = self.options.labels[key]
            stages[-1].add_command(
                LabelCommand(
                    name="label",
                    source_code=f"LABEL {key}={value}".strip(),
                    labels=[KeyValuePair(key, value)],
                    no_expand=True,
                )
            )
        warnings = parsed.result.print_warnings()
        if warnings:
            self.output.stderr(warnings)
        self.lex = Lex(parsed.result.escape_token)

        run = [s for i, s in enumerate(stages) if i not in skipped]
        total = len(meta_args) + len(run) + sum(len(s.commands) for s in run)
        step = 1
        build_args = BuildArgs(self.options.build_args)
        for meta in meta_args:
            step = self._print_step(step, total, meta)
            env = [f"{k}={v}" for k, v in build_args.get_all_allowed().items()]
            expanded = self._expand(meta, env)
            for arg in expanded.args:
                build_args.add_arg(arg.key, arg.value)
                build_args.add_meta_arg(arg.key, arg.value)

        for i, stage in enumerate(stages):
            if stage.name and stage.name in self.stages_by_name:
                raise errdefs.InvalidParameter(f"{stage.name} stage name already used")
            if i in skipped:
                # not needed by the target: kept in place so that indexes stay right
                result = _StageResult("", Config())
                if stage.name:
                    self.stages_by_name[stage.name] = result
                self.stages.append(result)
                continue
            args = build_args.clone()
            args.reset_allowed()
            self.state = StageState(args)
            step = self._print_step(step, total, stage.source_code)
            self._initialize_stage(stage)
            self.state.update_run_config()
            self.output.stdout(f" ---> {truncate_id(self.state.image_id)}\n")
            for cmd in stage.commands:
                if self.cancel.is_set():
                    self.output.stdout("Build cancelled\n")
                    raise BuildCancelled()
                step = self._print_step(step, total, cmd)
                self.dispatch(cmd)
                self.state.update_run_config()
                self.output.stdout(f" ---> {truncate_id(self.state.image_id)}\n")
            self.output.aux(self.state.image_id)
            build_args.merge_referenced_args(self.state.build_args)
            result = _StageResult(self.state.image_id, self.state.run_config)
            if self.state.stage_name:
                self.stages_by_name[self.state.stage_name] = result
            self.stages.append(result)
        warning = build_args.warn_on_unused_build_args()
        if warning:
            self.output.stdout(warning)
        if not self.state.image_id:
            raise errdefs.InvalidParameter("No image was generated. Is your Dockerfile empty?")
        return self.state.image_id

    def _print_step(self, step: int, total: int, what: object) -> int:
        self.output.stdout(STEP_FORMAT.format(step, total, what))
        self.output.stdout("\n")
        return step + 1

    def _expand(self, cmd: Any, env: list[str]) -> Any:
        try:
            return cmd.expand(self.lex, env)
        except errdefs.InvalidParameter:
            raise
        except ValueError as e:
            raise errdefs.InvalidParameter(str(e)) from None

    # -- FROM ----------------------------------------------------------------------------------
    def _initialize_stage(self, stage: Stage) -> None:
        self.prober.reset()
        platform = self.platform
        meta = [f"{k}={v}" for k, v in self.state.build_args.get_all_meta().items()]
        if stage.platform:
            value = self.lex.process_word(stage.platform, meta)
            try:
                platform = parse_platform(value)
            except errdefs.InvalidParameter as e:
                raise errdefs.InvalidParameter(f"failed to parse platform {value}: {e}") from None
        name = self.lex.process_word(stage.base_name, meta)
        if not name:
            raise errdefs.InvalidParameter(f"base name ({stage.base_name}) should not be blank")
        state = self.state
        state.stage_name = stage.name
        state.platform = platform or host_platform()
        found = self.stages_by_name.get(name.lower())
        if found is not None:
            img = (
                self._get_image(found.image_id, local_only=True, platform=platform)
                if found.image_id
                else None
            )
        elif name == NO_BASE_IMAGE:
            img = None
        else:
            img = self._get_image(name, local_only=False, platform=platform)
        self._begin_stage(img)
        if state.run_config.on_build:
            triggers = state.run_config.on_build
            state.run_config.on_build = None
            self._run_triggers(triggers)

    def _begin_stage(self, img: Image | None) -> None:
        state = self.state
        state.base = img
        state.scratch = img is None
        state.image_id = img.id if img is not None else ""
        if img is not None:
            state.os = img.config.os or "linux"
            if img.config.architecture:
                state.platform = Platform(
                    state.os, img.config.architecture, img.config.variant or ""
                )
        if state.os != "linux":
            raise errdefs.InvalidParameter(f"operating system is not supported: {state.os}")
        cfg = img.config.config if img is not None else None
        state.run_config = copy_config(cfg) if cfg is not None else Config()
        env = state.run_config.env or []
        if not any(e.partition("=")[0] == "PATH" for e in env):
            state.run_config.env = [*env, "PATH=" + DEFAULT_PATH]
        state.run_config.open_stdin = False
        state.run_config.stdin_once = False

    def _run_triggers(self, triggers: list[str]) -> None:
        n = len(triggers)
        self.output.stdout(f"# Executing {n} build trigger{'s' if n > 1 else ''}")
        self.output.stdout("\n")
        for trigger in triggers:
            self.state.update_run_config()
            self.dispatch(parse_onbuild_trigger(trigger))

    def _get_image(self, name: str, *, local_only: bool, platform: Platform | None) -> Image:
        """moby's ``imageSources.Get``: a local image, or one pulled when it is missing
        (or always for an image, not a stage, with ``pull``)."""
        images = self.images
        if local_only or not self.options.pull:
            try:
                img = images.get_image(name)
            except errdefs.NotFound:
                if local_only:
                    raise
            else:
                if platform is None or _platform_of(img) == (platform.os, platform.architecture):
                    return img
                if local_only:
                    return img
        return self._pull(name, platform)

    def _pull(self, name: str, platform: Platform | None) -> Image:
        service = self.service.distribution
        if service is None:
            raise errdefs.NotFound(f"No such image: {name}")
        ref = parse_normalized_named(name).tag_name_only()
        auth = _resolve_auth(self.options.auth_configs, ref.domain)
        plan = service.prepare_pull(ref, auth, platform)
        service.pull(plan, self.output.message, self.cancel)
        return self.images.get_image(ref.familiar())

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, cmd: Command) -> None:
        """moby's ``dispatch``: expand, run, then the intermediate containers' fate."""
        run_env = list(self.state.run_config.env or [])
        envs = run_env + self.state.build_args.filter_allowed(run_env)
        cmd = self._expand(cmd, envs)
        ok = False
        started = time.monotonic()
        try:
            self._dispatch(cmd)
            ok = True
        finally:
            if self.options.force_remove or (self.options.remove and ok):
                self.remove_intermediates()
            log.debug("%s took %.0f ms", cmd.name.upper(), (time.monotonic() - started) * 1000)

    def _dispatch(self, cmd: Command) -> None:
        state = self.state
        rc = state.run_config
        if isinstance(cmd, EnvCommand):
            words = ["ENV"]
            for kv in cmd.env:
                new = f"{kv.key}={kv.value}"
                words.append(new)
                env = list(rc.env or [])
                for i, entry in enumerate(env):
                    if entry.partition("=")[0] == kv.key:
                        env[i] = new
                        break
                else:
                    env.append(new)
                rc.env = env
            self.commit(" ".join(words))
        elif isinstance(cmd, MaintainerCommand):
            state.maintainer = cmd.maintainer
            self.commit("MAINTAINER " + cmd.maintainer)
        elif isinstance(cmd, LabelCommand):
            labels = dict(rc.labels or {})
            words = ["LABEL"]
            for kv in cmd.labels:
                labels[kv.key] = kv.value
                words.append(f"{kv.key}={kv.value}")
            rc.labels = labels
            self.commit(" ".join(words))
        elif isinstance(cmd, (CopyCommand, AddCommand)):
            self._copy(cmd)
        elif isinstance(cmd, OnbuildCommand):
            rc.on_build = [*(rc.on_build or []), cmd.expression]
            self.commit("ONBUILD " + cmd.expression)
        elif isinstance(cmd, WorkdirCommand):
            self._workdir(cmd)
        elif isinstance(cmd, RunCommand):
            self._run_step(cmd)
        elif isinstance(cmd, CmdCommand):
            line = self._resolve_cmd_line(cmd)
            rc.cmd = line
            rc.args_escaped = False
            self.commit("CMD " + go_list_q(line))
            if cmd.cmd_line:
                state.cmd_set = True
        elif isinstance(cmd, HealthCheckCommand):
            old = rc.healthcheck
            if old is not None and old.test and old.test[0] != "NONE":
                self.output.stdout(
                    f"Note: overriding previous HEALTHCHECK: {go_list_v(old.test)}\n"
                )
            rc.healthcheck = msgspec.structs.replace(cmd.health)
            self.commit("HEALTHCHECK " + health_q(rc.healthcheck))
        elif isinstance(cmd, EntrypointCommand):
            line = self._resolve_cmd_line(cmd)
            rc.entrypoint = line
            rc.args_escaped = False
            if not state.cmd_set:
                rc.cmd = None
            self.commit("ENTRYPOINT " + go_list_q(line))
        elif isinstance(cmd, ExposeCommand):
            ports = dict(rc.exposed_ports or {})
            for key in parse_port_specs(cmd.ports):
                ports[key] = Empty()
            rc.exposed_ports = ports
            self.commit("EXPOSE " + " ".join(cmd.ports))
        elif isinstance(cmd, UserCommand):
            rc.user = cmd.user
            self.commit("USER " + cmd.user)
        elif isinstance(cmd, VolumeCommand):
            volumes = dict(rc.volumes or {})
            for v in cmd.volumes:
                if not v:
                    raise errdefs.InvalidParameter("VOLUME specified can not be an empty string")
                volumes[v] = Empty()
            rc.volumes = volumes
            self.commit("VOLUME " + go_list_v(cmd.volumes))
        elif isinstance(cmd, StopSignalCommand):
            parse_signal(cmd.signal)
            rc.stop_signal = cmd.signal
            self.commit("STOPSIGNAL " + cmd.signal)
        elif isinstance(cmd, ArgCommand):
            words = []
            for arg in cmd.args:
                words.append(str(arg))
                state.build_args.add_arg(arg.key, arg.value)
            self.commit("ARG " + " ".join(words))
        elif isinstance(cmd, ShellCommand):
            rc.shell = list(cmd.shell)
            self.commit("SHELL " + go_list_v(rc.shell))
        else:
            raise errdefs.InvalidParameter(f"unsupported command type: {type(cmd).__name__}")

    def _shell(self) -> list[str]:
        return list(self.state.run_config.shell or DEFAULT_SHELL)

    def _resolve_cmd_line(self, cmd: ShellDependantCmdLine) -> list[str] | None:
        line = cmd.cmd_line
        if cmd.prepend_shell and line is not None:
            return [*self._shell(), *line]
        return list(line) if line is not None else None

    # -- commits -------------------------------------------------------------------------------
    def _probe(self, config: Config) -> bool:
        """moby's ``probeCache``: a cached image for *config* on the current image."""
        found = self.prober.probe(self.state.image_id, config, self.state.platform)
        if not found:
            return False
        self.output.stdout(" ---> Using cache\n")
        self.state.image_id = found
        return True

    def commit(self, comment: str) -> None:
        """moby's ``commit`` of a metadata step: a container with the ``#(nop)`` comment
        as its command, committed with no layer."""
        if not self.state.has_from_image():
            raise errdefs.InvalidParameter(
                "Please provide a source image with `from` prior to commit"
            )
        config = copy_config(self.state.run_config, cmd=[*self._shell(), "#(nop) ", comment])
        self._probe_create_commit(config)

    def _probe_create_commit(
        self, config: Config, after_create: Callable[[str], None] | None = None
    ) -> None:
        if self._probe(config):
            return
        cid, created = self._create(config)
        if after_create is not None:
            after_create(cid)
        self._commit_container(cid, created)

    def _create(self, config: Config) -> tuple[str, Config]:
        """moby's ``create``: the step's container, announced as ``Running in``."""
        cid, warnings, created = self.service.containers.create(
            copy_config(config), self.options.host_config()
        )
        self.tmp_containers.append(cid)
        for warning in warnings:
            self.output.stdout(f" ---> [Warning] {warning}\n")
        self.output.stdout(f" ---> Running in {truncate_id(cid)}\n")
        return cid, created

    def _commit_container(self, cid: str, container_config: Config) -> None:
        image_id = self.service.containers.commit(
            cid, copy_config(self.state.run_config), container_config, self.state.maintainer
        )
        self.images.images.set_built_locally(image_id)
        self.state.image_id = image_id

    def remove_intermediates(self) -> None:
        """moby's ``RemoveAll``: each container removed, then announced."""
        started = time.monotonic()
        if self.tmp_containers:
            log.debug("removing %d intermediate containers", len(self.tmp_containers))
        while self.tmp_containers:
            cid = self.tmp_containers[0]
            try:
                self.service.containers.remove(cid)
            except errdefs.NotFound:
                pass
            except errdefs.BerthError as e:
                self.output.stdout(
                    f"Error removing intermediate container {truncate_id(cid)}: {e}\n"
                )
                return
            self.tmp_containers.pop(0)
            self.output.stdout(f"Removing intermediate container {truncate_id(cid)}\n")
            log.debug("removed %s in %.0f ms", cid[:12], (time.monotonic() - started) * 1000)

    # -- WORKDIR, RUN -------------------------------------------------------------------------
    def _workdir(self, cmd: WorkdirCommand) -> None:
        rc = self.state.run_config
        rc.working_dir = normalize_workdir(rc.working_dir, cmd.path)
        config = copy_config(rc, cmd=[*self._shell(), "#(nop) WORKDIR " + rc.working_dir])
        self._probe_create_commit(config, self.service.containers.make_workdir)

    def _run_step(self, cmd: RunCommand) -> None:
        state = self.state
        if state.os != "linux":
            raise errdefs.InvalidParameter(f"operating system is not supported: {state.os}")
        if cmd.flags_used:
            raise errdefs.InvalidParameter(
                f"the --{cmd.flags_used[0]} option requires BuildKit. Refer to "
                "https://docs.docker.com/go/buildkit/ to learn how to build images with "
                "BuildKit enabled"
            )
        rc = state.run_config
        line = self._resolve_cmd_line(cmd) or []
        build_args = sorted(state.build_args.filter_allowed(rc.env or []))
        save_cmd = line
        if build_args:
            kept = [
                e for e in build_args
                if state.build_args.is_referenced_or_not_builtin(e.partition("=")[0])
            ]  # fmt: skip
            save_cmd = [f"|{len(kept)}", *kept, *line]
        probe = copy_config(rc, cmd=save_cmd, args_escaped=False)
        if save_cmd:
            probe.entrypoint = None
        if self._probe(probe):
            return
        run_config = copy_config(
            rc,
            cmd=line,
            args_escaped=False,
            env=[*(rc.env or []), *build_args],
            healthcheck=HealthConfig(test=["NONE"]),
        )
        if save_cmd:
            run_config.entrypoint = [""]
        t0 = time.monotonic()
        cid, _ = self._create(run_config)
        t1 = time.monotonic()
        try:
            code = self.service.containers.run(cid, self._step_output, self.cancel)
        except errdefs.Unavailable:
            if self.cancel.is_set():
                self.tmp_containers.remove(cid)  # killed and removed already
                raise BuildCancelled() from None
            raise
        if code != 0:
            raise StepFailed(
                f"The command '{' '.join(line)}' returned a non-zero code: {code}", code
            )
        t2 = time.monotonic()
        self._commit_container(cid, probe)
        log.debug(
            "RUN: create %.0f ms, run %.0f ms, commit %.0f ms",
            (t1 - t0) * 1000, (t2 - t1) * 1000, (time.monotonic() - t2) * 1000,
        )  # fmt: skip

    def _step_output(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        if stream == "stderr":
            self.output.stderr(text)
        else:
            self.output.stdout(text)

    # -- COPY, ADD --------------------------------------------------------------------------------
    def _copy(self, cmd: CopyCommand | AddCommand) -> None:
        state = self.state
        name = "ADD" if isinstance(cmd, AddCommand) else "COPY"
        from_ = cmd.from_ if isinstance(cmd, CopyCommand) else ""
        if from_:
            try:
                root = self._source_root(from_)
            except errdefs.BerthError as e:
                raise type(e)(f"invalid from flag value {from_}: {e.message}") from None
            source = copyop.CopySource(root, from_image=True)
        else:
            source = copyop.CopySource(context=self.context.fs)
        plan = copyop.prepare_copy(
            name,
            cmd.sources,
            cmd.dest,
            source,
            chown=cmd.chown,
            chmod=cmd.chmod,
            progress=self._download_progress,
            temp_root=str(self.service.tmp_dir),
            cancel=self.cancel,
        )
        with plan:
            chown = f"--chown={plan.chown}" if plan.chown else ""
            comment = f"{name} {chown}{plan.hash} in {plan.dest} "
            config = copy_config(state.run_config, cmd=[*self._shell(), "#(nop) " + comment])
            if self._probe(config):
                return
            self._copy_into_layer(plan, config)

    def _download_progress(self, done: int, total: int) -> None:
        detail: dict[str, int] = {"current": done}
        if total > 0:
            detail["total"] = total
        self.output.message({"status": "Downloading", "progressDetail": detail, "id": ""})

    def _source_root(self, ref: str) -> str:
        """moby's ``getImageMount``: the root of a stage (by name or index) or image."""
        found = self.stages_by_name.get(ref.lower())
        if found is None and ref.isdigit():
            index = int(ref)
            if index == len(self.stages):
                raise errdefs.InvalidParameter("refers to current build stage")
            if index > len(self.stages):
                raise errdefs.InvalidParameter("index out of bounds")
            found = self.stages[index]
        if found is not None:
            if not found.image_id:
                return self._temp_dir("build-scratch-")
            img = self._get_image(found.image_id, local_only=True, platform=None)
        else:
            img = self._get_image(ref, local_only=False, platform=self.platform)
        return self._mount_image(img)

    def _temp_dir(self, prefix: str) -> str:
        path = tempfile.mkdtemp(prefix=prefix, dir=self.service.tmp_dir)
        self._temp_dirs.append(path)
        return path

    def _mount_image(self, img: Image) -> str:
        """The root of *img* for COPY --from: a RW layer on it, mounted until the end of
        the build (moby's image mounts)."""
        if img.layer is None:
            return self._temp_dir("build-scratch-")
        path = self._image_roots.get(img.id)
        if path is not None:
            return path
        layers = self.images.layers
        rw = layers.create_rw_layer("build-" + secrets.token_hex(16), img.layer.chain_id, None)
        try:
            path = str(layers.mount(rw))
        except BaseException:
            layers.release_rw_layer(rw)
            raise
        self._rw_mounts.append(rw)
        self._image_roots[img.id] = path
        return path

    def _release_mounts(self) -> None:
        layers = self.images.layers
        while self._rw_mounts:
            rw = self._rw_mounts.pop()
            try:
                layers.unmount(rw)
                layers.release_rw_layer(rw)
            except (OSError, errdefs.BerthError) as e:
                log.warning("releasing a build's image mount: %s", e)
        self._image_roots.clear()
        while self._temp_dirs:
            shutil.rmtree(self._temp_dirs.pop(), ignore_errors=True)

    def _copy_into_layer(self, plan: copyop.CopyPlan, config: Config) -> None:
        """moby's ``performCopy`` + ``exportImage``: the copy in a RW layer of the current
        image, its changes registered as the new image's layer."""
        state = self.state
        layers = self.images.layers
        parent = self.images.images.get(state.image_id) if state.image_id else None
        chain = parent.layer.chain_id if parent is not None and parent.layer else None
        rw = layers.create_rw_layer("build-" + secrets.token_hex(16), chain, None)
        try:
            rootfs = layers.mount(rw)
            try:
                with ContainerFS(str(rootfs)) as fs:
                    copyop.perform_copy(
                        plan, fs, workdir=state.run_config.working_dir or "/", cancel=self.cancel
                    )
            finally:
                layers.unmount(rw)
            commit = CommitConfig(
                container_id="",
                container_os=state.os,
                parent_image_id=state.image_id,
                config=copy_config(state.run_config),
                container_config=config,
                author=state.maintainer,
            )
            changes = rw_changes(layers, rw)
            if not changes:
                image_id = self.images.commit_image(None, commit)
            else:
                tar_pipe = WriterPipe(
                    lambda fd: export_rw_changes(layers, rw, changes, fd),
                    "reading the copied files",
                )
                with io.BufferedReader(tar_pipe, PIPE_SIZE) as tar:
                    image_id = self.images.commit_image(tar, commit)
        finally:
            layers.release_rw_layer(rw)
        self.images.images.set_built_locally(image_id)
        state.image_id = image_id

    def _make_cache(self) -> ImageCache:
        """moby's ``MakeImageCache``: the local cache, or the ``cachefrom`` images'."""
        store = self.images.images
        if not self.options.cache_from:
            return LocalImageCache(store)
        sources: list[Image] = []
        for ref in self.options.cache_from:
            try:
                sources.append(self.images.get_image(ref))
            except errdefs.BerthError as e:
                log.warning("Could not look up %s for cache resolution, skipping: %s", ref, e)
        return SourcesImageCache(store, sources)


class StepFailed(errdefs.BerthError):
    """A RUN that exited non-zero; *code* goes in the error message's ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _platform_of(img: Image) -> tuple[str, str]:
    c = img.config
    return (c.os or "linux", c.architecture or host_platform().architecture)


def _resolve_auth(configs: dict[str, AuthConfig], domain: str) -> AuthConfig | None:
    """moby's ``ResolveAuthConfig``: the credentials X-Registry-Config holds for the
    registry of *domain* (Docker Hub under its index address)."""
    if not configs:
        return None
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        for key in ("https://index.docker.io/v1/", "index.docker.io", "docker.io"):
            if key in configs:
                return configs[key]
    for key, auth in configs.items():
        host = key.removeprefix("http://").removeprefix("https://").split("/", 1)[0]
        if host == domain:
            return auth
    return None


def _stage_index(stages: list[Stage], target: str) -> int | None:
    """buildkit's ``HasStage``: a stage by name, without regard to case."""
    target = target.lower()
    for i, stage in enumerate(stages):
        if stage.name == target:
            return i
    return None


def _unneeded_stages(stages: list[Stage]) -> set[int]:
    """The indexes of the stages the last one does not need (through FROM and
    COPY --from).  A reference made of variables could name any earlier stage: every
    earlier stage is kept then."""
    by_name = {s.name: i for i, s in enumerate(stages) if s.name}
    last = len(stages) - 1
    needed = {last}
    todo = [last]
    while todo:
        i = todo.pop()
        refs = [stages[i].base_name]
        refs.extend(c.from_ for c in stages[i].commands if isinstance(c, CopyCommand) and c.from_)
        for ref in refs:
            if "$" in ref:
                found = set(range(i))
            elif ref.lower() in by_name:
                found = {by_name[ref.lower()]}
            elif ref.isdigit():
                found = {int(ref)}
            else:
                found = set()
            for j in found:
                if j < i and j not in needed:
                    needed.add(j)
                    todo.append(j)
    return set(range(len(stages))) - needed
