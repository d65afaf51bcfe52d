"""``docker exec`` streams: framing chosen by the start request, detach keys."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import DOCKER, Berthd, read_pty_until
from berth.testing import inspect_container as inspect

OUT_ERR = "echo out; echo err >&2"


@pytest.fixture
def box(berthd: Berthd) -> Iterator[str]:
    """A running container of the test's own."""
    name = f"exec-{uuid.uuid4().hex[:12]}"
    berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "600")
    try:
        yield name
    finally:
        berthd.docker("rm", "-f", name, check=False)


def _api(berthd: Berthd) -> Any:
    import docker  # type: ignore[import-untyped]

    return docker.APIClient(base_url=berthd.host, timeout=30)


@pytest.fixture
def api(berthd: Berthd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """docker-py's low-level client, with an empty config file of its own."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    client = _api(berthd)
    try:
        yield client
    finally:
        client.close()


def parse_frames(data: bytes) -> tuple[bytes, bytes]:
    """(stdout, stderr) of a stdcopy stream; fails on anything that is not a frame."""
    got = {1: b"", 2: b""}
    while data:
        assert len(data) >= 8, f"truncated frame header: {data!r}"
        sid, size = struct.unpack(">BxxxL", data[:8])
        assert sid in got and len(data) >= 8 + size, f"not a frame: {data!r}"
        got[sid] += data[8 : 8 + size]
        data = data[8 + size :]
    return got[1], got[2]


def read_until(sock: socket.socket, marker: bytes, timeout: float = 15) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} not seen; got {out!r}")
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError(f"end of stream before {marker!r}; got {out!r}")
            out += chunk
    return out


def read_to_eof(sock: socket.socket, timeout: float = 15) -> bytes:
    """Everything until the daemon closes the connection; fails if it does not."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the daemon did not end the stream; got {out!r}")
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk


class ExecSocket:
    """The hijacked connection of ``exec_start(socket=True)``."""

    def __init__(self, api: Any, exec_id: str, tty: bool) -> None:
        self._io = api.exec_start(exec_id, tty=tty, socket=True)
        self.sock: socket.socket = self._io._sock

    def close(self) -> None:
        self._io._response.close()
        self._io.close()
        self.sock.close()


def _lines(data: bytes) -> list[bytes]:
    return sorted(data.splitlines())


# -- framing: the start request's Tty decides -----------------------------------------


@pytest.mark.parametrize("create_tty", [False, True], ids=["create-notty", "create-tty"])
@pytest.mark.parametrize("start_tty", [False, True], ids=["start-notty", "start-tty"])
@pytest.mark.parametrize("mode", ["plain", "stream", "demux", "stream-demux"])
def test_framing_follows_the_start_request(
    api: Any, box: str, create_tty: bool, start_tty: bool, mode: str
) -> None:
    ex = api.exec_create(box, ["sh", "-c", OUT_ERR], tty=create_tty)["Id"]
    demux = "demux" in mode
    got = api.exec_start(ex, tty=start_tty, stream=mode.startswith("stream"), demux=demux)
    if mode.startswith("stream"):
        try:
            parts = list(got)
        finally:
            got.close()  # docker-py's CancellableStream leaves the socket's file open
            got._response.raw._fp.fp.raw.close()
    if mode == "stream":
        got = b"".join(parts)
    elif mode == "stream-demux":
        got = (
            b"".join(p[0] for p in parts if p[0]) or None,
            b"".join(p[1] for p in parts if p[1]) or None,
        )
    # With a terminal the process writes both streams to it: all is stdout.
    if create_tty:
        want_out, want_err = b"out\r\nerr\r\n", None
    else:
        want_out, want_err = b"out\n", b"err\n"
    if not demux:
        assert _lines(got) == _lines(want_out + (want_err or b""))
    elif start_tty:  # a raw stream cannot be told apart: docker-py calls it stdout
        assert got[1] is None and _lines(got[0]) == _lines(want_out + (want_err or b""))
    else:
        assert got == (want_out, want_err)
    assert api.exec_inspect(ex)["ExitCode"] == 0


@pytest.mark.parametrize("create_tty", [False, True], ids=["create-notty", "create-tty"])
@pytest.mark.parametrize("start_tty", [False, True], ids=["start-notty", "start-tty"])
def test_framing_on_the_socket(api: Any, box: str, create_tty: bool, start_tty: bool) -> None:
    # The output waits for input, so none of it can be read with the response head.
    cmd = ["sh", "-c", "read x; " + OUT_ERR]
    ex = api.exec_create(box, cmd, stdin=True, tty=create_tty)["Id"]
    conn = ExecSocket(api, ex, start_tty)
    try:
        conn.sock.sendall(b"go\n")
        raw = read_to_eof(conn.sock)
    finally:
        conn.close()
    want_out = b"go\r\nout\r\nerr\r\n" if create_tty else b"out\n"
    want_err = b"" if create_tty else b"err\n"
    if start_tty:
        assert _lines(raw) == _lines(want_out + want_err)
    else:
        assert parse_frames(raw) == (want_out, want_err)
    assert api.exec_inspect(ex)["ExitCode"] == 0


def test_cli_exec_streams(berthd: Berthd, box: str) -> None:
    def run(*flags: str) -> tuple[bytes, bytes]:
        proc = subprocess.run(
            [DOCKER, "exec", *flags, box, "sh", "-c", OUT_ERR],
            env=berthd.env(),
            capture_output=True,
            timeout=60,
            check=True,
        )
        return proc.stdout, proc.stderr

    assert run() == (b"out\n", b"err\n")
    assert run("-t") == (b"out\r\nerr\r\n", b"")


# -- detach keys -------------------------------------------------------------------------


