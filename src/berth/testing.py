"""Helpers for tests and benchmarks: a real berthd on temp paths, a busybox image.

Kept in the package (as ``trio.testing`` is) so the test suite and ``bench/``
share one way to start a daemon and one way to build the test image.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from berth.runtime import _strays
from berth.utils.mountinfo import mounts_under

DOCKER = os.environ.get("BERTH_TEST_DOCKER", "/usr/local/bin/docker")
BUSYBOX = "/bin/busybox"

_T = TypeVar("_T")


def busybox_applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    return [a for a in out.stdout.split() if a and a != "busybox"]


def busybox_rootfs_tar(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Write a rootfs tarball: Debian's static busybox with its applet links.

    *extra* maps paths inside the image to file contents.
    """
    with tarfile.open(path, "w") as tf:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.mtime = int(time.time())
            tf.addfile(info)

        for d in ("bin", "etc", "tmp", "root", "home", "var", "usr", "usr/bin"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        tf.add(BUSYBOX, "bin/busybox")
        for applet in busybox_applets():
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            tf.addfile(info)
        files = {
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/:/bin/false\n"
            b"app:x:1000:1000:app:/home/app:/bin/sh\n",
            "etc/group": b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\n",
        }
        files.update(extra or {})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tf.addfile(info, io.BytesIO(data))
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket, for raw wire checks."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("berth", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _ping(sock: str, timeout: float = 0.5) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
        data = s.recv(64)
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Berthd:
    """A berthd process with its own data root, exec root and socket."""

    root: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> str:
        return str(self.root / "berth.sock")

    @property
    def host(self) -> str:
        return "unix://" + self.sock

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def cgroup_parent(self) -> str:
        """Where this daemon's containers' cgroups are (``--cgroup-parent``, or berthd's
        default), so that cleanup finds them after a failure too."""
        args = self.extra_args
        for i, arg in enumerate(args[:-1]):
            if arg == "--cgroup-parent":
                return args[i + 1]
        return "/berth"

    @property
    def log_path(self) -> Path:
        return self.root / "berthd.log"

    @property
    def net_tag(self) -> str:
        """Names this daemon's host-wide network objects apart from every other's."""
        return hashlib.sha1(str(self.root).encode()).hexdigest()[:6]

    @property
    def bridge(self) -> str:
        """The default bridge's device (``--bridge``)."""
        return self._flag("--bridge") or f"bt{self.net_tag}"

    @property
    def firewall_table(self) -> str:
        return self._flag("--firewall-table") or f"berth_t{self.net_tag}"

    def _flag(self, name: str) -> str:
        args = self.extra_args
        for i, arg in enumerate(args[:-1]):
            if arg == name:
                return args[i + 1]
        return ""

    def _network_args(self) -> list[str]:
        """Own bridge and firewall tables, and a DNS server on loopback where nothing
        answers: a test never sends a query to the host's resolvers."""
        out = []
        if not self._flag("--bridge"):
            out += ["--bridge", self.bridge]
        if not self._flag("--firewall-table"):
            out += ["--firewall-table", self.firewall_table]
        if not self._flag("--dns"):
            out += ["--dns", "127.0.0.1"]
        return out

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "berth.cli",
            "-H",
            self.host,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.root / "berthd.pid"),
            "--config-file",
            str(self.root / "daemon.json"),
            *self._network_args(),
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "daemon.json"
        if not cfg.exists():
            cfg.write_text("{}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berthd exited with {self.proc.returncode}:\n{self.log()}")
            if _ping(self.sock):
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"berthd did not answer /_ping in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to clean up."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = str(self.root / "docker-config")
        return env

    def docker(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        config: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real docker CLI against this daemon; *config*: a CLI config directory
        of its own (stored registry credentials).  Without *input* stdin is /dev/null, so
        the CLI never waits for a login prompt."""
        env = self.env()
        if config is not None:
            env["DOCKER_CONFIG"] = str(config)
        proc = subprocess.run(
            [DOCKER, *args],
            env=env,
            input=input.decode() if input is not None else None,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}\nberthd log tail:\n"
                + "\n".join(self.log().splitlines()[-30:])
            )
        return proc

    def http(self) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.sock)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection: (status, headers, body)."""
        conn = self.http()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def client(self) -> Any:
        # docker-py is a dev extra: only the tests that use a client need it installed
        import docker  # type: ignore[import-untyped]

        return docker.DockerClient(base_url=self.host, timeout=60)

    def mounts(self) -> list[str]:
        """Mount points under this daemon's roots (there should be none after stop)."""
        return mounts_under(str(self.root))

    def cleanup(self, remove_files: bool = True) -> None:
        """Leave nothing behind, even after a test that failed half-way: berthd, its
        containerd, shims, container processes, cgroups, mounts and (unless the root
        was the caller's) files."""
        with contextlib.suppress(Exception):
            self.kill()
        containers = set()
        with contextlib.suppress(OSError):
            containers = set(os.listdir(self.data_root / "containers"))
        self._kill_matching(str(self.root))  # containerd and the shims name our paths
        for cid in containers:
            for cg in Path("/sys/fs/cgroup").glob(f"*{self.cgroup_parent}/{cid}"):
                with contextlib.suppress(OSError):
                    for pid in (cg / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):
                    try:
                        cg.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)
        for mp in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], check=False)
        self.remove_network_objects()
        if remove_files:
            shutil.rmtree(self.root, ignore_errors=True)

    def bridges(self) -> list[str]:
        """The bridge devices of this daemon's networks, as it recorded them."""
        out = []
        for path in (self.data_root / "network" / "networks").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                bridge = json.loads(path.read_text()).get("bridge", "")
                if bridge:
                    out.append(bridge)
        return out

    def remove_network_objects(self) -> None:
        """What berthd leaves on the host on purpose (as dockerd leaves docker0 and its
        rules): its bridges and its firewall tables."""
        for bridge in {*self.bridges(), self.bridge}:
            subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)
        with contextlib.suppress(Exception):
            from berth.network.firewall import Firewall

            fw = Firewall(self.firewall_table)
            fw.teardown()
            fw.close()

    @staticmethod
    def _kill_matching(needle: str) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in cmdline and int(entry) != os.getpid():
                shim_socket = _strays.shim_socket_of(cmdline.split(b"\0"))
                # A shim killed leaves its socket, and a group's is not on its command line.
                sockets = []
                if shim_socket is not None:
                    sockets = [shim_socket, *_strays.listening_sockets(int(entry))]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)
                for path in sockets:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)


