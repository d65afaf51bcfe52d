"""What containerd loses track of when its client dies in the middle of a task create.

containerd cancels the create, deletes the bundle and forgets the container, but the
runc v2 shim it already started lives on, serving nothing, with its socket in
``/run/containerd/s``; and runc may hold state (and a cgroup) for a container whose
shim is gone.  Only the processes and files say so, so this reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: where containerd's runc v2 shims put their sockets (containerd's default state dir,
#: whatever --state the daemon runs with)
SHIM_SOCKET_DIR = "/run/containerd/s"


@dataclass(frozen=True)
class Shim:
    pid: int
    container_id: str


def _flag(argv: list[bytes], name: bytes) -> str | None:
    try:
        return argv[argv.index(name) + 1].decode()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _shim_args(argv: list[bytes]) -> tuple[str, str, str] | None:
    """``(address, namespace, container ID)`` of a shim's command line, or None."""
    if not argv or not os.path.basename(argv[0]).startswith(b"containerd-shim"):
        return None
    address, namespace, cid = (_flag(argv, f) for f in (b"-address", b"-namespace", b"-id"))
    if not (address and namespace and cid):
        return None
    return address, namespace, cid


def shims(address: str, namespace: str) -> list[Shim]:
    """The shim processes serving containerd at *address* for *namespace*."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = _shim_args(argv)
        if args is not None and args[:2] == (address, namespace):
            found.append(Shim(int(entry), args[2]))
    return found


def _stat(pid: int) -> list[bytes]:
    """The fields of ``/proc/<pid>/stat`` after the name (state first); [] if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return []
    return stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and parens


def parent_pid(pid: int) -> int | None:
    """The parent of process *pid*, or None if it is gone."""
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def alive(pid: int) -> bool:
    """Process *pid* exists and has not exited (a zombie nobody reaped has)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")


def shim_socket_of(argv: list[bytes]) -> str | None:
    """The socket of the shim with this command line (None if it is not a shim)."""
    args = _shim_args(argv)
    return shim_socket(*args) if args is not None else None


def shim_socket(address: str, namespace: str, container_id: str) -> str:
    """containerd's ``shim.SocketAddress``: a hash, so the path fits sockaddr_un."""
    digest = hashlib.sha256(os.path.join(address, namespace, container_id).encode()).hexdigest()
    return os.path.join(SHIM_SOCKET_DIR, digest)


def listening_sockets(pid: int) -> list[str]:
    """The shim sockets process *pid* listens on: that of its container, or of its
    group (``--shim-group``), which its command line does not name."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    found = []
    for row in table:
        fields = row.split()  # Num RefCount Protocol Flags Type St Inode [Path]
        if len(fields) == 8 and fields[6] in inodes and fields[7].startswith(SHIM_SOCKET_DIR):
            found.append(fields[7])
    return found


def kill_shim(shim: Shim, address: str, namespace: str) -> None:
    sockets = {shim_socket(address, namespace, shim.container_id), *listening_sockets(shim.pid)}
    with contextlib.suppress(ProcessLookupError):
        os.kill(shim.pid, signal.SIGKILL)
    for path in sockets:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_dead_socket(path: str) -> bool:
    """Unlink a shim socket nobody listens on (a shim killed leaves it)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return False
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def runc_states(runc_root: str) -> list[str]:
    """Container IDs runc keeps state for under *runc_root*."""
    try:
        return [e.name for e in os.scandir(runc_root) if e.is_dir()]
    except FileNotFoundError:
        return []


def runc_force_delete(runc_root: str, container_id: str) -> None:
    """Kill what is left of the container and remove its cgroup and state."""
    runc = shutil.which("runc") or "runc"
    proc = subprocess.run(
        [runc, "--root", runc_root, "delete", "--force", container_id],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:  # runc cannot even read the state: drop it
        shutil.rmtree(os.path.join(runc_root, container_id), ignore_errors=True)
