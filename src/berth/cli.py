"""``berthd``: start the daemon, serve until SIGTERM, leave nothing behind; SIGUSR1 writes
what it is doing under the exec root."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import grp
import json
import logging
import os
import resource
import signal
import ssl
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from berth import __version__, errdefs
from berth.config import Config, ConfigError, TLSOptions, load, parse_host
from berth.utils import syscalls

if TYPE_CHECKING:
    from berth.api._http import HTTPServer
    from berth.api.server import ApiServer
    from berth.runtime.supervisor import Supervisor

log = logging.getLogger("berthd")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}


class StartupError(Exception):
    pass


class _Locks:
    """The pid file and the data-root lock; both are held for the daemon's life."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self.pidfile: Path | None = None

    def lock(self, path: Path, what: str) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            detail = f" (pid {owner})" if owner else ""
            raise StartupError(
                f"{what} {path} is held by another berthd{detail}: ensure it is not running, "
                "or use a different --data-root/--pidfile"
            ) from None
        self._fds.append(fd)
        return fd

    def write_pid(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=_LEVELS[level],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def server_tls(tls: TLSOptions) -> ssl.SSLContext:
    """The TLS of the ``tcp://`` hosts (TLS 1.2 at least, as dockerd); with *verify*, a
    client without a certificate the CA signed fails the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"could not load the TLS certificate {tls.cert} and key {tls.key}: {_reason(e)}"
        ) from None
    if tls.verify:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"could not read the CA certificate {tls.ca}: {_reason(e)}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(e: OSError) -> str:
    return e.strerror or str(e) if not isinstance(e, ssl.SSLError) else e.reason or str(e)


async def _listen(server: ApiServer, cfg: Config, tls: ssl.SSLContext | None) -> list[str]:
    sockets: list[str] = []
    try:
        gid = grp.getgrnam(cfg.group).gr_gid
    except KeyError:
        gid = -1
    for host in cfg.hosts:
        kind, addr, port = parse_host(host)
        if kind == "unix":
            path = Path(addr)
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: we hold the data-root lock
            await server.http.listen_unix(addr)
            os.chmod(addr, 0o660)
            if gid >= 0:
                os.chown(addr, 0, gid)
            sockets.append(addr)
        else:
            if tls is None:
                log.warning(
                    "API is accessible on %s without encryption: anyone who can reach it has "
                    "root on this host",
                    host,
                )
            elif not cfg.tls.verify:
                log.warning(
                    "API is accessible on %s without TLS client verification: anyone who can "
                    "reach it has root on this host",
                    host,
                )
            await server.http.listen_tcp(addr, port, tls)
        log.info("API listening on %s", host)
    return sockets


def _dump_stacks(exec_root: Path) -> None:
    """dockerd's SIGUSR1: what the daemon is doing, written under the exec root.  The
    first line counts what a leak would grow (a JSON object), the stacks follow."""
    tasks = asyncio.all_tasks()
    frames = sys._current_frames()
    pools: dict[str, int] = {}
    for thread in threading.enumerate():
        prefix, _, n = thread.name.rpartition("_")
        if prefix and n.isdigit():  # a ThreadPoolExecutor's, which grows to its bound
            pools[prefix] = pools.get(prefix, 0) + 1
    counts = {
        "tasks": len(tasks),
        "threads": len(frames),
        "pool_threads": pools,
        "other_threads": len(frames) - sum(pools.values()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kb": _rss_kb(),
    }
    path = exec_root / f"berthd-stacks-{time.strftime('%Y-%m-%dT%H%M%S')}.log"
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(counts) + "\n")
            for task in sorted(tasks, key=lambda t: t.get_name()):
                f.write(f"\n--- task {task.get_name()}: {task.get_coro()!r}\n")
                for frame in task.get_stack():
                    f.write("".join(traceback.format_stack(frame, limit=1)))
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in frames.items():
                f.write(f"\n--- thread {names.get(ident, ident)}\n")
                f.write("".join(traceback.format_stack(frame)))
    except OSError as e:
        log.error("writing the stacks to %s: %s", path, e)
        return
    log.info("stacks written to %s (%s)", path, json.dumps(counts))


def _raise_nofile() -> None:
    """Take the hard RLIMIT_NOFILE as the soft one, as a Go program does at start (every
    connection is a descriptor: a thousand clients must not run berthd out of them).
    containerd, itself a Go program, does the same whatever it inherits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (resource.RLIM_INFINITY, soft):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as e:
        log.warning("could not raise the open files limit to %d: %s", hard, e)


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _serve_metrics(addr: str) -> HTTPServer:
    """``GET /metrics`` on *addr* (dockerd's ``--metrics-addr``), plain HTTP as there."""
    from berth import metrics
    from berth.api._http import HTTPServer, Request, Response

    loop = asyncio.get_running_loop()
    metrics.readings.tasks = lambda: len(asyncio.all_tasks(loop))

    async def handle(req: Request) -> Response:
        if req.path != "/metrics":
            return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
        body = await loop.run_in_executor(None, metrics.exposition)
        return Response(200, body, metrics.CONTENT_TYPE)

    _, host, port = parse_host("tcp://" + addr)
    server = HTTPServer(handle, [])
    await server.listen_tcp(host, port)
    log.info("metrics on http://%s/metrics", addr)
    return server


def _tune_malloc() -> None:
    """Before any thread: glibc's defaults let each thread grow an arena of its own (up to
    16 here) and, once a big buffer is freed, serve buffers of up to 32 MiB from those
    arenas rather than mapping them; after logging 1 MB lines berthd kept 150 MB in them
    that no trim could return. A fixed 1 MiB threshold maps and unmaps what is bigger (a
    256 KiB socket read still comes from the heap), and two arenas are enough for threads
    that mostly take turns at the GIL."""
    syscalls.mallopt(syscalls.M_MMAP_THRESHOLD, 1 << 20)
    syscalls.mallopt(syscalls.M_ARENA_MAX, 2)


#: seconds between returns of free heap pages to the kernel
SCAVENGE_INTERVAL = 10.0


async def _scavenge() -> None:
    """Give the kernel back the heap pages that are free, as Go's scavenger does for
    dockerd: what a burst of work freed (a thousand 256 KiB reads, a log line's pieces)
    otherwise stays in the heap. With this and the settings above, berthd is back at its
    idle RSS after the bench's workloads (it had stayed at 150-235 MB, 70 idle). A trim
    with nothing to give costs microseconds."""
    while True:
        await asyncio.sleep(SCAVENGE_INTERVAL)
        await asyncio.to_thread(syscalls.malloc_trim)


def _launch_containerd(cfg: Config) -> Supervisor | None:
    """berthd's own containerd, launched before the daemon's modules load (unless
    ``--containerd`` names one to use): it starts while they do."""
    if cfg.options.containerd:
        return None
    from berth.runtime.supervisor import Supervisor

    supervisor = Supervisor(cfg.options.data_root, cfg.options.exec_root, cfg.options.debug)
    supervisor.launch()
    return supervisor


async def _serve(cfg: Config, tls: ssl.SSLContext | None, supervisor: Supervisor | None) -> None:
    # Here, not at the top: --version, --help and a bad configuration answer without
    # loading the daemon (0.1 s instead of 0.3 s).
    from berth.api.server import ApiServer
    from berth.daemon.daemon import Daemon
    from berth.network.service import NetworkService

    loop = asyncio.get_running_loop()
    daemon = await asyncio.to_thread(Daemon, cfg.options, supervisor=supervisor)
    await asyncio.to_thread(daemon.start_runtime, loop)
    gc.freeze()  # what start-up made (modules, restored containers) is never scanned again
    server = ApiServer(
        daemon,
        images=daemon.images,
        networks=NetworkService(daemon.networks),
        volumes=daemon.volumes,
        distribution=lambda: daemon.distribution,
        builds=lambda: daemon.builds,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_stacks, cfg.options.exec_root)
    scavenger = asyncio.create_task(_scavenge(), name="scavenger")
    sockets: list[str] = []
    metrics_server: HTTPServer | None = None
    try:
        sockets = await _listen(server, cfg, tls)
        if cfg.metrics_addr:
            metrics_server = await _serve_metrics(cfg.metrics_addr)
        log.info("berthd %s started (data-root %s)", __version__, cfg.options.data_root)
        await stop.wait()
        log.info("shutting down")
    finally:
        scavenger.cancel()
        if metrics_server is not None:
            await metrics_server.close()
        await server.close()
        await asyncio.to_thread(daemon.shutdown)
        for path in sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = load(argv)
    except ConfigError as e:
        print(f"berthd: {e}", file=sys.stderr)
        return 1
    if args.version:
        print(f"berthd {__version__}")
        return 0
    _setup_logging(cfg.log_level)
    try:
        tls = server_tls(cfg.tls) if cfg.tls.enabled else None
    except ConfigError as e:
        print(f"berthd: {e}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("berthd: must run as root", file=sys.stderr)
        return 1
    _raise_nofile()
    _tune_malloc()
    # Thousands of containers are a million tracked objects, which CPython's default
    # thresholds scan in full every few listings (``docker ps -a`` with 10,000 took 0.2 or
    # 0.6 s by turns): collect the young generation 14 times less often, the old ones
    # half as often.
    gc.set_threshold(10_000, 20, 20)
    locks = _Locks()
    supervisor: Supervisor | None = None
    try:
        cfg.options.data_root.mkdir(parents=True, exist_ok=True)
        locks.lock(cfg.options.data_root / "berthd.lock", "data root lock")
        pid_fd = locks.lock(Path(cfg.pidfile), "pid file")
        locks.pidfile = Path(cfg.pidfile)
        locks.write_pid(pid_fd)
        cfg.options.exec_root.mkdir(parents=True, exist_ok=True)
        supervisor = _launch_containerd(cfg)
        asyncio.run(_serve(cfg, tls, supervisor))
    except StartupError as e:
        print(f"berthd: {e}", file=sys.stderr)
        return 1
    except (errdefs.BerthError, ConfigError, OSError) as e:
        log.error("berthd failed: %s", e)
        return 1
    finally:
        if supervisor is not None and not supervisor.started:
            supervisor.stop()  # berthd failed before it took its containerd over
        locks.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
