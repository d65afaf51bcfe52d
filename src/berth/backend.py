"""What the API layer needs from the daemon, grouped by concern as in moby.

Handlers depend on these Protocols, not on :class:`berth.daemon.Daemon`, so
the HTTP layer can be tested against a fake and the daemon can grow without
the API importing its internals.  Methods are synchronous and thread-safe;
the API runs the ones that touch disk in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from berth.container.stream import AttachInfo, Streams
from berth.events import Events
from berth.logger import LogMessage
from berth.types.build import CachePruneReport
from berth.types.commit import CommitOptions, FilesystemChange
from berth.types.container import (
    Config,
    CreateResponse,
    EndpointSettings,
    ExecOptions,
    HostConfig,
    NetworkingConfig,
    PathStat,
    PruneReport,
    Summary,
    UpdateConfig,
)
from berth.types.filters import Filters
from berth.types.image import DeleteItem, HistoryItem, ImportOptions
from berth.types.image import PruneReport as ImagePruneReport
from berth.types.image import Summary as ImageSummary
from berth.types.network import NetworkCreateRequest, NetworkCreateResponse, NetworkResource
from berth.types.system import DiskUsage
from berth.types.volume import Volume, VolumeCreateRequest, VolumePruneReport
from berth.utils.platform import Platform

if TYPE_CHECKING:  # the builder loads at the first build
    from berth.builder.build import BuildOptions, BuildOutput
    from berth.builder.context import BuildContext


class ExecInstance(Protocol):
    """An exec as ``POST /exec/{id}/start`` drives it: attach to its streams, wait for
    its exit, report a detach.  Read-only here; the daemon's exec store owns the state."""

    @property
    def id(self) -> str: ...

    @property
    def options(self) -> ExecOptions: ...

    @property
    def detach_keys(self) -> bytes:
        """What detaches a client of a terminal (DetachKeys, parsed)."""

    @property
    def streams(self) -> Streams: ...

    async def wait_exit(self) -> None:
        """Return once the exit is recorded (so /exec/{id}/json has the code)."""

    def detached(self) -> None:
        """A client left with the detach keys; the process runs on."""


class PathArchive(Protocol):
    """``GET /containers/{name}/archive``: the stat of the path and, once, its tar."""

    @property
    def stat(self) -> PathStat: ...

    def write_to(self, fd: int) -> None:
        """Write the tar to *fd* (blocking), then release the container's files."""

    def close(self) -> None:
        """Release the container's files without writing (idempotent)."""


class ImageSave(Protocol):
    """``docker save``: the images resolved and checked, their layers held, and once
    their tarball."""

    def write_to(self, fd: int) -> None:
        """Write the tarball to *fd* (blocking), then release the layers; raises if it
        could not be written whole, and the stream must then be cut, not ended."""

    def close(self) -> None:
        """Release the layers without writing (idempotent)."""


class ContainerExport(Protocol):
    """``GET /containers/{name}/export``: the container's filesystem as one tar, once."""

    def write_to(self, fd: int) -> None:
        """Write the tar to *fd* (blocking), then release the container's files."""

    def close(self) -> None:
        """Release the container's files without writing (idempotent)."""


class StatsSampler(Protocol):
    """Successive ``docker stats`` objects of one container (blocking; run off the loop)."""

    def sample(self) -> dict[str, Any] | None:
        """The next Engine API object, or None once the container has been removed."""

    def empty(self) -> dict[str, Any]:
        """The answer for a container that is not running."""


class StateBackend(Protocol):
    def start_container(self, ref: str) -> None: ...

    def stop_container(self, ref: str, timeout: int | None, signal: str) -> None: ...

    def restart_container(self, ref: str, timeout: int | None, signal: str) -> None: ...

    def kill_container(self, ref: str, signal: str) -> None: ...

    def pause_container(self, ref: str) -> None: ...

    def unpause_container(self, ref: str) -> None: ...

    def resize_container(self, ref: str, height: int, width: int) -> None: ...

    def wait_container(self, ref: str, condition: str) -> asyncio.Future[tuple[int, str | None]]:
        """Resolved with (exit code, error) when *condition* is met; call on the loop."""

    def create_container(
        self,
        name: str,
        config: Config,
        host_config: HostConfig,
        networking: NetworkingConfig | None,
        platform: str,
    ) -> CreateResponse: ...

    def rename_container(self, old: str, new: str) -> None: ...

    def remove_container(self, ref: str, force: bool, remove_volumes: bool, link: bool) -> None: ...

    def update_container(self, ref: str, config: UpdateConfig) -> list[str]:
        """``docker update``: the resources and restart policy of *config* (its router has
        made the version adjustments) merged into the container's HostConfig and, while it
        runs, applied to its cgroup at once; the warnings.  InvalidParameter for values
        dockerd refuses, Conflict (409) for ones the container's own settings exclude."""


