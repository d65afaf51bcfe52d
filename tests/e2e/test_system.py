"""System endpoints and the HTTP/Engine wire rules, with the docker CLI and raw HTTP."""

from __future__ import annotations

import json
import os
import platform
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from berth.runtime.supervisor import Supervisor
from berth.testing import Berthd, running_berthd


def test_docker_version_negotiates_and_reports_the_engine(berthd: Berthd) -> None:
    out = berthd.docker("version", "--format", "{{json .}}").stdout
    data = json.loads(out)
    server = data["Server"]
    assert server["ApiVersion"] == "1.51"
    assert server["MinAPIVersion"] == "1.24"
    assert server["Os"] == "linux"
    assert server["KernelVersion"] == platform.release()
    assert any(c["Name"] == "Engine" for c in server["Components"])
    # The CLI (API 1.50) keeps its own lower version after negotiating.
    assert data["Client"]["ApiVersion"] == "1.50"


def test_docker_info_reports_the_real_host(berthd: Berthd, cleanup: list[str]) -> None:
    info = json.loads(berthd.docker("system", "info", "--format", "{{json .}}").stdout)
    assert info["NCPU"] == os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    assert info["MemTotal"] == mem_kb * 1024
    assert info["KernelVersion"] == platform.release()
    assert info["OperatingSystem"].startswith("Debian")
    assert info["Driver"] == "overlay2"
    status = dict(info["DriverStatus"])
    assert status["Backing Filesystem"] in ("extfs", "xfs", "btrfs", "tmpfs")
    assert info["DockerRootDir"] == str(berthd.data_root)
    assert info["LoggingDriver"] == "json-file"
    assert "runc" in info["Runtimes"]
    assert info["CgroupVersion"] in ("1", "2")
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["Name"] == socket.gethostname()
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["ServerVersion"]
    assert info["ID"]
    images = berthd.docker("images", "-aq").stdout.split()
    assert info["Images"] == len(set(images))
    # Counts relative to the first answer: the session daemon holds other tests' objects.
    before = info["Containers"]
    cleanup.append(berthd.docker("create", "busybox", "true").stdout.strip())
    info2 = json.loads(berthd.docker("info", "--format", "{{json .}}").stdout)
    assert info2["Containers"] == before + 1
    assert info2["ContainersStopped"] == info["ContainersStopped"] + 1


