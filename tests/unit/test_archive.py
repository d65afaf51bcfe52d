"""``docker cp`` through the daemon: the stat header, the response pipe, mounts released.

The daemon tests go through a Daemon on the fake runtime (vfs: mounting is
counted, not done); the file system rules are in test_archive_fs.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.api.archive import encode_stat
from berth.api.bodypipe import ResponsePipe
from berth.archive import GO_MODE_SYMLINK
from berth.types.container import Config, HostConfig, MountPoint, PathStat
from tests.unit.daemonharness import PROGRAMS, Harness, open_fds_under, rootfs_tar
from tests.unit.fakeruntime import FakeRuntime
from tests.unit.test_archive_fs import make_tar, needs_root, reg


# -- the stat header ------------------------------------------------------------------------------
def test_stat_header_is_base64_json_with_dockers_names() -> None:
    value = encode_stat(
        PathStat(
            name="ls",
            size=7,
            mode=GO_MODE_SYMLINK | 0o777,
            mtime="2024-01-02T03:04:05Z",
            link_target="/bin/busybox",
        )
    )
    raw = base64.b64decode(value, validate=True)
    assert raw == (
        b'{"name":"ls","size":7,"mode":134218239,"mtime":"2024-01-02T03:04:05Z",'
        b'"linkTarget":"/bin/busybox"}'
    )


# -- the response pipe ----------------------------------------------------------------------------
def test_response_pipe_streams_and_stops_the_producer_when_the_reader_goes() -> None:
    outcome: dict[str, object] = {}
    done = threading.Event()

    def produce(fd: int) -> None:
        try:
            for _ in range(1000):
                os.write(fd, b"z" * 65536)
            outcome["result"] = "finished"
        except BrokenPipeError:
            outcome["result"] = "broken pipe"
        finally:
            done.set()

    async def consume() -> int:
        pipe = ResponsePipe()
        pipe.start(produce, "test-producer")
        got = 0
        async for chunk in pipe:
            got += len(chunk)
            if got >= 1 << 20:
                break
        await pipe.aclose()
        return got

    assert asyncio.run(consume()) >= 1 << 20
    assert done.wait(20)
    assert outcome["result"] == "broken pipe"


def test_response_pipe_reads_to_the_end() -> None:
    async def consume() -> bytes:
        pipe = ResponsePipe()
        pipe.start(lambda fd: os.write(fd, b"all of it") and None, "test-producer")
        return b"".join([chunk async for chunk in pipe])

    assert asyncio.run(consume()) == b"all of it"


# -- through the daemon -----------------------------------------------------------------------
@pytest.fixture
def h() -> Iterator[Harness]:
    root = Path(tempfile.mkdtemp(prefix="berth-archive-"))
    fake = FakeRuntime(PROGRAMS)
    harness = Harness(root, fake, rootfs_tar(root / "rootfs.tar"))
    try:
        yield harness
    finally:
        harness.close()
        fake.shutdown()
        assert open_fds_under(root) == []
        shutil.rmtree(root, ignore_errors=True)


def archive_bytes(h: Harness, ref: str, path: str) -> tuple[PathStat, bytes]:
    archive = h.d.container_archive_path(ref, path)
    rfd, wfd = os.pipe()
    chunks: list[bytes] = []
    writer = threading.Thread(target=lambda: (archive.write_to(wfd), os.close(wfd)))
    writer.start()
    while data := os.read(rfd, 1 << 16):
        chunks.append(data)
    writer.join()
    os.close(rfd)
    return archive.stat, b"".join(chunks)


@needs_root
def test_daemon_copies_in_and_out_of_a_created_container_and_releases_the_layer(
    h: Harness,
) -> None:
    c = h.create("server", name="cp")
    _, sub = h.d.events.subscribe(lambda m: m.actor_id == c.id, lambda: None, None)
    assert h.mount_count(c) == 0
    h.d.container_extract_to_dir("cp", "/tmp", False, True, io.BytesIO(make_tar(reg("f", b"data"))))
    assert h.mount_count(c) == 0
    st = h.d.container_stat_path("cp", "/tmp/f")
    assert (st.name, st.size, st.mode, st.link_target) == ("f", 4, 0o644, "")
    stat_, raw = archive_bytes(h, "cp", "/tmp/f")
    assert stat_ == st
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        (m,) = tf.getmembers()
        f = tf.extractfile(m)
        assert f is not None and (m.name, f.read()) == ("f", b"data")
    assert h.mount_count(c) == 0
    h.d.events.unsubscribe(sub)
    # As dockerd: an event per archive and extraction, none for a stat.
    assert [m.action for m in sub.queue] == ["extract-to-dir", "archive-path"]
    assert sub.queue[0].attributes["name"] == "cp"


def test_daemon_errors_release_the_layer(h: Harness) -> None:
    c = h.create("server", name="cp")
    with pytest.raises(errdefs.NotFound, match="Could not find the file /nope in container cp"):
        h.d.container_stat_path("cp", "/nope")
    with pytest.raises(errdefs.NotFound, match="Could not find the file /nope in container cp"):
        h.d.container_archive_path("cp", "/nope")
    with pytest.raises(errdefs.NotFound, match="Could not find the file /nope/x in container cp"):
        h.d.container_extract_to_dir("cp", "/nope/x", False, True, io.BytesIO(b""))
    with pytest.raises(errdefs.InvalidParameter, match="extraction point is not a directory"):
        h.d.container_extract_to_dir("cp", "/etc/passwd", False, True, io.BytesIO(b""))
    with pytest.raises(errdefs.InvalidParameter, match="outside"):
        h.d.container_extract_to_dir("cp", "/tmp", False, True, io.BytesIO(make_tar(reg("../x"))))
    with pytest.raises(errdefs.NotFound, match="No such container"):
        h.d.container_stat_path("nope", "/")
    archive = h.d.container_archive_path("cp", "/etc")
    assert h.mount_count(c) == 1
    archive.close()  # never written: the client went away before the body
    archive.close()
    assert h.mount_count(c) == 0


def test_daemon_stat_of_a_running_container_keeps_its_mount(h: Harness) -> None:
    c = h.run_container("server", name="cp")
    assert h.mount_count(c) == 1
    assert h.d.container_stat_path("cp", "/etc/passwd").name == "passwd"
    assert h.mount_count(c) == 1


def test_daemon_refuses_a_read_only_root(h: Harness) -> None:
    resp = h.d.create_container(
        "ro",
        Config(image="rootfs:latest", cmd=["server"]),
        HostConfig(readonly_rootfs=True),
        None,
        "",
    )
    c = h.d.containers[resp.Id]
    with pytest.raises(errdefs.InvalidParameter, match="container rootfs is marked read-only"):
        h.d.container_extract_to_dir("ro", "/tmp", False, True, io.BytesIO(make_tar(reg("f"))))
    assert h.mount_count(c) == 0


def test_fs_mounts_of_a_container(h: Harness, tmp_path: Path) -> None:
    from berth.daemon.archive import fs_mounts

    c = h.create("server", name="cp")
    src = tmp_path / "src"
    src.mkdir()
    c.record.mount_points = {
        "/in": MountPoint(type="bind", source=str(src), destination="/in", rw=False),
        "/t": MountPoint(type="tmpfs", destination="/t"),
        "/etc/hosts": MountPoint(type="bind", source=str(src), destination="/etc/hosts/"),
    }
    hosts = c.root / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    c.record.hosts_path = str(hosts)
    got = {m.destination: m for m in fs_mounts(h.d, c)}
    assert set(got) == {"/in", "/etc/hosts"}
    assert not got["/in"].rw
    assert got["/etc/hosts"].source == str(src)  # the user's mount replaces the network file
