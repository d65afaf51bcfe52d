"""``docker diff`` and the layer ``docker commit`` makes: berth.archive._changes over a real
LayerStore (overlay2 and vfs), checked against moby's own algorithm run on the mounted views.

dockerd lists a container's changes with ``ChangesDirs`` on two mounted trees, the RW layer's
and the init layer's; berth reads only the RW layer's own directory (overlay2) and looks
names up in the layers below.  The oracle here is moby's algorithm written out plainly and
run on the two mounted views, so both must give the very same lines in the same order.  The
tar is then registered on the image's layer, and a container of the committed image must see
the same files as the original one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import struct
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import Change, WriterPipe, dir_changes, overlay_changes
from berth.archive._changes import ADD, DELETE, MODIFY
from berth.container.container import Container, Record
from berth.daemon.commit import _write_tar, new_config
from berth.daemon.initlayer import ENTRIES as INIT_ENTRIES
from berth.daemon.initlayer import setup as init_setup
from berth.events import Events
from berth.graphdriver import new_driver
from berth.graphdriver.base import Driver
from berth.image.commit import CommitConfig, commit_image
from berth.image.service import ImageService
from berth.layer import LayerStore, ROLayer, RWLayer
from berth.layer.changes import export_rw_changes, rw_changes
from berth.types.commit import CommitOptions
from berth.types.container import Config, HostConfig
from berth.types.image import ImportOptions
from berth.utils.mountinfo import mounts_under
from tests.unit.layertars import (
    MTIME,
    dir_,
    make_tar,
    reg,
    sym,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (overlay mounts, whiteouts, trusted xattrs, chown)"
)

CAP = "security.capability"
#: vfs_cap_data revision 2, effective, permitted cap_net_bind_service
CAP_VALUE = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


tar_of = make_tar


# -- moby's ChangesDirs, written out: the oracle -----------------------------------------------


@dataclass
class Node:
    st: os.stat_result
    cap: bytes | None
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def collect(path: str) -> Node:
    st = os.lstat(path)
    try:
        cap: bytes | None = os.getxattr(path, CAP, follow_symlinks=False)
    except OSError:
        cap = None
    node = Node(st, cap)
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            node.children[name] = collect(os.path.join(path, name))
    return node


def go_stat_different(a: os.stat_result, b: os.stat_result) -> bool:
    if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) != (b.st_mode, b.st_uid, b.st_gid, b.st_rdev):
        return True
    if a.st_mode & 0o040000 == 0o040000:
        return False
    sa, na = divmod(a.st_mtime_ns, 10**9)
    sb, nb = divmod(b.st_mtime_ns, 10**9)
    return a.st_size != b.st_size or not (sa == sb and (na in (nb, 0) or nb == 0))


def moby_changes(new: str, old: str) -> list[str]:
    """``addChanges`` of moby's pkg/archive/changes.go, Go's map order replaced by byte order."""
    out: list[str] = []

    def add(info: Node, old_info: Node | None, path: str, added: bool) -> None:
        at_entry = len(out)
        if old_info is None:
            out.append(f"A {path}")
            added = True
        old_children = dict(old_info.children) if old_info is not None and info.is_dir else {}
        for name in sorted(info.children, key=os.fsencode):
            child = info.children[name]
            old_child = old_children.pop(name, None)
            child_path = f"{path.rstrip('/')}/{name}"
            child_added = False
            if old_child is not None and (
                go_stat_different(old_child.st, child.st) or old_child.cap != child.cap
            ):
                out.append(f"C {child_path}")
                child_added = True
            add(child, old_child, child_path, child_added)
        for name in sorted(old_children, key=os.fsencode):
            out.append(f"D {path.rstrip('/')}/{name}")
        if len(out) > at_entry and info.is_dir and not added and path != "/":
            out.insert(at_entry, f"C {path}")

    add(collect(new), collect(old), "/", True)
    return out


# -- a layer store with an image and a container ----------------------------------------------


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Driver]:
    """For what only overlay2 has (whiteout devices in an upper dir)."""
    d = new_driver("overlay2", tmp_path / "data")
    yield d
    d.cleanup()
    assert mounts_under(str(tmp_path)) == []


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host directory the image's symlinks point at: nothing may ever look into it."""
    c = tmp_path / "host-canary"
    c.mkdir()
    (c / "secret").write_text("host\n")
    return c


