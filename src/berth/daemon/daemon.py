"""The Daemon: the composition root.  It owns and wires the services, and is
itself the container side of the Backend the API calls.

The services (images today) are attributes that the API server hands to their
routers directly, as moby's daemon hands its ImageService to the image router;
whatever a service needs of containers is injected when it is built here.
Container operations live in sibling modules, one per family (``create``,
``delete``, ``list``...); this class holds the state they share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from berth import __version__, errdefs, metrics
from berth.container.container import (
    Container,
    decode_host_config,
    decode_record,
)
from berth.container.stream import AttachInfo
from berth.container.view import Snapshot, ViewDB
from berth.daemon import archive as _archive
from berth.daemon import commit as _commit
from berth.daemon import create as _create
from berth.daemon import delete as _delete
from berth.daemon import disk_usage as _disk_usage
from berth.daemon import info as _info
from berth.daemon import inspect as _inspect
from berth.daemon import list as _list
from berth.daemon import logs as _logs
from berth.daemon import network as _network
from berth.daemon import prune as _prune
from berth.daemon import rename as _rename
from berth.daemon import restore as _restore
from berth.daemon import start as _start
from berth.daemon import stop as _stop
from berth.daemon import update as _update
from berth.daemon.buildsteps import BuildSteps
from berth.daemon.exec import Exec, ExecStore
from berth.daemon.logs import ContainerLog, open_log
from berth.daemon.monitor import handle_exit
from berth.daemon.options import DaemonOptions, RegistryOptions
from berth.daemon.restart_policy import RestartManager
from berth.daemon.stats import Sampler, network_counters
from berth.daemon.top import top
from berth.events import Events
from berth.graphdriver import new_driver
from berth.image.service import ImageService
from berth.logger import LogMessage
from berth.network.controller import NetworkController
from berth.runtime.base import Event, ExitEvent, OOMEvent, Runtime, TaskStatus
from berth.runtime.seccomp import kernel_runs_x32
from berth.runtime.supervisor import Supervisor
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
from berth.types.system import DiskUsage
from berth.utils.atomic import write_file
from berth.utils.reaper import Reaper
from berth.utils.timefmt import now_ns
from berth.utils.workers import WorkerPool
from berth.volume.service import VolumeService
from berth.volume.store import VolumeStore

if TYPE_CHECKING:  # made at first use (below)
    from berth.builder.build import BuildService
    from berth.distribution.registry import RegistryClient
    from berth.distribution.service import DistributionService

log = logging.getLogger(__name__)

_S = TypeVar("_S")

#: How long shutdown waits for exits still being handled (task deletes, unmounts).
SHUTDOWN_GRACE = 30.0


def registry_client(reg: RegistryOptions) -> RegistryClient:
    """The registry client of these options (its module loads here, at the first pull,
    push, login or search)."""
    from berth.distribution.registry import RegistryClient

    return RegistryClient(
        insecure=reg.insecure_registries,
        mirrors=reg.mirrors,
        certs_dir=reg.certs_dir,
        max_concurrent_downloads=reg.max_concurrent_downloads,
        max_concurrent_uploads=reg.max_concurrent_uploads,
        max_download_attempts=reg.max_download_attempts,
    )


#: (condition, future) of one ``POST /containers/{id}/wait``
Waiter = tuple[str, "asyncio.Future[tuple[int, str | None]]"]


class Daemon:
    def __init__(
        self,
        options: DaemonOptions,
        runtime: Runtime | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """*runtime*: a runtime of the caller's (else containerd's); *supervisor*: berthd's
        containerd, launched already (else made and started by :meth:`start_runtime`)."""
        self.options = options
        self.events = Events()
        self.restart_manager = RestartManager()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runtime = runtime
        self._supervisor = supervisor
        self._waiters: dict[str, list[Waiter]] = {}
        self._workers = WorkerPool(16, "berth-monitor")
        self._inflight: set[Future[None]] = set()
        self.stopping = threading.Event()
        self.execs = ExecStore(self)
        self.cgroup_parent = options.cgroup_parent
        root = options.data_root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o710)
        self.repository = root / "containers"
        self.repository.mkdir(mode=0o710, exist_ok=True)
        self.tmp_dir = root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(mode=0o700)
        self.engine_id = self._engine_id(root)
        self.cgroup_version = _info.cgroup_version()
        # removed containers' directories and layers are deleted off the request path
        self.reaper = Reaper(root / "trash")
        self.reaper.start()
        self.driver = new_driver(options.storage_driver, root, self.reaper)
        metrics.engine_info.labels(
            version=__version__,
            commit="",
            architecture=platform.machine(),
            graphdriver=self.driver.name,
            kernel=platform.release(),
            os=_info.os_release().get("PRETTY_NAME", "Linux"),
            os_type="linux",
            daemon_id=self.engine_id,
        ).set(1)
        self.view = ViewDB()
        metrics.readings.subscribers = self.events.subscriber_count
        metrics.readings.states = lambda: {
            state: count for state, count in self.state_counts().items() if state != "total"
        }
        # -- services: built and wired here, handed to their routers by the API server.
        # The volume service, the network controller, the distribution client and the
        # builder join the image service here, each given what it needs of the container
        # side (the events bus, the containers that use what it owns) as images is.
        self.images = ImageService(
            root,
            self.driver,
            events=self.events,
            image_users=self.image_users,
            tmp_dir=self.tmp_dir,
        )
        # the registry client, distribution service and builder: made at first use
        self._services_lock = threading.RLock()
        self._registry: RegistryClient | None = None
        self._distribution: DistributionService | None = None
        self._builds: BuildService | None = None
        # where earlier versions kept unpacked build contexts (a context is now a spool)
        shutil.rmtree(root / "builder", ignore_errors=True)
        self.volume_store = VolumeStore(
            root / "volumes", events=self.events, users=self.volume_users
        )
        self.volumes = VolumeService(self.volume_store, self.volume_users)
        self.networks = NetworkController(root, options.exec_root, options.network, self.events)
        self.networks.containers.upstreams = self._dns_upstreams
        self.containers: dict[str, Container] = {}
        self._lock = threading.Lock()
        _restore.load_containers(self)

    # -- start-up --------------------------------------------------------------
    @staticmethod
    def _engine_id(root: Path) -> str:
        path = root / "engine-id"
        try:
            value = path.read_text().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = str(uuid.uuid4())
        write_file(path, value.encode(), 0o600)
        return value

    # -- the runtime -------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise errdefs.Unavailable("the container runtime is not running")
        return self._runtime

    def start_runtime(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect to (or start) containerd and bring running containers back.

        Called once the event loop exists: live containers need it for their stdio.
        """
        self.loop = loop
        if self._runtime is None:
            # the generated stubs and h2 only when berthd talks to containerd (the unit
            # tests hand in a fake runtime)
            from berth.runtime.containerd import ContainerdRuntime

            socket = self.options.containerd
            if not socket:
                if self._supervisor is None:
                    self._supervisor = Supervisor(
                        self.options.data_root, self.options.exec_root, self.options.debug
                    )
                self._supervisor.start()
                socket = self._supervisor.socket
            self._runtime = ContainerdRuntime(
                socket,
                self.options.containerd_namespace,
                str(self.options.exec_root / "runc"),
            )
        # Probed once, off the first container start's path.
        threading.Thread(target=kernel_runs_x32, name="berth-x32-probe", daemon=True).start()
        resync = getattr(self._runtime, "on_resync", None)
        if resync is not None:
            resync(lambda: _restore.resync_exits(self))
        self._runtime.subscribe(self._on_runtime_event)
        self.networks.start(loop, {c.id for c in self.containers.values() if c.state.running})
        _restore.restore_running(self)
        self.networks.finish_restore()

    def submit(self, fn: Callable[..., object], *args: object) -> Future[None]:
        """Run *fn* on the daemon's workers; failures are logged, never lost."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("%s failed", getattr(fn, "__name__", fn))

        fut = self._workers.submit(run)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)
        return fut

    def reconcile(self, container: Container) -> bool:
        """Record the exit of a task that stopped without our hearing of it.  False when
        containerd could not tell (no answer, or a task state of "unknown")."""
        if not container.state.running or container.state.restarting:
            return True
        try:
            task = self.runtime.state(container.id)
        except errdefs.BerthError:
            return False
        if task is None or task.status == TaskStatus.STOPPED:
            code = task.exit_code if task is not None else 255
            self.submit(handle_exit, self, container, code, now_ns(), container.state.pid)
        return task is None or task.status != TaskStatus.UNKNOWN

    def _on_runtime_event(self, event: Event) -> None:
        if isinstance(event, OOMEvent):
            container = self.containers.get(event.container_id)
            if container is not None:
                container.set_oom_killed()
                self.emit_container(container, "oom")
            return
        assert isinstance(event, ExitEvent)
        if event.exec_id:
            self.exec_exited(event)
            return
        container = self.containers.get(event.container_id)
        if container is None:
            return
        self.submit(
            handle_exit,
            self,
            container,
            event.exit_code,
            event.exited_at_ns,
            event.pid,
            event.lost_shim,
        )

    def exec_exited(self, event: ExitEvent) -> None:
        self.submit(self.execs.handle_exit, event)

    def shutdown(self) -> None:
        """Stop containers (unless live-restore), containerd, and every mount."""
        self.stopping.set()
        if self._runtime is not None and not self.options.live_restore:
            running = [c for c in self.containers.values() if c.state.running]
            futures = [self._workers.submit(self._shutdown_container, c) for c in running]
            for fut in futures:
                try:
                    fut.result(60)
                except Exception as e:
                    log.warning("stopping a container at shutdown: %s", e)
        # Exits being handled (task deletes, unmounts, auto-removals) finish first.
        wait_futures(list(self._inflight), timeout=SHUTDOWN_GRACE)
        if self._runtime is not None:
            self._runtime.close()
        if self._supervisor is not None:
            self._supervisor.stop()
        if not self.options.live_restore:
            self.driver.cleanup()
        self.networks.close()
        self.reaper.close()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _shutdown_container(self, container: Container) -> None:
        timeout = container.record.config.stop_timeout
        _stop.stop_and_wait(self, container, 10 if timeout is None else timeout)

    # -- hooks used by start, stop and the monitor -------------------------------
    def forget_runtime_state(self, container_id: str) -> None:
        shutil.rmtree(self.fifo_dir(container_id), ignore_errors=True)
        self.restart_manager.forget(container_id)

    def fifo_dir(self, container_id: str) -> Path:
        return self.options.exec_root / "containerd" / container_id

    def log_path(self, container: Container) -> Path:
        return container.root / f"{container.id}-json.log"

    def open_logger(self, container: Container) -> ContainerLog | None:
        return open_log(container, self.log_path(container))

    def _running_pid(self, ref: str, what: str) -> int:
        target = self.get_container(ref)
        if not target.state.running or target.state.pid <= 0:
            raise errdefs.Conflict(f"cannot join {what} of a non running container: {target.id}")
        return target.state.pid

    def network_namespace(self, container: Container) -> str:
        """The network namespace the container's task joins ("" = its own, made by the
        runtime: ``none``; or none at all: ``host``)."""
        mode = container.host_config.network_mode
        if mode.startswith("container:"):
            target = self.get_container(mode[10:])
            pid = self._running_pid(mode[10:], "network")
            key = target.record.network_settings.sandbox_key
            return key if key else f"/proc/{pid}/ns/net"
        return container.record.network_settings.sandbox_key

    def _dns_upstreams(self, container_id: str) -> list[str]:
        container = self.containers.get(container_id)
        return list(container.host_config.dns or []) if container is not None else []

    # -- networks: the container side of connect and disconnect -------------------
    def connect_network(
        self, network_ref: str, container_ref: str, endpoint: EndpointSettings | None
    ) -> None:
        _network.connect(self, network_ref, container_ref, endpoint)

    def disconnect_network(self, network_ref: str, container_ref: str, force: bool) -> None:
        _network.disconnect(self, network_ref, container_ref, force)

    def namespace_path(self, mode: str, kind: str) -> str:
        if mode.startswith("container:"):
            return f"/proc/{self._running_pid(mode[10:], kind.upper())}/ns/{kind}"
        return ""

    def volume_users(self, name: str) -> list[str]:
        """The containers (running or not) whose record references volume *name*, from
        the ViewDB's snapshot: no container lock is taken."""
        return [
            snap.id
            for snap in self.view.snapshot().all()
            if any(
                mp.type == "volume" and mp.name == name for mp in snap.record.mount_points.values()
            )
        ]

    def notify_exit(self, container: Container) -> None:
        """Wake the waiters of an exit.  A container going to restarting counts as not
        running here, as moby's ``SetRestarting`` wakes them: ``docker wait`` returns the
        code of the run that ended even though the policy starts another."""
        loop = self.loop
        if loop is None:
            return
        st = container.state
        running = st.running and not st.restarting
        loop.call_soon_threadsafe(
            self._resolve, container.id, "exit", st.exit_code, st.error or None, running
        )

    def notify_removed(self, container_id: str, exit_code: int, error: str | None) -> None:
        loop = self.loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._resolve, container_id, "removed", exit_code, error, False)

    def _resolve(
        self, container_id: str, what: str, code: int, error: str | None, running: bool
    ) -> None:
        waiters = self._waiters.get(container_id, [])
        keep: list[Waiter] = []
        for condition, fut in waiters:
            if fut.done():
                continue
            done = (
                what == "removed"
                or (what == "exit" and condition == "next-exit")
                or (what == "exit" and condition == "not-running" and not running)
            )
            if done:
                fut.set_result((code, error))
            else:
                keep.append((condition, fut))
        if keep:
            self._waiters[container_id] = keep
        else:
            self._waiters.pop(container_id, None)

    def wait_container(self, ref: str, condition: str) -> asyncio.Future[tuple[int, str | None]]:
        """A future for ``POST /wait``; call on the event loop."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise errdefs.InvalidParameter(
                f"invalid condition: {condition!r}: use not-running, next-exit or removed"
            )
        # The snapshot, not the live state: it changes in the same step that queues
        # the wake-up, so a waiter can neither be missed nor see a stale inspect.
        snap = self.view.snapshot().find(ref)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, str | None]] = loop.create_future()
        st = snap.record.state
        if condition == "not-running" and not st.running:
            fut.set_result((st.exit_code, st.error or None))
            return fut
        self._waiters.setdefault(snap.id, []).append((condition, fut))
        return fut

    def auto_remove(self, container: Container) -> None:
        def remove() -> None:
            try:
                _delete.remove_container(self, container.id, True, True, False)
            except errdefs.NotFound:
                pass
            except errdefs.BerthError as e:
                log.error("auto-removing %s failed: %s", container.id[:12], e)

        self.submit(remove)

    def emit_container(
        self, container: Container, action: str, extra: dict[str, str] | None = None
    ) -> None:
        attrs = dict(container.record.config.labels or {})
        attrs["image"] = container.record.config.image or container.record.image
        attrs["name"] = container.name.lstrip("/")
        if extra:
            attrs.update(extra)
        self.events.publish("container", action, container.id, attrs)

    # -- container bookkeeping -----------------------------------------------
    def checkpoint(
        self, container: Container, *, host_config: bool = True, write: bool = True
    ) -> None:
        """Persist *container* (unless not *write*) and publish an immutable copy.

        The copy is decoded from the JSON just written, as moby's ``CheckpointTo``
        does, so readers never share an object with writers.  Without
        *host_config* the unchanged HostConfig of the previous snapshot is reused.
        """
        if write:
            raw, hc_raw = container.to_disk(host_config=host_config)
        else:
            raw, hc_raw = container.encode()
        previous = self.view.snapshot().get(container.id)
        if hc_raw is None and previous is not None:
            hc = previous.host_config
        else:
            hc = decode_host_config(hc_raw if hc_raw is not None else container.encode()[1])
        self.view.save(Snapshot.of(decode_record(raw), hc))
        if container.take_exit():  # announced once readers can see it
            container.exited.set()
            self.notify_exit(container)

    def register(self, container: Container) -> None:
        with self._lock:
            self.containers[container.id] = container

    def unregister(self, container: Container) -> None:
        with self._lock:
            self.containers.pop(container.id, None)
        self.view.delete(container.id)

    def get_container(self, ref: str) -> Container:
        snap = self.view.snapshot().find(ref)
        container = self.containers.get(snap.id)
        if container is None:
            raise errdefs.NotFound(f"No such container: {ref}")
        return container

    def kill_for_removal(self, container: Container) -> None:
        _stop.stop_and_wait(self, container, 0, "SIGKILL")

    def image_users(self) -> dict[str, list[tuple[str, bool]]]:
        """Each image in use → its containers (id, running), oldest first: what the
        image service asks before a delete and when listing."""
        users: dict[str, list[tuple[str, bool]]] = {}
        for s in sorted(self.view.snapshot().all(), key=lambda s: s.created_ns):
            users.setdefault(s.record.image, []).append((s.id, s.record.state.running))
        return users

    def exec_ids(self, container_id: str) -> list[str] | None:
        return self.execs.ids(container_id)

    def graph_driver_data(self, container_id: str) -> dict[str, str] | None:
        try:
            rw = self.images.layers.get_rw_layer(container_id)
        except errdefs.NotFound:
            return None
        data = self.images.layers.rw_metadata(rw)
        if data:
            data = {"ID": container_id, **data}
        return data or None

    def container_sizes(self, container_id: str) -> tuple[int, int]:
        return _disk_usage.container_sizes(self, container_id)

    def state_counts(self) -> dict[str, int]:
        counts = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for snap in self.view.snapshot():
            st = snap.record.state
            counts["total"] += 1
            if st.paused:
                counts["paused"] += 1
            elif st.running:
                counts["running"] += 1
            else:
                counts["stopped"] += 1
        return counts

    def runtimes(self) -> dict[str, str]:
        return {"runc": "runc"}

    def task_count(self) -> int:
        return threading.active_count()

    # -- Backend: containers -------------------------------------------------
    def create_container(
        self,
        name: str,
        config: Config,
        host_config: HostConfig,
        networking: NetworkingConfig | None,
        platform: str,
    ) -> CreateResponse:
        with metrics.container_action("create"):
            resp = _create.create_container(self, name, config, host_config, networking, platform)
        self.emit_container(self.containers[resp.Id], "create")
        return resp

    def list_containers(
        self,
        all_containers: bool,
        limit: int,
        size: bool,
        filters: Filters,
    ) -> list[Summary]:
        return _list.list_containers(self, all_containers, limit, size, filters)

    def inspect_container(self, ref: str, size: bool) -> dict[str, Any]:
        return _inspect.inspect_container(self, ref, size)

    def rename_container(self, old: str, new: str) -> None:
        container = self.get_container(old)
        previous = container.name
        _rename.rename_container(self, old, new)
        self.emit_container(container, "rename", {"oldName": previous})

    def remove_container(self, ref: str, force: bool, remove_volumes: bool, link: bool) -> None:
        with metrics.container_action("delete"):
            _delete.remove_container(self, ref, force, remove_volumes, link)

    def prune_containers(self, filters: Filters) -> PruneReport:
        return _prune.prune_containers(self, filters)

    def exec_create(self, ref: str, options: ExecOptions) -> str:
        return self.execs.create(ref, options)

    def exec_get(self, exec_id: str) -> Exec:
        return self.execs.get(exec_id)

    def exec_start(self, exec_id: str) -> Exec:
        assert self.loop is not None
        return self.execs.start(exec_id, self.loop)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return self.execs.get(exec_id).inspect()

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self.execs.resize(exec_id, height, width)

    def start_container(self, ref: str) -> None:
        with metrics.container_action("start"):
            _start.start_container(self, ref)

    def stop_container(self, ref: str, timeout: int | None, signal: str) -> None:
        with metrics.container_action("stop"):
            _stop.stop_container(self, ref, timeout, signal)

    def restart_container(self, ref: str, timeout: int | None, signal: str) -> None:
        with metrics.container_action("restart"):
            _stop.restart_container(self, ref, timeout, signal)

    def kill_container(self, ref: str, signal: str) -> None:
        _stop.kill_container(self, ref, signal)

    def pause_container(self, ref: str) -> None:
        _stop.pause_container(self, ref)

    def unpause_container(self, ref: str) -> None:
        _stop.unpause_container(self, ref)

    def update_container(self, ref: str, config: UpdateConfig) -> list[str]:
        return _update.update_container(self, ref, config.host_config())

    def resize_container(self, ref: str, height: int, width: int) -> None:
        container = self.get_container(ref)
        if not container.state.running:
            raise errdefs.Conflict(f"Container {container.id} is not running")
        self.runtime.resize(container.id, "", width, height)
        self.emit_container(container, "resize", {"height": str(height), "width": str(width)})

    def top_container(self, ref: str, ps_args: str) -> dict[str, Any]:
        container = self.get_container(ref)
        if not container.state.running:
            raise errdefs.Conflict(f"Container {container.id} is not running")
        if container.state.restarting:
            raise errdefs.Conflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )
        result = top(self.runtime.pids(container.id), ps_args)
        self.emit_container(container, "top")
        return result

    def container_stats(self, ref: str) -> Sampler:
        """A sampler of *ref*'s resource usage; it takes no lock, so sampling never
        waits on (or holds up) a start or stop.  dockerd sends no event for stats."""
        container = self.get_container(ref)

        def probe() -> tuple[str, Mapping[str, Any] | None] | None:
            if self.containers.get(container.id) is not container:
                return None  # removed: the stream ends, as moby's StopCollection does
            st = container.state
            if not st.running or st.restarting:
                return container.name, None
            try:
                return container.name, self.runtime.stats(container.id)
            except (errdefs.NotFound, errdefs.Conflict):
                return container.name, None  # it stopped between the check and the read
            except errdefs.BerthError as e:
                log.error("collecting stats for %s: %s", container.id[:12], e)
                return container.name, None

        def networks() -> dict[str, dict[str, int]]:
            return network_counters(container, self.containers.get, self.networks.interface_stats)

        return Sampler(container.id, container.name, probe, _info.mem_total(), networks=networks)

    def attach_info(self, ref: str) -> AttachInfo:
        container = self.get_container(ref)
        st = container.state
        if st.paused:
            raise errdefs.Conflict(
                f"container {container.id} is paused, unpause the container before attach"
            )
        if st.restarting:
            raise errdefs.Conflict(
                f"container {container.id} is restarting, wait until the container is running"
            )
        cfg = container.record.config
        self.emit_container(container, "attach")
        return AttachInfo(container.id, cfg.tty, cfg.open_stdin, cfg.stdin_once, container.streams)

    def container_logs(
        self, ref: str, since_ns: int, until_ns: int, tail: int, follow: bool
    ) -> tuple[bool, Callable[[threading.Event], Iterator[LogMessage]]]:
        container = self.get_container(ref)
        path = self.log_path(container)

        def make(stop: threading.Event) -> Iterator[LogMessage]:
            return _logs.read(
                container,
                path,
                since_ns=since_ns,
                until_ns=until_ns,
                tail=tail,
                follow=follow,
                stop=stop,
            )

        if container.host_config.log_config.type == "none":
            raise errdefs.InvalidParameter("configured logging driver does not support reading")
        return container.record.config.tty, make

    # -- the registry side and the builder, made at first use ----------------------
    # They and what they import (http.client, email, the builder: 1.6 MB) are not
    # loaded by a daemon that never pulls, pushes, logs in, searches or builds.
    def _made(self, attr: str, make: Callable[[], _S]) -> _S:
        """The service kept in *attr*, made by *make* at the first call."""
        with self._services_lock:  # reentrant: the builder's make asks for distribution
            made: _S | None = getattr(self, attr)
            if made is None:
                made = make()
                setattr(self, attr, made)
            return made

    @property
    def registry(self) -> RegistryClient:
        return self._made("_registry", lambda: registry_client(self.options.registry))

    @property
    def distribution(self) -> DistributionService:
        def make() -> DistributionService:
            from berth.distribution.service import DistributionService

            return DistributionService(
                self.images, self.registry, self.images.root / "distribution"
            )

        return self._made("_distribution", make)

    @property
    def builds(self) -> BuildService:
        """The classic builder: images and pulls from the services, containers from here."""

        def make() -> BuildService:
            from berth.builder.build import BuildService

            return BuildService(self.images, self.distribution, BuildSteps(self), self.tmp_dir)

        return self._made("_builds", make)

    # -- Backend: docker diff, docker commit --------------------------------------
    def container_changes(self, ref: str) -> list[FilesystemChange]:
        return _commit.container_changes(self, ref)

    def commit_container(self, options: CommitOptions) -> str:
        with metrics.container_action("commit"):
            return _commit.commit_container(self, options)

    # -- Backend: copy (docker cp) -------------------------------------------
    def container_stat_path(self, ref: str, path: str) -> PathStat:
        return _archive.stat_path(self, ref, path)

    def container_archive_path(self, ref: str, path: str) -> _archive.Archive:
        return _archive.archive_path(self, ref, path)

    def container_extract_to_dir(
        self,
        ref: str,
        path: str,
        copy_uid_gid: bool,
        no_overwrite_dir_non_dir: bool,
        content: IO[bytes],
    ) -> None:
        _archive.extract_to_dir(self, ref, path, copy_uid_gid, no_overwrite_dir_non_dir, content)

    def container_export(self, ref: str) -> _archive.Export:
        return _archive.export_container(self, ref)

    # -- Backend: system -------------------------------------------------------
    def system_info(self) -> dict[str, Any]:
        return _info.system_info(self)

    def system_version(self) -> dict[str, Any]:
        return _info.system_version()

    def system_disk_usage(
        self, containers: bool, images: bool, volumes: bool, build_cache: bool
    ) -> DiskUsage:
        return _disk_usage.system_disk_usage(self, containers, images, volumes, build_cache)
