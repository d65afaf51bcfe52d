"""Images whose symlinks climb above the root (``a/b -> ../../../../etc/shadow``) or name an
absolute host path load, as dockerd (which extracts under a chroot) loads them, and no path
of berthd follows such a link on the host: load, import, later layers, ``docker cp`` in and
out (with and without ``-L``), binds and volumes mounted at such a link, and the files the
init layer and the daemon put into the container's root.

Each test aims its links at a canary directory on the host (with enough ``../`` to climb
out of any berthd directory) and asserts the canary is untouched: same entries, contents,
modes, owners, link counts and times.  Inside the container the links resolve in the
container: to the image's own copy of the canary path, or to nothing (ENOENT).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, running_berthd
from tests.e2e.archives import docker_archive, layer_tar

_UP = "../" * 40  # more than any berthd path on the host is deep
_OLD = 1_000_000_000  # canary times: a touch would move them
ON_HOST = "canary-on-host"  # in every canary file: output holding it read the host


# -- the canary on the host ---------------------------------------------------------------------
Snapshot = dict[str, tuple[int, int, int, int, int, int, int, bytes | str | None]]


@dataclass
class Canary:
    """A host directory that links in the images aim at; nothing may change it."""

    dir: Path
    before: Snapshot = field(default_factory=dict)

    def climb(self, name: str = "") -> str:
        """A relative link target that climbs above any root and lands on the canary."""
        return _UP + str(self.dir / name).lstrip("/").rstrip("/")

    def absolute(self, name: str = "") -> str:
        return str(self.dir / name).rstrip("/")

    def in_image(self, name: str = "") -> str:
        """The canary's path as a name in a layer: the container's own copy of it."""
        return str(self.dir / name).lstrip("/").rstrip("/")

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        paths = [self.dir]
        for dirpath, dirnames, filenames in os.walk(self.dir):
            paths += [Path(dirpath) / n for n in dirnames + filenames]
        for p in paths:
            st = os.lstat(p)
            content: bytes | str | None = None
            if p.is_symlink():
                content = os.readlink(p)
            elif p.is_file():
                content = p.read_bytes()
            out[str(p)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                content,
            )
        return out

    def assert_untouched(self) -> None:
        assert self.snapshot() == self.before


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    d = tmp_path / f"canary-{uuid.uuid4().hex[:12]}"
    for sub in ("vol", "bindto"):
        (d / sub).mkdir(parents=True)
        (d / sub / "inside").write_text(f"{ON_HOST} {sub}\n")
    for name in ("secret", "hostonly", "hosts", "resolv.conf", "hostname", "dockerenv", "mtab"):
        (d / name).write_text(f"{ON_HOST} {name}\n")
    (d / "passwd").write_text("canary:x:4242:4242::/:/bin/sh\n")
    (d / "group").write_text("canary:x:4242:\n")
    for p in [*d.rglob("*"), d]:
        os.utime(p, (_OLD, _OLD))
    c = Canary(d)
    c.before = c.snapshot()
    return c


# -- daemons, and what a test owns on them ------------------------------------------------------
@pytest.fixture(scope="module")
def vfs_berthd(busybox_tar: Path) -> Iterator[Berthd]:
    """A daemon on the vfs driver: each layer is a copy of its parent, written through."""
    with running_berthd(["--storage-driver", "vfs"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


@pytest.fixture(params=["overlay2", "vfs"])
def daemon(request: pytest.FixtureRequest) -> Berthd:
    d: Berthd = request.getfixturevalue("berthd" if request.param == "overlay2" else "vfs_berthd")
    assert d.docker("info", "--format", "{{.Driver}}").stdout.strip() == request.param
    return d


@dataclass
class Workspace:
    """Containers and images a test made, removed after it (containers first)."""

    d: Berthd
    busybox: bytes
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        n = f"berth-symlinks-{what}-{uuid.uuid4().hex[:12]}"
        self.containers.append(n)
        return n

    def load(self, *layers: bytes) -> str:
        """``docker load`` of busybox with *layers* on top; the tag."""
        tag = f"berth-symlinks-{uuid.uuid4().hex[:12]}:1"
        self.images.append(tag)
        data = docker_archive([self.busybox, *layers], [tag])
        p = subprocess.run(
            [DOCKER, "load"],
            input=data,
            env=self.d.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert p.returncode == 0, (p.stdout + p.stderr).decode()
        return tag

    def run(self, image: str, *cmd: str, args: tuple[str, ...] = (), check: bool = True) -> str:
        """``docker run --rm`` of *cmd*; its output (stdout and stderr)."""
        name = self.name("run")
        r = self.d.docker("run", "--rm", "--name", name, *args, image, *cmd, check=check)
        return r.stdout + r.stderr

    def readlinks(self, image: str, *paths: str) -> list[str]:
        """The targets of the links at *paths* in a container of *image*."""
        return self.run(image, "sh", "-c", 'for p; do readlink "$p"; done', "sh", *paths).split(
            "\n"
        )[: len(paths)]

    def create(self, image: str, *args: str) -> str:
        name = self.name("cp")
        self.d.docker("create", "--name", name, *args, image, "true")
        return name

    def cp_out(self, *args: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        """``docker cp ... -``: the entries of the tar written to stdout, with contents."""
        p = subprocess.run(
            [DOCKER, "cp", *args, "-"],
            env=self.d.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert p.returncode == 0, p.stderr.decode()
        out: list[tuple[tarfile.TarInfo, bytes | None]] = []
        with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tf:
            for m in tf:
                f = tf.extractfile(m) if m.isreg() else None
                out.append((m, f.read() if f is not None else None))
        return out

    def read(self, container: str, path: str) -> bytes:
        """A regular file of the container, through ``docker cp -L``."""
        entries = self.cp_out("-L", f"{container}:{path}")
        assert len(entries) == 1 and entries[0][1] is not None, entries
        return entries[0][1]


@pytest.fixture
def ws(daemon: Berthd, busybox_tar: Path) -> Iterator[Workspace]:
    o = Workspace(daemon, busybox_tar.read_bytes())
    yield o
    for c in o.containers:
        daemon.docker("rm", "-f", "-v", c, check=False)
    for i in o.images:
        daemon.docker("rmi", "-f", i, check=False)


def escaping_image(o: Workspace, canary: Canary) -> str:
    """Busybox plus ``/a/b`` and ``/abs`` aimed at the canary's secret (which the image has a
    copy of, at the same path) and ``/a/hostonly`` at a file only the host has."""
    return o.load(
        layer_tar(
            {canary.in_image("secret"): "image secret\n", "a/plain": "plain\n"},
            symlinks={
                "a/b": canary.climb("secret"),
                "abs": canary.absolute("secret"),
                "a/hostonly": canary.climb("hostonly"),
            },
        )
    )


# -- load and import ----------------------------------------------------------------------------
def test_load_keeps_links_that_climb_above_the_root(ws: Workspace, canary: Canary) -> None:
    image = escaping_image(ws, canary)
    assert ws.readlinks(image, "/a/b", "/abs", "/a/hostonly") == [
        canary.climb("secret"),
        canary.absolute("secret"),
        canary.climb("hostonly"),
    ]
    # Resolved in the container: its own copy, never the host's file.
    assert ws.run(image, "cat", "/a/b", "/abs") == "image secret\n" * 2
    out = ws.run(image, "cat", "/a/hostonly", check=False)
    assert "No such file or directory" in out and ON_HOST not in out
    canary.assert_untouched()


def test_import_keeps_links_that_climb_above_the_root(
    ws: Workspace, canary: Canary, busybox_tar: Path, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(busybox_tar) as src, tarfile.open(rootfs, "w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        for name, target in (("a/b", canary.climb("secret")), ("abs", canary.absolute())):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            dst.addfile(info)
    tag = f"berth-symlinks-import-{uuid.uuid4().hex[:12]}:1"
    ws.images.append(tag)
    ws.d.docker("import", "--change", 'CMD ["sh"]', str(rootfs), tag)
    assert ws.readlinks(tag, "/a/b", "/abs") == [
        canary.climb("secret"),
        canary.absolute(),
    ]
    out = ws.run(tag, "cat", "/a/b", check=False)
    assert "No such file or directory" in out and ON_HOST not in out
    out = ws.run(tag, "ls", "/abs/", check=False)
    assert "No such file or directory" in out and "secret" not in out
    canary.assert_untouched()


def test_later_layers_write_through_a_climbing_directory_link_inside_the_root(
    ws: Workspace, canary: Canary
) -> None:
    """moby extracts each layer in a chroot: ``d/file`` below ``d -> ../../..`` lands in
    the root (vfs: through the link; overlay2: in a directory of the layer that hides it)."""
    image = ws.load(
        layer_tar({}, symlinks={"d": canary.climb(), "f": canary.climb("secret")}),
        layer_tar(
            {"d/file": "layer 3\n", "d/secret": "overwritten?\n", "d/vol/new": "new\n"},
            symlinks={"d/vol/link": canary.climb("passwd")},
        ),
    )
    out = ws.run(image, "cat", "/d/file", "/d/secret", "/d/vol/new")
    assert out == "layer 3\noverwritten?\nnew\n"
    out = ws.run(image, "cat", "/d/vol/link", check=False)
    assert "No such file or directory" in out and ON_HOST not in out
    canary.assert_untouched()


# -- docker cp ----------------------------------------------------------------------------------
def _path_stat(o: Workspace, container: str, path: str) -> dict[str, object]:
    status, headers, _ = o.d.request("HEAD", f"/containers/{container}/archive?path={path}")
    assert status == 200, status
    stat: dict[str, object] = json.loads(base64.b64decode(headers["x-docker-container-path-stat"]))
    return stat


def test_cp_out_keeps_the_link_and_follows_it_only_inside(ws: Workspace, canary: Canary) -> None:
    cid = ws.create(escaping_image(ws, canary))
    # The link target as the container resolves it.
    assert _path_stat(ws, cid, "/a/b")["linkTarget"] == "/" + canary.in_image("secret")
    assert _path_stat(ws, cid, "/abs")["linkTarget"] == "/" + canary.in_image("secret")
    assert _path_stat(ws, cid, "/a/hostonly")["linkTarget"] == "/" + canary.in_image("hostonly")
    # Without -L: the links themselves, as stored.
    ((m, _),) = ws.cp_out(f"{cid}:/a/b")
    assert (m.name, m.issym(), m.linkname) == ("b", True, canary.climb("secret"))
    links = {m.name: m.linkname for m, _ in ws.cp_out(f"{cid}:/a") if m.issym()}
    assert links == {"a/b": canary.climb("secret"), "a/hostonly": canary.climb("hostonly")}
    # With -L: followed in the container.
    assert ws.read(cid, "/a/b") == b"image secret\n"
    assert ws.read(cid, "/abs") == b"image secret\n"
    r = ws.d.docker("cp", "-L", f"{cid}:/a/hostonly", "-", check=False)
    assert r.returncode != 0 and "Could not find the file" in r.stderr
    # Through a link in the middle of the path.
    r = ws.d.docker("cp", f"{cid}:/a/b/x", "-", check=False)
    assert r.returncode != 0 and ON_HOST not in r.stdout + r.stderr
    canary.assert_untouched()


def test_cp_into_a_container_through_climbing_links(
    ws: Workspace, canary: Canary, tmp_path: Path
) -> None:
    image = ws.load(
        layer_tar(
            {canary.in_image("secret"): "image secret\n", canary.in_image("vol/keep"): "k\n"},
            symlinks={
                "a/b": canary.climb("secret"),
                "a/hostonly": canary.climb("hostonly"),
                "d": canary.climb("vol"),
            },
        )
    )
    cid = ws.create(image)
    payload = tmp_path / "payload"
    payload.write_text("copied in\n")
    # Onto a link: the CLI asks for its target (in the container) and writes there.
    ws.d.docker("cp", str(payload), f"{cid}:/a/b")
    ws.d.docker("cp", str(payload), f"{cid}:/a/hostonly")
    # Into a directory that is a link climbing above the root.
    ws.d.docker("cp", str(payload), f"{cid}:/d/")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("fromstdin")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"tar\n"))
    p = subprocess.run(
        [DOCKER, "cp", "-", f"{cid}:/d"],
        input=buf.getvalue(),
        env=ws.d.env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert ws.read(cid, "/" + canary.in_image("secret")) == b"copied in\n"
    assert ws.read(cid, "/" + canary.in_image("hostonly")) == b"copied in\n"
    assert ws.read(cid, "/" + canary.in_image("vol/payload")) == b"copied in\n"
    assert ws.read(cid, "/" + canary.in_image("vol/fromstdin")) == b"tar\n"
    assert ws.read(cid, "/d/keep") == b"k\n"
    # The links are still links, and the container sees what was copied.
    assert ws.d.docker("start", "-a", cid).stdout == ""
    assert ws.readlinks(image, "/a/b") == [canary.climb("secret")]
    canary.assert_untouched()


# -- mounts -------------------------------------------------------------------------------------
def test_binds_and_volumes_mounted_at_climbing_links(
    ws: Workspace, canary: Canary, tmp_path: Path
) -> None:
    """runc resolves a destination in the container's root, and so does ``docker cp``."""
    image = ws.load(
        layer_tar(
            {canary.in_image("keep"): "image\n"},
            symlinks={
                "d": canary.climb("bindto"),
                "v": canary.climb("vol"),
                "f": canary.climb("secret"),
            },
        )
    )
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "marker").write_text("bind marker\n")
    bindfile = tmp_path / "bindfile"
    bindfile.write_text("bind file\n")
    vol = f"berth-symlinks-{uuid.uuid4().hex[:12]}"
    args = ("-v", f"{bind}:/d", "-v", f"{vol}:/v", "-v", f"{bindfile}:/f")
    try:
        out = ws.run(
            image,
            "sh",
            "-c",
            "cat /d/marker /f && echo written > /d/new && echo v > /v/new && ls /v && "
            f"cat /{canary.in_image('bindto/marker')}",
            args=args,
        )
        assert out == "bind marker\nbind file\nnew\nbind marker\n"
        assert (bind / "new").read_text() == "written\n"
        cid = ws.create(image, *args)
        payload = tmp_path / "payload"
        payload.write_text("cp\n")
        ws.d.docker("cp", str(payload), f"{cid}:/d/")
        assert (bind / "payload").read_text() == "cp\n"
        assert ws.read(cid, "/d/marker") == b"bind marker\n"
        assert ws.read(cid, "/f") == b"bind file\n"
        assert ws.read(cid, "/v/new") == b"v\n"
        ws.d.docker("rm", cid)
    finally:
        ws.d.docker("volume", "rm", "-f", vol, check=False)
    canary.assert_untouched()


