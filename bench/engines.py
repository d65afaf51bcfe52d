"""An engine under test: a socket, the docker CLI pointed at it, and its processes."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from berth.testing import DOCKER

#: No docker command in a workload should take this long; a hung engine fails the sample.
CLI_TIMEOUT = 300.0


class Failed(Exception):
    """A workload's result was wrong: the sample is reported as FAILED, not timed."""


class Unavailable(Failed):
    """The engine (or this machine) lacks what the workload needs, e.g. a daemon without
    ``docker push`` yet or a missing docker-registry: reported as n/a, not as a failure."""


@dataclass
class Result:
    seconds: float
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass
class Engine:
    name: str
    host: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def timed(self, *args: str, stdin: bytes | None = None) -> Result:
        """Run ``docker *args`` and time it, CLI start-up included (as a user sees it)."""
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [DOCKER, *args],
                env=self.env(),
                input=stdin,
                capture_output=True,
                check=False,
                timeout=CLI_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            raise Failed(f"docker {' '.join(args)}: no answer in {CLI_TIMEOUT:.0f}s") from e
        return Result(time.perf_counter() - start, proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: bytes | None = None) -> Result:
        """``timed``, failing the sample unless the command exits 0."""
        r = self.timed(*args, stdin=stdin)
        if r.returncode != 0:
            raise Failed(
                f"docker {' '.join(args)[:80]}: exit {r.returncode}: "
                f"{r.stderr.decode(errors='replace').strip()[:300]}"
            )
        return r

    def out(self, *args: str) -> str:
        """Untimed set-up: ``docker *args``' stdout, stripped."""
        return self.ok(*args).stdout.decode().strip()

    def processes(self) -> EngineProcesses:
        return engine_processes(self.host)


@dataclass
class EngineProcesses:
    daemon: int
    containerd: int | None
    shims: list[int]

    def all(self) -> list[int]:
        return [self.daemon, *([self.containerd] if self.containerd else []), *self.shims]


def _socket_inode(path: str) -> int:
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Listening sockets: state 01 (unconnected) with the path as the last field.
        if len(fields) >= 8 and fields[7] == path and fields[3] == "00010000":
            return int(fields[6])
    raise RuntimeError(f"nobody listens on {path}")


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _owner_of_inode(inode: int) -> int:
    target = f"socket:[{inode}]"
    for pid in _pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
        except OSError:
            continue
    raise RuntimeError(f"no process holds socket inode {inode}")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _program(pid: int) -> str:
    args = _cmdline(pid)
    return Path(args[0]).name if args else ""


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _containerd_address(pid: int) -> str:
    """The gRPC socket a containerd process serves, from its flags or its config file."""
    args = _cmdline(pid)
    for flag in ("--address", "-a"):
        if flag in args:
            return args[args.index(flag) + 1]
    for flag in ("--config", "-c"):
        if flag in args:
            text = Path(args[args.index(flag) + 1]).read_text()
            section = ""
            for raw in text.splitlines():
                line = raw.strip()
                if line.startswith("["):
                    section = line
                elif section == "[grpc]" and line.startswith("address"):
                    return line.split("=", 1)[1].strip().strip("'\"")
    return "/run/containerd/containerd.sock"


def _daemon_pid(path: str) -> int:
    """The process listening on *path*; for a socket bound in another network namespace
    (which this one's /proc/net/unix does not list: a dockerd started with ``nsenter
    --net``, see README.md), the dockerd whose command line names *path*."""
    try:
        return _owner_of_inode(_socket_inode(path))
    except RuntimeError:
        for pid in _pids():
            if _program(pid) == "dockerd" and any(path in a for a in _cmdline(pid)):
                return pid
        raise


def engine_processes(host: str) -> EngineProcesses:
    """The daemon serving *host*, the containerd it started and that containerd's shims."""
    path = host.removeprefix("unix://")
    daemon = _daemon_pid(path)
    pids = _pids()
    containerd = next((p for p in pids if _ppid(p) == daemon and _program(p) == "containerd"), None)
    shims: list[int] = []
    if containerd is not None:
        address = _containerd_address(containerd)
        for p in pids:
            args = _cmdline(p)
            if (
                _program(p).startswith("containerd-shim")
                and "-address" in args
                and args[args.index("-address") + 1] == address
            ):
                shims.append(p)
    return EngineProcesses(daemon, containerd, shims)


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of *pid* in KiB, from smaps_rollup."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_ticks(pid: int) -> int:
    """utime + stime of *pid* and of the children it has reaped, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as err:
        raise Failed(f"process {pid} went away: {err}") from err
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