def _shell_on_socket(api: Any, box: str, **create: Any) -> tuple[str, ExecSocket]:
    ex = api.exec_create(box, ["sh"], stdin=True, tty=True, **create)["Id"]
    conn = ExecSocket(api, ex, True)
    conn.sock.sendall(b"echo ready-$((6*7))\n")
    read_until(conn.sock, b"ready-42")
    return ex, conn


def _assert_still_running(api: Any, exec_id: str) -> None:
    info = api.exec_inspect(exec_id)
    assert info["Running"] and info["ExitCode"] is None
    os.kill(info["Pid"], 0)  # the shell is alive


def _detach_events(api: Any, box: str, since: float) -> list[str]:
    events = api.events(
        since=since,
        until=time.time() + 1,
        filters={"container": box, "event": "exec_detach"},
        decode=True,
    )
    try:
        return [e["Actor"]["Attributes"]["execID"] for e in events]
    finally:
        events.close()


def test_default_detach_keys_end_the_attach_not_the_exec(api: Any, box: str) -> None:
    since = time.time() - 1
    ex, conn = _shell_on_socket(api, box)
    try:
        conn.sock.sendall(b"\x10\x11")  # ctrl-p ctrl-q
        assert b"\x10" not in read_to_eof(conn.sock)
    finally:
        conn.close()
    _assert_still_running(api, ex)
    assert _detach_events(api, box, since) == [ex]


def test_end_of_input_to_a_terminal_ends_the_attach(api: Any, box: str) -> None:
    since = time.time() - 1
    ex, conn = _shell_on_socket(api, box)
    try:
        conn.sock.shutdown(socket.SHUT_WR)
        read_to_eof(conn.sock)
    finally:
        conn.close()
    _assert_still_running(api, ex)  # its terminal's input was not closed: not a detach
    assert _detach_events(api, box, since) == []


def test_detach_keys_of_the_create_body(api: Any, box: str) -> None:
    ex, conn = _shell_on_socket(api, box, detach_keys="ctrl-x,y")
    try:
        # The default sequence is now ordinary input.
        conn.sock.sendall(b"\x10\x11echo still-$((1+1))\n")
        read_until(conn.sock, b"still-2")
        conn.sock.sendall(b"\x18y")
        read_to_eof(conn.sock)
    finally:
        conn.close()
    _assert_still_running(api, ex)
    assert base64.b64decode(api.exec_inspect(ex)["DetachKeys"]) == b"\x18y"  # Go's []byte


def test_detach_keys_of_docker_py_config_file(
    berthd: Berthd, box: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"detachKeys": "ctrl-a,a"}))
    client = _api(berthd)
    try:
        ex, conn = _shell_on_socket(client, box)
        try:
            conn.sock.sendall(b"\x01a")
            read_to_eof(conn.sock)
        finally:
            conn.close()
        _assert_still_running(client, ex)
    finally:
        client.close()


def test_detach_keys_need_a_terminal(api: Any, box: str) -> None:
    ex = api.exec_create(box, ["cat"], stdin=True)["Id"]
    conn = ExecSocket(api, ex, False)
    try:
        conn.sock.sendall(b"a\x10\x11b\n")
        conn.sock.shutdown(socket.SHUT_WR)
        assert parse_frames(read_to_eof(conn.sock)) == (b"a\x10\x11b\n", b"")
    finally:
        conn.close()
    assert api.exec_inspect(ex)["ExitCode"] == 0


def test_invalid_detach_keys_are_refused_at_create(berthd: Berthd, box: str) -> None:
    body = json.dumps({"Cmd": ["true"], "DetachKeys": "ctrl-1"}).encode()
    status, _, data = berthd.request(
        "POST", f"/containers/{box}/exec", body, {"Content-Type": "application/json"}
    )
    assert status == 400, data
    assert json.loads(data)["message"] == "Invalid escape keys (ctrl-1) provided"
    assert inspect(berthd, box)["ExecIDs"] is None


def _pty_drain(fd: int, pid: int, timeout: float = 15) -> tuple[bytes, int]:
    """The rest of the CLI's output and its exit status."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            out += chunk
            if chunk:
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return out, status
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the CLI did not exit; output {out!r}")


@pytest.mark.parametrize(
    ("how", "spec", "keys"),
    [
        ("default", "", b"\x10\x11"),
        ("flag", "ctrl-x,y", b"\x18y"),
        ("config", "ctrl-a,a", b"\x01a"),
    ],
)
def test_cli_exec_it_detaches(
    berthd: Berthd, api: Any, box: str, tmp_path: Path, how: str, spec: str, keys: bytes
) -> None:
    env = berthd.env()
    args = [DOCKER, "exec", "-it"]
    if how == "flag":
        args += ["--detach-keys", spec]
    elif how == "config":
        env["DOCKER_CONFIG"] = str(tmp_path / "cli")
        os.mkdir(env["DOCKER_CONFIG"])
        Path(env["DOCKER_CONFIG"], "config.json").write_text(json.dumps({"detachKeys": spec}))
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(DOCKER, [*args, box, "sh"], env)
    try:
        read_pty_until(fd, b"#")
        (exec_id,) = inspect(berthd, box)["ExecIDs"]
        os.write(fd, b"echo ready-$((6*7))\r")
        read_pty_until(fd, b"ready-42")
        os.write(fd, keys)
        out, status = _pty_drain(fd, pid)
    finally:
        os.close(fd)
    # The CLI sees the keys itself and ends with the error its streamer returns
    # (moby/cli's interactiveExec), as it does against dockerd.
    assert b"read escape sequence" in out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    _assert_still_running(api, exec_id)
    # The CLI sent the keys in the create body too (dockerd shows them as Go's []byte).
    shown = api.exec_inspect(exec_id)["DetachKeys"]
    assert base64.b64decode(shown) == (keys if spec else b"")