class AttachBackend(Protocol):
    def attach_info(self, ref: str) -> AttachInfo: ...


class ExecBackend(Protocol):
    def exec_create(self, ref: str, options: ExecOptions) -> str: ...

    def exec_get(self, exec_id: str) -> ExecInstance: ...

    def exec_start(self, exec_id: str) -> ExecInstance: ...

    def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...

    def exec_resize(self, exec_id: str, height: int, width: int) -> None: ...


class CopyBackend(Protocol):
    """``docker cp``: the archive routes (blocking; run off the loop)."""

    def container_stat_path(self, ref: str, path: str) -> PathStat: ...

    def container_archive_path(self, ref: str, path: str) -> PathArchive:
        """The stat of *path* and a one-shot writer of its tar; holds the container's
        files until the writer ends or the archive is closed."""

    def container_extract_to_dir(
        self,
        ref: str,
        path: str,
        copy_uid_gid: bool,
        no_overwrite_dir_non_dir: bool,
        content: IO[bytes],
    ) -> None: ...

    def container_export(self, ref: str) -> ContainerExport:
        """A one-shot writer of the container's filesystem (its layers, not its volumes);
        NotFound for a missing container, Conflict for a dead one or one being removed."""


class MonitorBackend(Protocol):
    def top_container(self, ref: str, ps_args: str) -> dict[str, Any]: ...

    def container_logs(
        self, ref: str, since_ns: int, until_ns: int, tail: int, follow: bool
    ) -> tuple[bool, Callable[[threading.Event], Iterator[LogMessage]]]:
        """Whether the container has a TTY, and a maker of the blocking log iterator."""

    def list_containers(
        self, all_containers: bool, limit: int, size: bool, filters: Filters
    ) -> list[Summary]: ...

    def inspect_container(self, ref: str, size: bool) -> dict[str, Any]: ...

    def container_stats(self, ref: str) -> StatsSampler:
        """Samples of the container's resource usage (blocking; run off the loop)."""

    def container_changes(self, ref: str) -> list[FilesystemChange]:
        """``docker diff``: what the container changed over its image, in dockerd's
        order (blocking: it walks the RW layer)."""


class CommitBackend(Protocol):
    def commit_container(self, options: CommitOptions) -> str:
        """``docker commit``: the new image's ID.  NotFound for a missing container,
        InvalidParameter for a bad change or reference (before anything is paused or
        written), Conflict for a dead container or one being removed; a failure leaves
        no layer and no image (blocking)."""


class ContainerSystemBackend(Protocol):
    def prune_containers(self, filters: Filters) -> PruneReport: ...


class NetworkAttachBackend(Protocol):
    """``POST /networks/{id}/connect`` and ``/disconnect``: the container side (the
    Daemon), which resolves both references, updates the container's endpoint
    settings and publishes the network connect/disconnect events."""

    def connect_network(
        self, network_ref: str, container_ref: str, endpoint: EndpointSettings | None
    ) -> None:
        """*endpoint* is the client's ``EndpointConfig`` as sent (None when absent)."""

    def disconnect_network(self, network_ref: str, container_ref: str, force: bool) -> None: ...


class ImageBackend(Protocol):
    """The image routes' service (the image service itself, not relayed by the Daemon);
    it publishes the image events (tag, untag, delete, import, load, prune) itself."""

    @property
    def tmp_dir(self) -> Path:
        """Where an upload waits, spooled, for ``load`` to read it."""

    def list_images(
        self, filters: Filters, all_images: bool, shared_size: bool
    ) -> list[ImageSummary]: ...

    def inspect(self, ref_or_id: str) -> dict[str, Any]: ...

    def history(self, ref_or_id: str) -> list[HistoryItem]: ...

    def tag(self, ref_or_id: str, repo: str, tag: str) -> None: ...

    def delete(self, ref_or_id: str, force: bool, prune: bool) -> list[DeleteItem]: ...

    def prune_images(self, filters: Filters) -> ImagePruneReport:
        """``POST /images/prune``: the filters (dangling, label, label!, until) are
        checked here, as dockerd's image service checks them; Conflict while another
        prune runs.  Publishes the untag/delete events of each image and one prune."""

    def check_import(self, options: ImportOptions) -> None:
        """Refuse a bad import before its body is read."""

    def import_image(self, stream: IO[bytes], options: ImportOptions) -> str: ...

    def load(self, path: Path) -> list[str]:
        """The messages of ``docker load``, one per image loaded or tagged."""

    def prepare_save(self, names: list[str], platform: Platform | None) -> ImageSave:
        """``docker save`` of *names* (tags, names, IDs, digests): NotFound for any of
        them, or a layer that cannot be reproduced, before anything is written."""


