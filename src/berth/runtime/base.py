"""The Runtime contract, shaped like dockerd's libcontainerd client.

The daemon talks to processes only through this Protocol: the containerd
implementation is the real one, and unit tests of the daemon can use a fake.
Every method is synchronous and thread-safe; events arrive on a runtime
thread through the handler given to :meth:`Runtime.subscribe`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from berth import errdefs


@dataclass(frozen=True)
class Stdio:
    """FIFO paths of a process; "" for a stream that is not connected."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class TaskStatus(enum.Enum):
    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"


@dataclass(frozen=True)
class TaskState:
    pid: int
    status: TaskStatus
    exit_code: int = 0


@dataclass(frozen=True)
class ExitEvent:
    """A process exited; ``exec_id`` is "" for the container's init process."""

    container_id: str
    exec_id: str
    pid: int
    exit_code: int
    exited_at_ns: int
    #: the pid of the shim process that served it, when that shim died (taking the
    #: process with it) rather than reported an exit; 0 otherwise
    lost_shim: int = 0


@dataclass(frozen=True)
class OOMEvent:
    container_id: str


Event = ExitEvent | OOMEvent
EventHandler = Callable[[Event], None]


class TaskNotFound(errdefs.NotFound):
    """The runtime has no task (or process) by that ID."""


class Runtime(Protocol):
    def create(self, container_id: str, spec: dict[str, Any], stdio: Stdio) -> int:
        """Create the container and its task (not started); return the init pid."""

    def start(self, container_id: str) -> int: ...

    def kill(
        self, container_id: str, signal: int, exec_id: str = "", all_procs: bool = False
    ) -> None: ...

    def delete(self, container_id: str) -> int | None:
        """Delete the task and the container; return the exit status if there was a task."""

    def exec(
        self, container_id: str, exec_id: str, process: dict[str, Any], stdio: Stdio
    ) -> None: ...

    def start_exec(self, container_id: str, exec_id: str) -> int: ...

    def delete_exec(self, container_id: str, exec_id: str) -> None: ...

    def resize(self, container_id: str, exec_id: str, width: int, height: int) -> None: ...

    def close_stdin(self, container_id: str, exec_id: str = "") -> None: ...

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    def pids(self, container_id: str) -> list[int]: ...

    def stats(self, container_id: str) -> dict[str, Any]: ...

    def state(self, container_id: str) -> TaskState | None:
        """The task's state, or None when there is no task (used to restore)."""

    def container_ids(self) -> list[str]:
        """Every container the runtime holds for us, with or without a task."""

    def remove_leftovers(self, keep: Collection[str], known: Collection[str] = ()) -> list[str]:
        """End every container, task and process the runtime holds for us but those in
        *keep*: what a crash of the daemon left behind.  *known* are IDs (of containers,
        of shim groups) the runtime may have had and forgotten.  Returns the IDs removed."""

    def subscribe(self, handler: EventHandler) -> None: ...

    def close(self) -> None: ...
