"""Containers: create, ps, inspect, rename, rm, prune — with the docker CLI and docker-py."""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect

NAME_RE = re.compile(r"^[a-z]+_[a-z]+\d?$")


def create(d: Berthd, *args: str) -> str:
    return d.docker("create", *args).stdout.strip()


def test_create_records_every_common_flag(
    berthd: Berthd, tmp_path: Path, cleanup: list[str], volume_cleanup: list[str]
) -> None:
    name, volume = unique_name("everything"), unique_name("named")
    cleanup.append(name)
    volume_cleanup.append(volume)
    envfile = tmp_path / "env"
    envfile.write_text("FROM_FILE=1\n# comment\n")
    labelfile = tmp_path / "labels"
    labelfile.write_text("from.file=yes\n")
    bindsrc = tmp_path / "src"
    bindsrc.mkdir()
    cid = create(
        berthd,
        "--name", name,
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
        # -p is refused on a bridge container (see test_refused.py); --expose is recorded.
        "--expose", "80/tcp", "--expose", "53/udp", "--expose", "9000",
        "-v", f"{bindsrc}:/in:ro", "-v", f"{volume}:/named", "-v", "/anon",
        "--mount", f"type=bind,source={bindsrc},target=/m",
        "--memory", "64m", "--cpus", "1.5", "--cpu-shares", "512", "--pids-limit", "100",
        "--ulimit", "nofile=1024:2048",
        "--cap-add", "net_admin", "--cap-drop", "mknod",
        "--read-only", "--init",
        "busybox", "-c", "echo hi",
    ).strip()  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    c = inspect(berthd, name)
    cfg, hc = c["Config"], c["HostConfig"]
    assert c["Id"] == cid and c["Name"] == f"/{name}"
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
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["MemorySwap"] == 128 * 1024 * 1024
    assert hc["NanoCpus"] == 1_500_000_000 and hc["CpuShares"] == 512
    assert hc["PidsLimit"] == 100
    assert hc["Ulimits"] == [{"Name": "nofile", "Hard": 2048, "Soft": 1024}]
    assert hc["CapAdd"] == ["CAP_NET_ADMIN"] and hc["CapDrop"] == ["CAP_MKNOD"]
    assert hc["ReadonlyRootfs"] and hc["Init"] is True
    binds = [f"{bindsrc}:/in:ro", f"{volume}:/named"]
    assert sorted(hc["Binds"]) == sorted(binds)  # CLI order varies
    assert hc["ShmSize"] == 64 * 1024 * 1024
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert hc["NetworkMode"] == "bridge"
    assert "/proc/kcore" in hc["MaskedPaths"] and "/proc/sys" in hc["ReadonlyPaths"]
    mounts = {m["Destination"]: m for m in c["Mounts"]}
    assert mounts["/in"] == {
        "Type": "bind", "Source": str(bindsrc), "Destination": "/in", "Mode": "ro", "RW": False,
        "Propagation": "rprivate",
    }  # fmt: skip
    assert mounts["/named"]["Type"] == "volume" and mounts["/named"]["Name"] == volume
    assert mounts["/named"]["Source"] == str(berthd.data_root / f"volumes/{volume}/_data")
    assert mounts["/anon"]["Type"] == "volume" and re.fullmatch(
        r"[0-9a-f]{64}", mounts["/anon"]["Name"]
    )
    assert mounts["/m"]["Type"] == "bind" and mounts["/m"]["RW"] is True
    assert c["State"]["Status"] == "created"
    assert c["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", c["Created"])
    assert c["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""


def test_image_config_is_merged_into_the_user_config(
    berthd: Berthd, busybox_tar: Path, cleanup: list[str], image_cleanup: list[str]
) -> None:
    image = unique_name("merged") + ":1"
    image_cleanup.append(image)
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
        str(busybox_tar), image,
    )  # fmt: skip
    cid = create(berthd, "-e", "SHARED=user", "-l", "shared=user", "--expose", "81", image)
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
    cid2 = create(berthd, "--entrypoint", "echo", image)
    cleanup.append(cid2)
    c2 = inspect(berthd, cid2)
    assert c2["Config"]["Cmd"] is None and c2["Path"] == "echo" and c2["Args"] == []


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
    taken = unique_name("taken")
    cleanup.append(taken)
    create(berthd, "--name", taken, "busybox")
    holder = inspect(berthd, taken)["Id"]
    before = set(os.listdir(berthd.data_root / "overlay2"))
    containers_before = berthd.docker("ps", "-aq", "--no-trunc").stdout
    cases = [
        (["--name", taken, "busybox"], f'Conflict. The container name "/{taken}" is already in use by container "{holder}"'),
        (["--name", "bad!name", "busybox"], "Invalid container name (bad!name)"),
        # The 404 makes the CLI pull; from a port where nothing listens, never Docker Hub.
        (["127.0.0.1:1/nosuch"], "Unable to find image '127.0.0.1:1/nosuch:latest' locally"),
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
    assert berthd.docker("ps", "-aq", "--filter", f"since={taken}").stdout == ""


def test_create_errors_raw_api(berthd: Berthd, cleanup: list[str]) -> None:
    hdrs = {"Content-Type": "application/json"}
    made: list[str] = []

    def post(body: dict[str, Any], query: str = "") -> tuple[int, str]:
        status, _, raw = berthd.request(
            "POST", "/v1.51/containers/create" + query, json.dumps(body).encode(), hdrs
        )
        answer = json.loads(raw) if raw else {}
        if status == 201:  # the container is this test's, whatever it asserts next
            made.append(answer["Id"])
            cleanup.append(answer["Id"])
        return status, answer.get("message", "")

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
    (cid,) = made
    assert inspect(berthd, cid)["Config"]["Cmd"] == ["echo hi"]


def test_ps_columns_and_filters(
    berthd: Berthd, cleanup: list[str], volume_cleanup: list[str]
) -> None:
    p, vol = unique_name("ps"), unique_name("vol")
    a_name, b_name, c_name = f"{p}-a", f"{p}-b", f"{p}-c"
    cleanup.extend([a_name, b_name, c_name])
    volume_cleanup.append(vol)
    create(
        berthd, "--name", a_name, "-l", "role=web", "-v", f"{vol}:/data", "busybox", "sleep", "1"
    )
    b = create(berthd, "--name", b_name, "-l", "role=db", "--expose", "5432", "busybox", "echo", "two words")  # fmt: skip
    c = create(berthd, "--name", c_name, "busybox")
    mine = ("--filter", f"name={p}-")  # other tests' containers share the daemon

    def ps(*args: str) -> list[str]:
        return berthd.docker("ps", "-a", "--format", "{{.Names}}", *mine, *args).stdout.split()

    assert ps() == [c_name, b_name, a_name]
    assert ps("--filter", "label=role=web") == [a_name]
    assert ps("--filter", "label=role") == [b_name, a_name]
    assert ps("--filter", f"id={b[:10]}") == [b_name]
    assert ps("--filter", "status=created") == [c_name, b_name, a_name]
    assert ps("--filter", "status=running") == []
    assert ps("--filter", "ancestor=busybox") == [c_name, b_name, a_name]
    assert ps("--filter", f"before={b_name}") == [a_name]
    assert ps("--filter", f"since={b_name}") == [c_name]
    assert ps("--filter", "volume=/data") == [a_name]
    assert ps("--filter", f"volume={vol}") == [a_name]
    assert ps("--filter", "network=bridge") == [c_name, b_name, a_name]
    assert ps("--filter", "health=none") == [c_name, b_name, a_name]
    assert ps("--filter", "exited=0") == []
    assert ps("--filter", "expose=5432") == []  # ports appear once a container runs
    assert berthd.docker("ps", "-q", *mine).stdout == ""  # none of them is running
    assert berthd.docker("ps", "-aq", "-n", "2", *mine).stdout.split() == [c[:12], b[:12]]
    assert berthd.docker("ps", "-aq", "--no-trunc", "-l", *mine).stdout.split() == [c]
    row = json.loads(
        berthd.docker(
            "ps", "-a", "--no-trunc", "--filter", f"name={b_name}", "--format", "{{json .}}"
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
    old, new = unique_name("before-rename"), unique_name("after-rename")
    cid = create(berthd, "--name", old, "busybox")
    cleanup.append(cid)
    berthd.docker("rename", old, new)
    assert inspect(berthd, cid)["Name"] == f"/{new}"
    assert berthd.docker("inspect", old, check=False).returncode == 1
    # The old name is free again.
    other = create(berthd, "--name", old, "busybox")
    cleanup.append(other)
    proc = berthd.docker("rename", new, old, check=False)
    assert "Error when allocating new name: Conflict." in proc.stderr
    proc = berthd.docker("rename", new, new, check=False)
    assert "Renaming a container with the same name as its current name" in proc.stderr
    rw_dir = Path(inspect(berthd, cid)["GraphDriver"]["Data"]["UpperDir"]).parent
    berthd.docker("rm", "-v", new)
    assert not rw_dir.exists() and not Path(str(rw_dir) + "-init").exists()
    assert not (berthd.data_root / "containers" / cid).exists()
    assert not (berthd.data_root / "image/overlay2/layerdb/mounts" / cid).exists()
    # they were renamed into the trash, which the reaper then empties
    wait_for(lambda: not any((berthd.data_root / "trash").iterdir()), what="the trash emptied")
    proc = berthd.docker("rm", new, check=False)
    assert f"No such container: {new}" in proc.stderr


def test_container_prune(berthd: Berthd, cleanup: list[str]) -> None:
    """Prune only what carries this test's label: the daemon holds other tests' containers."""
    label = unique_name("prune-me")
    keep = create(berthd, "-l", f"{label}-not", "busybox")
    cleanup.append(keep)
    gone = [create(berthd, "-l", label, "busybox") for _ in range(2)]
    cleanup.extend(gone)  # still removed if the prune fails
    out = berthd.docker("container", "prune", "-f", "--filter", f"label={label}").stdout
    assert sorted(out.split()[2:4]) == sorted(gone)  # "Deleted Containers:" then the IDs
    assert "Total reclaimed space" in out
    remaining = berthd.docker("ps", "-aq", "--no-trunc").stdout.split()
    assert keep in remaining and not set(gone) & set(remaining)
    nothing = urllib.parse.quote(json.dumps({"label": {unique_name("nothing-has-this"): True}}))
    status, _, raw = berthd.request("POST", "/containers/prune?filters=" + nothing)
    assert status == 200 and json.loads(raw) == {"ContainersDeleted": None, "SpaceReclaimed": 0}


def test_docker_py_containers(berthd: Berthd, cleanup: list[str]) -> None:
    import docker.errors

    name, renamed, label = unique_name("docker-py"), unique_name("renamed"), unique_name("py")
    client = berthd.client()
    try:
        c = client.containers.create(
            "busybox",
            ["echo", "py"],
            name=name,
            labels={label: "1"},
            environment={"X": "1"},
        )
        cleanup.append(c.id)
        assert c.name == name
        assert c.status == "created"
        assert c.attrs["Config"]["Env"][0] == "X=1"
        listed = client.containers.list(all=True, filters={"label": f"{label}=1"})
        assert [x.id for x in listed] == [c.id]
        c.rename(renamed)
        c.reload()
        assert c.name == renamed
        assert client.containers.get(c.id[:12]).id == c.id
        with pytest.raises(docker.errors.APIError) as err:
            client.containers.create("busybox", name=renamed)
        assert err.value.status_code == 409
        with pytest.raises(docker.errors.ImageNotFound):
            client.containers.create("no-such-image:9")
        c.remove()
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(c.id)
    finally:
        client.close()
