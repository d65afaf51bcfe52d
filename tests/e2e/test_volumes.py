"""Volumes as objects (issue 12), through the real docker CLI, docker-py and Compose v2:
``docker volume create/ls/inspect/rm/prune``, volumes made by ``-v``/``--mount``/``VOLUME``,
dockerd's copy-up, option volumes (tmpfs, bind), ``docker inspect`` Mounts and the volume
events. What dockerd answers is taken from moby (``volume/service``, ``volume/local``,
``daemon/volumes*.go``) and docker/cli."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, busybox_rootfs_tar, inspect_container, unique_name, wait_for
from tests.e2e.compose import compose_binary

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")
ANONYMOUS = "com.docker.volume.anonymous"


def vinspect(d: Berthd, name: str) -> dict[str, Any]:
    return json.loads(d.docker("volume", "inspect", name).stdout)[0]


def vls(d: Berthd, *args: str) -> list[str]:
    return d.docker("volume", "ls", "-q", *args).stdout.split()


def vexists(d: Berthd, name: str) -> bool:
    return d.docker("volume", "inspect", name, check=False).returncode == 0


def _log_tail(d: Berthd, n: int = 20) -> str:
    return "\n".join(d.log().splitlines()[-n:])


def _volume_mounts(d: Berthd) -> list[str]:
    """Mounts berthd holds under its volumes directory."""
    vroot = str(d.data_root / "volumes") + "/"
    return [m for m in d.mounts() if m.startswith(vroot)]


# -- an image with owned content at /srv/app and a VOLUME -------------------------------


@pytest.fixture(scope="module")
def app_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox plus /srv/app (uid 1234, mode 0750) holding ``secret`` (uid 1234, gid 4321,
    mode 0640) and ``readme`` (root, 0644)."""
    path = busybox_rootfs_tar(tmp_path_factory.mktemp("appimg") / "app.tar")
    with tarfile.open(path, "a") as tf:
        for name, mode, uid in (("srv", 0o755, 0), ("srv/app", 0o750, 1234)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, uid
            tf.addfile(info)
        for name, data, mode, uid, gid in (
            ("srv/app/secret", b"s3cr3t\n", 0o640, 1234, 4321),
            ("srv/app/readme", b"read me\n", 0o644, 0, 0),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def app_image(berthd: Berthd, app_tar: Path) -> Iterator[str]:
    """The app tarball imported with ``VOLUME /data`` (made by ``docker import --change``)."""
    name = unique_name("volapp")
    berthd.docker(
        "import", "--change", 'CMD ["sh"]', "--change", "VOLUME /data", str(app_tar), name
    )
    yield name
    berthd.docker("rmi", "-f", name, check=False)


# -- docker volume create / ls / inspect ------------------------------------------------


def test_create_ls_inspect_and_filters(
    berthd: Berthd, volume_cleanup: list[str], cleanup: list[str]
) -> None:
    tag = unique_name("tag")
    a, b = unique_name("va"), unique_name("vb")
    volume_cleanup += [a, b]
    assert berthd.docker(
        "volume", "create", "-d", "local", "--label", f"{tag}=a", "--label", "color=red", a
    ).stdout == f"{a}\n"  # fmt: skip
    berthd.docker("volume", "create", "--label", f"{tag}=b", b)

    v = vinspect(berthd, a)
    assert v["Name"] == a and v["Driver"] == "local" and v["Scope"] == "local"
    assert v["Mountpoint"] == str(berthd.data_root / "volumes" / a / "_data")
    assert os.path.isdir(v["Mountpoint"])
    assert RFC3339.match(v["CreatedAt"]), v["CreatedAt"]
    assert v["Labels"] == {tag: "a", "color": "red"}
    assert not v.get("Options")

    # ls and its filters; all scoped by the test's own label so other volumes never count
    assert sorted(vls(berthd, "--filter", f"label={tag}")) == sorted([a, b])
    assert vls(berthd, "--filter", f"label={tag}=a") == [a]
    assert vls(berthd, "--filter", f"label={tag}", "--filter", "label=color=red") == [a]
    assert vls(berthd, "--filter", f"name={a}") == [a]
    assert sorted(vls(berthd, "--filter", f"label={tag}", "--filter", "driver=local")) == sorted(
        [a, b]
    )
    assert vls(berthd, "--filter", f"label={tag}", "--filter", "driver=nope") == []
    out = berthd.docker(
        "volume", "ls", "--filter", f"name={a}", "--format", "{{.Driver}}|{{.Name}}|{{.Labels}}"
    ).stdout
    assert out.startswith(f"local|{a}|") and f"{tag}=a" in out and "color=red" in out

    # dangling: b gets a user (a created, never started container still counts)
    user = unique_name("vuser")
    cleanup.append(user)
    berthd.docker("create", "--name", user, "-v", f"{b}:/x", "busybox", "true")
    dangling = ("--filter", f"label={tag}", "--filter")
    assert vls(berthd, *dangling, "dangling=true") == [a]
    assert vls(berthd, *dangling, "dangling=false") == [b]

    # creating an existing volume again is fine and changes nothing
    berthd.docker("volume", "create", a)
    assert vinspect(berthd, a)["Labels"] == {tag: "a", "color": "red"}


def test_volume_bad_name_and_bad_filter(berthd: Berthd) -> None:
    proc = berthd.docker("volume", "create", "a@b", check=False)
    assert proc.returncode == 1
    # moby's local driver validateName, wrapped by the volume service's OpErr ("create a@b:")
    assert proc.stderr.strip() == (
        'Error response from daemon: create a@b: "a@b" includes invalid characters for a '
        'local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended '
        "to pass a host directory, use absolute path"
    ), proc.stderr
    proc = berthd.docker("volume", "create", "x", check=False)
    assert proc.returncode == 1 and "volume name is too short" in proc.stderr, proc.stderr
    proc = berthd.docker("volume", "ls", "--filter", "colour=red", check=False)
    assert proc.returncode == 1 and "invalid filter 'colour'" in proc.stderr, proc.stderr
    proc = berthd.docker("volume", "inspect", unique_name("missing"), check=False)
    assert proc.returncode == 1 and "no such volume" in proc.stderr.lower(), proc.stderr


# -- docker volume rm -----------------------------------------------------------------


def test_rm_in_use_is_refused_and_force_on_missing_succeeds(
    berthd: Berthd, volume_cleanup: list[str], cleanup: list[str]
) -> None:
    vol, user = unique_name("vrm"), unique_name("vrmuser")
    volume_cleanup.append(vol)
    cleanup.append(user)
    cid = berthd.docker("create", "--name", user, "-v", f"{vol}:/x", "busybox", "true").stdout
    cid = cid.strip()
    proc = berthd.docker("volume", "rm", vol, check=False)
    assert proc.returncode == 1, proc
    # moby: OpErr{Op: "remove", Name, Err: errVolumeInUse, Refs: [container IDs]}
    assert proc.stderr.strip() == (
        f"Error response from daemon: remove {vol}: volume is in use - [{cid}]"
    ), proc.stderr
    assert vexists(berthd, vol)
    # -f never removes a volume in use either
    proc = berthd.docker("volume", "rm", "-f", vol, check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr, proc.stderr
    assert vexists(berthd, vol)
    # removing the container never deletes the named volume, even with -v
    berthd.docker("rm", "-v", user)
    assert vexists(berthd, vol)
    assert berthd.docker("volume", "rm", vol).stdout == f"{vol}\n"
    assert not vexists(berthd, vol)
    assert not (berthd.data_root / "volumes" / vol).exists()

    missing = unique_name("vmissing")
    proc = berthd.docker("volume", "rm", missing, check=False)
    assert proc.returncode == 1 and "no such volume" in proc.stderr.lower(), proc.stderr
    proc = berthd.docker("volume", "rm", "-f", missing, check=False)
    assert proc.returncode == 0, proc


# -- docker volume prune --------------------------------------------------------------


def test_prune_anonymous_only_unless_all(
    berthd: Berthd, volume_cleanup: list[str], cleanup: list[str]
) -> None:
    tag = unique_name("prune")
    named = unique_name("vpn")
    volume_cleanup.append(named)
    berthd.docker("volume", "create", "--label", tag, named)
    anon = berthd.docker("volume", "create", "--label", tag).stdout.strip()
    volume_cleanup.append(anon)
    assert ANONYMOUS in vinspect(berthd, anon)["Labels"]
    other = berthd.docker("volume", "create", "--label", f"{tag}x").stdout.strip()
    volume_cleanup.append(other)
    # an anonymous volume in use (by a stopped container) is never pruned
    user = unique_name("vpuser")
    cleanup.append(user)
    berthd.docker(
        "create", "--name", user, "--mount", f"type=volume,dst=/x,volume-label={tag}=",
        "busybox", "true",
    )  # fmt: skip
    used = inspect_container(berthd, user)["Mounts"][0]["Name"]
    assert sorted(vls(berthd, "--filter", f"label={tag}")) == sorted([named, anon, used])

    out = berthd.docker("volume", "prune", "--force", "--filter", f"label={tag}").stdout
    assert "Deleted Volumes:" in out and anon in out and named not in out, out
    assert "Total reclaimed space:" in out
    assert sorted(vls(berthd, "--filter", f"label={tag}")) == sorted([named, used])
    assert vexists(berthd, other)  # outside the label filter

    out = berthd.docker("volume", "prune", "-a", "-f", "--filter", f"label={tag}").stdout
    assert named in out and used not in out, out
    assert vls(berthd, "--filter", f"label={tag}") == [used]
    assert vexists(berthd, other)


def test_prune_with_docker_py(berthd: Berthd, volume_cleanup: list[str]) -> None:
    client = berthd.client()
    try:
        tag = unique_name("pypr")
        named = client.volumes.create(name=unique_name("vpy"), labels={tag: "1"})
        volume_cleanup.append(named.name)
        anon = client.volumes.create(labels={tag: "1"})
        volume_cleanup.append(anon.name)
        assert anon.attrs["Labels"] == {tag: "1", ANONYMOUS: ""}
        report = client.volumes.prune(filters={"label": tag})
        assert report["VolumesDeleted"] == [anon.name]
        report = client.volumes.prune(filters={"label": tag, "all": "true"})
        assert report["VolumesDeleted"] == [named.name]
        assert client.volumes.list(filters={"label": tag}) == []
    finally:
        client.close()


# -- volumes a container makes ----------------------------------------------------------


def test_run_makes_named_and_anonymous_volumes(
    berthd: Berthd, cleanup: list[str], volume_cleanup: list[str], app_image: str
) -> None:
    named = unique_name("vnamed")
    volume_cleanup.append(named)
    keep, drop = unique_name("vkeep"), unique_name("vdrop")
    cleanup += [keep, drop]
    assert not vexists(berthd, named)
    berthd.docker("create", "--name", keep, "-v", f"{named}:/n", "-v", "/anon", app_image)
    assert named in vls(berthd, "--filter", f"name={named}")  # right after create
    vols = {m["Destination"]: m for m in inspect_container(berthd, keep)["Mounts"]}
    assert set(vols) == {"/n", "/anon", "/data"}
    assert vols["/n"]["Name"] == named
    anon = [vols["/anon"]["Name"], vols["/data"]["Name"]]  # -v /anon and the image's VOLUME
    volume_cleanup += anon
    for name in anon:
        assert re.fullmatch(r"[0-9a-f]{64}", name), name
        assert vinspect(berthd, name)["Labels"] == {ANONYMOUS: ""}
    assert ANONYMOUS not in (vinspect(berthd, named)["Labels"] or {})

    # plain rm keeps every volume
    berthd.docker("rm", keep)
    for name in (named, *anon):
        assert vexists(berthd, name), name

    # rm -v removes the anonymous ones and never the named one
    berthd.docker("create", "--name", drop, "-v", f"{named}:/n", "-v", "/anon", app_image)
    vols = {m["Destination"]: m["Name"] for m in inspect_container(berthd, drop)["Mounts"]}
    berthd.docker("rm", "-v", drop)
    assert not vexists(berthd, vols["/anon"]) and not vexists(berthd, vols["/data"])
    assert vexists(berthd, named)

    # --rm removes the anonymous ones too (see the test below for when)
    tag = unique_name("vrmtag")
    berthd.docker(
        "run", "--rm", "-v", f"{named}:/n", "--mount", f"type=volume,dst=/a,volume-label={tag}=",
        app_image, "true",
    )  # fmt: skip
    wait_for(lambda: vls(berthd, "--filter", f"label={tag}") == [], what="--rm's volume gone")
    assert vexists(berthd, named)


def test_run_rm_removes_anonymous_volumes_before_it_returns(berthd: Berthd, tmp_path: Path) -> None:
    tag = unique_name("vrmnow")
    cidfile = tmp_path / "cid"
    since = time.time() - 1
    berthd.docker(
        "run", "--rm", "--cidfile", str(cidfile),
        "--mount", f"type=volume,dst=/a,volume-label={tag}=", "busybox", "true",
    )  # fmt: skip
    left = vls(berthd, "--filter", f"label={tag}")  # read before anything else waits
    cid = cidfile.read_text().strip()

    def destroyed() -> list[tuple[str, str]]:
        out = berthd.docker(
            "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
            "--filter", "event=destroy", "--format", "{{.Type}} {{.Actor.ID}}",
        ).stdout  # fmt: skip
        seen = [tuple(line.split()) for line in out.splitlines()]
        return seen if ("container", cid) in seen and any(t == "volume" for t, _ in seen) else []

    seen = wait_for(destroyed, what="both destroy events")
    mine = [(t, a) for t, a in seen if a == cid or t == "volume"]
    assert mine[-1] == ("container", cid), mine  # dockerd: the volume's destroy comes first
    assert left == [], left


# -- copy-up ------------------------------------------------------------------------------


def test_copy_up_into_a_new_volume(
    berthd: Berthd, volume_cleanup: list[str], app_image: str
) -> None:
    etc, app = unique_name("vetc"), unique_name("vapp")
    volume_cleanup += [etc, app]
    listed = berthd.docker("run", "--rm", "-v", f"{etc}:/etc", "busybox", "ls", "/etc").stdout
    assert {"passwd", "group"} <= set(listed.split()), listed
    seen = berthd.docker("run", "--rm", "-v", f"{etc}:/mnt", "busybox", "ls", "/mnt").stdout
    assert {"passwd", "group"} <= set(seen.split()), seen
    out = berthd.docker(
        "run", "--rm", "-v", f"{etc}:/mnt", "busybox", "head", "-1", "/mnt/passwd"
    ).stdout
    assert out == "root:x:0:0:root:/root:/bin/sh\n"

    # ownership and modes kept, the volume's root takes the directory's own
    berthd.docker("run", "--rm", "-v", f"{app}:/srv/app", app_image, "true")
    data = Path(vinspect(berthd, app)["Mountpoint"])
    st = (data / "secret").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 4321, 0o640)
    assert (data / "secret").read_bytes() == b"s3cr3t\n"
    st = data.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (1234, 0o750)
    out = berthd.docker(
        "run", "--rm", "-v", f"{app}:/v", "busybox", "stat", "-c", "%u:%g %a", "/v/secret"
    ).stdout
    assert out == "1234:4321 640\n"


def test_nocopy_and_a_non_empty_volume_is_never_overwritten(
    berthd: Berthd, volume_cleanup: list[str], app_image: str
) -> None:
    nocopy, full = unique_name("vnocopy"), unique_name("vfull")
    volume_cleanup += [nocopy, full]
    out = berthd.docker(
        "run", "--rm", "--mount", f"type=volume,src={nocopy},dst=/srv/app,volume-nocopy",
        app_image, "ls", "-A", "/srv/app",
    ).stdout  # fmt: skip
    assert out == ""
    assert os.listdir(vinspect(berthd, nocopy)["Mountpoint"]) == []
    # a volume with content of its own keeps exactly that
    berthd.docker("run", "--rm", "-v", f"{full}:/v", "busybox", "sh", "-c", "echo mine > /v/own")
    out = berthd.docker("run", "--rm", "-v", f"{full}:/srv/app", app_image, "ls", "/srv/app")
    assert out.stdout.split() == ["own"]
    data = Path(vinspect(berthd, full)["Mountpoint"])
    assert sorted(os.listdir(data)) == ["own"]
    assert (data / "own").read_text() == "mine\n"


# -- option volumes -------------------------------------------------------------------------


def test_tmpfs_option_volume(berthd: Berthd, volume_cleanup: list[str]) -> None:
    vol = unique_name("vtmpfs")
    volume_cleanup.append(vol)
    berthd.docker(
        "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", vol
    )
    assert vinspect(berthd, vol)["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    assert not _volume_mounts(berthd)  # mounted by its first user, not at create
    out = berthd.docker(
        "run", "--rm", "-v", f"{vol}:/x", "busybox", "sh", "-c",
        "grep ' /x ' /proc/mounts; df -k /x | tail -1; echo hi > /x/f",
    ).stdout.splitlines()  # fmt: skip
    assert out[0].split()[:3] == ["tmpfs", "/x", "tmpfs"], out
    assert "size=1024k" in out[0], out
    assert out[1].split()[1] == "1024", out  # total 1 MiB
    wait_for(lambda: not _volume_mounts(berthd), what="the tmpfs volume to be unmounted")
    # a tmpfs: what the container wrote went with the mount
    out = berthd.docker("run", "--rm", "-v", f"{vol}:/x", "busybox", "ls", "-A", "/x").stdout
    assert out == ""
    wait_for(lambda: not _volume_mounts(berthd), what="the tmpfs volume to be unmounted")
    berthd.docker("volume", "rm", vol)


def test_bind_option_volume(berthd: Berthd, volume_cleanup: list[str], tmp_path: Path) -> None:
    vol = unique_name("vbind")
    volume_cleanup.append(vol)
    (tmp_path / "hello").write_text("from the host\n")
    berthd.docker(
        "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={tmp_path}", vol
    )
    out = berthd.docker(
        "run", "--rm", "-v", f"{vol}:/x", "busybox", "sh", "-c", "cat /x/hello; echo back > /x/r"
    ).stdout
    assert out == "from the host\n"
    assert (tmp_path / "r").read_text() == "back\n"
    wait_for(lambda: not _volume_mounts(berthd), what="the bind volume to be unmounted")
    berthd.docker("volume", "rm", vol)
    # removing the volume never touches the bind source
    assert sorted(os.listdir(tmp_path)) == ["hello", "r"]


# -- docker inspect Mounts ------------------------------------------------------------------


def test_inspect_mounts_shape(
    berthd: Berthd, cleanup: list[str], volume_cleanup: list[str]
) -> None:
    vol, name = unique_name("vmnt"), unique_name("vmntc")
    volume_cleanup.append(vol)
    cleanup.append(name)
    berthd.docker(
        "create", "--name", name, "-v", f"{vol}:/x", "--mount", f"type=volume,src={vol},dst=/y,ro",
        "busybox", "true",
    )  # fmt: skip
    mounts = {m["Destination"]: m for m in inspect_container(berthd, name)["Mounts"]}
    source = str(berthd.data_root / "volumes" / vol / "_data")
    # moby's registerMountPoints: a local volume gets Mode "z" (setBindModeIfNull) whether it
    # came from -v or from --mount
    assert mounts["/x"] == {
        "Type": "volume", "Name": vol, "Source": source, "Destination": "/x",
        "Driver": "local", "Mode": "z", "RW": True, "Propagation": "",
    }  # fmt: skip
    assert mounts["/y"] == {
        "Type": "volume", "Name": vol, "Source": source, "Destination": "/y",
        "Driver": "local", "Mode": "z", "RW": False, "Propagation": "",
    }  # fmt: skip
    # the list endpoint (docker ps) shows the same mounts by name
    out = berthd.docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Mounts}}").stdout
    assert out.strip() == f"{vol},{vol}"


# -- events -----------------------------------------------------------------------------------


def test_volume_events(berthd: Berthd, volume_cleanup: list[str], tmp_path: Path) -> None:
    vol = unique_name("vev")
    volume_cleanup.append(vol)
    since = time.time() - 1
    cidfile = tmp_path / "cid"
    berthd.docker("run", "--rm", "--cidfile", str(cidfile), "-v", f"{vol}:/x", "busybox", "true")
    cid = cidfile.read_text().strip()
    berthd.docker("volume", "rm", vol)
    out = berthd.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
        "--filter", "type=volume", "--filter", f"volume={vol}", "--format", "{{json .}}",
    ).stdout  # fmt: skip
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["Action"] for e in events] == ["create", "mount", "unmount", "destroy"], events
    assert all(e["Type"] == "volume" and e["Actor"]["ID"] == vol for e in events)
    create, mount, unmount, destroy = events
    assert create["Actor"]["Attributes"]["driver"] == "local"
    assert mount["Actor"]["Attributes"] == {
        "container": cid, "destination": "/x", "driver": "local",
        "propagation": "", "read/write": "true",
    }  # fmt: skip
    assert unmount["Actor"]["Attributes"] == {"container": cid, "driver": "local"}
    assert destroy["Actor"]["Attributes"]["driver"] == "local"


