"""Containers: create, ps, inspect, rename, rm, prune — with the docker CLI and docker-py."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd
from berth.testing import inspect_container as inspect

NAME_RE = re.compile(r"^[a-z]+_[a-z]+\d?$")


def create(d: Berthd, *args: str) -> str:
    return d.docker("create", *args).stdout.strip()


def test_create_records_every_common_flag(
    berthd: Berthd, tmp_path: Path, cleanup: list[str]
) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("FROM_FILE=1\n# comment\n")
    labelfile = tmp_path / "labels"
    labelfile.write_text("from.file=yes\n")
    bindsrc = tmp_path / "src"
    bindsrc.mkdir()
    cid = create(
        berthd,
        "--name", "everything",
        "-e", "A=1", "--env-file", str(envfile),
        "-w", "/tmp",
        "-u", "1000:1000",
        "--entrypoint", "/bin/sh",
        "-l", "x=y", "--label-file", str(labelfile),
        "--hostname", "myhost",
        "-t", "-i",
        "--stop-signal", "SIGUSR1", "--stop-timeout", "7",
        "--restart", "on-failure:3",
        "--health-cmd", "true", "--health-interval", "30s", "--health-retries", "4",
        "-p", "127.0.0.1:8080:80/tcp", "-p", "5353:53/udp", "--expose", "9000",
        "-v", f"{bindsrc}:/in:ro", "-v", "named:/named", "-v", "/anon",
        "--mount", f"type=bind,source={bindsrc},target=/m",
        "--memory", "64m", "--cpus", "1.5", "--cpu-shares", "512", "--pids-limit", "100",
        "--ulimit", "nofile=1024:2048",
        "--cap-add", "net_admin", "--cap-drop", "mknod",
        "--read-only", "--init",
        "busybox", "-c", "echo hi",
    ).strip()  # fmt: skip
    cleanup.append(cid)
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    c = inspect(berthd, "everything")
    cfg, hc = c["Config"], c["HostConfig"]
    assert c["Id"] == cid and c["Name"] == "/everything"
    assert c["Path"] == "/bin/sh" and c["Args"] == ["-c", "echo hi"]
    assert cfg["Entrypoint"] == ["/bin/sh"] and cfg["Cmd"] == ["-c", "echo hi"]
    assert cfg["Env"] == ["FROM_FILE=1", "A=1"]  # the CLI puts --env-file first
    assert cfg["Labels"] == {"x": "y", "from.file": "yes"}
    assert cfg["WorkingDir"] == "/tmp" and cfg["User"] == "1000:1000"
    assert cfg["Hostname"] == "myhost"
    assert cfg["Tty"] and cfg["OpenStdin"] and cfg["StdinOnce"] and cfg["AttachStdin"]
    assert cfg["StopSignal"] == "SIGUSR1" and cfg["StopTimeout"] == 7
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 30_000_000_000,
        "Retries": 4,
    }
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}
    assert cfg["Image"] == "busybox"
    assert hc["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "", "HostPort": "5353"}],
    }
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["MemorySwap"] == 128 * 1024 * 1024
    assert hc["NanoCpus"] == 1_500_000_000 and hc["CpuShares"] == 512
    assert hc["PidsLimit"] == 100
    assert hc["Ulimits"] == [{"Name": "nofile", "Hard": 2048, "Soft": 1024}]
    assert hc["CapAdd"] == ["CAP_NET_ADMIN"] and hc["CapDrop"] == ["CAP_MKNOD"]
    assert hc["ReadonlyRootfs"] and hc["Init"] is True
    assert sorted(hc["Binds"]) == sorted([f"{bindsrc}:/in:ro", "named:/named"])  # CLI order varies
    assert hc["ShmSize"] == 64 * 1024 * 1024
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert hc["NetworkMode"] == "bridge"
    assert "/proc/kcore" in hc["MaskedPaths"] and "/proc/sys" in hc["ReadonlyPaths"]
    mounts = {m["Destination"]: m for m in c["Mounts"]}
    assert mounts["/in"] == {
        "Type": "bind", "Source": str(bindsrc), "Destination": "/in", "Mode": "ro", "RW": False,
        "Propagation": "rprivate",
    }  # fmt: skip
    assert mounts["/named"]["Type"] == "volume" and mounts["/named"]["Name"] == "named"
    assert mounts["/named"]["Source"] == str(berthd.data_root / "volumes/named/_data")
    assert mounts["/anon"]["Type"] == "volume" and re.fullmatch(
        r"[0-9a-f]{64}", mounts["/anon"]["Name"]
    )
    assert mounts["/m"]["Type"] == "bind" and mounts["/m"]["RW"] is True
    assert c["State"]["Status"] == "created"
    assert c["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", c["Created"])
    assert c["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""


def test_image_config_is_merged_into_the_user_config(
    berthd: Berthd, busybox_tar: Path, cleanup: list[str]
) -> None:
    berthd.docker(
        "import",
        "--change", "ENV PATH=/bin IMG=1 SHARED=image",
        "--change", "LABEL from.image=1 shared=image",
        "--change", "WORKDIR /srv",
        "--change", "EXPOSE 80",
        "--change", "VOLUME /cache",
        "--change", 'CMD ["sleep", "5"]',
        "--change", "STOPSIGNAL SIGQUIT",
        "--change", "USER nobody",
        str(busybox_tar), "merged:1",
    )  # fmt: skip
    try:
        cid = create(berthd, "-e", "SHARED=user", "-l", "shared=user", "--expose", "81", "merged:1")
        cleanup.append(cid)
        cfg = inspect(berthd, cid)["Config"]
        assert cfg["Env"] == ["SHARED=user", "PATH=/bin", "IMG=1"]
        assert cfg["Labels"] == {"shared": "user", "from.image": "1"}
        assert cfg["Cmd"] == ["sleep", "5"] and cfg["Entrypoint"] is None
        assert cfg["WorkingDir"] == "/srv"
        assert cfg["ExposedPorts"] == {"81/tcp": {}, "80/tcp": {}}
        assert cfg["Volumes"] == {"/cache": {}}
        assert cfg["StopSignal"] == "SIGQUIT"
        assert cfg["User"] == "nobody"
        assert cfg["Hostname"] == cid[:12]
        # A user entrypoint drops the image's command.
        cid2 = create(berthd, "--entrypoint", "echo", "merged:1")
        cleanup.append(cid2)
        c2 = inspect(berthd, cid2)
        assert c2["Config"]["Cmd"] is None and c2["Path"] == "echo" and c2["Args"] == []
    finally:
        for ref in list(cleanup):
            berthd.docker("rm", "-f", ref, check=False)
        cleanup.clear()
        berthd.docker("rmi", "merged:1")


def test_create_makes_the_init_and_rw_layers(berthd: Berthd, cleanup: list[str]) -> None:
    cid = create(berthd, "busybox", "true")
    cleanup.append(cid)
    gd = inspect(berthd, cid)["GraphDriver"]
    assert gd["Name"] == "overlay2"
    data = gd["Data"]
    upper = Path(data["UpperDir"])
    lowers = [Path(p) for p in data["LowerDir"].split(":")]
    assert upper.is_dir() and Path(data["WorkDir"]).is_dir()
    assert upper.parent.parent == berthd.data_root / "overlay2"
    assert lowers[0].parent.name == upper.parent.name + "-init"
    init = lowers[0]
    for d in ("dev/pts", "dev/shm", "proc", "sys"):
        assert (init / d).is_dir() or (lowers[1] / d).is_dir(), d
    for f in (".dockerenv", "etc/resolv.conf", "etc/hosts", "etc/hostname", "dev/console"):
        st = os.lstat(init / f)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, f
    assert os.readlink(init / "etc/mtab") == "/proc/mounts"
    # The image layer below is the busybox layer.
    assert (lowers[1] / "bin" / "busybox").is_file()
    assert list(upper.iterdir()) == []
    # The short link names keep deep stacks inside a page of mount options.
    lower_file = (upper.parent / "lower").read_text()
    assert re.fullmatch(r"l/[A-Z2-7]{26}:l/[A-Z2-7]{26}", lower_file)


def test_random_names_and_ids(berthd: Berthd, cleanup: list[str]) -> None:
    ids = [create(berthd, "busybox") for _ in range(5)]
    cleanup.extend(ids)
    names = [inspect(berthd, i)["Name"] for i in ids]
    assert len(set(names)) == 5
    for name in names:
        assert NAME_RE.match(name[1:]), name
        assert name != "/boring_wozniak"
    for i in ids:
        assert re.fullmatch(r"[0-9a-f]{64}", i) and not i[:12].isdigit()


def test_create_errors(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    cleanup.append(create(berthd, "--name", "taken", "busybox"))
    holder = inspect(berthd, "taken")["Id"]
    before = set(os.listdir(berthd.data_root / "overlay2"))
    containers_before = berthd.docker("ps", "-aq", "--no-trunc").stdout
    cases = [
        (["--name", "taken", "busybox"], f'Conflict. The container name "/taken" is already in use by container "{holder}"'),
        (["--name", "bad!name", "busybox"], "Invalid container name (bad!name)"),
        # The 404 makes the CLI try a pull, which berth refuses for now.
        (["nosuch"], "Unable to find image 'nosuch:latest' locally"),
        (["--restart", "sometimes", "busybox"], "invalid restart policy: unknown policy 'sometimes'"),
        (["--restart", "always:3", "busybox"], "maximum retry count can only be used with 'on-failure'"),
        (["--rm", "--restart", "always", "busybox"], "conflicting options"),
        (["-w", "relative", "busybox"], "the working directory 'relative' is invalid"),
        (["--mount", f"type=bind,source={tmp_path}/nope,target=/x", "busybox"],
         f'invalid mount config for type "bind": bind source path does not exist: {tmp_path}/nope'),
        (["-v", "/a:/b:bogus", "busybox"], "invalid mode: bogus"),
        (["--memory", "1m", "busybox"], "Minimum memory limit allowed is 6MB"),
        (["--stop-signal", "SIGNOPE", "busybox"], "invalid signal: SIGNOPE"),
        # An empty entrypoint drops the image's command too, leaving nothing to run.
        (["--entrypoint", "", "busybox"], "no command specified"),
    ]  # fmt: skip
    for args, message in cases:
        proc = berthd.docker("create", *args, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
    # A refused create leaves no layers behind.
    assert set(os.listdir(berthd.data_root / "overlay2")) == before
    assert berthd.docker("ps", "-aq", "--no-trunc").stdout == containers_before


def test_create_errors_raw_api(berthd: Berthd) -> None:
    hdrs = {"Content-Type": "application/json"}

    def post(body: dict[str, Any], query: str = "") -> tuple[int, str]:
        status, _, raw = berthd.request(
            "POST", "/v1.51/containers/create" + query, json.dumps(body).encode(), hdrs
        )
        return status, json.loads(raw).get("message", "") if raw else ""

    assert post({"Image": "busybox", "Env": ["=bad"], "Cmd": ["true"]}) == (
        400,
        "invalid environment variable: =bad",
    )
    status, msg = post(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"PortBindings": {"x/tcp": []}}}
    )
    assert (status, msg) == (400, 'invalid port specification: "x"')
    status, msg = post({"Image": "busybox"}, "?name=a")
    assert status == 400 and "Invalid container name (a)" in msg
    status, msg = post({"Image": "scratchless"})
    assert (status, msg) == (404, "No such image: scratchless:latest")
    status, msg = post({"Image": "busybox", "Cmd": "echo hi"})
    assert status == 201  # a bare string is a one-element command, as in Go's StrSlice
    cid = json.loads(berthd.request("GET", "/containers/json?all=1&limit=1")[2])[0]["Id"]
    assert inspect(berthd, cid)["Config"]["Cmd"] == ["echo hi"]
    berthd.docker("rm", cid)


def test_ps_columns_and_filters(berthd: Berthd, tmp_path: Path, cleanup: list[str]) -> None:
    a = create(
        berthd, "--name", "ps-a", "-l", "role=web", "-v", "vol-a:/data", "busybox", "sleep", "1"
    )
    b = create(
        berthd,
        "--name",
        "ps-b",
        "-l",
        "role=db",
        "--expose",
        "5432",
        "busybox",
        "echo",
        "two words",
    )
    c = create(berthd, "--name", "ps-c", "busybox")
    cleanup.extend([a, b, c])

    def ps(*args: str) -> list[str]:
        return berthd.docker("ps", "-a", "--format", "{{.Names}}", *args).stdout.split()

    assert ps("--filter", "name=ps-")[:3] == ["ps-c", "ps-b", "ps-a"]
    assert ps("--filter", "label=role=web") == ["ps-a"]
    assert ps("--filter", "label=role", "--filter", "name=ps-") == ["ps-b", "ps-a"]
    assert ps("--filter", f"id={b[:10]}") == ["ps-b"]
    assert ps("--filter", "status=created", "--filter", "name=ps-") == ["ps-c", "ps-b", "ps-a"]
    assert ps("--filter", "status=running", "--filter", "name=ps-") == []
    assert ps("--filter", "ancestor=busybox", "--filter", "name=ps-") == ["ps-c", "ps-b", "ps-a"]
    assert ps("--filter", "before=ps-b", "--filter", "name=ps-") == ["ps-a"]
    assert ps("--filter", "since=ps-b", "--filter", "name=ps-") == ["ps-c"]
    assert ps("--filter", "volume=/data") == ["ps-a"]
    assert ps("--filter", "volume=vol-a") == ["ps-a"]
    assert ps("--filter", "network=bridge", "--filter", "name=ps-") == ["ps-c", "ps-b", "ps-a"]
    assert ps("--filter", "health=none", "--filter", "name=ps-") == ["ps-c", "ps-b", "ps-a"]
    assert ps("--filter", "exited=0", "--filter", "name=ps-") == []
    assert ps("--filter", "expose=5432") == []  # ports appear once a container runs
    assert berthd.docker("ps", "-q").stdout == ""  # nothing is running
    assert berthd.docker("ps", "-aq", "-n", "2").stdout.split() == [c[:12], b[:12]]
    assert berthd.docker("ps", "-aq", "--no-trunc", "-l").stdout.split() == [c]
    row = json.loads(
        berthd.docker(
            "ps", "-a", "--no-trunc", "--filter", "name=ps-b", "--format", "{{json .}}"
        ).stdout
    )
    assert row["Command"] == "\"echo 'two words'\""
    assert row["Status"] == "Created" and row["State"] == "created"
    assert row["Image"] == "busybox" and row["ID"] == b
    assert row["Labels"] == "role=db"
    bad = berthd.docker("ps", "--filter", "status=sleeping", check=False)
    assert "invalid filter 'status=sleeping'" in bad.stderr
    bad = berthd.docker("ps", "--filter", "colour=red", check=False)
    assert "invalid filter 'colour'" in bad.stderr


def test_rename_and_rm(berthd: Berthd, cleanup: list[str]) -> None:
    cid = create(berthd, "--name", "before-rename", "busybox")
    cleanup.append(cid)
    berthd.docker("rename", "before-rename", "after-rename")
    assert inspect(berthd, cid)["Name"] == "/after-rename"
    assert berthd.docker("inspect", "before-rename", check=False).returncode == 1
    # The old name is free again.
    other = create(berthd, "--name", "before-rename", "busybox")
    cleanup.append(other)
    proc = berthd.docker("rename", "after-rename", "before-rename", check=False)
    assert "Error when allocating new name: Conflict." in proc.stderr
    proc = berthd.docker("rename", "after-rename", "after-rename", check=False)
    assert "Renaming a container with the same name as its current name" in proc.stderr
    rw_dir = Path(inspect(berthd, cid)["GraphDriver"]["Data"]["UpperDir"]).parent
    berthd.docker("rm", "-v", "after-rename")
    assert not rw_dir.exists() and not Path(str(rw_dir) + "-init").exists()
    assert not (berthd.data_root / "containers" / cid).exists()
    assert not (berthd.data_root / "image/overlay2/layerdb/mounts" / cid).exists()
    proc = berthd.docker("rm", "after-rename", check=False)
    assert "No such container: after-rename" in proc.stderr


def test_container_prune(berthd: Berthd, cleanup: list[str]) -> None:
    keep = create(berthd, "-l", "keep=yes", "busybox")
    cleanup.append(keep)
    gone = [create(berthd, "-l", "prune-me=1", "busybox") for _ in range(2)]
    out = berthd.docker("container", "prune", "-f", "--filter", "label=prune-me").stdout
    assert sorted(out.split()[2:4]) == sorted(gone)  # "Deleted Containers:" then the IDs
    assert "Total reclaimed space" in out
    remaining = berthd.docker("ps", "-aq", "--no-trunc").stdout.split()
    assert keep in remaining and not set(gone) & set(remaining)
    status, _, raw = berthd.request(
        "POST", "/containers/prune?filters=" + '{"label":{"nothing-has-this":true}}'
    )
    assert status == 200 and json.loads(raw) == {"ContainersDeleted": None, "SpaceReclaimed": 0}


def test_docker_py_containers(berthd: Berthd) -> None:
    import docker.errors

    client = berthd.client()
    try:
        c = client.containers.create(
            "busybox",
            ["echo", "py"],
            name="from-docker-py",
            labels={"py": "1"},
            environment={"X": "1"},
        )
        assert c.name == "from-docker-py"
        assert c.status == "created"
        assert c.attrs["Config"]["Env"][0] == "X=1"
        listed = client.containers.list(all=True, filters={"label": "py=1"})
        assert [x.id for x in listed] == [c.id]
        c.rename("renamed-by-docker-py")
        c.reload()
        assert c.name == "renamed-by-docker-py"
        assert client.containers.get(c.id[:12]).id == c.id
        with pytest.raises(docker.errors.APIError) as err:
            client.containers.create("busybox", name="renamed-by-docker-py")
        assert err.value.status_code == 409
        with pytest.raises(docker.errors.ImageNotFound):
            client.containers.create("no-such-image:9")
        c.remove()
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(c.id)
    finally:
        client.close()