def image_layers(canary: Path) -> list[bytes]:
    base = tar_of(
        dir_("bin"),
        reg("bin/touched", b"t\n"),
        reg("bin/mode", b"m\n"),
        reg("bin/gone", b"g\n"),
        reg("bin/untouched", b"u\n"),
        reg("bin/capped", b"c\n", 0o755),
        sym("bin/sh", "busybox"),
        dir_("etc"),
        reg("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        dir_("usr"),
        dir_("usr/lib"),
        reg("usr/lib/x", b"x"),
        dir_("usr/share"),
        reg("usr/share/y", b"y"),
        dir_("opt"),
        reg("opt/kept", b"k\n"),
        reg("opt/gone1", b"1"),
        dir_("opt/gonedir"),
        reg("opt/gonedir/z", b"z"),
        reg("filedir", b"a file\n"),
        dir_("dirfile"),
        reg("dirfile/a", b"a"),
        dir_("var"),
        reg("var/old", b"old"),
        reg("var/keep", b"keep"),
        dir_("srv"),
        reg("srv/other", b"o"),
        dir_("srv/sub"),
        reg("srv/sub/z", b"z"),
        sym("escape", str(canary)),
        sym("escape-rel", "../../../../../../../../../" + str(canary).lstrip("/")),
        dir_("home"),
    )
    top = tar_of(
        dir_("var"),
        reg("var/.wh.old"),
        dir_("srv"),
        reg("srv/.wh..wh..opq"),
        reg("srv/mine", b"mine"),
    )
    return [base, top]


def container_writes(r: Path, canary: Path) -> None:
    """What a container's processes do, through its mounted root."""
    (r / "etc/new").write_text("new\n")
    with open(r / "etc/passwd", "a") as f:
        f.write("u:x:1000:1000::/home/u:/bin/sh\n")
    os.utime(r / "bin/touched", ns=(MTIME * 10**9, (MTIME + 5) * 10**9))  # mtime only
    os.chmod(r / "bin/mode", 0o700)  # metadata only
    os.chown(r / "home", 1000, 1000)  # a directory's owner only
    os.unlink(r / "bin/gone")
    shutil.rmtree(r / "usr")
    shutil.rmtree(r / "opt")  # a directory removed and made again: opaque on overlay
    (r / "opt").mkdir()
    (r / "opt/kept").write_text("again\n")
    os.unlink(r / "filedir")  # a file that becomes a directory
    (r / "filedir").mkdir()
    (r / "filedir/x").write_text("x")
    shutil.rmtree(r / "dirfile")  # and a directory that becomes a file
    (r / "dirfile").write_text("now a file\n")
    (r / "a/b").mkdir(parents=True)  # "/a-b" sorts between "/a" and "/a/b"
    (r / "a/b/f").write_text("hi\n")
    (r / "a-b").mkdir()
    (r / "a-b/g").write_text("g\n")
    os.link(r / "etc/new", r / "etc/new2")
    os.symlink("/etc/shadow", r / "lnk")
    os.symlink("../../../../../../../../etc", r / "up")
    os.close(os.open(r / "bin/untouched", os.O_RDWR))  # copied up on overlay, not changed
    os.setxattr(r / "bin/capped", CAP, CAP_VALUE, follow_symlinks=False)
    os.mkfifo(r / "fifo")
    (r / "var/old").write_text("back\n")  # a name the image's top layer deleted
    (r / "srv/x").write_text("x\n")  # in a directory the top layer made opaque
    (r / "srv/deep/er").mkdir(parents=True)
    os.unlink(r / "escape")  # a link to the host replaced by a directory
    (r / "escape").mkdir()
    (r / "escape/secret").write_text("mine\n")
    os.unlink(r / ".dockerenv")  # the init layer's own file


EXPECTED = [
    "A /a",
    "A /a/b",
    "A /a/b/f",
    "A /a-b",
    "A /a-b/g",
    "C /bin",
    "C /bin/capped",
    "C /bin/mode",
    "C /bin/touched",
    "D /bin/gone",
    "C /dirfile",
    "C /escape",
    "A /escape/secret",
    "C /etc",
    "A /etc/new",
    "A /etc/new2",
    "C /etc/passwd",
    "A /fifo",
    "C /filedir",
    "A /filedir/x",
    "C /home",
    "A /lnk",
    "C /opt",
    "C /opt/kept",
    "D /opt/gone1",
    "D /opt/gonedir",
    "C /srv",
    "A /srv/deep",
    "A /srv/deep/er",
    "A /srv/x",
    "A /up",
    "C /var",
    "A /var/old",
    "D /.dockerenv",
    "D /usr",
]


@dataclass
class Image:
    store: LayerStore
    top: ROLayer


def make_image(driver: Driver, tmp_path: Path, layers: list[bytes]) -> Image:
    store = LayerStore(tmp_path / "data" / "layerdb", driver)
    parent: ROLayer | None = None
    for blob in layers:
        layer = store.register(io.BytesIO(blob), parent)
        if parent is not None:
            store.release(parent)
        parent = layer
    assert parent is not None
    return Image(store, parent)


def new_container(img: Image, top: ROLayer) -> RWLayer:
    return img.store.create_rw_layer(uuid.uuid4().hex, top.chain_id, init_setup)


def views(store: LayerStore, rw: RWLayer) -> tuple[str, str]:
    """The mounted roots dockerd's naive diff compares: the container's and its init layer's."""
    return str(store.driver.get(rw.mount_id)), str(store.driver.get(rw.init_id))


def release_views(store: LayerStore, rw: RWLayer) -> None:
    store.driver.put(rw.mount_id)
    store.driver.put(rw.init_id)


@pytest.fixture
def container(
    driver: Driver, tmp_path: Path, canary: Path
) -> Iterator[tuple[Image, RWLayer, str, str]]:
    img = make_image(driver, tmp_path, image_layers(canary))
    rw = new_container(img, img.top)
    new, old = views(img.store, rw)
    try:
        yield img, rw, new, old
    finally:
        release_views(img.store, rw)


def lines(changes: list[Change]) -> list[str]:
    return [str(c) for c in changes]


# -- diff ---------------------------------------------------------------------------------


def test_a_new_container_has_no_changes(container: tuple[Image, RWLayer, str, str]) -> None:
    img, rw, new, old = container
    assert rw_changes(img.store, rw) == []
    assert moby_changes(new, old) == []


def test_changes_are_mobys_on_the_mounted_views(
    container: tuple[Image, RWLayer, str, str], canary: Path
) -> None:
    img, rw, new, old = container
    container_writes(Path(new), canary)
    got = lines(rw_changes(img.store, rw))
    assert got == moby_changes(new, old)
    assert got == EXPECTED
    # Nothing of the host was reached through the image's links.
    assert (canary / "secret").read_text() == "host\n"
    assert not any("secret" in line and "escape" not in line for line in got)


def test_kinds_are_the_engine_api_numbers() -> None:
    assert (MODIFY, ADD, DELETE) == (0, 1, 2)


def test_a_file_rewritten_with_its_old_metadata_is_no_change(
    container: tuple[Image, RWLayer, str, str],
) -> None:
    img, rw, new, old = container
    path = Path(new) / "etc/passwd"
    st = os.lstat(path)
    data = path.read_bytes()
    path.write_bytes(data)  # copied up (overlay2), same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lines(rw_changes(img.store, rw)) == moby_changes(new, old) == []


def test_a_whiteout_of_a_name_that_was_never_below_is_not_listed(
    overlay: Driver, tmp_path: Path
) -> None:
    img = make_image(overlay, tmp_path, [tar_of(dir_("d"), reg("d/f", b"f"))])
    rw = new_container(img, img.top)
    upper = img.store.driver.apply_target(rw.mount_id)
    (upper / "d").mkdir()
    os.mknod(upper / "d/never", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(upper / "d/f", stat.S_IFCHR, os.makedev(0, 0))
    assert lines(rw_changes(img.store, rw)) == ["C /d", "D /d/f"]


def test_a_symlinked_directory_in_the_upper_layer_is_not_followed(
    driver: Driver, tmp_path: Path, canary: Path
) -> None:
    """A container that swaps a directory for a link to the host: the link is a change,
    what it points at is never read."""
    img = make_image(driver, tmp_path, [tar_of(dir_("d"), reg("d/f", b"f"))])
    rw = new_container(img, img.top)
    root = Path(img.store.driver.get(rw.mount_id))
    try:
        shutil.rmtree(root / "d")
        os.symlink(str(canary), root / "d")
        got = lines(rw_changes(img.store, rw))
    finally:
        img.store.driver.put(rw.mount_id)
    assert got == ["C /d"]


def test_directory_changes_of_whole_trees(tmp_path: Path) -> None:
    """``dir_changes`` alone (the vfs path): an empty old tree makes everything added."""
    new = tmp_path / "new"
    (new / "a/b").mkdir(parents=True)
    (new / "a/b/f").write_text("f")
    (new / "z").write_text("z")
    assert lines(dir_changes(str(new), None)) == ["A /a", "A /a/b", "A /a/b/f", "A /z"]
    old = tmp_path / "old"
    shutil.copytree(new, old, symlinks=True)
    assert dir_changes(str(new), str(old)) == []
    os.unlink(new / "z")
    (new / "a/b/f").write_text("F")
    os.utime(new / "a/b/f", ns=(0, (MTIME + 1) * 10**9))
    assert lines(dir_changes(str(new), str(old))) == ["C /a", "C /a/b", "C /a/b/f", "D /z"]


def test_overlay_changes_directly(tmp_path: Path) -> None:
    """``overlay_changes`` on hand-made directories: lower whiteouts and opaque dirs."""
    lower1, lower2, upper = tmp_path / "l1", tmp_path / "l2", tmp_path / "u"
    for d in (lower1, lower2, upper):
        d.mkdir()
    (lower2 / "d").mkdir()
    (lower2 / "d/a").write_text("a")
    (lower2 / "d/b").write_text("b")
    (lower1 / "d").mkdir()
    os.mknod(lower1 / "d/a", stat.S_IFCHR, os.makedev(0, 0))  # the top layer deleted d/a
    (upper / "d").mkdir()
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    (upper / "d/c").write_text("c")
    got = overlay_changes(str(upper), [str(lower1), str(lower2)])
    # d/a was gone already; d/b is hidden by the opaque directory: a deletion it implies.
    assert lines(got) == ["C /d", "A /d/c", "D /d/b"]
    assert got[0].opaque and got[2].implied


# -- commit: the tar, registered, gives a container the same files ------------------------------


def snapshot(root: str) -> dict[str, tuple[object, ...]]:
    """Every name under *root* with what a commit must keep (mtimes to the second: tar)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if kind == stat.S_IFREG:
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                    extra = (extra, first)
            elif kind == stat.S_IFLNK:
                extra = os.readlink(path)
            try:
                cap: bytes | None = os.getxattr(path, CAP, follow_symlinks=False)
            except OSError:
                cap = None
            mtime = None if kind == stat.S_IFDIR else st.st_mtime_ns // 10**9
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, mtime, extra, cap)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return out


def commit(img: Image, rw: RWLayer, tmp_path: Path) -> tuple[ROLayer, bytes]:
    changes = rw_changes(img.store, rw)
    out = tmp_path / f"layer-{uuid.uuid4().hex}.tar"
    with open(out, "wb") as f:
        export_rw_changes(img.store, rw, changes, f.fileno())
    blob = out.read_bytes()
    assert rw.parent is not None
    return img.store.register(io.BytesIO(blob), rw.parent), blob


def test_the_committed_layer_gives_the_same_files(
    container: tuple[Image, RWLayer, str, str], canary: Path, tmp_path: Path
) -> None:
    img, rw, new, _ = container
    container_writes(Path(new), canary)
    layer, blob = commit(img, rw, tmp_path)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        names = [m.name for m in tf]
    # moby's ExportChanges order (by path), whiteouts for deletions, the opaque directory
    # marked once instead of a whiteout per name it hides; untouched files are not in it.
    assert names.index("a") < names.index("a-b") < names.index("a/b")
    assert "bin/.wh.gone" in names and ".wh.usr" in names and ".wh..dockerenv" in names
    assert "bin/untouched" not in names and "bin/sh" not in names
    if img.store.driver.name == "overlay2":
        assert names[names.index("opt") + 1] == "opt/.wh..wh..opq"
        assert "opt/.wh.gone1" not in names
    else:
        assert "opt/.wh.gone1" in names and "opt/.wh..wh..opq" not in names
    second = new_container(img, layer)
    try:
        got = str(img.store.driver.get(second.mount_id))
        # Each container has its own init layer (made when it was: other mtimes), and the
        # new one's makes /.dockerenv again, above the committed layer that deleted it.
        init = {path.lstrip("/") for path, _ in INIT_ENTRIES}
        want = snapshot(new)
        assert ".dockerenv" not in want
        assert {k: v for k, v in snapshot(got).items() if k not in init} == {
            k: v for k, v in want.items() if k not in init
        }
        # ... and a container of the committed image starts with no changes of its own
        assert rw_changes(img.store, second) == []
    finally:
        img.store.driver.put(second.mount_id)
        img.store.release_rw_layer(second)
        img.store.release(layer)


def test_nothing_changed_is_the_empty_tar(
    container: tuple[Image, RWLayer, str, str], tmp_path: Path
) -> None:
    img, rw, _, _ = container
    layer, blob = commit(img, rw, tmp_path)
    assert blob == bytes(1024)
    assert layer.diff_id == "sha256:" + hashlib.sha256(bytes(1024)).hexdigest()
    img.store.release(layer)


def test_a_file_that_vanishes_while_packed_is_left_out(
    container: tuple[Image, RWLayer, str, str], tmp_path: Path
) -> None:
    img, rw, new, _ = container
    (Path(new) / "a").write_text("a")
    (Path(new) / "b").write_text("b")
    changes = rw_changes(img.store, rw)
    os.unlink(Path(new) / "a")
    buf = tmp_path / "out.tar"
    with open(buf, "wb") as f:
        export_rw_changes(img.store, rw, changes, f.fileno())
    with tarfile.open(buf) as tf:
        assert [m.name for m in tf] == ["b"]


def test_deep_trees_do_not_recurse(tmp_path: Path) -> None:
    """A container can nest directories deeper than Python's recursion limit."""
    new = tmp_path / "n"
    new.mkdir()
    fd = os.open(new, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)
    got = dir_changes(str(new), None)
    assert len(got) == 1500 and got[-1].path == "/d" * 1500
    # shutil.rmtree recurses too: take it down from the bottom
    for depth in range(1500, 0, -1):
        os.rmdir(new / "/".join(["d"] * depth))


# -- the image side: registered and made whole, or not at all ---------------------------------


@pytest.fixture
def images(driver: Driver, tmp_path: Path) -> ImageService:
    return ImageService(
        tmp_path / "data", driver, events=Events(), image_users=dict, tmp_dir=tmp_path
    )


def base_image(svc: ImageService) -> str:
    blob = tar_of(dir_("etc"), reg("etc/passwd", b"root\n"))
    return svc.import_image(io.BytesIO(blob), ImportOptions(changes=['CMD ["sh"]']))


def commit_config(parent: str, **kw: object) -> CommitConfig:
    fields: dict[str, object] = {
        "container_id": "c" * 64,
        "container_os": "linux",
        "parent_image_id": parent,
        "config": Config(cmd=["sh"], env=["A=1"]),
        "container_config": Config(cmd=["sh", "-c", "echo hi > /hi"], image="busybox"),
        "author": "me",
        "comment": "msg",
    }
    fields.update(kw)
    return CommitConfig(**fields)  # type: ignore[arg-type]


def state(svc: ImageService) -> tuple[set[str], set[str], set[str]]:
    return (
        {img.id for img in svc.images.all()},
        {layer.chain_id for layer in svc.layers.layers()},
        set(svc.driver.list_ids()),
    )


def test_commit_image_makes_the_child(images: ImageService) -> None:
    parent = base_image(images)
    ident = commit_image(images, io.BytesIO(tar_of(reg("hi", b"hi\n"))), commit_config(parent))
    raw = images.images.raw_config(ident)
    doc = json.loads(raw)
    assert list(doc) == sorted(doc)  # moby's MarshalJSON sorts the keys
    parent_doc = json.loads(images.images.raw_config(parent))
    assert doc["rootfs"]["diff_ids"][:-1] == parent_doc["rootfs"]["diff_ids"]
    assert len(doc["rootfs"]["diff_ids"]) == 2
    assert doc["history"][:-1] == parent_doc["history"]
    top = doc["history"][-1]
    assert list(top) == ["created", "author", "created_by", "comment"]
    assert top["created_by"] == "sh -c echo hi > /hi" and top["created"] == doc["created"]
    assert (doc["author"], doc["container"], doc["os"]) == ("me", "c" * 64, "linux")
    assert "comment" not in doc  # moby's NewChildImage leaves it to the history
    assert doc["config"]["Env"] == ["A=1"] and doc["container_config"]["Image"] == "busybox"
    assert doc["architecture"] == parent_doc["architecture"]
    img = images.images.get(ident)
    assert img is not None and img.parent == parent
    assert images.history(ident)[0].Comment == "msg"


@pytest.mark.parametrize("tar", [None, bytes(1024)], ids=["no-changes", "empty-tar"])
def test_commit_image_of_nothing_adds_no_layer(images: ImageService, tar: bytes | None) -> None:
    parent = base_image(images)
    _, layers_before, dirs_before = state(images)
    stream = io.BytesIO(tar) if tar is not None else None
    ident = commit_image(images, stream, commit_config(parent, author="", comment=""))
    doc = json.loads(images.images.raw_config(ident))
    parent_doc = json.loads(images.images.raw_config(parent))
    assert doc["rootfs"] == parent_doc["rootfs"]
    assert doc["history"][-1] == {
        "created": doc["created"],
        "created_by": "sh -c echo hi > /hi",
        "empty_layer": True,
    }
    assert "author" not in doc
    assert state(images)[1:] == (layers_before, dirs_before)


class Failing(io.RawIOBase):
    """A layer tar that breaks off after its first *n* bytes."""

    def __init__(self, data: bytes, n: int) -> None:
        self._data = io.BytesIO(data[:n])

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(b))
        if not chunk:
            raise OSError(5, "Input/output error")
        b[: len(chunk)] = chunk
        return len(chunk)


def test_a_commit_that_fails_part_way_leaves_nothing(images: ImageService) -> None:
    parent = base_image(images)
    before = state(images)
    blob = tar_of(reg("a", b"a" * 100_000), reg("b", b"b"))
    with pytest.raises((errdefs.BerthError, OSError)):
        commit_image(images, io.BufferedReader(Failing(blob, 50_000)), commit_config(parent))
    assert state(images) == before
    # and through the pipe the daemon uses: the writer's failure reaches the layer store
    # as an error, not as the end of a shorter tar

    def write(fd: int) -> None:
        os.write(fd, blob[:1536])
        raise OSError(2, "No such file or directory", "/gone")

    done: list[bool] = []
    pipe = WriterPipe(write, "reading the changes", lambda: done.append(True))
    with pytest.raises(errdefs.System, match="No such file"), io.BufferedReader(pipe) as stream:
        commit_image(images, stream, commit_config(parent))
    assert done == [True]
    assert state(images) == before


def test_a_reader_that_stops_stops_the_writer() -> None:
    done: list[bool] = []

    def write(fd: int) -> None:
        while True:
            os.write(fd, bytes(65536))

    pipe = WriterPipe(write, "reading the changes", lambda: done.append(True))
    assert pipe.read(10) == bytes(10)
    pipe.close()  # the writer meets EPIPE and ends
    assert done == [True]


def test_new_config_merges_as_moby(tmp_path: Path) -> None:
    own = Config(
        hostname="abc",
        env=["PATH=/bin", "A=0"],
        cmd=["sh", "-c", "x"],
        labels={"from": "container"},
        working_dir="/w",
        image="busybox",
    )
    record = Record(
        id="c" * 64, created="2020-01-01T00:00:00Z", path="sh", args=["-c", "x"],
        config=own, image="sha256:" + "0" * 64, name="/n", driver="vfs",
    )  # fmt: skip
    container = Container(tmp_path, record, HostConfig())
    # no body: the container's config with the changes
    got = new_config(container, CommitOptions(container="n", changes=["ENV A=1", 'CMD ["sh"]']))
    assert (got.hostname, got.env, got.cmd, got.working_dir) == (
        "abc", ["PATH=/bin", "A=1"], ["sh"], "/w",
    )  # fmt: skip
    assert own.env == ["PATH=/bin", "A=0"]  # the container's own is left as it was
    # a body stands in for it, the container's filling in what the body leaves unset
    body = Config(labels={"k": "v"}, env=["B=2"])
    got = new_config(container, CommitOptions(container="n", config=body))
    assert got.labels == {"k": "v", "from": "container"}
    assert got.env == ["B=2", "PATH=/bin", "A=0"] and got.cmd == ["sh", "-c", "x"]
    assert got.hostname == ""  # moby's merge leaves these to the body
    with pytest.raises(errdefs.InvalidParameter, match="bogus is not a valid change command"):
        new_config(container, CommitOptions(container="n", changes=["BOGUS x"]))


def test_a_container_removed_while_committed_fails_the_tar(
    container: tuple[Image, RWLayer, str, str], tmp_path: Path
) -> None:
    """dockerd keeps a committed RW layer until the commit ends; berth's removal does not
    wait, so the tar writer notices the layer went and fails rather than cut it short."""
    img, rw, new, _ = container
    (Path(new) / "f").write_text("f")
    changes = rw_changes(img.store, rw)
    out = tmp_path / "t.tar"
    with open(out, "wb") as f:
        _write_tar(img.store, rw, changes, f.fileno(), rw.name)  # all there: fine
    release_views(img.store, rw)
    img.store.release_rw_layer(rw)
    with open(out, "wb") as f, pytest.raises((errdefs.Conflict, errdefs.System)):
        _write_tar(img.store, rw, changes, f.fileno(), rw.name)
