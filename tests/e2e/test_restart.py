"""Persistence: a restarted berthd has everything it had; a killed one leaves no debris."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from berth.testing import DOCKER, Berthd
from tests.e2e.archives import docker_archive, layer_tar


def store_is_consistent(d: Berthd) -> None:
    """Every directory on disk is named by a record, and every record has its data."""
    data = d.data_root
    layerdb = data / "image/overlay2/layerdb"
    cache_ids = {(p / "cache-id").read_text().strip() for p in (layerdb / "sha256").iterdir()}
    rw_ids: set[str] = set()
    mounts = set()
    for m in (layerdb / "mounts").iterdir():
        mounts.add(m.name)
        rw_ids.add((m / "mount-id").read_text().strip())
        rw_ids.add((m / "init-id").read_text().strip())
    containers = set(os.listdir(data / "containers"))
    assert containers == mounts
    for c in containers:
        assert (data / "containers" / c / "config.v2.json").is_file()
        assert (data / "containers" / c / "hostconfig.json").is_file()
    overlay = set(os.listdir(data / "overlay2")) - {"l"}
    assert overlay == cache_ids | rw_ids
    links = set(os.listdir(data / "overlay2/l"))
    assert len(links) == len(overlay)
    for link in links:
        assert (data / "overlay2/l" / link).resolve().is_dir()
    for p in (
        layerdb / "sha256",
        layerdb / "mounts",
        data / "containers",
        data / "image/overlay2/imagedb/content/sha256",
    ):
        assert not [n for n in os.listdir(p) if n.startswith(".tmp-")]
    assert os.listdir(data / "tmp") == []
    assert d.mounts() == []


def many_files_layer(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n):
            info = tarfile.TarInfo(f"d{i % 100}/f{i}")
            payload = f"{i}".encode() * 50
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_everything_survives_a_restart(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    subprocess.run(
        [DOCKER, "load"],
        input=docker_archive([layer_tar({"x": "x"})], ["persist:1"]),
        env=d.env(),
        check=True,
        capture_output=True,
    )
    d.docker("tag", "persist:1", "persist:alias")
    ids = [
        d.docker(
            "create", "--name", "keeper", "-l", "a=b", "--expose", "80", "persist:1"
        ).stdout.strip(),
        d.docker("create", "busybox", "echo", "hi").stdout.strip(),
    ]

    def snapshot() -> tuple[str, str, str, str]:
        return (
            d.docker("inspect", *ids).stdout,
            d.docker("image", "inspect", "persist:1", "busybox").stdout,
            d.docker(
                "ps",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.Status}} {{.Ports}}",
            ).stdout,
            d.docker(
                "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Size}}"
            ).stdout,
        )

    before = snapshot()
    engine_id = json.loads(d.docker("info", "--format", "{{json .}}").stdout)["ID"]
    assert d.stop() == 0
    d.start()
    after = snapshot()
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[2] == before[2]
    assert after[3] == before[3]
    assert json.loads(d.docker("info", "--format", "{{json .}}").stdout)["ID"] == engine_id
    # Names are reserved again: the old name still conflicts.
    proc = d.docker("create", "--name", "keeper", "busybox", check=False)
    assert "is already in use" in proc.stderr
    store_is_consistent(d)


def test_sigkill_during_load_leaves_no_image_and_no_layer(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    archive = docker_archive([many_files_layer(30000)], ["interrupted:1"])
    before_dirs = set(os.listdir(d.data_root / "overlay2"))
    images_before = d.docker("images", "-aq", "--no-trunc").stdout
    proc = subprocess.Popen(
        [DOCKER, "load"],
        stdin=subprocess.PIPE,
        env=d.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(archive)
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while set(os.listdir(d.data_root / "overlay2")) == before_dirs:  # extraction started
        assert time.monotonic() < deadline, "the load never started extracting"
        time.sleep(0.005)
    d.kill()
    proc.wait(30)
    d.start()
    assert d.docker("images", "-aq", "--no-trunc").stdout == images_before
    assert set(os.listdir(d.data_root / "overlay2")) == before_dirs
    store_is_consistent(d)


def test_sigkill_during_creates_leaves_only_whole_containers(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    stop = threading.Event()
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()

    def hammer() -> None:
        while not stop.is_set():
            try:
                d.request("POST", "/containers/create", body, {"Content-Type": "application/json"})
            except OSError:
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(os.listdir(d.data_root / "containers")) < 15:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    d.kill()
    stop.set()
    for t in threads:
        t.join(30)
    d.start()
    listed = d.docker("ps", "-aq", "--no-trunc").stdout.split()
    assert len(listed) >= 10
    for cid in listed:
        json.loads(d.docker("inspect", cid).stdout)
    store_is_consistent(d)


def test_half_created_container_is_swept_at_start(fresh_berthd: Berthd) -> None:
    d = fresh_berthd
    cid = d.docker("create", "busybox").stdout.strip()
    keep = d.docker("create", "busybox").stdout.strip()
    rw = Path(
        json.loads(d.docker("inspect", cid).stdout)[0]["GraphDriver"]["Data"]["UpperDir"]
    ).parent
    d.stop()
    # What a crash between "layers made" and "config written" leaves behind.
    (d.data_root / "containers" / cid / "config.v2.json").unlink()
    # And an orphaned driver directory from an interrupted layer registration.
    orphan = d.data_root / "overlay2" / ("f" * 64)
    (orphan / "diff").mkdir(parents=True)
    d.start()
    assert d.docker("ps", "-aq", "--no-trunc").stdout.split() == [keep]
    assert not rw.exists() and not orphan.exists()
    assert not (d.data_root / "containers" / cid).exists()
    store_is_consistent(d)


def test_vfs_storage_driver(tmp_path: Path, busybox_tar: Path) -> None:
    from berth.testing import running_berthd

    with running_berthd(["--storage-driver", "vfs"], root=tmp_path / "vfs") as d:
        d.docker("import", str(busybox_tar), "busybox:latest")
        base = layer_tar({"etc/": None, "etc/a": "a", "etc/b": "b"})
        top = layer_tar({"etc/": None, "etc/.wh.a": ""})
        subprocess.run(
            [DOCKER, "load"],
            input=docker_archive([base, top], ["vfs:1"]),
            env=d.env(),
            check=True,
            capture_output=True,
        )
        info = json.loads(d.docker("info", "--format", "{{json .}}").stdout)
        assert info["Driver"] == "vfs"
        cid = d.docker("create", "vfs:1", "sh").stdout.strip()
        # vfs copies each parent: the top layer's directory is the whole filesystem.
        dirs = sorted((d.data_root / "vfs/dir").iterdir(), key=lambda p: p.stat().st_mtime)
        tops = [p for p in dirs if (p / "etc/b").exists() and not (p / "etc/a").exists()]
        assert tops, "the whiteout did not remove etc/a in the upper layer"
        init = [p for p in dirs if p.name.endswith("-init")]
        assert len(init) == 1 and os.readlink(init[0] / "etc/mtab") == "/proc/mounts"
        assert (init[0] / ".dockerenv").is_file()
        d.docker("rm", cid)
        d.docker("rmi", "vfs:1")