# -- Compose v2 -------------------------------------------------------------------------------

COMPOSE = """\
services:
  writer:
    image: busybox:latest
    command: ["sh", "-c", "echo hello > /data/f"]
    volumes:
      - data:/data
volumes:
  data: {}
"""


def test_compose_named_volume(
    berthd: Berthd, cleanup: list[str], volume_cleanup: list[str], tmp_path: Path
) -> None:
    binary = compose_binary("v2")
    project = unique_name("cmpvol")
    vol = f"{project}_data"
    volume_cleanup.append(vol)
    cleanup.append(f"{project}-writer-1")
    (tmp_path / "compose.yaml").write_text(COMPOSE)

    def compose(*args: str) -> None:
        proc = subprocess.run(
            [binary, "-f", str(tmp_path / "compose.yaml"), "-p", project, *args],
            cwd=tmp_path, env=berthd.env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{args}: {proc.stderr}\n{_log_tail(berthd)}"

    try:
        compose("up", "-d")
        assert vls(berthd, "--filter", f"label=com.docker.compose.project={project}") == [vol]
        labels = vinspect(berthd, vol)["Labels"]
        assert labels["com.docker.compose.volume"] == "data"
        data = Path(vinspect(berthd, vol)["Mountpoint"])
        wait_for((data / "f").exists, what="the service's file")
        assert (data / "f").read_text() == "hello\n"
        compose("down")
        assert vexists(berthd, vol)
        out = berthd.docker("run", "--rm", "-v", f"{vol}:/d", "busybox", "cat", "/d/f").stdout
        assert out == "hello\n"
        compose("down", "-v")
        assert not vexists(berthd, vol)
    finally:
        subprocess.run(
            [binary, "-f", str(tmp_path / "compose.yaml"), "-p", project, "down", "-v", "-t", "0"],
            cwd=tmp_path, env=berthd.env(), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        for net in berthd.docker(
            "network", "ls", "-q", "--filter", f"name={project}"
        ).stdout.split():
            berthd.docker("network", "rm", net, check=False)
