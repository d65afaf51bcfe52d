"""``docker export`` with the real CLI, GNU tar and docker-py: the container's flattened
filesystem (image, init and RW layers) for created, running and stopped containers,
without its volumes and binds, symlinks never followed, streamed, and its layer
unmounted afterwards however the export ends."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, busybox_applets, unique_name, wait_for
from berth.testing import inspect_container as inspect

#: What the init layer adds to every container, as dockerd's does.
INIT_ENTRIES = {
    ".dockerenv",
    "dev/",
    "dev/console",
    "dev/pts/",
    "dev/shm/",
    "etc/",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
    "proc/",
    "sys/",
}


def export_bytes(d: Berthd, ref: str) -> bytes:
    proc = subprocess.run(
        ["timeout", "-s", "KILL", "120", DOCKER, "export", ref],
        env=d.env(),
        capture_output=True,
        timeout=130,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def gnu_tar_list(data: bytes) -> list[str]:
    """The names as GNU tar reads them: the stream is a valid tar for it too."""
    proc = subprocess.run(["tar", "-t"], input=data, capture_output=True, check=True)
    return proc.stdout.decode().splitlines()


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {(m.name + "/" if m.isdir() else m.name): m for m in tf.getmembers()}


def content(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        f = tf.extractfile(name)
        assert f is not None, name
        return f.read()


def busybox_entries() -> set[str]:
    """What ``busybox_rootfs_tar`` puts in the image."""
    out = {"bin/", "bin/busybox", "etc/", "etc/passwd", "etc/group", "tmp/", "root/", "home/"}
    out |= {"var/", "usr/", "usr/bin/"}
    return out | {f"bin/{a}" for a in busybox_applets()}


WRITE = (
    "echo hello > /hello.txt && mkdir -p /made/deep && echo deep > /made/deep/f && "
    "ln -s /etc/passwd /made/abs-link && ln -s / /made/root-link && "
    "ln /hello.txt /made/hard && rm /bin/vi && chmod 0751 /made"
)


def container_in(d: Berthd, state: str, cleanup: list[str]) -> str:
    """A container that wrote files (WRITE), running, stopped, or only created (its files
    copied in with docker cp, since it never ran)."""
    name = unique_name(f"export-{state}")
    cleanup.append(name)
    if state == "created":
        cid = d.docker("create", "--name", name, "busybox", "true").stdout.strip()
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as tf:
            info = tarfile.TarInfo("hello.txt")
            info.size = 6
            tf.addfile(info, io.BytesIO(b"hello\n"))
        subprocess.run(
            [DOCKER, "cp", "-", f"{cid}:/"], env=d.env(), input=tar.getvalue(), check=True
        )
        return cid
    if state == "running":
        cid = d.docker(
            "run", "-d", "--name", name, "busybox", "sh", "-c", f"{WRITE} && touch /ready && "
            "exec sleep 1000",
        ).stdout.strip()  # fmt: skip
        wait_for(lambda: d.docker("exec", cid, "test", "-e", "/ready", check=False).returncode == 0)
        return cid
    d.docker("run", "--name", name, "busybox", "sh", "-c", WRITE)
    return inspect(d, name)["Id"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("state", ["running", "stopped", "created"])
def test_export_is_the_flattened_filesystem(berthd: Berthd, cleanup: list[str], state: str) -> None:
    cid = container_in(berthd, state, cleanup)
    data = export_bytes(berthd, cid)
    names = gnu_tar_list(data)
    assert len(names) == len(set(names))
    # dockerd's TarWithOptions: relative names, directories with a slash, no root entry,
    # each directory before what is in it, names in order within a directory.
    assert all(not n.startswith(("/", "./")) for n in names)
    assert names.index("bin/") < names.index("bin/busybox")
    assert names == sorted(names, key=lambda n: n.rstrip("/").split("/"))
    got = set(names)
    expected = busybox_entries() | INIT_ENTRIES | {"hello.txt"}
    if state != "created":
        expected |= {"made/", "made/deep/", "made/deep/f", "made/abs-link", "made/root-link"}
        expected |= {"made/hard", "ready"} if state == "running" else {"made/hard"}
        expected.discard("bin/vi")
    assert got == expected, (sorted(got - expected), sorted(expected - got))
    m = members(data)
    assert content(data, "hello.txt") == b"hello\n"
    assert m["bin/busybox"].size == os.path.getsize("/bin/busybox")
    assert content(data, "bin/busybox") == Path("/bin/busybox").read_bytes()
    assert m["etc/mtab"].issym() and m["etc/mtab"].linkname == "/proc/mounts"
    assert m["dev/console"].isfile() and m[".dockerenv"].isfile()
    if state != "created":
        # Links are archived as links, never followed (not to /etc/passwd, not to /).
        assert m["made/abs-link"].issym() and m["made/abs-link"].linkname == "/etc/passwd"
        assert m["made/root-link"].issym() and m["made/root-link"].linkname == "/"
        assert m["made/hard"].islnk() and m["made/hard"].linkname == "hello.txt"
        assert m["made/"].mode == 0o751
        assert content(data, "made/deep/f") == b"deep\n"
    assert inspect(berthd, cid)["State"]["Status"] == {"stopped": "exited"}.get(state, state)


def test_export_leaves_out_volumes_and_binds(
    berthd: Berthd, cleanup: list[str], volume_cleanup: list[str], tmp_path: Path
) -> None:
    vol = unique_name("export-vol")
    volume_cleanup.append(vol)
    (tmp_path / "host-secret").write_text("from the host\n")
    name = unique_name("export-mounts")
    cleanup.append(name)
    berthd.docker(
        "run", "--name", name, "-v", f"{vol}:/data", "-v", f"{tmp_path}:/bound",
        "busybox", "sh", "-c", "echo inside > /data/in-volume && echo layer > /in-layer",
    )  # fmt: skip
    names = set(gnu_tar_list(export_bytes(berthd, name)))
    assert "in-layer" in names
    # The mount points are in the root filesystem (runc made them), empty as dockerd has them.
    assert "data/" in names and "bound/" in names
    assert not any(
        n.startswith(("data/", "bound/")) and n not in ("data/", "bound/") for n in names
    )
    # The volume still has its file: it was left out, not lost.
    out = berthd.docker("run", "--rm", "-v", f"{vol}:/v", "busybox", "cat", "/v/in-volume").stdout
    assert out == "inside\n"


def test_export_o_writes_the_file_and_sends_the_event(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    cid = container_in(berthd, "stopped", cleanup)
    since = str(time.time() - 1)
    dest = tmp_path / "out.tar"
    berthd.docker("export", "-o", str(dest), cid)
    assert dest.read_bytes() == export_bytes(berthd, cid)
    assert "made/deep/f" in gnu_tar_list(dest.read_bytes())
    events = berthd.docker(
        "events", "--since", since, "--until", str(time.time() + 1),
        "--filter", f"container={cid}", "--filter", "event=export", "--format", "{{json .}}",
    ).stdout.splitlines()  # fmt: skip
    assert len(events) == 2
    ev = json.loads(events[0])
    assert ev["Type"] == "container" and ev["Action"] == "export" and ev["Actor"]["ID"] == cid
    assert ev["Actor"]["Attributes"]["image"] == "busybox"


def test_export_of_a_big_file_streams_it_whole(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("export-big")
    cleanup.append(name)
    berthd.docker(
        "run", "--name", name, "busybox", "sh", "-c",
        "dd if=/dev/urandom of=/big bs=1M count=24 2>/dev/null && sha256sum /big > /big.sum",
    )  # fmt: skip
    data = export_bytes(berthd, name)
    want = content(data, "big.sum").split()[0].decode()
    assert hashlib.sha256(content(data, "big")).hexdigest() == want
    assert members(data)["big"].size == 24 << 20


def test_export_of_a_missing_container_is_404(berthd: Berthd) -> None:
    proc = berthd.docker("export", "no-such-container-x", check=False)
    assert proc.returncode != 0
    assert "No such container: no-such-container-x" in proc.stderr
    status, _, body = berthd.request("GET", "/containers/no-such-container-x/export")
    assert status == 404
    assert json.loads(body) == {"message": "No such container: no-such-container-x"}


def test_export_unmounts_when_done_or_cut(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    """A created container's layer is mounted only for the export: unmounted after a
    whole export, and after a client that goes away in the middle of one (32 MiB are
    more than the pipe and the socket hold, so the daemon is still writing)."""
    cid = container_in(berthd, "created", cleanup)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(32 << 20))
    berthd.docker("cp", str(big), f"{cid}:/big")
    merged = inspect(berthd, cid)["GraphDriver"]["Data"]["MergedDir"]
    assert merged not in berthd.mounts()
    export_bytes(berthd, cid)
    assert merged not in berthd.mounts()

    sock = socket.socket(socket.AF_UNIX)
    sock.connect(berthd.sock)
    sock.sendall(f"GET /containers/{cid}/export HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Type: application/octet-stream" in head
    wait_for(lambda: merged in berthd.mounts(), what="the export's mount")
    sock.close()  # after the first bytes, before the end: the pipe breaks
    wait_for(lambda: merged not in berthd.mounts(), what="the layer unmounted after a cut")
    # The container is untouched and can be exported again.
    assert "hello.txt" in gnu_tar_list(export_bytes(berthd, cid))


def test_docker_py_export(berthd: Berthd, cleanup: list[str]) -> None:
    cid = container_in(berthd, "running", cleanup)
    client = berthd.client()
    try:
        container = client.containers.get(cid)
        data = b"".join(container.export(chunk_size=1 << 16))
    finally:
        client.close()
    m = members(data)
    assert content(data, "made/deep/f") == b"deep\n"
    assert "bin/vi" not in m and "bin/busybox" in m