def test_ping_get_and_head(berthd: Berthd) -> None:
    status, headers, body = berthd.request("GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.51"
    assert headers["ostype"] == "linux"
    assert headers["docker-experimental"] == "false"
    assert headers["swarm"] == "inactive"
    assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert headers["server"].startswith("Docker/")
    status, headers, body = berthd.request("HEAD", "/_ping")
    assert (status, body, headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize("prefix", ["", "/v1.24", "/v1.38", "/v1.41", "/v1.50", "/v1.51"])
def test_supported_versions_are_served(berthd: Berthd, prefix: str) -> None:
    status, _, body = berthd.request("GET", prefix + "/version")
    assert status == 200
    assert json.loads(body)["ApiVersion"] == "1.51"


def test_versions_outside_the_range_are_refused(berthd: Berthd) -> None:
    status, headers, body = berthd.request("GET", "/v1.23/version")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["message"] == (
        "client version 1.23 is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version"
    )
    status, _, body = berthd.request("GET", "/v1.52/containers/json")
    assert status == 400
    assert json.loads(body)["message"] == (
        "client version 1.52 is too new. Maximum supported API version is 1.51"
    )


def test_unknown_routes_and_swarm_answer_like_dockerd(berthd: Berthd) -> None:
    status, _, body = berthd.request("GET", "/v1.51/nonsense")
    assert (status, json.loads(body)) == (404, {"message": "page not found"})
    status, _, body = berthd.request("GET", "/swarm")
    assert status == 503
    assert json.loads(body)["message"].startswith("This node is not a swarm manager.")
    status, _, body = berthd.request("POST", "/v1.45/swarm/leave")
    assert (status, json.loads(body)["message"]) == (503, "This node is not part of a swarm")
    status, _, body = berthd.request("GET", "/services")
    assert status == 503
    status, _, body = berthd.request("GET", "/plugins")
    assert (status, json.loads(body)) == (200, [])
    proc = berthd.docker("swarm", "leave", check=False)
    assert proc.returncode == 1
    assert "This node is not part of a swarm" in proc.stderr


def test_keep_alive_serves_several_requests_on_one_connection(berthd: Berthd) -> None:
    conn = berthd.http()
    try:
        for _ in range(3):
            conn.request("GET", "/v1.51/version")
            resp = conn.getresponse()
            assert resp.status == 200
            json.loads(resp.read())
        conn.request("GET", "/_ping")
        assert conn.getresponse().read() == b"OK"
    finally:
        conn.close()


def test_bad_json_gets_a_400_naming_the_field(berthd: Berthd) -> None:
    hdrs = {"Content-Type": "application/json"}
    status, _, body = berthd.request("POST", "/containers/create", b"{not json", hdrs)
    assert status == 400
    assert json.loads(body)["message"].startswith("invalid JSON")
    status, _, body = berthd.request(
        "POST", "/containers/create", json.dumps({"Image": "busybox", "Env": "A=1"}).encode(), hdrs
    )
    assert status == 400
    msg = json.loads(body)["message"]
    assert "Env" in msg and "array" in msg
    status, _, body = berthd.request(
        "POST",
        "/containers/create",
        json.dumps({"Image": "busybox", "HostConfig": {"Memory": "lots"}}).encode(),
        hdrs,
    )
    assert status == 400
    assert "HostConfig.Memory" in json.loads(body)["message"]
    status, _, body = berthd.request(
        "POST", "/containers/create", b'{"Image":"busybox"}', {"Content-Type": "text/plain"}
    )
    assert status == 400
    assert "Content-Type" in json.loads(body)["message"]


def test_newer_clients_unknown_fields_are_ignored(berthd: Berthd, cleanup: list[str]) -> None:
    body = json.dumps(
        {"Image": "busybox", "Cmd": ["true"], "FutureField": {"x": 1}, "HostConfig": {"New": 1}}
    ).encode()
    status, _, raw = berthd.request(
        "POST", "/containers/create", body, {"Content-Type": "application/json"}
    )
    if status == 201:
        cleanup.append(json.loads(raw)["Id"])
    assert status == 201, raw


def test_socket_is_group_restricted(berthd: Berthd) -> None:
    mode = os.stat(berthd.sock).st_mode
    assert stat.S_IMODE(mode) == 0o660
    assert stat.S_ISSOCK(mode)


def test_second_daemon_on_the_same_data_root_refuses(berthd: Berthd, tmp_path: Path) -> None:
    other = Berthd(tmp_path)
    args = other.args()
    args[args.index("--data-root") + 1] = str(berthd.data_root)
    (tmp_path / "daemon.json").write_text("{}")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "data root lock" in proc.stderr and "another berthd" in proc.stderr


def test_bad_config_file_stops_startup(tmp_path: Path) -> None:
    d = Berthd(tmp_path)
    (tmp_path / "daemon.json").write_text(json.dumps({"storage-drivr": "vfs"}))
    proc = subprocess.run(d.args(), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "don't match any configuration option: storage-drivr" in proc.stderr
    (tmp_path / "daemon.json").write_text(json.dumps({"debug": "yes"}))
    proc = subprocess.run(d.args(), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "invalid value for 'debug'" in proc.stderr
    # d.args() passes --data-root too
    (tmp_path / "daemon.json").write_text(json.dumps({"data-root": str(tmp_path / "x")}))
    proc = subprocess.run(d.args(), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "both as a flag and in the configuration file: data-root" in proc.stderr


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    with running_berthd(root=tmp_path / "d") as d:
        sock = Path(d.sock)
        pidfile = d.root / "berthd.pid"
        assert pidfile.read_text().strip() == str(d.proc.pid if d.proc else "")
    # running_berthd checked the exit code and mounts; the socket and pid file are gone.
    assert not sock.exists()
    assert not pidfile.exists()


def test_a_daemon_that_fails_to_load_stops_the_containerd_it_launched(tmp_path: Path) -> None:
    """containerd is launched before the daemon loads (so that both start at once): a
    berthd that then fails leaves no containerd behind."""
    d = Berthd(tmp_path)
    (tmp_path / "daemon.json").write_text("{}")
    d.data_root.mkdir(parents=True)
    (d.data_root / "containers").write_text("")  # the containers' directory cannot be made
    try:
        proc = subprocess.run(d.args(), capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "berthd failed" in proc.stderr and "containers" in proc.stderr
        supervisor = Supervisor(d.data_root, d.exec_root)
        assert (supervisor.dir / "containerd.log").exists()  # it had been launched
        assert not supervisor.pidfile.exists()
        config = str(supervisor.config).encode()
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and config in _cmdline(pid)]
        assert left == []
    finally:
        d.cleanup()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
