"""berthd's own containerd: started, watched and restarted like dockerd's.

The containerd gets a generated minimal config with its own root (under the
data root), state and socket (under the exec root) and no CRI plugin, so it
can run beside any other containerd on the host.  If a containerd from a
previous berthd is still alive (its pid file names a live process whose
socket answers), it is adopted instead: that is what lets containers outlive
a berthd restart.

berthd launches it first thing (:meth:`Supervisor.launch`, nothing to ask it yet) and waits
for it only once the daemon is loaded (:meth:`Supervisor.start`): containerd's own
start-up, about 60 ms, runs while berthd imports its modules and reads its containers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from berth import errdefs
from berth.utils.atomic import write_file

log = logging.getLogger(__name__)

_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
oom_score = -999
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "{level}"

[metrics]
  address = ""

[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
"""


#: unix socket paths longer than this do not fit sockaddr_un (containerd checks 104)
_MAX_SOCKET_PATH = 100


def _socket_dir(preferred: Path) -> Path:
    """Where containerd's sockets go: under the exec root when the path fits,
    else a short directory named after it (deep exec roots are common in tests)."""
    if len(str(preferred / "containerd.sock.ttrpc")) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:16]
    short = Path("/run") / f"berth-{digest}"
    short.mkdir(mode=0o700, parents=True, exist_ok=True)
    return short


class Supervisor:
    """Keeps one containerd process alive for the daemon's whole life."""

    def __init__(self, data_root: Path, exec_root: Path, debug: bool = False) -> None:
        self.root = data_root / "containerd" / "daemon"
        self.state = exec_root / "containerd" / "state"
        self.dir = exec_root / "containerd"
        self.socket = str(_socket_dir(self.dir) / "containerd.sock")
        self.pidfile = self.dir / "containerd.pid"
        self.config = self.dir / "containerd.toml"
        self.debug = debug
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._on_restart: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._launched = False
        self._found = 0  # a live containerd of ours found by launch(), to adopt if it answers
        #: start() has succeeded: the daemon owns this containerd from then on
        self.started = False

    @property
    def binary(self) -> str:
        path = shutil.which("containerd")
        if path is None:
            raise errdefs.System(
                "containerd is not installed: run `make install` (Debian package containerd)"
            )
        return path

    def launch(self) -> None:
        """Start containerd unless a live one of ours is there; do not wait for it."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self._found = self._live_pid()
        if not self._found:
            self._spawn()
        self._launched = True

    def start(self, timeout: float = 20.0) -> None:
        """Adopt the live containerd of ours or the one launched (launching it now if
        need be); wait until it answers."""
        if not self._launched:
            self.launch()
        pid = self._found
        if pid and self._answers(timeout=2.0):
            log.info("adopting running containerd (pid %d)", pid)
            self._pid = pid
        else:
            if pid:
                self._terminate(pid)
                self._spawn()
            self._wait_ready(timeout)
        self._watcher = threading.Thread(target=self._watch, name="containerd-watch", daemon=True)
        self._watcher.start()
        self.started = True

    def on_restart(self, callback: Callable[[], None]) -> None:
        """Call *callback()* (from the watcher thread) after containerd was restarted."""
        self._on_restart.append(callback)

    def _live_pid(self) -> int:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return 0
        if (
            not cmdline
            or not cmdline[0].endswith(b"containerd")
            or str(self.config).encode() not in cmdline
        ):
            return 0
        return pid

    def _spawn(self) -> None:
        level = "debug" if self.debug else "warn"
        write_file(
            self.config,
            _CONFIG.format(
                root=self.root, state=self.state, socket=self.socket, level=level
            ).encode(),
            0o600,
        )
        for leftover in (self.socket, self.socket + ".ttrpc"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        logfile = open(self.dir / "containerd.log", "ab")  # noqa: SIM115 - inherited by the child
        try:
            # A session of its own: a signal to berthd's group must not reach it, so
            # containers (and their shims) survive a berthd crash.
            self._proc = subprocess.Popen(
                [self.binary, "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            logfile.close()
        self._pid = self._proc.pid
        write_file(self.pidfile, f"{self._pid}\n".encode(), 0o644)
        log.info("started containerd (pid %d)", self._pid)

    def _answers(self, timeout: float) -> bool:
        from google.protobuf import empty_pb2  # here: launch() runs before these load

        from berth.runtime._api.api.services.version.v1 import version_pb2
        from berth.runtime._grpc import Channel, RpcError, Stub

        channel = Channel(self.socket)
        try:
            stub = Stub(channel, version_pb2.DESCRIPTOR.services_by_name["Version"])
            stub.Version(empty_pb2.Empty(), timeout=timeout)
            return True
        except RpcError:
            return False
        finally:
            channel.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log_file = self.dir / "containerd.log"
                raise errdefs.System(
                    f"containerd exited with {self._proc.returncode}; see {log_file}"
                )
            if os.path.exists(self.socket) and self._answers(timeout=1.0):
                return
            time.sleep(0.01)
        raise errdefs.System(f"containerd did not answer within {timeout}s; see {self.dir}")

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            if self._alive():
                continue
            log.error("containerd (pid %d) died; restarting it", self._pid)
            try:
                with self._lock:
                    self._spawn()
                    self._wait_ready(20.0)
            except errdefs.BerthError as e:
                log.error("restarting containerd failed: %s", e)
                continue
            for callback in list(self._on_restart):
                try:
                    callback()
                except Exception:
                    log.exception("containerd restart callback failed")

    def _terminate(self, pid: int, timeout: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop watching and stop containerd (running containers keep their shims)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
        if self._pid:
            self._terminate(self._pid)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        sockets = Path(self.socket).parent
        if sockets != self.dir and not self._alive():
            for leftover in (self.socket, self.socket + ".ttrpc"):  # containerd leaves these
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            with contextlib.suppress(OSError):
                sockets.rmdir()
