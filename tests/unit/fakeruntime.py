"""A fake container runtime for daemon unit tests: containerd's runc shim as the daemon sees it.

:class:`FakeRuntime` implements :class:`berth.runtime.base.Runtime` with scripted
processes instead of runc.  It keeps what matters to the daemon faithful:

* ``create`` opens the process's ends of the stdio FIFOs the daemon made (stdout and
  stderr for writing; stdin ``O_RDWR``, as containerd's fifo package does, so the
  daemon closing its end is no end-of-file: ``close_stdin``, containerd's CloseIO,
  closes the reading end once the process has read what was written);
* ``start`` runs the :class:`Program` found by the process's ``args[0]`` (an unknown
  one fails ``create`` with runc's "executable file not found in $PATH");
* an exit closes the process's stdout/stderr and is delivered as an
  :class:`ExitEvent` to the subscribed handlers, from the process's own thread;
  exec processes die with their container's init, their exits reported before the
  init's (containerd 1.7) or, with ``exec_exits_first = False``, after it (older shims);
* ``kill`` delivers a signal as the program says (ignored, handled with an exit
  code, or fatal with 128+signal); SIGKILL cannot be ignored; signals to a paused
  (frozen, cgroup v1) process take effect when it is resumed; signalling a process
  that has exited is containerd's NotFound;
* ``delete`` kills a live task first, returns the exit status and forgets the task;
* ``close`` only drops the subscribers, like berthd losing its connection: the
  tasks keep running, so another daemon can reattach to them.

Tests steer it with :meth:`FakeRuntime.exit` (the program exits by itself),
:meth:`FakeRuntime.write` (more output), :meth:`FakeRuntime.forget` (containerd
lost the task), ``unanswered`` (a stuck shim), :meth:`FakeRuntime.resync` (the event stream came back), and read
what happened in ``specs``, ``exec_specs``, ``signals``, ``creates`` and ``starts``.
:meth:`FakeRuntime.shutdown` ends every process and closes every descriptor.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import select
import signal as signals
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from berth import errdefs
from berth.runtime.base import (
    Event,
    EventHandler,
    ExitEvent,
    Stdio,
    TaskNotFound,
    TaskState,
    TaskStatus,
)

#: How long the fake waits for one of its own threads before giving up (a bound, not a timing).
JOIN_TIMEOUT = 10.0


@dataclass(frozen=True)
class Program:
    """What a fake process does once started.

    In order: write the *stdout* chunks, then the *stderr* chunks; with
    *echo_stdin*, copy stdin to stdout until its end (``close_stdin``); then run
    for *run_ms* milliseconds (``None``: until :meth:`FakeRuntime.exit` or a fatal
    signal) and exit with *exit_code*.
    """

    stdout: tuple[bytes, ...] = ()
    stderr: tuple[bytes, ...] = ()
    echo_stdin: bool = False
    run_ms: int | None = 0
    exit_code: int = 0
    #: signals that do nothing (SIGKILL cannot be ignored)
    ignore: frozenset[int] = frozenset()
    #: signals the program handles by exiting with the given code (others: 128+signal)
    on_signal: Mapping[int, int] = field(default_factory=dict)
    #: the runtime loses this process's exit event (the daemon must find the exit itself)
    drop_exit: bool = False
    #: ``start`` (or ``start_exec``) fails with this message
    start_error: str = ""


def not_found_message(arg0: str) -> str:
    return (
        "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
        f'start container process: exec: "{arg0}": executable file not found in $PATH: unknown'
    )


def exec_not_found_message(arg0: str) -> str:
    return (
        "OCI runtime exec failed: exec failed: unable to start container process: "
        f'exec: "{arg0}": executable file not found in $PATH: unknown'
    )


def _close(fd: int) -> int:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1


class FakeProcess:
    """One scripted process (a container's init or an exec) with its FIFO ends."""

    def __init__(
        self,
        rt: FakeRuntime,
        container_id: str,
        exec_id: str,
        pid: int,
        program: Program | None,
        stdio: Stdio,
    ) -> None:
        self.rt = rt
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = pid
        self.program = program
        self.stdio = stdio
        self.status = TaskStatus.CREATED
        self.exit_code = 0
        #: every signal delivered to this process, in order
        self.signals: list[int] = []
        #: stdin bytes the process read
        self.stdin_read = b""
        self.paused = False
        #: the exit of this process is not reported (it was ended by the test harness)
        self.silent = False
        self.exited = threading.Event()
        self.thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._code: int | None = None  # the exit decided by a signal or by exit()
        self._stdin_closed = False
        self._echoing = False
        self._io_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.out_fd = self.err_fd = self.in_fd = -1
        try:
            # The daemon holds the reading ends (and placeholder writers), so these
            # opens return at once, as the shim's do.
            if stdio.stdout:
                self.out_fd = os.open(stdio.stdout, os.O_WRONLY | os.O_CLOEXEC)
            if stdio.stderr:
                self.err_fd = os.open(stdio.stderr, os.O_WRONLY | os.O_CLOEXEC)
            if stdio.stdin:
                self.in_fd = os.open(stdio.stdin, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.close_fds()
            raise

    # -- control (any thread) ----------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.status in (TaskStatus.CREATED, TaskStatus.RUNNING, TaskStatus.PAUSED)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def decide(self, code: int) -> None:
        """The process will exit with *code* (once thawed, if paused)."""
        with self._cond:
            if self._code is None:
                self._code = code
            self._cond.notify_all()
        self._wake()

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        program = self.program or Program()
        if sig == 0:
            return
        if sig != signals.SIGKILL and sig in program.ignore:
            return
        if sig != signals.SIGKILL and sig in program.on_signal:
            self.decide(program.on_signal[sig])
        else:
            self.decide(128 + sig)
        if self.status == TaskStatus.CREATED:
            self.launch()  # dies at once, its exit reported like any other

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            if self.status not in (TaskStatus.RUNNING, TaskStatus.PAUSED):
                return
            self.paused = paused
            self.status = TaskStatus.PAUSED if paused else TaskStatus.RUNNING
            self._cond.notify_all()
        self._wake()

    def close_stdin(self) -> None:
        """containerd's CloseIO: the shim closes its reading end of the stdin FIFO (once
        a reading process has taken what was written), and the process sees the end."""
        with self._cond:
            self._stdin_closed = True
            if not self._echoing:
                self.in_fd = _close(self.in_fd)
            self._cond.notify_all()
        self._wake()

    def write(self, stream: str, data: bytes) -> None:
        fd = self.out_fd if stream == "stdout" else self.err_fd
        self._write(fd, data)

    def launch(self) -> None:
        if self.thread is not None:
            return
        with self._cond:
            if self.status == TaskStatus.CREATED:
                self.status = TaskStatus.RUNNING
        name = f"fake-{self.container_id[:12]}-{self.exec_id[:12] or 'init'}"
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.rt._threads.append(self.thread)
        self.thread.start()

    def close_fds(self) -> None:
        with self._io_lock:
            self.out_fd = _close(self.out_fd)
            self.err_fd = _close(self.err_fd)
        self.in_fd = _close(self.in_fd)
        self._wake_r = _close(self._wake_r)
        self._wake_w = _close(self._wake_w)

    # -- the process (its own thread) ----------------------------------------------
    def _write(self, fd: int, data: bytes) -> None:
        with self._io_lock:
            if fd < 0 or fd not in (self.out_fd, self.err_fd):
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except OSError:  # nobody reads any more (EPIPE): the output is lost
                    return
                view = view[n:]

    def _gate(self) -> bool:
        """Wait while frozen; True when the process must exit now."""
        with self._cond:
            while self.paused:
                self._cond.wait()
            return self._code is not None

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass

    def _echo(self) -> None:
        poller = select.poll()
        poller.register(self.in_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if self._gate():
                return
            with self._cond:
                closing = self._stdin_closed
            poller.poll(0 if closing else None)
            self._drain_wake()
            if self._gate():
                return
            try:
                data = os.read(self.in_fd, 65536)
            except BlockingIOError:
                data = b""
            if data:
                self.stdin_read += data
                self._write(self.out_fd, data)
            elif closing:
                return  # end of input: everything written before CloseIO was read

    def _run(self, program: Program) -> None:
        deadline = None if program.run_ms is None else time.monotonic() + program.run_ms / 1000
        with self._cond:
            while True:
                if not self.paused and self._code is not None:
                    return
                if not self.paused and deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                else:
                    self._cond.wait()

    def _main(self) -> None:
        program = self.program or Program()
        try:
            for chunk in program.stdout:
                if self._gate():
                    break
                self._write(self.out_fd, chunk)
            for chunk in program.stderr:
                if self._gate():
                    break
                self._write(self.err_fd, chunk)
            if program.echo_stdin and not self._gate():
                with self._cond:
                    self._echoing = self.in_fd >= 0
                if self._echoing:
                    try:
                        self._echo()
                    finally:
                        with self._cond:
                            self._echoing = False
                            if self._stdin_closed:
                                self.in_fd = _close(self.in_fd)
            self._run(program)
        finally:
            self._finish(program)

    def _finish(self, program: Program) -> None:
        with self._cond:
            code = self._code if self._code is not None else program.exit_code
            self._code = code
        if not self.exec_id and self.rt.exec_exits_first:
            self._kill_execs()
        # The shim closes its ends of stdout/stderr once the process's pipes are done.
        with self._io_lock:
            self.out_fd = _close(self.out_fd)
            self.err_fd = _close(self.err_fd)
        with self._cond:
            self.exit_code = code
            self.paused = False
            self.status = TaskStatus.STOPPED
        self.exited.set()
        if not (program.drop_exit or self.silent or self.rt.drop_exits):
            self.rt._publish(
                ExitEvent(self.container_id, self.exec_id, self.pid, code, time.time_ns())
            )
        if not self.exec_id and not self.rt.exec_exits_first:
            self._kill_execs()

    def _kill_execs(self) -> None:
        """The init's death takes every other process of the container with it."""
        for ex in self.rt._execs_of(self.container_id):
            if ex.alive:
                ex.decide(128 + signals.SIGKILL)
                ex.set_paused(False)
                ex.launch()
                ex.exited.wait(JOIN_TIMEOUT)


@dataclass(eq=False)
class FakeTask:
    container_id: str
    spec: dict[str, Any]
    init: FakeProcess
    execs: dict[str, FakeProcess] = field(default_factory=dict)


class FakeRuntime:
    """The Runtime protocol over scripted processes (see the module docstring)."""

    def __init__(self, programs: Mapping[str, Program] | None = None) -> None:
        #: what each ``args[0]`` does, like the binaries in a container's $PATH
        self.programs: dict[str, Program] = dict(programs or {})
        #: drop every exit event (as if the event stream were down)
        self.drop_exits = False
        #: when the init dies, report the exits of its exec processes before its own (as
        #: containerd 1.7's shim does); False: the init's first, theirs after (older shims)
        self.exec_exits_first = True
        #: last spec given to create, by container ID
        self.specs: dict[str, dict[str, Any]] = {}
        #: process spec given to exec, by (container ID, exec ID)
        self.exec_specs: dict[tuple[str, str], dict[str, Any]] = {}
        #: (container ID, signal, exec ID, all) of every kill call, in order
        self.signals: list[tuple[str, int, str, bool]] = []
        #: calls of create and start, by container ID
        self.creates: dict[str, int] = {}
        self.starts: dict[str, int] = {}
        #: (container ID, exec ID) of every close_stdin call
        self.stdin_closed: list[tuple[str, str]] = []
        self.resized: list[tuple[str, str, int, int]] = []
        self.updated: list[tuple[str, dict[str, Any]]] = []
        #: what ``stats`` returns for a live task (containerd's cgroup v1 Metrics as
        #: MessageToDict makes them), by container ID; {} for one not listed
        self.metrics: dict[str, dict[str, Any]] = {}
        #: containers whose shim does not answer: ``state`` says UNKNOWN (as containerd's
        #: Get does after two seconds) and ``kill`` and ``delete`` time out
        self.unanswered: set[str] = set()
        self.closed = False
        self._tasks: dict[str, FakeTask] = {}
        self._handlers: list[EventHandler] = []
        self._resync_handlers: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._pids = itertools.count(4000)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)

    # -- helpers ---------------------------------------------------------------------
    def _task(self, container_id: str) -> FakeTask:
        with self._lock:
            task = self._tasks.get(container_id)
        if task is None:
            raise TaskNotFound(f"no running task found: task {container_id} not found")
        return task

    def _process(self, container_id: str, exec_id: str) -> FakeProcess:
        task = self._task(container_id)
        if not exec_id:
            return task.init
        with self._lock:
            proc = task.execs.get(exec_id)
        if proc is None:
            raise TaskNotFound(f"process {exec_id} not found")
        return proc

    def _execs_of(self, container_id: str) -> list[FakeProcess]:
        with self._lock:
            task = self._tasks.get(container_id)
            return list(task.execs.values()) if task is not None else []

    def _publish(self, event: Event) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler(event)

    # -- test controls -----------------------------------------------------------------
    def process(self, container_id: str, exec_id: str = "") -> FakeProcess:
        return self._process(container_id, exec_id)

    def has_task(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._tasks

    def exit(self, container_id: str, code: int, exec_id: str = "") -> None:
        """The program exits by itself with *code* (once thawed, if paused)."""
        self._process(container_id, exec_id).decide(code)

    def write(self, container_id: str, stream: str, data: bytes, exec_id: str = "") -> None:
        """The running program writes *data* to *stream* ("stdout" or "stderr")."""
        self._process(container_id, exec_id).write(stream, data)

    def wait_exited(self, container_id: str, exec_id: str = "") -> None:
        if not self._process(container_id, exec_id).exited.wait(JOIN_TIMEOUT):
            raise AssertionError(f"fake process {container_id[:12]}/{exec_id} did not exit")

    def wait_starts(self, container_id: str, count: int) -> None:
        """Wait until ``start`` of *container_id* has succeeded *count* times."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self.starts.get(container_id, 0) >= count, JOIN_TIMEOUT
            ):
                raise AssertionError(f"{container_id[:12]} was not started {count} times")

    def forget(self, container_id: str) -> None:
        """containerd lost the task (a reboot, say): kill it silently and drop it."""
        with self._lock:
            task = self._tasks.pop(container_id, None)
        if task is not None:
            self._end_task(task, publish=False)

    def resync(self) -> None:
        """The event stream was re-established: tell the resync handlers."""
        for handler in list(self._resync_handlers):
            handler()

    def shutdown(self) -> None:
        """End every process silently, join every thread, close every descriptor."""
        self._handlers.clear()
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
        for task in tasks:
            self._end_task(task, publish=False)
        for thread in list(self._threads):
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                raise AssertionError(f"fake runtime thread {thread.name} did not end")
        self._threads.clear()

    def _end_task(self, task: FakeTask, *, publish: bool) -> None:
        procs = [*task.execs.values(), task.init]
        if not publish:
            for proc in procs:
                proc.silent = True
        for proc in procs:
            if proc.alive:
                proc.decide(128 + signals.SIGKILL)
                proc.set_paused(False)
                proc.launch()
        for proc in procs:
            if proc.thread is not None:
                proc.thread.join(JOIN_TIMEOUT)
            proc.close_fds()

    # -- the Runtime protocol ------------------------------------------------------------
    def create(self, container_id: str, spec: dict[str, Any], stdio: Stdio) -> int:
        args = (spec.get("process") or {}).get("args") or [""]
        program = self.programs.get(args[0])
        with self._lock:
            self.creates[container_id] = self.creates.get(container_id, 0) + 1
            old = self._tasks.get(container_id)
            if old is not None and old.init.alive:
                raise errdefs.Conflict(f"task {container_id}: already exists")
        if old is not None:
            self.delete(container_id)  # a stale record: start afresh
        if program is None:
            raise errdefs.System(not_found_message(args[0]))
        proc = FakeProcess(self, container_id, "", next(self._pids), program, stdio)
        with self._lock:
            self._tasks[container_id] = FakeTask(container_id, copy.deepcopy(spec), proc)
            self.specs[container_id] = copy.deepcopy(spec)
        return proc.pid

    def start(self, container_id: str) -> int:
        task = self._task(container_id)
        proc = task.init
        if proc.status != TaskStatus.CREATED:
            raise errdefs.Conflict(f"task {container_id}: cannot start a {proc.status.value} task")
        assert proc.program is not None
        if proc.program.start_error:
            raise errdefs.System(proc.program.start_error)
        proc.launch()
        with self._cond:
            self.starts[container_id] = self.starts.get(container_id, 0) + 1
            self._cond.notify_all()
        return proc.pid

    def kill(
        self, container_id: str, signal: int, exec_id: str = "", all_procs: bool = False
    ) -> None:
        with self._lock:
            self.signals.append((container_id, signal, exec_id, all_procs))
        self._answer(container_id, "killing task")
        proc = self._process(container_id, exec_id)
        if not proc.alive:
            raise TaskNotFound(f"process already finished: {container_id}")
        targets = [proc]
        if all_procs and not exec_id:
            targets = [*self._execs_of(container_id), proc]
        for target in targets:
            if target.alive:
                target.signal(signal)

    def delete(self, container_id: str) -> int | None:
        with self._lock:
            task = self._tasks.get(container_id)
        if task is None:
            return None
        self._answer(container_id, "deleting task")
        init = task.init
        if init.status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            # containerd refuses to delete a live task; the real client then kills it.
            init.signal(signals.SIGKILL)
            init.set_paused(False)
            if not init.exited.wait(JOIN_TIMEOUT):
                raise errdefs.System(f"task {container_id} did not die")
        for ex in list(task.execs.values()):
            if ex.alive:  # the init is dead: they are dying too
                ex.decide(128 + signals.SIGKILL)
                ex.set_paused(False)
                ex.launch()
                ex.exited.wait(JOIN_TIMEOUT)
        with self._lock:
            if self._tasks.get(container_id) is task:
                del self._tasks[container_id]
        for proc in [*task.execs.values(), init]:
            proc.close_fds()
        return init.exit_code

    def exec(self, container_id: str, exec_id: str, process: dict[str, Any], stdio: Stdio) -> None:
        task = self._task(container_id)
        if task.init.status != TaskStatus.RUNNING:
            raise errdefs.Conflict(f"container {container_id} is {task.init.status.value}")
        args = process.get("args") or [""]
        with self._lock:
            if exec_id in task.execs:
                raise errdefs.Conflict(f"id {exec_id}: already exists")
        proc = FakeProcess(
            self, container_id, exec_id, next(self._pids), self.programs.get(args[0]), stdio
        )
        with self._lock:
            task.execs[exec_id] = proc
            self.exec_specs[(container_id, exec_id)] = copy.deepcopy(process)

    def start_exec(self, container_id: str, exec_id: str) -> int:
        proc = self._process(container_id, exec_id)
        if proc.status != TaskStatus.CREATED:
            raise errdefs.Conflict(f"process {exec_id}: cannot start a {proc.status.value} process")
        if proc.program is None:
            args = self.exec_specs[(container_id, exec_id)].get("args") or [""]
            raise errdefs.System(exec_not_found_message(args[0]))
        if proc.program.start_error:
            raise errdefs.System(proc.program.start_error)
        proc.launch()
        return proc.pid

    def delete_exec(self, container_id: str, exec_id: str) -> None:
        try:
            proc = self._process(container_id, exec_id)
        except TaskNotFound:
            return
        if proc.status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            raise errdefs.Conflict(f"process {exec_id} must be stopped before deletion")
        task = self._task(container_id)
        with self._lock:
            task.execs.pop(exec_id, None)
        proc.close_fds()

    def resize(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        self._process(container_id, exec_id)
        self.resized.append((container_id, exec_id, width, height))

    def close_stdin(self, container_id: str, exec_id: str = "") -> None:
        self.stdin_closed.append((container_id, exec_id))
        try:
            proc = self._process(container_id, exec_id)
        except TaskNotFound:
            return
        proc.close_stdin()

    def pause(self, container_id: str) -> None:
        proc = self._task(container_id).init
        if proc.status != TaskStatus.RUNNING:
            raise errdefs.Conflict(f"task {container_id} is {proc.status.value}, not running")
        proc.set_paused(True)
        for ex in self._execs_of(container_id):
            if ex.status == TaskStatus.RUNNING:
                ex.set_paused(True)

    def resume(self, container_id: str) -> None:
        proc = self._task(container_id).init
        if proc.status != TaskStatus.PAUSED:
            raise errdefs.Conflict(f"task {container_id} is {proc.status.value}, not paused")
        for ex in self._execs_of(container_id):
            if ex.status == TaskStatus.PAUSED:
                ex.set_paused(False)
        proc.set_paused(False)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._task(container_id)
        self.updated.append((container_id, copy.deepcopy(resources)))

    def pids(self, container_id: str) -> list[int]:
        task = self._task(container_id)
        procs = [task.init, *self._execs_of(container_id)]
        return [p.pid for p in procs if p.alive]

    def stats(self, container_id: str) -> dict[str, Any]:
        self._task(container_id)
        return copy.deepcopy(self.metrics.get(container_id, {}))

    def _answer(self, container_id: str, what: str) -> None:
        if container_id in self.unanswered:
            raise errdefs.System(f"{what}: Deadline Exceeded")

    def state(self, container_id: str) -> TaskState | None:
        with self._lock:
            task = self._tasks.get(container_id)
        if task is None:
            return None
        if container_id in self.unanswered:
            return TaskState(0, TaskStatus.UNKNOWN)
        init = task.init
        return TaskState(init.pid, init.status, init.exit_code)

    def container_ids(self) -> list[str]:
        with self._lock:
            return list(self._tasks)

    def remove_leftovers(self, keep: Collection[str], known: Collection[str] = ()) -> list[str]:
        removed = [cid for cid in self.container_ids() if cid not in keep]
        for cid in removed:
            task = self._task(cid)
            if task.init.status == TaskStatus.PAUSED:
                self.resume(cid)
            self.delete(cid)
        return removed

    def subscribe(self, handler: EventHandler) -> None:
        with self._lock:
            self._handlers.append(handler)
            self.closed = False

    def on_resync(self, handler: Callable[[], None]) -> None:
        with self._lock:
            self._resync_handlers.append(handler)

    def close(self) -> None:
        """berthd lets go of the runtime: events stop, the tasks live on."""
        with self._lock:
            self._handlers.clear()
            self._resync_handlers.clear()
            self.closed = True
