"""The Runtime over containerd's gRPC API (``io.containerd.runc.v2`` → runc).

Follows dockerd's libcontainerd: a container record holding the OCI spec,
a task created with FIFO stdio and no rootfs mounts (the daemon mounts the
root filesystem itself), exit and OOM events from one subscription.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.json_format import MessageToDict

from berth import errdefs
from berth.runtime import _strays
from berth.runtime._api.api.events import task_pb2 as task_events
from berth.runtime._api.api.services.containers.v1 import containers_pb2
from berth.runtime._api.api.services.events.v1 import events_pb2
from berth.runtime._api.api.services.tasks.v1 import tasks_pb2
from berth.runtime._api.api.services.version.v1 import version_pb2
from berth.runtime._api.api.types.task import task_pb2
from berth.runtime._api.cgroups.stats.v1 import metrics_pb2
from berth.runtime._api.runtime.v2.runc.options import oci_pb2
from berth.runtime._grpc import Channel, RpcError, StatusCode, Stub
from berth.runtime.base import (
    EventHandler,
    ExitEvent,
    OOMEvent,
    Stdio,
    TaskNotFound,
    TaskState,
    TaskStatus,
)
from berth.runtime.spec import SHIM_GROUP_ANNOTATION

log = logging.getLogger(__name__)

RUNTIME_NAME = "io.containerd.runc.v2"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
#: how long a leftover task gets to die, and its shim to exit, before it is killed
SHIM_EXIT_GRACE = 2.0
#: an event berthd sends itself to know when its subscription is live
SYNC_TOPIC = "/berth/sync"

_STATUS = {
    task_pb2.Status.UNKNOWN: TaskStatus.UNKNOWN,
    task_pb2.Status.CREATED: TaskStatus.CREATED,
    task_pb2.Status.RUNNING: TaskStatus.RUNNING,
    task_pb2.Status.STOPPED: TaskStatus.STOPPED,
    task_pb2.Status.PAUSED: TaskStatus.PAUSED,
    task_pb2.Status.PAUSING: TaskStatus.PAUSING,
}

#: A signal is delivered at once unless the shim is stuck; then waiting longer is no help.
KILL_TIMEOUT = 10.0

T = TypeVar("T")


def _json_any(type_url: str, value: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(value).encode())


def _translate(e: RpcError, what: str) -> errdefs.BerthError:
    code = e.code()
    details = e.details() or code.name
    if code == StatusCode.NOT_FOUND:
        return TaskNotFound(f"{what}: {details}")
    if code == StatusCode.ALREADY_EXISTS:
        return errdefs.Conflict(f"{what}: {details}")
    if code in (StatusCode.FAILED_PRECONDITION, StatusCode.INVALID_ARGUMENT):
        return errdefs.Conflict(f"{what}: {details}")
    if code == StatusCode.UNAVAILABLE:
        return errdefs.Unavailable(f"{what}: containerd is not available: {details}")
    return errdefs.System(f"{what}: {details}")


class ContainerdRuntime:
    def __init__(self, socket: str, namespace: str, runc_root: str) -> None:
        self.socket = socket
        self.namespace = namespace
        self.runc_root = runc_root
        self._metadata = (("containerd-namespace", namespace),)
        self._channel = Channel(socket, max_message=64 << 20)
        self._tasks = Stub(self._channel, tasks_pb2.DESCRIPTOR.services_by_name["Tasks"])
        self._containers = Stub(
            self._channel, containers_pb2.DESCRIPTOR.services_by_name["Containers"]
        )
        self._events = Stub(self._channel, events_pb2.DESCRIPTOR.services_by_name["Events"])
        self._version = Stub(self._channel, version_pb2.DESCRIPTOR.services_by_name["Version"])
        self._handlers: list[EventHandler] = []
        self._resync_handlers: list[Callable[[], None]] = []
        self._closed = threading.Event()
        self._subscriber: threading.Thread | None = None
        self._stream: Any = None
        #: container ID -> pid of the shim its task runs under (its process's parent: the
        #: shim is its subreaper), to tell an exit from the death of the shim
        self._shim_pids: dict[str, int] = {}
        #: the shim groups (``--shim-group``) tasks were created in, each with its lock:
        #: one task created at a time in a group, as the shim's ``start`` for two at once
        #: can miss the other's socket while it is being set up, replace it, and leave a
        #: shim that serves nothing and never exits (seen under load with Compose's
        #: parallel starts)
        self._groups: dict[str, threading.Lock] = {}

    # -- plumbing --------------------------------------------------------------
    def _call(self, fn: Callable[..., T], request: Any, what: str, timeout: float = 60) -> T:
        try:
            return fn(request, metadata=self._metadata, timeout=timeout)
        except RpcError as e:
            raise _translate(e, what) from None

    def close(self) -> None:
        self._release_shims()
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        self._channel.close()
        if self._subscriber is not None:
            self._subscriber.join(5)

    def _release_shims(self) -> None:
        """With no task left, see the shims out and remove the sockets left behind: a shim
        that was killed leaves its socket, and a group's is not named after a container."""
        try:
            resp = self._call(self._tasks.List, tasks_pb2.ListTasksRequest(), "listing tasks", 5)
        except errdefs.BerthError:
            return
        if resp.tasks:
            return  # live-restore: they stay, and so do their shims
        shims = _strays.shims(self.socket, self.namespace)
        sockets = {path for shim in shims for path in _strays.listening_sockets(shim.pid)}
        # and those of the groups whose shim is gone already (killed, its socket left)
        sockets.update(_strays.shim_socket(self.socket, self.namespace, g) for g in self._groups)
        deadline = time.monotonic() + SHIM_EXIT_GRACE
        while any(_strays.alive(s.pid) for s in shims) and time.monotonic() < deadline:
            time.sleep(0.02)
        for path in sockets:
            _strays.remove_dead_socket(path)

    # -- containers and tasks ----------------------------------------------------
    def _runtime_options(self) -> any_pb2.Any:
        opts = oci_pb2.Options(binary_name="runc", root=self.runc_root)
        return any_pb2.Any(type_url=RUNC_OPTIONS_TYPE_URL, value=opts.SerializeToString())

    def create(self, container_id: str, spec: dict[str, Any], stdio: Stdio) -> int:
        group = spec.get("annotations", {}).get(SHIM_GROUP_ANNOTATION)
        one_at_a_time: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if group:
            one_at_a_time = self._groups.setdefault(group, threading.Lock())
        container = containers_pb2.Container(
            id=container_id,
            runtime=containers_pb2.Container.Runtime(
                name=RUNTIME_NAME, options=self._runtime_options()
            ),
            spec=_json_any(SPEC_TYPE_URL, spec),
        )
        try:
            self._call(
                self._containers.Create,
                containers_pb2.CreateContainerRequest(container=container),
                "creating container",
            )
        except errdefs.Conflict:
            # A record left by a crash: start afresh.
            log.info("replacing stale containerd record of %s", container_id)
            self.delete(container_id)
            self._call(
                self._containers.Create,
                containers_pb2.CreateContainerRequest(container=container),
                "creating container",
            )
        try:
            with one_at_a_time:
                resp = self._call(
                    self._tasks.Create,
                    tasks_pb2.CreateTaskRequest(
                        container_id=container_id,
                        stdin=stdio.stdin,
                        stdout=stdio.stdout,
                        stderr=stdio.stderr,
                        terminal=stdio.terminal,
                    ),
                    "creating task",
                )
        except errdefs.BerthError as e:
            self._delete_container(container_id)
            raise _runtime_error(e) from None
        return int(resp.pid)

    def start(self, container_id: str) -> int:
        try:
            resp = self._call(
                self._tasks.Start,
                tasks_pb2.StartRequest(container_id=container_id),
                "starting task",
            )
        except errdefs.BerthError as e:
            raise _runtime_error(e) from None
        self._note_shim(container_id, int(resp.pid))
        return int(resp.pid)

    def _note_shim(self, container_id: str, pid: int) -> None:
        shim = _strays.parent_pid(pid) if pid else None
        if shim is not None and shim > 1:
            self._shim_pids[container_id] = shim

    def kill(
        self, container_id: str, signal: int, exec_id: str = "", all_procs: bool = False
    ) -> None:
        self._call(
            self._tasks.Kill,
            tasks_pb2.KillRequest(
                container_id=container_id, exec_id=exec_id, signal=signal, all=all_procs
            ),
            "killing task",
            timeout=KILL_TIMEOUT,
        )

    def delete(self, container_id: str) -> int | None:
        # Forgotten first: the shim exits once its last task is deleted, and an exit
        # event handled meanwhile must not take that for the shim's death.
        self._shim_pids.pop(container_id, None)
        status: int | None = None
        try:
            resp = self._call(
                self._tasks.Delete,
                tasks_pb2.DeleteTaskRequest(container_id=container_id),
                "deleting task",
            )
            status = int(resp.exit_status)
        except TaskNotFound:
            pass
        except errdefs.Conflict:
            # Still running: make sure it is gone, then delete.
            try:
                self.kill(container_id, 9, all_procs=True)
                self.wait(container_id, timeout=10)
            except errdefs.BerthError:
                pass
            resp = self._call(
                self._tasks.Delete,
                tasks_pb2.DeleteTaskRequest(container_id=container_id),
                "deleting task",
            )
            status = int(resp.exit_status)
        self._delete_container(container_id)
        return status

    def _delete_container(self, container_id: str) -> None:
        try:
            self._call(
                self._containers.Delete,
                containers_pb2.DeleteContainerRequest(id=container_id),
                "deleting container",
            )
        except TaskNotFound:
            pass

    def exec(self, container_id: str, exec_id: str, process: dict[str, Any], stdio: Stdio) -> None:
        try:
            self._call(
                self._tasks.Exec,
                tasks_pb2.ExecProcessRequest(
                    container_id=container_id,
                    exec_id=exec_id,
                    stdin=stdio.stdin,
                    stdout=stdio.stdout,
                    stderr=stdio.stderr,
                    terminal=stdio.terminal,
                    spec=_json_any(PROCESS_TYPE_URL, process),
                ),
                "creating exec process",
            )
        except errdefs.BerthError as e:
            raise _runtime_error(e) from None

    def start_exec(self, container_id: str, exec_id: str) -> int:
        try:
            resp = self._call(
                self._tasks.Start,
                tasks_pb2.StartRequest(container_id=container_id, exec_id=exec_id),
                "starting exec process",
            )
        except errdefs.BerthError as e:
            raise _runtime_error(e) from None
        return int(resp.pid)

    def delete_exec(self, container_id: str, exec_id: str) -> None:
        try:
            self._call(
                self._tasks.DeleteProcess,
                tasks_pb2.DeleteProcessRequest(container_id=container_id, exec_id=exec_id),
                "deleting exec process",
            )
        except TaskNotFound:
            pass

    def resize(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        self._call(
            self._tasks.ResizePty,
            tasks_pb2.ResizePtyRequest(
                container_id=container_id, exec_id=exec_id, width=width, height=height
            ),
            "resizing terminal",
        )

    def close_stdin(self, container_id: str, exec_id: str = "") -> None:
        try:
            self._call(
                self._tasks.CloseIO,
                tasks_pb2.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=True),
                "closing stdin",
            )
        except TaskNotFound:
            pass

    def pause(self, container_id: str) -> None:
        self._call(
            self._tasks.Pause, tasks_pb2.PauseTaskRequest(container_id=container_id), "pausing"
        )

    def resume(self, container_id: str) -> None:
        self._call(
            self._tasks.Resume, tasks_pb2.ResumeTaskRequest(container_id=container_id), "resuming"
        )

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._call(
            self._tasks.Update,
            tasks_pb2.UpdateTaskRequest(
                container_id=container_id, resources=_json_any(RESOURCES_TYPE_URL, resources)
            ),
            "updating resources",
        )

    def pids(self, container_id: str) -> list[int]:
        resp = self._call(
            self._tasks.ListPids,
            tasks_pb2.ListPidsRequest(container_id=container_id),
            "listing processes",
        )
        return [int(p.pid) for p in resp.processes]

    def stats(self, container_id: str) -> dict[str, Any]:
        resp = self._call(
            self._tasks.Metrics,
            tasks_pb2.MetricsRequest(filters=[f"id=={container_id}"]),
            "reading metrics",
        )
        for metric in resp.metrics:
            data = metrics_pb2.Metrics()
            data.ParseFromString(metric.data.value)  # see _dispatch about type URLs
            out: dict[str, Any] = MessageToDict(data, preserving_proto_field_name=True)
            return out
        raise TaskNotFound(f"no metrics for {container_id}")

    def state(self, container_id: str) -> TaskState | None:
        try:
            resp = self._call(
                self._tasks.Get, tasks_pb2.GetRequest(container_id=container_id), "getting task"
            )
        except TaskNotFound:
            return None
        p = resp.process
        status = _STATUS.get(p.status, TaskStatus.UNKNOWN)
        adopted = container_id not in self._shim_pids  # a task found at start-up
        if adopted and status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            self._note_shim(container_id, int(p.pid))
        return TaskState(int(p.pid), status, int(p.exit_status))

    def container_ids(self) -> list[str]:
        resp = self._call(
            self._containers.List, containers_pb2.ListContainersRequest(), "listing containers"
        )
        return [c.id for c in resp.containers]

    def remove_leftovers(self, keep: Collection[str], known: Collection[str] = ()) -> list[str]:
        leftovers = [cid for cid in self.container_ids() if cid not in keep]
        if leftovers:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self._remove_leftover, leftovers))
        # The shims of the tasks just deleted are on their way out; any other is lost:
        # typically blocked forever opening the stdio FIFOs of a client that died.  A shim
        # serving a group (--shim-group) is named after the container it was started for,
        # which may be gone while it serves others: it is kept if a kept task runs under it.
        serving = self._shims_serving(keep)
        deadline = time.monotonic() + SHIM_EXIT_GRACE
        while True:
            strays = [
                s
                for s in _strays.shims(self.socket, self.namespace)
                if s.container_id not in keep and s.pid not in serving
            ]
            exiting = [s for s in strays if s.container_id in leftovers]
            if not exiting or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for shim in strays:
            log.info("killing stray shim %d of %s", shim.pid, shim.container_id[:12])
            _strays.kill_shim(shim, self.socket, self.namespace)
        runc_root = os.path.join(self.runc_root, self.namespace)
        stale = [cid for cid in _strays.runc_states(runc_root) if cid not in keep]
        for cid in stale:
            log.info("removing stray runc state of %s", cid[:12])
            _strays.runc_force_delete(runc_root, cid)
        if strays:  # containerd has let go of tasks whose shim died: drop the records
            for cid in self.container_ids():
                if cid not in keep:
                    try:
                        self.delete(cid)
                    except errdefs.BerthError as e:
                        log.warning("cannot remove leftover container %s: %s", cid[:12], e)
        # containerd kills the shim of a create it cancels, and the socket stays.
        for cid in known:
            if cid not in keep:
                _strays.remove_dead_socket(_strays.shim_socket(self.socket, self.namespace, cid))
        return sorted({*leftovers, *(s.container_id for s in strays), *stale})

    def _shims_serving(self, keep: Collection[str]) -> set[int]:
        """The pids of the shims whose tasks' processes belong to containers in *keep*
        (a shim is the parent of the tasks it runs: it is their subreaper)."""
        resp = self._call(self._tasks.List, tasks_pb2.ListTasksRequest(), "listing tasks")
        parents = (_strays.parent_pid(t.pid) for t in resp.tasks if t.id in keep and t.pid)
        return {pid for pid in parents if pid is not None}

    def _remove_leftover(self, container_id: str) -> None:
        """Stop and delete a task no container owns, giving it little time: a task whose
        shim is stuck is dealt with by killing the shim."""
        try:
            task = self.state(container_id)
            if task is not None and task.status == TaskStatus.PAUSED:
                self.resume(container_id)  # a frozen task cannot die
            if task is not None and task.status != TaskStatus.STOPPED:
                self.kill(container_id, 9, all_procs=True)
                self.wait(container_id, timeout=SHIM_EXIT_GRACE)
            self.delete(container_id)
        except errdefs.BerthError as e:
            log.info("leftover container %s: %s", container_id[:12], e)

    def wait(self, container_id: str, exec_id: str = "", timeout: float | None = None) -> int:
        resp = self._call(
            self._tasks.Wait,
            tasks_pb2.WaitRequest(container_id=container_id, exec_id=exec_id),
            "waiting",
            timeout=timeout or 365 * 86400,
        )
        return int(resp.exit_status)

    # -- events ------------------------------------------------------------------
    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.append(handler)
        if self._subscriber is None:
            ready = threading.Event()
            self._subscriber = threading.Thread(
                target=self._event_loop, args=(ready,), name="containerd-events", daemon=True
            )
            self._subscriber.start()
            ready.wait(10)

    def on_resync(self, handler: Callable[[], None]) -> None:
        """Call *handler* each time the event subscription is (re)established: exits
        that happened while it was down must then be looked for."""
        self._resync_handlers.append(handler)

    def _event_loop(self, ready: threading.Event) -> None:
        filters = [f"namespace=={self.namespace},topic~=|^/(tasks\\|berth)/|"]
        backoff = 0.05
        while not self._closed.is_set():
            try:
                stream = self._events.Subscribe(
                    events_pb2.SubscribeRequest(filters=filters), metadata=self._metadata
                )
                self._stream = stream
                token = secrets.token_hex(8).encode()
                synced = threading.Event()
                threading.Thread(
                    target=self._publish_sync, args=(token, synced), daemon=True
                ).start()
                for envelope in self._envelopes(stream):
                    backoff = 0.05
                    if envelope.topic == SYNC_TOPIC:
                        if envelope.event.value == token and not synced.is_set():
                            # Our own event came back: from here on nothing is missed.
                            synced.set()
                            ready.set()
                            self._resync()
                        continue
                    self._dispatch(envelope)
            except RpcError as e:
                if self._closed.is_set() or e.code() == StatusCode.CANCELLED:
                    return
                log.warning("containerd event stream broken (%s); resubscribing", e.code().name)
            ready.set()
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _publish_sync(self, token: bytes, synced: threading.Event) -> None:
        request = events_pb2.PublishRequest(
            topic=SYNC_TOPIC, event=any_pb2.Any(type_url="berth.sync", value=token)
        )
        while not synced.is_set() and not self._closed.is_set():
            try:
                self._events.Publish(request, metadata=self._metadata, timeout=5)
            except RpcError:
                pass
            synced.wait(0.2)

    def _resync(self) -> None:
        for handler in list(self._resync_handlers):
            try:
                handler()
            except Exception:
                log.exception("runtime resync handler failed")

    @staticmethod
    def _envelopes(stream: Any) -> Iterator[Any]:
        yield from stream

    def _dispatch(self, envelope: Any) -> None:
        topic = envelope.topic
        log.debug("containerd event %s", topic)
        event: ExitEvent | OOMEvent
        if topic == "/tasks/exit":
            msg = task_events.TaskExit()
            # containerd's type URLs have no "type.googleapis.com/" prefix, which newer
            # protobuf's Any.Unpack refuses: decode the payload directly.
            msg.ParseFromString(envelope.event.value)
            exec_id = "" if msg.id == msg.container_id else msg.id
            exited = msg.exited_at.seconds * 1_000_000_000 + msg.exited_at.nanos
            lost = 0
            if not exec_id:
                # containerd reports the tasks of a shim that died as exited (137, after
                # its ``shim delete`` killed what was left): only the shim's pid tells.
                shim = self._shim_pids.pop(msg.container_id, 0)
                lost = shim if shim and not _strays.alive(shim) else 0
            event = ExitEvent(
                msg.container_id, exec_id, int(msg.pid), int(msg.exit_status), exited, lost
            )
        elif topic == "/tasks/oom":
            msg_oom = task_events.TaskOOM()
            msg_oom.ParseFromString(envelope.event.value)
            event = OOMEvent(msg_oom.container_id)
        else:
            return
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("runtime event handler failed for %s", topic)

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            self._version.Version(empty_pb2.Empty(), timeout=timeout)
            return True
        except RpcError:
            return False


def _runtime_error(e: errdefs.BerthError) -> errdefs.BerthError:
    """Failures of create and start keep containerd's words; the daemon decides
    (as dockerd's translateContainerdStartErr does) what they mean for the user."""
    return errdefs.System(str(e).split(": ", 1)[-1])
