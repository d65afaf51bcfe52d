"""``docker exec``: extra processes in a running container (moby's daemon/exec.go)."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from berth import errdefs
from berth.container.stream import DEFAULT_DETACH_KEYS, ProcessIO, Streams, parse_detach_keys
from berth.runtime.base import ExitEvent
from berth.runtime.spec import privileged_capabilities, resolve_user
from berth.types.container import ExecOptions
from berth.utils.stringid import generate_id
from berth.utils.timefmt import now_ns

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: How long the exit of an exec whose container exited may take to be reported
#: before it is recorded anyway (the process died with the container).
EXEC_EXIT_GRACE = 2.0


@dataclass(eq=False)
class Exec:
    """One exec instance; what the API sees of it is :class:`berth.backend.ExecInstance`."""

    id: str
    container: Container
    options: ExecOptions
    #: what detaches a client of a terminal from the exec (DetachKeys, parsed)
    detach_keys: bytes = DEFAULT_DETACH_KEYS
    streams: Streams = field(default_factory=Streams)
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    io: ProcessIO | None = None
    done: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    _exited: asyncio.Event | None = None
    _exit_handled: bool = False
    _store: ExecStore | None = None

    def detached(self) -> None:
        """A client left with the detach keys: the process runs on; say so in events."""
        if self._store is not None:
            self._store.d.emit_container(self.container, "exec_detach", {"execID": self.id})

    async def wait_exit(self) -> None:
        """Return once the exit is recorded (so /exec/{id}/json has the code)."""
        if self.done.is_set():
            return
        if self._exited is None:
            self._exited = asyncio.Event()
        if self.done.is_set():
            return
        await self._exited.wait()

    def _mark_done(self) -> None:
        self.done.set()
        loop, ev = self.loop, self._exited
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    def inspect(self) -> dict[str, Any]:
        cmd = self.options.cmd or []
        return {
            "CanRemove": False,
            "ContainerID": self.container.id,
            # Go's []byte, as dockerd shows it: base64 of the parsed keys, "" if none given
            "DetachKeys": (
                base64.b64encode(self.detach_keys).decode() if self.options.detach_keys else ""
            ),
            "ExitCode": self.exit_code,
            "ID": self.id,
            "OpenStderr": self.options.attach_stderr,
            "OpenStdin": self.options.attach_stdin,
            "OpenStdout": self.options.attach_stdout,
            "ProcessConfig": {
                "arguments": cmd[1:],
                "entrypoint": cmd[0] if cmd else "",
                "privileged": self.options.privileged,
                "tty": self.options.tty,
                "user": self.options.user,
            },
            "Running": self.running,
            "Pid": self.pid,
        }


class ExecStore:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self._execs: dict[str, Exec] = {}
        #: started execs of exited containers whose own exit is still to be handled
        self._dying: dict[str, Exec] = {}
        self._lock = threading.Lock()

    def _check_running(self, container: Container, ref: str = "") -> None:
        """moby's checks, and words: a paused container is named as the client named it."""
        st = container.state
        if not st.running:
            raise errdefs.Conflict(f"container {container.id} is not running")
        if st.paused:
            raise errdefs.Conflict(
                f"Container {ref or container.id} is paused, unpause the container before exec"
            )
        if st.restarting:
            raise errdefs.Conflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )

    def create(self, ref: str, opts: ExecOptions) -> str:
        container = self.d.get_container(ref)
        self._check_running(container, ref)
        if not opts.cmd:
            raise errdefs.InvalidParameter("No exec command specified")
        for env in opts.env or []:
            if env.partition("=")[0] == "":
                raise errdefs.InvalidParameter(f"invalid environment variable: {env}")
        # Refused here, as by dockerd, not when a client starts it.
        keys = parse_detach_keys(opts.detach_keys)
        ex = Exec(generate_id(), container, opts, detach_keys=keys, _store=self)
        with self._lock:
            self._execs[ex.id] = ex
        self.d.emit_container(container, f"exec_create: {' '.join(opts.cmd)}", {"execID": ex.id})
        return ex.id

    def get(self, exec_id: str) -> Exec:
        with self._lock:
            ex = self._execs.get(exec_id)
        if ex is None:
            raise errdefs.NotFound(f"No such exec instance: {exec_id}")
        return ex

    def discard(self, exec_id: str) -> None:
        """Forget a finished exec that no client will ask about (a health probe's)."""
        with self._lock:
            ex = self._execs.get(exec_id)
            if ex is not None and not ex.running:
                del self._execs[exec_id]

    def ids(self, container_id: str) -> list[str] | None:
        with self._lock:
            ids = [e.id for e in self._execs.values() if e.container.id == container_id]
        return ids or None

    def forget_container(self, container_id: str) -> None:
        """The container exited: drop its execs; those still running died with it, and
        are finished when their exit event comes (or, lost, after a grace period)."""
        with self._lock:
            gone = [e for e in self._execs.values() if e.container.id == container_id]
            dying = [e for e in gone if e.running and not e._exit_handled]
            for ex in gone:
                del self._execs[ex.id]
            for ex in dying:
                self._dying[ex.id] = ex
        for ex in dying:
            self.d.submit(self._reap, ex)

    def _reap(self, ex: Exec) -> None:
        if ex.done.wait(EXEC_EXIT_GRACE):
            return
        log.warning("exec %s: no exit reported after its container exited", ex.id[:12])
        self.handle_exit(ExitEvent(ex.container.id, ex.id, ex.pid, 137, now_ns()))

    def process_spec(self, ex: Exec) -> dict[str, Any]:
        container = ex.container
        base = container.spec_process
        if base is None:
            raise errdefs.Conflict(f"container {container.id} has no process spec; restart it")
        proc = copy.deepcopy(base)
        opts = ex.options
        proc["args"] = list(opts.cmd or [])
        proc["terminal"] = opts.tty
        env = list(proc.get("env") or [])
        for entry in opts.env or []:
            key = entry.partition("=")[0]
            env = [e for e in env if e.partition("=")[0] != key]
            env.append(entry)
        proc["env"] = env
        if opts.working_dir:
            proc["cwd"] = opts.working_dir
        if opts.user:
            if container.rootfs is None:
                raise errdefs.Conflict(f"container {container.id} is not running")
            u = resolve_user(container.rootfs, opts.user, container.host_config.group_add)
            proc["user"] = {"uid": u.uid, "gid": u.gid, "additionalGids": list(u.additional_gids)}
        if opts.privileged:
            caps = privileged_capabilities()
            proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
        if opts.console_size and len(opts.console_size) == 2 and opts.tty:
            proc["consoleSize"] = {"height": opts.console_size[0], "width": opts.console_size[1]}
        return proc

    def start(self, exec_id: str, loop: asyncio.AbstractEventLoop) -> Exec:
        """Start the process (worker thread); the caller subscribed to its streams first."""
        ex = self.get(exec_id)
        container = ex.container
        with container.lock:
            if ex.started:
                raise errdefs.Conflict(f"Error: Exec command {ex.id} is already running")
            self._check_running(container)
            ex.started = True
            ex.loop = loop
            proc = self.process_spec(ex)
            io = ProcessIO(
                self.d.fifo_dir(container.id),
                ex.id,
                stdin=ex.options.attach_stdin,
                tty=ex.options.tty,
                hub=ex.streams,
                close_io=lambda: self.d.runtime.close_stdin(container.id, ex.id),
            )
            io.open()
            try:
                self.d.runtime.exec(container.id, ex.id, proc, io.stdio)
                io.start(loop)
                ex.io = io
                ex.running = True
                ex.pid = self.d.runtime.start_exec(container.id, ex.id)
                io.connected()
            except errdefs.BerthError as e:
                io.close()
                ex.running = False
                ex.exit_code = 126
                ex._mark_done()
                try:
                    self.d.runtime.delete_exec(container.id, ex.id)
                except errdefs.BerthError:
                    pass
                text = str(e)
                if not text.startswith("OCI runtime exec failed"):  # containerd's shim says so
                    text = f"OCI runtime exec failed: {text}"
                if "executable file not found" in text or "no such file or directory" in text:
                    ex.exit_code = 127
                    raise errdefs.InvalidParameter(text) from None
                raise errdefs.System(text) from None
        self.d.emit_container(
            container, f"exec_start: {' '.join(ex.options.cmd or [])}", {"execID": ex.id}
        )
        return ex

    def handle_exit(self, event: ExitEvent) -> None:
        with self._lock:
            ex = self._execs.get(event.exec_id) or self._dying.get(event.exec_id)
            if ex is None or ex._exit_handled:
                return
            ex._exit_handled = True
            self._dying.pop(ex.id, None)
        io = ex.io
        if io is not None:
            io.done.wait(2.0)
            io.close()
        ex.io = None
        ex.running = False
        ex.exit_code = event.exit_code
        ex._mark_done()
        self.d.emit_container(
            ex.container, "exec_die", {"execID": ex.id, "exitCode": str(event.exit_code)}
        )
        # The shim's record of the process goes after the client has its exit code:
        # it is not on the path of ``docker exec``.
        try:
            self.d.runtime.delete_exec(ex.container.id, ex.id)
        except errdefs.BerthError as e:
            log.debug("deleting exec %s: %s", ex.id[:12], e)

    def resize(self, exec_id: str, height: int, width: int) -> None:
        ex = self.get(exec_id)
        if not ex.running:
            raise errdefs.Conflict(f"exec {exec_id} is not running")
        self.d.runtime.resize(ex.container.id, ex.id, width, height)