class BuildBackend(Protocol):
    """``POST /build``'s service (the builder itself, not relayed by the Daemon)."""

    @property
    def tmp_dir(self) -> Path:
        """Where a build's context is spooled (the daemon's, emptied at start-up)."""

    def build(
        self,
        options: BuildOptions,
        open_context: Callable[[], BuildContext],
        output: BuildOutput,
        cancel: threading.Event,
    ) -> str:
        """Build (blocking); the image ID.  What fails before *output* got a message is
        the request's error; a set *cancel* (the client went away) stops the build."""

    def prune_cache(self, filters: Filters, everything: bool) -> CachePruneReport:
        """``docker builder prune`` (blocking): remove the images only the build cache
        holds (all of its steps with *everything*); publishes the ``builder prune``
        event."""


class NetworkBackend(Protocol):
    """The network routes' service (the network controller itself, not relayed by
    the Daemon); it publishes the network events (create, destroy, prune) itself.

    A *ref* is a full ID, a unique ID prefix or a name, resolved as dockerd does:
    full ID first, then an exact name, then a unique prefix; NotFound "network
    <ref> not found", InvalidParameter "network <ref> is ambiguous (...)".
    """

    def list_networks(self, filters: Filters) -> list[NetworkResource]:
        """Networks matching *filters* (keys already checked by the router: dangling,
        driver, id, label, name, scope, type), each with ``Containers`` empty (``{}``):
        since API 1.28 the list does not show endpoints."""

    def inspect_network(self, ref: str, verbose: bool, scope: str) -> NetworkResource:
        """One network with its ``Containers``; *scope* ("" for any) restricts the
        search ("local", "swarm", "global"), *verbose* adds swarm services."""

    def create_network(self, req: NetworkCreateRequest) -> NetworkCreateResponse: ...

    def remove_network(self, ref: str) -> None: ...

    def prune_networks(self, filters: Filters) -> list[str]:
        """Remove unused user-defined networks matching *filters* (keys already
        checked by the router: label, label!, until); the names removed."""


class VolumeBackend(Protocol):
    """The volume routes' service (the volume service itself, not relayed by the
    Daemon); it publishes the volume events (create, destroy, prune) itself.

    Volumes are named exactly (no prefixes): NotFound "get <name>: no such
    volume" when there is none.  Answers are in the current API's shape, with
    ``UsageData`` None (only ``/system/df`` shows it) and ``Status`` the driver's
    (None for the local driver).
    """

    def list_volumes(self, filters: Filters) -> tuple[list[Volume], list[str]]:
        """The volumes matching *filters* and the warnings of drivers that could not
        list theirs.  The router has checked the keys (dangling, driver, label,
        name) and that ``dangling`` is one of true/1/false/0; ``name`` matches as
        moby's ``filters.Match`` (:meth:`Filters.match`), ``label`` as
        :meth:`Filters.match_kv_list`, ``dangling=true`` the volumes no container
        references."""

    def inspect_volume(self, name: str) -> Volume: ...

    def create_volume(self, req: VolumeCreateRequest) -> Volume:
        """Create the volume, or return the existing one of that name and driver as
        dockerd does (201 either way); an empty name makes an anonymous volume.
        ``req.cluster_volume_spec`` is always None here: the router answers it."""

    def remove_volume(self, name: str, force: bool) -> None:
        """Conflict (409) while a container references the volume; with *force* a
        volume that does not exist is no error (moby's ``WithPurgeOnError``)."""

    def prune_volumes(self, filters: Filters, all_volumes: bool) -> VolumePruneReport:
        """Remove the unreferenced local volumes without driver options matching
        *filters* (keys checked by the router: label, label!; ``all`` is already
        taken out as *all_volumes*).  Without *all_volumes* only anonymous volumes
        (label ``com.docker.volume.anonymous``) are candidates; the router sets it
        for clients before API 1.42, whose dockerd pruned named volumes too."""


class SystemBackend(Protocol):
    events: Events

    def system_info(self) -> dict[str, Any]: ...

    def system_version(self) -> dict[str, Any]: ...

    def system_disk_usage(
        self, containers: bool, images: bool, volumes: bool, build_cache: bool
    ) -> DiskUsage:
        """``GET /system/df`` in the current API's shape, with only the kinds asked for
        (the others ``null``); blocking (it measures layers and volumes)."""


class Backend(
    StateBackend,
    AttachBackend,
    ExecBackend,
    CopyBackend,
    MonitorBackend,
    CommitBackend,
    ContainerSystemBackend,
    NetworkAttachBackend,
    SystemBackend,
    Protocol,
):
    """The container side of what the API serves: the Daemon.  The services (images,
    networks, volumes; distribution and build next) reach their routers on their own,
    through the API's Context."""
