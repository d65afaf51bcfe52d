"""Hostile and careless clients against a daemon of the module's own: each costs berthd
bounded memory and descriptors, never keeps another client from being answered, and
ends with a 4xx or a closed connection.

What a scenario costs is berthd's RSS above where it started, sampled while it runs
(printed, for the figures; asserted against a generous bound, never a time).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, running_berthd, unique_name, wait_for

#: what one scenario may add to berthd's RSS
RSS_BOUND_KB = 96 << 10


@pytest.fixture(scope="module")
def d(busybox_tar: Path) -> Iterator[Berthd]:
    with running_berthd() as daemon:
        daemon.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield daemon


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class _Peak:
    """berthd's largest RSS (kB) above its start while the block runs, sampled."""

    def __init__(self, d: Berthd) -> None:
        assert d.proc is not None
        self.pid = d.proc.pid
        self.start = _status(self.pid, "VmRSS")
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status(self.pid, "VmRSS"))

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def grew_kb(self) -> int:
        return self.peak - self.start


def _answered(d: Berthd) -> None:
    """Another client is served meanwhile."""
    assert d.docker("ps", "-q", timeout=30).returncode == 0


def _connect(d: Berthd) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.sock)
    return s


def _answer(s: socket.socket) -> bytes:
    """What the daemon answered until it closed (what came before a reset)."""
    s.settimeout(30)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _report(name: str, peak: _Peak) -> None:
    print(f"\n{name}: berthd RSS +{peak.grew_kb} kB (from {peak.start} kB)")
    assert peak.grew_kb < RSS_BOUND_KB, name


def test_a_thousand_idle_connections(d: Berthd) -> None:
    assert d.proc is not None
    fds = _fds(d.proc.pid)
    idle: list[socket.socket] = []
    try:
        with _Peak(d) as peak:
            idle.extend(_connect(d) for _ in range(1000))
            # accepted (a few of the descriptors counted before may have closed since)
            wait_for(lambda: _fds(d.proc.pid) >= fds + 990, what="the connections accepted")
            _answered(d)
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: _fds(d.proc.pid) <= fds, what="the connections let go")
    _report("1,000 idle connections", peak)


def test_a_head_a_byte_at_a_time_does_not_stall_others(d: Berthd) -> None:
    slow = _connect(d)
    with _Peak(d) as peak, slow:
        stop = threading.Event()

        def dribble() -> None:
            for byte in b"GET /containers/json HTTP/1.1\r\nHost: berth\r\nX-Slow: ":
                if stop.wait(0.2):
                    return
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    return

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        for _ in range(5):
            _answered(d)
        stop.set()
        t.join()
    _report("a head sent a byte at a time", peak)


def test_a_huge_json_body_is_413_and_not_read(d: Berthd) -> None:
    s = _connect(d)
    with _Peak(d) as peak, s:
        s.sendall(
            b"POST /v1.51/containers/create HTTP/1.1\r\nHost: berth\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        )
        chunk = b"[" * 65536
        sent = 0
        s.settimeout(30)
        try:
            while sent < 1 << 30:  # the daemon stops reading long before: the send fails
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        answer = _answer(s)
        _answered(d)
    assert sent < 64 << 20, sent  # it never took the gigabyte
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    _report("a 1 GB JSON body", peak)


def test_a_huge_filter_is_refused(d: Berthd) -> None:
    filters = json.dumps({"label": {f"k{i}=v": True for i in range(100_000)}})
    s = _connect(d)
    with _Peak(d) as peak, s:
        query = urllib.parse.quote(filters)
        s.sendall(f"GET /v1.51/containers/json?filters={query} HTTP/1.1\r\n".encode())
        s.sendall(b"Host: berth\r\n\r\n")
        answer = _answer(s)
        _answered(d)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    _report("a 100,000-entry filter", peak)


def _chatty(d: Berthd) -> str:
    name = unique_name("chatty")
    d.docker(
        "run", "-d", "--name", name, "busybox", "sh", "-c", "while :; do echo $RANDOM$RANDOM; done"
    )
    return name


def _never_read(d: Berthd, args: list[str]) -> subprocess.Popen[bytes]:
    """A CLI whose output nobody reads: the pipe fills, then the socket."""
    return subprocess.Popen(
        [DOCKER, *args], env=d.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("what", "args"),
    [
        ("a never-read logs -f", lambda name: ["logs", "-f", name]),
        ("a never-read attach", lambda name: ["attach", "--no-stdin", name]),
        ("a never-read events stream", lambda name: ["events"]),
    ],
)
def test_a_client_that_never_reads(d: Berthd, what: str, args: Callable[[str], list[str]]) -> None:
    name = _chatty(d)
    try:
        with _Peak(d) as peak:
            stuck = _never_read(d, args(name))
            end = time.monotonic() + 8
            while time.monotonic() < end:  # events for the stream, answers for others
                label = unique_name("ev")
                d.docker("volume", "create", label)
                d.docker("volume", "rm", label)
                _answered(d)
            stuck.kill()
            stuck.wait()
            assert stuck.stdout is not None
            stuck.stdout.close()
    finally:
        d.docker("rm", "-f", name)
    _report(what, peak)