# -- the init layer and the daemon's files -------------------------------------------------------
@pytest.mark.parametrize("kind", ["files", "directories"])
def test_init_layer_and_network_files_behind_climbing_links(
    ws: Workspace, canary: Canary, kind: str
) -> None:
    """The paths berthd writes at create and start are links to the canary: each is
    replaced in the container's own layer, never written through."""
    files: dict[str, bytes | str | None] = {}
    if kind == "files":
        links = {
            "etc/hosts": canary.climb("hosts"),
            "etc/resolv.conf": canary.climb("resolv.conf"),
            "etc/hostname": canary.climb("hostname"),
            ".dockerenv": canary.climb("dockerenv"),
            "etc/mtab": canary.climb("mtab"),
            "dev/console": canary.climb("secret"),
            "dev/shm": canary.climb("vol"),
            "etc/passwd": canary.climb("passwd"),
            "etc/group": canary.absolute("group"),
        }
        files |= {
            canary.in_image("passwd"): "canary:x:1234:1234::/:/bin/sh\n",
            canary.in_image("group"): "canary:x:1234:\n",
        }
    else:
        links = {
            "etc": canary.climb(),
            "dev": canary.climb("vol"),
            "proc": canary.absolute(),
            "sys": canary.climb("vol"),
        }
    image = ws.load(layer_tar(files, symlinks=links))
    name = ws.name("init")
    out = ws.d.docker(
        "run", "--rm", "--name", name, "--hostname", "symlinked", image, "sh", "-c",
        "cat /etc/hosts /etc/hostname /etc/resolv.conf; ls -l /.dockerenv; readlink /etc/mtab; "
        "echo x > /dev/shm/x; cat /proc/self/comm",
    ).stdout  # fmt: skip
    assert "localhost" in out and "symlinked\n" in out and "nameserver" in out
    assert "/proc/mounts\n" in out and "cat\n" in out
    assert ON_HOST not in out
    if kind == "files":
        # /etc/passwd and /etc/group resolve to the image's copies of the canary's.
        assert ws.run(image, "id", "-u", args=("-u", "canary")).strip() == "1234"
    canary.assert_untouched()
