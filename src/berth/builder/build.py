"""The builder service behind ``POST /build`` (moby's ``BuildManager`` and the build
backend: ``builder/dockerfile/builder.go``, ``api/server/backend/build``).

A build runs in a thread of its own: the context is unpacked (or downloaded), the
Dockerfile parsed into stages before any step runs, the stages dispatched
(:mod:`berth.builder.dispatch`), and the final image tagged.  Everything it says goes out
as dockerd's JSON messages through a :class:`BuildOutput`.  What it needs of containers
(create, run, commit, remove) the Daemon hands it as a :class:`StepContainers`; images,
layers and pulls it takes from the image and distribution services.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from berth import errdefs
from berth.builder.context import BuildContext
from berth.builder.prune import cache_filter
from berth.distribution.registry import AuthConfig
from berth.distribution.service import DistributionService
from berth.image.reference import Reference, parse_normalized_named
from berth.image.service import ImageService
from berth.types.build import CachePruneReport
from berth.types.container import Config, HostConfig, LogConfig, Ulimit
from berth.types.filters import Filters
from berth.utils.platform import Platform, host_platform, parse_platform
from berth.utils.stringid import truncate_id

log = logging.getLogger(__name__)

#: the colour dockerd's stderr formatter wraps a step's stderr in
STDERR_START = "\x1b[91m"
STDERR_END = "\x1b[0m"


@dataclass
class BuildOptions:
    """moby's ``ImageBuildOptions`` as the router reads them from the query."""

    tags: list[str] = field(default_factory=list)
    dockerfile: str = ""
    remote: str = ""
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    remove: bool = True
    force_remove: bool = False
    quiet: bool = False
    network_mode: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    shm_size: int = 0
    memory: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    cgroup_parent: str = ""
    ulimits: list[Ulimit] = field(default_factory=list)
    platform: str = ""
    cache_from: list[str] = field(default_factory=list)
    #: X-Registry-Config: credentials by registry, for FROM's pulls
    auth_configs: dict[str, AuthConfig] = field(default_factory=dict)

    def host_config(self) -> HostConfig:
        """The HostConfig of a RUN step's container (moby's ``hostConfigFromOptions``)."""
        return HostConfig(
            network_mode=self.network_mode,
            extra_hosts=list(self.extra_hosts) or None,
            shm_size=self.shm_size,
            memory=self.memory,
            memory_swap=self.memory_swap,
            cpu_shares=self.cpu_shares,
            cpu_period=self.cpu_period,
            cpu_quota=self.cpu_quota,
            cpuset_cpus=self.cpuset_cpus,
            cpuset_mems=self.cpuset_mems,
            cgroup_parent=self.cgroup_parent,
            ulimits=list(self.ulimits) or None,
            # moby's defaultLogConfig: the output goes to the build, not to a log
            log_config=LogConfig(type="none"),
        )


Emit = Callable[[dict[str, Any]], None]


class BuildOutput:
    """dockerd's build progress writer: each write one JSON message (``stream`` for the
    builder's words and a step's stdout, the same wrapped in red for its stderr, ``aux``
    for the image IDs, and the pull's progress messages as they are)."""

    def __init__(self, emit: Emit, want_aux: bool = True) -> None:
        self._emit = emit
        self._want_aux = want_aux
        self._lock = threading.Lock()

    def stdout(self, text: str) -> None:
        if text:
            self.message({"stream": text})

    def stderr(self, text: str) -> None:
        if text:
            self.message({"stream": STDERR_START + text + STDERR_END})

    def aux(self, image_id: str) -> None:
        if self._want_aux and image_id:
            self.message({"aux": {"ID": image_id}})

    def message(self, msg: dict[str, Any]) -> None:
        with self._lock:
            self._emit(msg)


class StepContainers(Protocol):
    """The container side of a build (the Daemon's ``BuildSteps``); blocking."""

    def create(self, config: Config, host_config: HostConfig) -> tuple[str, list[str], Config]:
        """A created (not started) container: its ID, the warnings, its config as created."""

    def make_workdir(self, container_id: str) -> None: ...

    def run(
        self, container_id: str, output: Callable[[str, bytes], None], cancel: threading.Event
    ) -> int:
        """Attach, start and wait; the exit code.  A set *cancel* kills and removes the
        container and raises."""

    def remove(self, container_id: str) -> None: ...

    def commit(
        self, container_id: str, config: Config, container_config: Config, author: str
    ) -> str:
        """The image of the container's changes on its image, with these configs."""


def sanitize_tags(names: list[str]) -> list[Reference]:
    """moby's ``sanitizeRepoAndTags``: parsed, ``latest`` by default, no digests, each once."""
    out: list[Reference] = []
    seen: set[str] = set()
    for name in names:
        if not name:
            continue
        ref = parse_normalized_named(name)
        if ref.digest:
            raise errdefs.InvalidParameter("build tag cannot contain a digest")
        ref = ref.tag_name_only()
        key = str(ref)
        if key not in seen:
            seen.add(key)
            out.append(ref)
    return out


def build_platform(value: str) -> Platform | None:
    """The ``platform`` option (moby's ``newBuilder``): parsed and checked, or None."""
    if not value:
        return None
    try:
        platform = parse_platform(value)
    except errdefs.InvalidParameter as e:
        raise errdefs.InvalidParameter(f"failed to parse platform {value}: {e}") from None
    if platform.os != "linux":
        raise errdefs.InvalidParameter(f"operating system is not supported: {platform.os}")
    return platform


class BuildService:
    """The builder the Daemon constructs and the build route calls."""

    def __init__(
        self,
        images: ImageService,
        distribution: DistributionService | None,
        containers: StepContainers,
        tmp_dir: Path,
    ) -> None:
        self.images = images
        self.distribution = distribution
        self.containers = containers
        self.tmp_dir = tmp_dir

    def build(
        self,
        options: BuildOptions,
        open_context: Callable[[], BuildContext],
        output: BuildOutput,
        cancel: threading.Event,
    ) -> str:
        """Build; the image ID.  Errors raised before *output* said anything are the
        request's (an HTTP status); later ones end the stream."""
        from berth.builder.dispatch import Dispatcher  # the parser's modules load late

        tags = sanitize_tags(options.tags)
        platform = build_platform(options.platform)
        started = time.monotonic()
        context = open_context()
        log.debug("build context ready in %.0f ms", (time.monotonic() - started) * 1000)
        try:
            dispatcher = Dispatcher(self, options, context, output, cancel, platform)
            image_id = dispatcher.run()
        finally:
            context.close()
        output.stdout(f"Successfully built {truncate_id(image_id)}\n")
        for ref in tags:
            self.images.tag(image_id, ref.familiar_name(), ref.tag)
            output.stdout(f"Successfully tagged {ref.familiar()}\n")
        return image_id

    def prune_cache(self, filters: Filters, everything: bool) -> CachePruneReport:
        """``docker builder prune`` (see :mod:`berth.builder.prune`)."""
        select = cache_filter(filters)
        deleted, reclaimed = self.images.prune_build_cache(everything=everything, select=select)
        self.images.events.publish("builder", "prune", "", {"reclaimed": str(reclaimed)})
        return CachePruneReport(CachesDeleted=deleted or None, SpaceReclaimed=reclaimed)

    @property
    def host_platform(self) -> Platform:
        return host_platform()
