"""A Daemon over the fake runtime, driven as the API would: shared by the daemon's unit tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from berth import errdefs
from berth.container.container import Container
from berth.container.stream import Subscription
from berth.daemon.daemon import Daemon
from berth.daemon.options import DaemonOptions
from berth.network.firewall import Firewall
from berth.network.options import NetworkOptions
from berth.types.container import Config, HostConfig, RestartPolicy
from berth.types.image import ImportOptions
from tests.unit.fakeruntime import FakeRuntime, Program

T = TypeVar("T")

#: Upper bound for anything the tests wait for; never a measured duration.
TIMEOUT = 20.0

SIGTERM = int(signal.SIGTERM)
SIGKILL = int(signal.SIGKILL)
SIGUSR1 = int(signal.SIGUSR1)
SIGHUP = int(signal.SIGHUP)

PROGRAMS = {
    # runs until told to exit or killed; SIGTERM is fatal (143)
    "server": Program(stdout=(b"ready\n",), run_ms=None),
    # ignores SIGTERM: only SIGKILL stops it
    "stubborn": Program(run_ms=None, ignore=frozenset({SIGTERM, SIGHUP})),
    # exits 0 on SIGUSR1, its configured stop signal; ignores SIGHUP
    "graceful": Program(run_ms=None, on_signal={SIGUSR1: 0}, ignore=frozenset({SIGHUP})),
    # output on both streams in several writes, then runs until told
    "talk": Program(stdout=(b"one\n", b"two\n", b"three\n"), stderr=(b"oops\n",), run_ms=None),
    "true": Program(exit_code=0),
    "false": Program(exit_code=1),
    "cat": Program(echo_stdin=True, exit_code=0),
    "greet": Program(stdout=(b"hello from exec\n",), stderr=(b"warn\n",), exit_code=3),
    "denied": Program(
        start_error="OCI runtime start failed: exec /bin/denied: permission denied: unknown"
    ),
    # the runtime loses its exit event
    "lost": Program(run_ms=None, drop_exit=True),
}


# -- the harness ------------------------------------------------------------------------------
def wait_until(pred: Callable[[], bool], what: str = "condition") -> None:
    """Poll *pred* until it holds (bounded by TIMEOUT; the time taken is never asserted)."""
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Harness:
    """A Daemon on a fake runtime, with its event loop in a background thread."""

    def __init__(
        self, root: Path, fake: FakeRuntime, image_tar: Path | None, *, live_restore: bool = False
    ) -> None:
        self.root = root
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-daemon-loop")
        self.thread.start()
        self.closed = False
        try:
            self.options = DaemonOptions(
                data_root=root / "data",
                exec_root=root / "exec",
                storage_driver="vfs",
                live_restore=live_restore,
                network=NetworkOptions(
                    bridge=f"bu{self.net_tag}",
                    firewall_table=f"berth_u{self.net_tag}",
                    dns=["127.0.0.1"],
                ),
            )
            self.d = Daemon(self.options, runtime=fake)
            if image_tar is not None:
                with open(image_tar, "rb") as f:
                    self.d.images.import_image(f, ImportOptions(repo="rootfs", tag="latest"))
            # From this (non-loop) thread: it blocks on the loop while restoring.
            self.d.start_runtime(self.loop)
        except BaseException:
            if hasattr(self, "d"):
                self.remove_network_objects()
                self.d._workers.shutdown(wait=True)
            self._stop_loop()
            raise

    # -- the loop ----------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def subscribe(self, c: Container) -> Subscription:
        return self.on_loop(lambda: c.streams.subscribe(frozenset({"stdout", "stderr"})))

    def collect(self, sub: Subscription) -> list[tuple[str, bytes]]:
        """Everything the subscriber gets until the end of the run."""

        async def drain() -> list[tuple[str, bytes]]:
            out = []
            while (item := await sub.get()) is not None:
                out.append(item)
            return out

        return self.run(drain())

    def waiter(self, ref: str, condition: str) -> concurrent.futures.Future[tuple[int, str | None]]:
        """Register a ``POST /wait`` now; the returned future resolves at its condition."""
        fut = self.on_loop(lambda: self.d.wait_container(ref, condition))

        async def result() -> tuple[int, str | None]:
            return await fut

        return asyncio.run_coroutine_threadsafe(result(), self.loop)

    # -- containers --------------------------------------------------------------------------
    def create(
        self,
        *cmd: str,
        name: str = "",
        restart: str = "",
        retries: int = 0,
        auto_remove: bool = False,
        **config: Any,
    ) -> Container:
        cfg = Config(image="rootfs:latest", cmd=list(cmd), **config)
        hc = HostConfig(
            restart_policy=RestartPolicy(restart, retries),
            auto_remove=auto_remove,
        )
        resp = self.d.create_container(name, cfg, hc, None, "")
        return self.d.containers[resp.Id]

    def run_container(self, *cmd: str, **kwargs: Any) -> Container:
        c = self.create(*cmd, **kwargs)
        self.d.start_container(c.id)
        return c

    def wait_exited(self, c: Container) -> None:
        """Wait for the exit to be handled, its tail (task delete, unmount) included."""
        if not c.exited.wait(TIMEOUT):
            raise AssertionError(f"container {c.id[:12]} did not exit")
        self.settle(c)

    def fifo_files(self, c: Container) -> list[str]:
        try:
            return sorted(os.listdir(self.d.fifo_dir(c.id)))
        except FileNotFoundError:
            return []

    def settle(self, c: Container) -> None:
        """Wait for the tail of an exit (task delete, unmount, removal's release): it
        runs under the container's lock after the waiters have heard of the exit."""
        with c.lock:
            pass

    def mount_count(self, c: Container) -> int:
        return self.d.images.layers.get_rw_layer(c.id)._mounts

    def log_lines(self, c: Container) -> list[tuple[str, str]]:
        path = self.d.log_path(c)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            assert set(entry) == {"log", "stream", "time"}
            out.append((entry["stream"], entry["log"]))
        return out

    # -- tear-down ---------------------------------------------------------------------------
    def _stop_loop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    @property
    def net_tag(self) -> str:
        return hashlib.sha1(str(self.root).encode()).hexdigest()[:6]

    def remove_network_objects(self) -> None:
        """The bridge and firewall tables the daemon leaves on the host on purpose."""
        for net in self.d.networks.networks():
            if net.bridge:
                subprocess.run(
                    ["ip", "link", "delete", net.bridge], check=False, capture_output=True
                )
        with contextlib.suppress(Exception):
            fw = Firewall(self.options.network.firewall_table)
            fw.teardown()
            fw.close()

    def close(self) -> None:
        """Stop every container as the daemon does at exit, then everything else."""
        if self.closed:  # crashed: the host objects it left are removed all the same
            self.remove_network_objects()
            return
        self.closed = True
        self.fake.drop_exits = False
        try:
            for c in list(self.d.containers.values()):
                if c.state.running:
                    with contextlib.suppress(errdefs.BerthError):
                        self.d.kill_container(c.id, "SIGKILL")
            self.d.shutdown()
        finally:
            self.remove_network_objects()
            self.d._workers.shutdown(wait=True)
            self._stop_loop()

    def crash(self) -> None:
        """berthd dies (SIGKILL): no container is stopped, no runtime file removed."""
        self.closed = True
        self.fake.close()  # its connection to containerd is gone: no more events
        for c in list(self.d.containers.values()):
            if c.io is not None:
                c.io.close(remove=False)
                c.io = None
            if c.logger is not None:
                c.logger.close()
                c.logger = None
        self.d.reaper.close()  # a thread of the process that died
        self.d._workers.shutdown(wait=True)
        self._stop_loop()


def open_fds_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(root)):
                found.append(target)
    return found


def rootfs_tar(path: Path) -> Path:
    """A tiny image: what the daemon reads of a rootfs (users and groups), no binaries.

    (berth.testing.busybox_rootfs_tar works too, but the vfs driver copies each layer
    in full, and a few files keep these tests quick.)
    """
    with tarfile.open(path, "w") as tf:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tf.addfile(info)
        files = {
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            "etc/group": b"root:x:0:\napp:x:1000:\n",
            "bin/server": b"#!/bin/sh\n",
        }
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tf.addfile(info, io.BytesIO(data))
    return path
