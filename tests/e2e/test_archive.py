"""``docker cp`` in and out of created, running and stopped containers, with the real CLI
and docker-py: contents and modes survive, errors read as dockerd's, no mount is left."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def docker_bytes(
    d: Berthd, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """The CLI with binary stdin/stdout (``docker cp -``)."""
    proc = subprocess.run(
        ["timeout", "-s", "KILL", "120", DOCKER, *args],
        env=d.env(),
        input=input,
        capture_output=True,
        timeout=130,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def merged_dir(d: Berthd, ref: str) -> str:
    data: dict[str, str] = inspect(d, ref)["GraphDriver"]["Data"]
    return data["MergedDir"]


def container_in(d: Berthd, state: str, cleanup: list[str]) -> str:
    """A busybox container that is running, stopped (exited) or only created."""
    name = unique_name(f"cp-{state}")
    cleanup.append(name)  # before it exists: a failed start leaves it created
    if state == "running":
        cid = d.docker("run", "-d", "--name", name, "busybox", "sleep", "1000").stdout.strip()
    else:
        cid = d.docker("create", "--name", name, "busybox", "true").stdout.strip()
    if state == "stopped":
        d.docker("start", "-a", cid)
    assert inspect(d, cid)["State"]["Status"] == {"stopped": "exited"}.get(state, state)
    return cid


def make_tree(root: Path) -> None:
    (root / "sub/deeper").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "sub/data.bin").write_bytes(os.urandom(70_000))
    (root / "sub/deeper/run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "sub/deeper/run.sh", 0o750)
    os.symlink("sub/data.bin", root / "link")
    os.chmod(root / "sub", 0o710)


def tree_of(root: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (mode, sha256 or link target) of everything under *root*."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                what = "dir"
            else:
                what = sha256(p)
            out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), what)
    return out


@pytest.mark.parametrize("state", ["running", "stopped", "created"])
def test_copy_a_file_and_a_directory_in_and_out(
    berthd: Berthd, cleanup: list[str], tmp_path: Path, state: str
) -> None:
    cid = container_in(berthd, state, cleanup)
    src = tmp_path / "src"
    make_tree(src)
    big = tmp_path / "file.bin"
    big.write_bytes(os.urandom(300_000))

    berthd.docker("cp", str(big), f"{cid}:/tmp/")
    berthd.docker("cp", str(src), f"{cid}:/tmp/tree")  # a new name: the copy takes it
    berthd.docker("cp", str(src) + "/.", f"{cid}:/root")  # the contents into a directory

    out = tmp_path / "out"
    out.mkdir()
    berthd.docker("cp", f"{cid}:/tmp/file.bin", str(out / "file.bin"))
    berthd.docker("cp", f"{cid}:/tmp/tree", str(out))
    berthd.docker("cp", f"{cid}:/root/.", str(out / "root-contents"))
    assert sha256(out / "file.bin") == sha256(big)
    assert tree_of(out / "tree") == tree_of(src)
    assert tree_of(out / "root-contents") == tree_of(src)

    if state == "running":
        inside = berthd.docker("exec", cid, "sha256sum", "/tmp/file.bin").stdout.split()[0]
        assert inside == sha256(big)
        assert berthd.docker("exec", cid, "cat", "/tmp/tree/top.txt").stdout == "top\n"
        assert merged_dir(berthd, cid) in berthd.mounts()  # still the container's own
    else:
        assert merged_dir(berthd, cid) not in berthd.mounts()  # mounted for each copy only
        berthd.docker("start", "-a", cid)  # the copies are in its layer when it runs
        out2 = tmp_path / "after-start"
        berthd.docker("cp", f"{cid}:/tmp/tree", str(out2))
        assert tree_of(out2) == tree_of(src)
        assert merged_dir(berthd, cid) not in berthd.mounts()


def test_a_second_copy_replaces_what_the_first_and_the_image_put_there(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    """Every name of a second copy is taken already (berth creates first and clears only
    then): contents, modes and kinds are the second copy's, a file of the image's layer
    is replaced through the overlay, and a directory over a file is refused as dockerd
    refuses it (the CLI asks for noOverwriteDirNonDir)."""
    cid = container_in(berthd, "running", cleanup)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_text("one\n")
    os.chmod(src / "d/f", 0o640)
    (src / "d/g").write_text("a file, then a link\n")
    (src / "x").write_text("a file\n")
    berthd.docker("cp", str(src), f"{cid}:/tmp/t")

    (src / "d/f").write_text("two\n")
    os.chmod(src / "d/f", 0o4755)
    (src / "d/g").unlink()
    os.symlink("f", src / "d/g")
    berthd.docker("cp", str(src) + "/.", f"{cid}:/tmp/t")
    group = tmp_path / "group"
    group.write_text("root:x:0:\nreplaced:x:5:\n")
    berthd.docker("cp", str(group), f"{cid}:/etc/group")  # a file of the image's layer
    out = berthd.docker(
        "exec",
        cid,
        "sh",
        "-c",
        "cat /tmp/t/d/f; stat -c '%a %u %g' /tmp/t/d/f; readlink /tmp/t/d/g; cat /etc/group",
    ).stdout
    assert out == "two\n4755 0 0\nf\nroot:x:0:\nreplaced:x:5:\n"

    (src / "x").unlink()
    (src / "x").mkdir()
    r = berthd.docker("cp", str(src) + "/.", f"{cid}:/tmp/t", check=False)
    assert r.returncode != 0
    assert 'cannot overwrite non-directory "/tmp/t/x" with directory "/tmp/t"' in r.stderr
    assert berthd.docker("exec", cid, "cat", "/tmp/t/x").stdout == "a file\n"


def test_copy_errors_read_as_dockers(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    cid = container_in(berthd, "created", cleanup)
    name = unique_name("cp-errors")
    berthd.docker("rename", cid, name)
    cleanup.append(name)  # the name container_in gave it is gone
    f = tmp_path / "f.txt"
    f.write_text("x")

    r = berthd.docker("cp", str(f), f"{name}:/nope/dir/f.txt", check=False)
    assert r.returncode != 0
    assert (
        f"Error response from daemon: Could not find the file /nope/dir in container {name}"
        in r.stderr
    )
    r = berthd.docker("cp", f"{name}:/nope", str(tmp_path / "out"), check=False)
    assert r.returncode != 0
    assert f"Could not find the file /nope in container {name}" in r.stderr
    r = berthd.docker("cp", str(tmp_path), f"{name}:/etc/passwd", check=False)
    assert r.returncode != 0 and "cannot copy directory" in r.stderr
    r = berthd.docker("cp", "-", f"{name}:/etc/passwd", input=b"", check=False)
    assert r.returncode != 0
    assert f'destination "{name}:/etc/passwd" must be a directory' in r.stderr
    r = berthd.docker("cp", str(f), "no-such-container:/tmp", check=False)
    assert r.returncode != 0 and "No such container: no-such-container" in r.stderr
    assert merged_dir(berthd, cid) not in berthd.mounts()


def test_stdin_and_stdout_tar_forms(berthd: Berthd, cleanup: list[str]) -> None:
    cid = container_in(berthd, "running", cleanup)
    buf = io.BytesIO()
    payload = os.urandom(10_000)
    with tarfile.open(fileobj=buf, mode="w") as tf:
        d = tarfile.TarInfo("fromstdin")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
        info = tarfile.TarInfo("fromstdin/payload")
        info.size = len(payload)
        info.mode = 0o600
        info.uid = info.gid = 1000
        tf.addfile(info, io.BytesIO(payload))
    docker_bytes(berthd, "cp", "-", f"{cid}:/tmp", input=buf.getvalue())
    ls = berthd.docker("exec", cid, "ls", "-ln", "/tmp/fromstdin/payload").stdout.split()
    assert ls[0] == "-rw-------" and ls[2:4] == ["1000", "1000"]  # owners kept, as dockerd

    out = docker_bytes(berthd, "cp", f"{cid}:/tmp/fromstdin", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        names = [m.name for m in tf.getmembers()]
        assert names == ["fromstdin", "fromstdin/payload"]
        f = tf.extractfile("fromstdin/payload")
        assert f is not None and f.read() == payload
    link = docker_bytes(berthd, "cp", f"{cid}:/bin/ls", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(link)) as tf:
        (m,) = tf.getmembers()
        assert (m.name, m.issym(), m.linkname) == ("ls", True, "busybox")


def test_twenty_megabytes_round_trip(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    cid = container_in(berthd, "running", cleanup)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    berthd.docker("cp", str(big), f"{cid}:/root/big")
    inside = berthd.docker("exec", cid, "sha256sum", "/root/big").stdout.split()[0]
    assert inside == sha256(big)
    berthd.docker("cp", f"{cid}:/root/big", str(tmp_path / "back"))
    assert sha256(tmp_path / "back") == sha256(big)


def test_symlinks_follow_link_and_trailing_dot(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    cid = container_in(berthd, "stopped", cleanup)
    berthd.docker("cp", f"{cid}:/bin/ls", str(tmp_path / "ls-link"))
    assert os.readlink(tmp_path / "ls-link") == "busybox"
    berthd.docker("cp", "-L", f"{cid}:/bin/ls", str(tmp_path / "ls-file"))
    assert sha256(tmp_path / "ls-file") == sha256(Path("/bin/busybox"))
    berthd.docker("cp", f"{cid}:/etc/.", str(tmp_path / "etc-contents"))
    assert (tmp_path / "etc-contents/passwd").read_text().startswith("root:x:0:0:")


def test_read_only_root_volumes_and_binds(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "from-host").write_text("host side\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    cid = berthd.docker(
        "create", "--read-only", "-v", "/vol", "-v", f"{bind}:/in", "-v", f"{ro}:/ro:ro",
        "busybox", "true",
    ).stdout.strip()  # fmt: skip
    cleanup.append(cid)
    f = tmp_path / "f.txt"
    f.write_text("payload\n")

    r = berthd.docker("cp", str(f), f"{cid}:/tmp/", check=False)
    assert r.returncode != 0 and "container rootfs is marked read-only" in r.stderr
    r = berthd.docker("cp", str(f), f"{cid}:/ro/", check=False)
    assert r.returncode != 0 and "mounted volume is marked read-only" in r.stderr
    assert os.listdir(ro) == []

    berthd.docker("cp", str(f), f"{cid}:/vol/")  # volumes stay writable
    berthd.docker("cp", str(f), f"{cid}:/in/")  # and binds write the host's directory
    assert (bind / "f.txt").read_text() == "payload\n"
    berthd.docker("cp", f"{cid}:/in/from-host", str(tmp_path / "from-host"))
    assert (tmp_path / "from-host").read_text() == "host side\n"
    berthd.docker("cp", f"{cid}:/vol/f.txt", str(tmp_path / "from-vol"))
    assert (tmp_path / "from-vol").read_text() == "payload\n"
    assert merged_dir(berthd, cid) not in berthd.mounts()


def test_docker_py_archive_api_and_hostile_tars(berthd: Berthd, cleanup: list[str]) -> None:
    import docker.errors

    cid = container_in(berthd, "running", cleanup)
    client = berthd.client()
    try:
        c = client.containers.get(cid)
        bits, st = c.get_archive("/bin/ls")
        assert st["name"] == "ls" and st["linkTarget"] == "/bin/busybox"
        assert st["mode"] & (1 << 27)  # Go's os.ModeSymlink
        assert b"".join(bits)
        bits, st = c.get_archive("/etc")
        assert st["mode"] & (1 << 31) and st["name"] == "etc"  # os.ModeDir
        assert b"".join(bits)  # read to the end: an unread stream keeps its socket open

        def tar(*entries: tuple[str, bytes | str]) -> bytes:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for name, what in entries:
                    info = tarfile.TarInfo(name)
                    if isinstance(what, str):
                        info.type = tarfile.SYMTYPE
                        info.linkname = what
                        tf.addfile(info)
                    else:
                        info.size = len(what)
                        tf.addfile(info, io.BytesIO(what))
            return buf.getvalue()

        c.exec_run(["mkdir", "/tmp/dst"])
        for hostile, message in [
            (tar(("../escape", b"x")), "is outside of"),
            (
                tar(
                    ("esc", "../../../../.."),
                ),
                "invalid symlink",
            ),
        ]:
            with pytest.raises(docker.errors.APIError) as err:
                c.put_archive("/tmp/dst", hostile)
            assert err.value.status_code == 400 and message in str(err.value)
        # Absolute names and symlinks to / land in the container, never on the host.
        assert c.put_archive(
            "/tmp/dst", tar(("/abs/file", b"abs"), ("root", "/"), ("root/x", b"x"))
        )
        assert c.exec_run(["cat", "/tmp/dst/abs/file"]).output == b"abs"
        assert c.exec_run(["cat", "/x"]).output == b"x"
        assert not Path("/abs/file").exists() and not Path("/x").exists()
        with pytest.raises(docker.errors.NotFound):
            c.get_archive("/does/not/exist")
        with pytest.raises(docker.errors.APIError) as err:
            c.put_archive("/etc/passwd", tar(("f", b"x")))
        assert err.value.status_code == 400
    finally:
        client.close()


def test_archive_events(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    cid = container_in(berthd, "created", cleanup)
    since = str(int(time.time()) - 1)
    (tmp_path / "f").write_text("x")
    berthd.docker("cp", str(tmp_path / "f"), f"{cid}:/tmp/")
    berthd.docker("cp", f"{cid}:/tmp/f", str(tmp_path / "g"))
    until = str(int(time.time()) + 1)
    events = berthd.docker(
        "events", "--since", since, "--until", until, "--filter", f"container={cid}",
        "--filter", "event=extract-to-dir", "--filter", "event=archive-path",
        "--format", "{{.Action}} {{.Actor.Attributes.image}}",
    ).stdout.splitlines()  # fmt: skip
    assert events == ["extract-to-dir busybox", "archive-path busybox"]


def test_archive_owner_with_dash_a(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    cid = berthd.docker("create", "-u", "app", "busybox", "true").stdout.strip()
    cleanup.append(cid)
    f = tmp_path / "f.txt"
    f.write_text("x")
    os.chown(f, 4242, 4343)
    berthd.docker("cp", str(f), f"{cid}:/tmp/kept")
    berthd.docker("cp", "-a", str(f), f"{cid}:/tmp/owned")
    out = docker_bytes(berthd, "cp", f"{cid}:/tmp/.", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        owners = {m.name: (m.uid, m.gid) for m in tf.getmembers()}
    assert owners["./kept"] == (4242, 4343)  # the archive's owners, as dockerd keeps them
    assert owners["./owned"] == (1000, 1000)  # -a: the container's user (app in its passwd)


def test_clients_that_go_away_leave_no_mount(fresh_berthd: Berthd, tmp_path: Path) -> None:
    """On a daemon of its own: the log it checks for tracebacks is then only its own."""
    berthd = fresh_berthd
    cid = container_in(berthd, "stopped", [])
    log_start = len(berthd.log())
    big = tmp_path / "big"
    big.write_bytes(os.urandom(40 * 1024 * 1024))
    berthd.docker("cp", str(big), f"{cid}:/big")
    merged = merged_dir(berthd, cid)

    conn = berthd.http()
    conn.request("GET", f"/v1.50/containers/{cid}/archive?path=/big")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-tar"
    assert len(resp.read(1 << 20)) == 1 << 20
    assert merged in berthd.mounts()  # mounted while the tar flows
    conn.close()  # the reader goes away mid-stream
    wait_for(lambda: merged not in berthd.mounts(), what="the copy's mount to go")

    conn = berthd.http()  # an upload cut short
    conn.putrequest("PUT", f"/v1.50/containers/{cid}/archive?path=/tmp")
    conn.putheader("Content-Type", "application/x-tar")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    head = tarfile.TarInfo("partial")
    head.size = 10 * 1024 * 1024
    chunk = head.tobuf() + bytes(65536)
    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.close()
    wait_for(lambda: merged not in berthd.mounts(), what="the upload's mount to go")
    assert berthd.docker("ps", "-a", "-q").returncode == 0
    assert "Traceback" not in berthd.log()[log_start:]