def read_pty_until(fd: int, marker: bytes, timeout: float = 15) -> bytes:
    """Read a terminal's output (the parent side of ``pty.fork``) until *marker* shows up
    or the terminal closes; what was read, for the caller's assertions."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} not seen; got {out!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def inspect_container(d: Berthd, ref: str) -> Any:
    """``docker inspect`` of one container, decoded."""
    return json.loads(d.docker("inspect", "--type", "container", ref).stdout)[0]


def unique_name(prefix: str = "t") -> str:
    """A container, image, volume or label name no other test uses, so that tests sharing
    one daemon (in any order, after a failure) never see or remove each other's objects."""
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_for(predicate: Callable[[], _T], timeout: float = 20.0, what: str = "condition") -> _T:
    """Poll *predicate* until it holds and return its value; a bounded wait on observable
    state instead of a sleep. The time it took is never asserted."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_log(d: Berthd, ref: str, marker: str, timeout: float = 20.0) -> str:
    """Wait until *marker* is in the container's logs (e.g. printed once a trap is set)."""

    def logs() -> str:
        proc = d.docker("logs", ref, check=False)
        out = proc.stdout + proc.stderr
        return out if marker in out else ""

    return wait_for(logs, timeout, f"{marker!r} in the logs of {ref}")


@contextlib.contextmanager
def running_berthd(extra_args: list[str] | None = None, root: Path | None = None) -> Any:
    """Start a berthd on fresh temp paths; stop it and remove everything after."""
    own_root = root is None
    base = root or Path(tempfile.mkdtemp(prefix="berth-test-"))
    d = Berthd(base, extra_args or [])
    try:
        d.start()
        yield d
        code = d.stop()
        if code != 0:
            raise RuntimeError(f"berthd exited {code} on SIGTERM:\n{d.log()}")
        left = d.mounts()
        if left:
            raise RuntimeError(f"berthd left mounts behind: {left}")
    finally:
        # A root the caller gave keeps its files, but not the daemon's containerd, shims,
        # mounts or network objects (a failed test used to leave its containerd running).
        d.cleanup(remove_files=own_root)
