"""Running containers through containerd: run, attach, logs, stop/kill, pause, exec."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import time
import urllib.parse
from pathlib import Path

from berth.testing import DOCKER, Berthd, unique_name, wait_for, wait_for_log
from berth.testing import inspect_container as inspect
from berth.utils.timefmt import parse_rfc3339


def test_run_rm_prints_output_and_removes(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("run-rm")
    cleanup.append(name)  # if --rm failed to
    proc = berthd.docker("run", "--rm", "--name", name, "busybox", "echo", "hi")
    assert proc.stdout == "hi\n"
    assert berthd.docker("ps", "-aq", "--filter", f"name={name}").stdout == ""


def test_exit_code_and_state(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("exits3")
    cleanup.append(name)
    script = "echo out; echo err >&2; exit 3"
    proc = berthd.docker("run", "--name", name, "busybox", "sh", "-c", script, check=False)
    assert proc.returncode == 3
    assert proc.stdout == "out\n" and proc.stderr == "err\n"
    st = inspect(berthd, name)["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 3 and st["Running"] is False
    assert st["Pid"] == 0 and st["FinishedAt"] != "0001-01-01T00:00:00Z"
    assert st["StartedAt"] != "0001-01-01T00:00:00Z"
    status = berthd.docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}").stdout
    assert re.fullmatch(r"Exited \(3\) (Less than a second|\d+ seconds?) ago\n", status)
    assert berthd.docker(
        "ps", "-a", "-q", "--filter", "exited=3", "--filter", f"name={name}"
    ).stdout.strip()


def test_missing_command_is_127(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("nocmd")
    cleanup.append(name)
    proc = berthd.docker("run", "--name", name, "busybox", "/no/such/cmd", check=False)
    assert proc.returncode == 127
    assert "no such file or directory" in proc.stderr.lower() or "not found" in proc.stderr.lower()
    st = inspect(berthd, name)["State"]
    assert st["ExitCode"] == 127 and st["Error"]


def test_stdin_is_piped_through(berthd: Berthd) -> None:
    proc = subprocess.run(
        [DOCKER, "run", "--rm", "-i", "busybox", "cat"],
        input=b"x\nsecond line\n",
        env=berthd.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"x\nsecond line\n"
    big = os.urandom(3 * 1024 * 1024)
    proc = subprocess.run(
        [DOCKER, "run", "--rm", "-i", "busybox", "md5sum"],
        input=big,
        env=berthd.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert proc.stdout.split()[0].decode() == hashlib.md5(big).hexdigest()


def test_tty_run_under_a_pty(berthd: Berthd) -> None:
    # script(1) gives the CLI a real terminal, as a user's shell would.
    cmd = f"{DOCKER} run --rm -it busybox sh -c 'tty; echo done'"
    proc = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        env=berthd.env(),
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode(errors="replace")
    assert "/dev/pts/0" in out and "done" in out, out


def test_detached_logs_stop(berthd: Berthd, cleanup: list[str]) -> None:
    ticker = unique_name("ticker")
    cleanup.append(ticker)
    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"
    cid = berthd.docker("run", "-d", "--name", ticker, "busybox", "sh", "-c", script).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    wait_for_log(berthd, ticker, "tick 5")
    c = inspect(berthd, ticker)
    assert c["State"]["Running"] and c["State"]["Pid"] > 0
    assert c["LogPath"].endswith(f"{cid}-json.log")
    line = Path(c["LogPath"]).read_text().splitlines()[0]
    rec = json.loads(line)
    assert rec["log"] == "tick 0\n" and rec["stream"] == "stdout"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rec["time"])
    tail = berthd.docker("logs", "--tail", "2", ticker).stdout.splitlines()
    assert len(tail) == 2 and tail[0].startswith("tick ")
    stamped = berthd.docker("logs", "-t", "--tail", "1", ticker).stdout
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z tick \d+", stamped)
    status = berthd.docker("ps", "--filter", f"name={ticker}", "--format", "{{.Status}}").stdout
    assert status.startswith("Up ")
    # sh as PID 1 ignores SIGTERM: stop waits -t then kills.
    berthd.docker("stop", "-t", "1", ticker)
    st = inspect(berthd, ticker)["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 137
    assert berthd.docker("stop", ticker, check=False).returncode == 0  # 304: success for the CLI


def test_logs_follow_ends_with_the_container(berthd: Berthd, cleanup: list[str]) -> None:
    follow, stderr_logs = unique_name("follow"), unique_name("stderr-logs")
    cleanup.extend([follow, stderr_logs])
    script = "for i in 1 2 3; do echo $i; sleep 0.3; done"
    berthd.docker("run", "-d", "--name", follow, "busybox", "sh", "-c", script)
    proc = berthd.docker("logs", "-f", follow, timeout=30)
    assert proc.stdout.split() == ["1", "2", "3"]
    err = berthd.docker("run", "--name", stderr_logs, "busybox", "sh", "-c", "echo a; echo b >&2")
    assert err.stdout == "a\n"
    logs = berthd.docker("logs", stderr_logs)
    assert logs.stdout == "a\n" and logs.stderr == "b\n"


def test_kill_signal_and_restart(berthd: Berthd, cleanup: list[str]) -> None:
    trapper = unique_name("trapper")
    cleanup.append(trapper)
    # The marker says the trap is in place: a signal sent before it would kill sh outright.
    script = "trap 'echo got USR1; exit 42' USR1; echo trap-set; while true; do sleep 0.1; done"
    berthd.docker("run", "-d", "--name", trapper, "busybox", "sh", "-c", script)
    wait_for_log(berthd, trapper, "trap-set")
    berthd.docker("kill", "-s", "USR1", trapper)
    wait_for(lambda: not inspect(berthd, trapper)["State"]["Running"], what="exit")
    st = inspect(berthd, trapper)["State"]
    assert st["ExitCode"] == 42
    assert "got USR1" in berthd.docker("logs", trapper).stdout
    proc = berthd.docker("kill", trapper, check=False)
    assert "is not running" in proc.stderr
    berthd.docker("restart", "-t", "1", trapper)
    assert inspect(berthd, trapper)["State"]["Running"]
    berthd.docker("kill", trapper)
    assert inspect(berthd, trapper)["State"]["ExitCode"] == 137


def test_pause_and_unpause(berthd: Berthd, cleanup: list[str]) -> None:
    pausable = unique_name("pausable")
    cleanup.append(pausable)
    cid = berthd.docker("run", "-d", "--name", pausable, "busybox", "sleep", "60").stdout.strip()
    berthd.docker("pause", pausable)
    c = inspect(berthd, pausable)
    assert c["State"]["Paused"] and c["State"]["Status"] == "paused"
    status = berthd.docker("ps", "--filter", f"name={pausable}", "--format", "{{.Status}}").stdout
    assert status.strip().endswith("(Paused)")
    freezer = list(Path("/sys/fs/cgroup/freezer/berth").glob(f"{cid}/freezer.state"))
    if freezer:
        assert freezer[0].read_text().strip() == "FROZEN"
    proc = berthd.docker("exec", pausable, "true", check=False)
    assert "is paused" in proc.stderr
    berthd.docker("unpause", pausable)
    assert not inspect(berthd, pausable)["State"]["Paused"]
    proc = berthd.docker("rm", pausable, check=False)
    assert "container is running: stop the container before removing or force remove" in proc.stderr
    berthd.docker("rm", "-f", pausable)


def test_exec(berthd: Berthd, cleanup: list[str]) -> None:
    execd = unique_name("execd")
    cleanup.append(execd)
    berthd.docker("run", "-d", "--name", execd, "-e", "BASE=1", "busybox", "sleep", "60")
    assert berthd.docker("exec", execd, "echo", "in there").stdout == "in there\n"
    proc = berthd.docker("exec", execd, "sh", "-c", "exit 7", check=False)
    assert proc.returncode == 7
    assert (
        berthd.docker(
            "exec", "-e", "X=2", "-w", "/tmp", execd, "sh", "-c", "echo $BASE$X $(pwd)"
        ).stdout
        == "12 /tmp\n"
    )
    assert berthd.docker("exec", "-u", "1000:1000", execd, "id", "-u").stdout == "1000\n"
    assert berthd.docker("exec", "-u", "app", execd, "id", "-un").stdout == "app\n"
    piped = subprocess.run(
        [DOCKER, "exec", "-i", execd, "cat"],
        input=b"through exec\n",
        env=berthd.env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert piped.stdout == b"through exec\n"
    berthd.docker("exec", "-d", execd, "sh", "-c", "echo detached > /tmp/d")
    wait_for(
        lambda: berthd.docker("exec", execd, "cat", "/tmp/d", check=False).stdout == "detached\n",
        what="detached exec",
    )
    caps = berthd.docker(
        "exec", "--privileged", execd, "sh", "-c", "grep CapEff /proc/self/status"
    ).stdout
    plain = berthd.docker("exec", execd, "sh", "-c", "grep CapEff /proc/self/status").stdout
    assert caps != plain
    assert inspect(berthd, execd)["ExecIDs"]
    missing = berthd.docker("exec", execd, "nonexistent", check=False)
    assert missing.returncode == 127
    assert missing.stdout.strip() == (  # the CLI copies the hijacked stream there
        "OCI runtime exec failed: exec failed: unable to start container process: "
        'exec: "nonexistent": executable file not found in $PATH: unknown'
    )
    berthd.docker("stop", "-t", "0", execd)
    proc = berthd.docker("exec", execd, "true", check=False)
    assert "is not running" in proc.stderr


def test_run_options_take_effect(berthd: Berthd) -> None:
    def run(*args: str) -> str:
        return berthd.docker("run", "--rm", *args).stdout

    assert run("-w", "/tmp", "busybox", "pwd") == "/tmp\n"
    assert run("-e", "GREETING=hello", "busybox", "sh", "-c", "echo $GREETING") == "hello\n"
    assert run("--hostname", "myhost", "busybox", "hostname") == "myhost\n"
    assert run("-u", "1000:1000", "busybox", "id").startswith("uid=1000(app) gid=1000(app)")
    assert run("-u", "app", "busybox", "id", "-un") == "app\n"
    assert run("--entrypoint", "echo", "busybox", "from", "entrypoint") == "from entrypoint\n"
    ro = berthd.docker("run", "--rm", "--read-only", "busybox", "touch", "/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    assert run("busybox", "cat", "/etc/hostname").strip()
    assert "localhost" in run("busybox", "cat", "/etc/hosts")
    assert run("--init", "busybox", "cat", "/proc/1/comm") == "docker-init\n"
    caps_default = run("busybox", "grep", "CapEff", "/proc/self/status")
    caps_priv = run("--privileged", "busybox", "grep", "CapEff", "/proc/self/status")
    assert caps_default != caps_priv
    no_net_admin = berthd.docker(
        "run", "--rm", "busybox", "ip", "link", "set", "lo", "down", check=False
    )
    assert no_net_admin.returncode != 0 and "Operation not permitted" in no_net_admin.stderr
    lo_down = "ip link set lo down && ip -o link show lo"
    assert "<LOOPBACK>" in run("--cap-add", "NET_ADMIN", "busybox", "sh", "-c", lo_down)
    assert (
        run(
            "--security-opt",
            "no-new-privileges",
            "busybox",
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ).split()[-1]
        == "1"
    )
    assert (
        run("--memory", "64m", "busybox", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        == f"{64 * 1024 * 1024}\n"
    )
    assert run("--pids-limit", "50", "busybox", "cat", "/sys/fs/cgroup/pids/pids.max") == "50\n"
    assert (
        run("--cpus", "0.5", "busybox", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us") == "50000\n"
    )
    assert run("--cpu-shares", "512", "busybox", "cat", "/sys/fs/cgroup/cpu/cpu.shares") == "512\n"
    assert run("--ulimit", "nofile=512:1024", "busybox", "sh", "-c", "ulimit -n") == "512\n"
    hard = subprocess.run(
        ["sh", "-c", "ulimit -Hn"], capture_output=True, text=True, check=True
    ).stdout.strip()
    over = berthd.docker(
        "run", "--rm", "--ulimit", "nofile=1048576:1048576", "busybox", "sh", "-c", "ulimit -Hn"
    )
    assert over.stdout.strip() == hard  # clamped to the host's hard limit
    assert "lo" in run("--network", "none", "busybox", "ip", "-o", "link")
    assert "eth0" not in run("--network", "none", "busybox", "ip", "-o", "link")

    def names(listing: str) -> set[str]:
        # veths come and go with other containers (the kernel deletes them a little after
        # their namespace), so only the host's other devices are compared
        out = {line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()}
        return {n for n in out if not n.startswith("veth")}

    host_links = subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    in_host = run("--network", "host", "busybox", "ip", "-o", "link")
    assert names(in_host) == names(host_links)
    assert berthd.bridge in names(in_host)
    assert run("-v", "/etc/os-release:/host-os:ro", "busybox", "head", "-1", "/host-os").startswith(
        "PRETTY_NAME"
    )


def test_oom_killed(berthd: Berthd, cleanup: list[str]) -> None:
    oom = unique_name("oom")
    cleanup.append(oom)
    proc = berthd.docker(
        "run",
        "--name",
        oom,
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 137
    st = inspect(berthd, oom)["State"]
    assert st["OOMKilled"] is True and st["ExitCode"] == 137


def test_wait_and_attach(berthd: Berthd, cleanup: list[str]) -> None:
    waited = unique_name("waited")
    cleanup.append(waited)
    berthd.docker(
        "create",
        "--name",
        waited,
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; echo attached-output; exit 5",
    )
    attach = subprocess.Popen(
        [DOCKER, "start", "-a", waited],
        env=berthd.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = attach.communicate(timeout=60)
    assert out == b"attached-output\n"
    assert attach.returncode == 5
    assert berthd.docker("wait", waited).stdout == "5\n"


def test_auto_remove_and_top(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("auto-rm")
    cleanup.append(name)  # if it outlived a failure
    cid = berthd.docker(
        "run", "-d", "--rm", "--name", name, "busybox", "sleep", "30"
    ).stdout.strip()
    top = berthd.docker("top", cid).stdout
    assert "sleep 30" in top and "PID" in top.splitlines()[0]
    berthd.docker("stop", "-t", "0", cid)
    wait_for(lambda: berthd.docker("inspect", cid, check=False).returncode != 0, what="auto-remove")


def test_restart_policy(berthd: Berthd, cleanup: list[str]) -> None:
    flaky = unique_name("flaky")
    cleanup.append(flaky)
    berthd.docker(
        "run", "-d", "--name", flaky, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1"
    )
    wait_for(
        lambda: (
            inspect(berthd, flaky)["RestartCount"] == 2
            and not inspect(berthd, flaky)["State"]["Running"]
        ),
        timeout=30,
        what="two restarts",
    )
    assert inspect(berthd, flaky)["State"]["ExitCode"] == 1


def test_docker_py_run(berthd: Berthd) -> None:
    client = berthd.client()
    try:
        assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
        c = client.containers.run(
            "busybox", ["sh", "-c", "echo one; sleep 0.3; echo two"], detach=True
        )
        try:
            lines = list(c.logs(stream=True))
            assert b"".join(lines) == b"one\ntwo\n"
            assert c.wait()["StatusCode"] == 0
            c.reload()
            assert c.status == "exited"
        finally:
            c.remove(force=True)
        c = client.containers.run("busybox", "sleep 30", detach=True)
        try:
            result = c.exec_run("sh -c 'echo from exec; exit 4'")
            assert result.exit_code == 4 and result.output == b"from exec\n"
            sock = c.attach_socket(params={"stdout": 1, "stdin": 1, "stream": 1})
            c.exec_run("sh -c 'echo via-attach > /proc/1/fd/1'")
            raw = sock._sock  # docker-py hands back a SocketIO over the hijacked socket
            raw.settimeout(10)
            got = b""
            while b"via-attach" not in got:
                chunk = raw.recv(4096)
                assert chunk, "attach stream ended early"
                got += chunk
            assert got.startswith(b"\x01\x00\x00\x00")  # a stdout frame
            sock.close()
            raw.close()
        finally:
            c.remove(force=True)
    finally:
        client.close()


def test_output_nobody_reads_is_drained_into_the_log(berthd: Berthd, cleanup: list[str]) -> None:
    """100 MB with nobody attached: the container never blocks and the log keeps every byte."""
    lines = 1_000_000
    script = f'BEGIN{{for(i=0;i<{lines};i++) printf "%099d\\n", i}}'
    name = unique_name("drained")
    cleanup.append(name)  # named first: a failed start leaves the created container
    cid = berthd.docker("run", "-d", "--name", name, "busybox", "awk", script).stdout.strip()
    assert berthd.docker("wait", cid, timeout=300).stdout.strip() == "0"
    expected = hashlib.sha256()
    for i in range(lines):
        expected.update(b"%099d\n" % i)
    got = hashlib.sha256()
    size = 0
    with subprocess.Popen(
        [DOCKER, "logs", cid], env=berthd.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            got.update(chunk)
            size += len(chunk)
    assert proc.returncode == 0
    assert size == 100 * lines
    assert got.hexdigest() == expected.hexdigest()


def test_seccomp_profiles(berthd: Berthd, tmp_path: Path) -> None:
    def seccomp_mode(*args: str) -> str:
        out = berthd.docker("run", "--rm", *args, "busybox", "cat", "/proc/self/status").stdout
        return re.findall(r"^Seccomp:\s*(\d)$", out, re.M)[0]

    assert seccomp_mode() == "2"  # Docker's default profile, as a filter
    assert seccomp_mode("--security-opt", "seccomp=unconfined") == "0"
    assert seccomp_mode("--privileged") == "0"
    no_mkdir = tmp_path / "no-mkdir.json"
    no_mkdir.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    denied = berthd.docker(
        "run",
        "--rm",
        "--security-opt",
        f"seccomp={no_mkdir}",
        "busybox",
        "mkdir",
        "/x",
        check=False,
    )
    assert denied.returncode == 1 and "Operation not permitted" in denied.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "BOGUS"}')
    refused = berthd.docker(
        "run", "--rm", "--security-opt", f"seccomp={bad}", "busybox", "true", check=False
    )
    assert refused.returncode == 125
    assert "invalid seccomp profile" in refused.stderr and "BOGUS" in refused.stderr


def test_lifecycle_answers_of_the_api(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("api-tty")
    cleanup.append(name)
    cid = berthd.docker("run", "-d", "-t", "--name", name, "busybox", "sh").stdout.strip()
    status, _, _ = berthd.request("POST", f"/containers/{cid}/start")
    assert status == 304
    status, _, body = berthd.request("POST", f"/containers/{cid}/kill?signal=SIGFOO")
    assert status == 400 and json.loads(body)["message"] == "invalid signal: SIGFOO"
    # Resize reaches the container's terminal.
    status, _, _ = berthd.request("POST", f"/containers/{cid}/resize?h=40&w=100")
    assert status == 200
    assert berthd.docker("exec", cid, "stty", "-F", "/dev/console", "size").stdout == "40 100\n"
    # A waiter gets its headers at once and may go away without harm.
    conn = berthd.http()
    conn.request("POST", f"/containers/{cid}/wait")
    resp = conn.getresponse()
    assert resp.status == 200  # while the container still runs
    conn.close()
    assert inspect(berthd, cid)["State"]["Running"]
    berthd.docker("stop", "-t", "0", cid)
    status, _, _ = berthd.request("POST", f"/containers/{cid}/stop")
    assert status == 304
    status, _, body = berthd.request(
        "POST",
        f"/containers/{cid}/exec",
        json.dumps({"Cmd": ["true"]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 409 and json.loads(body)["message"] == f"container {cid} is not running"


def test_attach_before_start_sees_all_output(berthd: Berthd, cleanup: list[str]) -> None:
    """What ``docker start -a`` and compose do: attach to a created container, then start."""
    cid = berthd.docker("create", "busybox", "sh", "-c", "echo first; echo second >&2").stdout
    cid = cid.strip()
    cleanup.append(cid)
    conn = berthd.http()
    conn.request(
        "POST",
        f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1",
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
    )
    resp = conn.getresponse()
    assert resp.status == 101
    berthd.docker("start", cid)
    frames: list[tuple[int, bytes]] = []
    raw = resp.fp  # the hijacked stream, after the 101 head
    while header := raw.read(8):
        frames.append((header[0], raw.read(int.from_bytes(header[4:], "big"))))
    conn.close()
    assert sorted(frames) == [(1, b"first\n"), (2, b"second\n")]
    filters = urllib.parse.quote(json.dumps({"container": [cid]}))
    status, _, body = berthd.request(
        "GET", f"/events?since=0&until={time.time():.9f}&filters={filters}"
    )
    assert status == 200
    actions = [json.loads(line)["Action"] for line in body.splitlines()]
    assert actions[:3] == ["create", "attach", "start"]


def test_privileged_gets_the_host_bounding_set(berthd: Berthd) -> None:
    def caps(*args: str) -> dict[str, str]:
        out = berthd.docker("run", "--rm", *args, "busybox", "cat", "/proc/self/status").stdout
        return dict(re.findall(r"^(Cap\w+):\s*(\w+)$", out, re.M))

    host = dict(re.findall(r"^(Cap\w+):\s*(\w+)$", Path("/proc/self/status").read_text(), re.M))
    privileged = caps("--privileged")
    assert privileged["CapEff"] == privileged["CapBnd"] == host["CapBnd"]
    default = caps()
    assert int(default["CapBnd"], 16) == 0xA80425FB  # Docker's 14 default capabilities


def test_stats(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("stats")
    cleanup.append(name)
    cid = berthd.docker(
        "run", "-d", "--name", name, "--memory", "64m", "busybox", "sh", "-c", "while :; do :; done"
    ).stdout.strip()

    # The CLI's --no-stream takes one answer of stream=false: two samples, so a CPU %.
    line = berthd.docker("stats", "--no-stream", "--format", "{{json .}}", cid).stdout
    row = json.loads(line)
    assert row["ID"] == cid[:12]
    assert float(row["CPUPerc"].rstrip("%")) > 0
    assert row["MemUsage"].endswith("/ 64MiB")
    assert row["PIDs"] == "1"
    assert row["NetIO"].count(" / ") == 1  # the bridge's counters (tests/e2e/test_stats_network)

    client = berthd.client()
    try:
        stats = client.containers.get(cid).stats(stream=False)
    finally:
        client.close()
    assert stats["id"] == cid and stats["name"].startswith("/")
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert stats["cpu_stats"]["system_cpu_usage"] > 0 and stats["cpu_stats"]["online_cpus"] >= 1
    assert stats["precpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert stats["precpu_stats"]["system_cpu_usage"] > 0
    assert stats["preread"] != "0001-01-01T00:00:00Z"
    assert stats["memory_stats"]["limit"] == 64 << 20
    assert stats["memory_stats"]["usage"] > 0
    assert stats["pids_stats"]["current"] == 1
    assert list(stats["networks"]) == ["eth0"]  # on the default bridge

    # The stream: one JSON object a line, each carrying the read time of the one before.
    conn = berthd.http()
    try:
        conn.request("GET", f"/containers/{cid}/stats")
        resp = conn.getresponse()
        assert resp.status == 200
        first = json.loads(resp.readline())
        second = json.loads(resp.readline())
    finally:
        conn.close()
    assert first["id"] == second["id"] == cid
    assert first["preread"] == "0001-01-01T00:00:00Z"
    assert second["preread"] == first["read"]
    assert parse_rfc3339(second["read"]) > parse_rfc3339(first["read"])

    status, _, _ = berthd.request("GET", f"/containers/{cid}/stats?stream=1&one-shot=1")
    assert status == 400
    status, _, _ = berthd.request("GET", "/containers/no-such-container/stats?stream=0")
    assert status == 404

    berthd.docker("stop", "-t", "0", cid)
    status, _, body = berthd.request("GET", f"/containers/{cid}/stats?stream=0")
    assert status == 200
    stopped = json.loads(body)
    assert stopped["id"] == cid and stopped["read"] == "0001-01-01T00:00:00Z"
    assert stopped["memory_stats"] == {} and stopped["pids_stats"] == {}


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(body):
        stream, size = struct.unpack(">BxxxL", body[pos : pos + 8])
        out.append((stream, body[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    return out


def test_logs_frames_per_message_except_for_the_cli(berthd: Berthd, cleanup: list[str]) -> None:
    """The docker CLI gets consecutive messages of a stream in one frame; other clients
    (docker-py's stream=True yields frames) get one frame per message, as from dockerd."""
    script = "for i in 1 2 3 4; do echo out$i; done; echo err1 >&2; echo err2 >&2"
    name = unique_name("frames")
    cleanup.append(name)
    cid = berthd.docker("run", "-d", "--name", name, "busybox", "sh", "-c", script).stdout.strip()
    assert berthd.docker("wait", cid).stdout.strip() == "0"
    path = f"/v1.51/containers/{cid}/logs?stdout=1&stderr=1"
    outs = [b"out1\n", b"out2\n", b"out3\n", b"out4\n"]
    errs = [b"err1\n", b"err2\n"]

    status, _, body = berthd.request("GET", path, headers={"User-Agent": "docker-sdk-python/7"})
    assert status == 200
    frames = _frames(body)
    assert [d for s, d in frames if s == 1] == outs
    assert [d for s, d in frames if s == 2] == errs

    status, _, body = berthd.request(
        "GET", path, headers={"User-Agent": "Docker-Client/28.2.2 (linux)"}
    )
    assert status == 200
    frames = _frames(body)
    assert b"".join(d for s, d in frames if s == 1) == b"".join(outs)
    assert b"".join(d for s, d in frames if s == 2) == b"".join(errs)
    assert len(frames) < len(outs) + len(errs)  # merged, never across streams

    client = berthd.client()
    try:
        lines = list(client.containers.get(cid).logs(stream=True, stderr=False))
    finally:
        client.close()
    assert lines == outs
    assert berthd.docker("logs", cid).stdout == "out1\nout2\nout3\nout4\n"
