"""Sizes for ``docker ps -s`` and ``docker system df``: what a vfs layer changed over the
one below it (moby's naive diff size), the RW layer size kept while nothing can write the
layer, and ``docker export``'s tar of a whole root."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.archive import ContainerFS, Mount
from berth.graphdriver import Driver, new_driver
from berth.graphdriver._size import changes_size, dir_size
from berth.layer import LayerStore
from berth.utils.mountinfo import mounts_under

# -- vfs: the size of the changes --------------------------------------------------------


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """*old* and *new* = a copy of it as vfs makes one (``cp -a``: times kept)."""
    old = tmp_path / "old"
    (old / "etc").mkdir(parents=True)
    (old / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (old / "bin").mkdir()
    (old / "bin/tool").write_bytes(b"t" * 4096)
    (old / "bin/gone").write_bytes(b"g" * 999)
    os.symlink("tool", old / "bin/link")
    new = tmp_path / "new"
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    return old, new


def test_an_unchanged_copy_has_no_changes(trees: tuple[Path, Path]) -> None:
    old, new = trees
    assert changes_size(new, old) == 0
    assert dir_size(new) == 26 + 4096 + 999 + len("tool")


def test_added_and_modified_files_count_whole_deleted_ones_not(trees: tuple[Path, Path]) -> None:
    old, new = trees
    (new / "bin/gone").unlink()
    (new / "added").write_bytes(b"a" * 300)
    with open(new / "etc/passwd", "a") as f:
        f.write("x\n")  # modified: the whole file counts
    (new / "deep/er").mkdir(parents=True)
    (new / "deep/er/f").write_bytes(b"d" * 50)  # below a new directory: all new
    assert changes_size(new, old) == 300 + 28 + 50


def test_mode_owner_and_link_target_changes_count(trees: tuple[Path, Path]) -> None:
    old, new = trees
    os.chmod(new / "bin/tool", 0o700)
    os.chown(new / "bin/gone", 1000, 1000)
    os.unlink(new / "bin/link")
    os.symlink("other-target", new / "bin/link")
    assert changes_size(new, old) == 4096 + 999 + len("other-target")


def test_a_name_that_became_a_directory_is_all_new(trees: tuple[Path, Path]) -> None:
    old, new = trees
    (new / "bin/tool").unlink()
    (new / "bin/tool").mkdir()
    (new / "bin/tool/inside").write_bytes(b"i" * 10)
    assert changes_size(new, old) == 10


def test_hard_links_count_once(trees: tuple[Path, Path]) -> None:
    old, new = trees
    (new / "h1").write_bytes(b"h" * 700)
    os.link(new / "h1", new / "h2")
    assert changes_size(new, old) == 700
    assert dir_size(new) == dir_size(old) + 700


def test_a_new_file_capability_is_a_change(trees: tuple[Path, Path]) -> None:
    old, new = trees
    # VFS_CAP_REVISION_2 with CAP_NET_RAW permitted (what setcap cap_net_raw+p writes)
    cap = bytes.fromhex("0000000200200000000000000000000000000000")
    try:
        os.setxattr(new / "bin/tool", "security.capability", cap)
    except OSError as e:
        pytest.skip(f"cannot set a file capability here: {e}")
    assert changes_size(new, old) == 4096


# -- the RW layer's size, kept while nothing can write it --------------------------------


@pytest.fixture(params=["overlay2", "vfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LayerStore]:
    driver: Driver = new_driver(str(request.param), tmp_path / "data")
    base = io.BytesIO()
    with tarfile.open(fileobj=base, mode="w") as tf:
        info = tarfile.TarInfo("etc/base")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"base\n"))
    s = LayerStore(tmp_path / "data" / "layerdb", driver)
    s.register(io.BytesIO(base.getvalue()), None)
    yield s
    driver.cleanup()
    assert mounts_under(str(tmp_path)) == []


def _init(path: Path, lowers: list[Path]) -> None:
    (path / ".dockerenv").write_bytes(b"")
    (path / "etc").mkdir(exist_ok=True)
    (path / "etc/hosts").write_bytes(b"")


def test_rw_size_is_measured_again_after_a_mount(store: LayerStore) -> None:
    (top,) = store.layers()
    rw = store.create_rw_layer("c1", top.chain_id, _init)
    assert store.rw_size(rw) == 0  # the init layer is not the container's
    root = store.mount(rw)
    (root / "written").write_bytes(b"w" * 1234)
    assert store.rw_size(rw) == 1234  # mounted: measured every time
    (root / "more").write_bytes(b"m" * 10)
    assert store.rw_size(rw) == 1244
    store.unmount(rw)
    assert store.rw_size(rw) == 1244
    # Written behind the store's back (not through a mount): the kept size stands...
    upper = store.driver.apply_target(rw.mount_id)
    (upper / "sneaked").write_bytes(b"s" * 100)
    assert store.rw_size(rw) == 1244
    # ... until the layer is mounted again (for a start, a docker cp, an export).
    store.mount(rw)
    store.unmount(rw)
    assert store.rw_size(rw) == 1344
    store.release_rw_layer(rw)


def test_rw_size_of_a_layer_mounted_twice(store: LayerStore) -> None:
    """A running container (one mount) that is also being copied into (a second): the
    size is kept only once both are gone."""
    (top,) = store.layers()
    rw = store.create_rw_layer("c2", top.chain_id, _init)
    root = store.mount(rw)
    store.mount(rw)
    (root / "a").write_bytes(b"a" * 10)
    store.unmount(rw)
    assert store.rw_size(rw) == 10
    (root / "b").write_bytes(b"b" * 5)
    assert store.rw_size(rw) == 15
    store.unmount(rw)
    assert store.rw_size(rw) == 15
    store.release_rw_layer(rw)


# -- docker export's tar ---------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/sh").write_bytes(b"#!sh\n")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root\n")
    os.symlink("/", root / "to-root")
    os.symlink("/etc", root / "etc-link")
    os.link(root / "bin/sh", root / "bin/sh2")
    (root / "vol").mkdir()
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host\n")
    yield root
    shutil.rmtree(tmp_path, ignore_errors=True)


def _export(fs: ContainerFS) -> bytes:
    r, w = os.pipe()
    out = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 1 << 16):
            out.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    try:
        fs.export(w)
    finally:
        os.close(w)
        t.join()
        os.close(r)
    return bytes(out)


def test_export_names_are_relative_with_no_root_entry(rootfs: Path) -> None:
    with ContainerFS(str(rootfs)) as fs:
        data = _export(fs)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        got = [(m.name, m.type) for m in tf.getmembers()]
        link = tf.getmember("bin/sh2")
    assert got == [
        ("bin", tarfile.DIRTYPE),
        ("bin/sh", tarfile.REGTYPE),
        ("bin/sh2", tarfile.LNKTYPE),
        ("etc", tarfile.DIRTYPE),
        ("etc/passwd", tarfile.REGTYPE),
        ("etc-link", tarfile.SYMTYPE),
        ("to-root", tarfile.SYMTYPE),
        ("vol", tarfile.DIRTYPE),
    ]
    assert link.linkname == "bin/sh"
    # The raw names: directories end in a slash, as Go's tar writes them.
    assert b"bin/\x00" in data and b"./" not in data[:512]
    assert data.endswith(bytes(1024))


def test_export_goes_into_the_mounts_given_and_no_other(rootfs: Path, tmp_path: Path) -> None:
    with ContainerFS(str(rootfs), [Mount("/vol", str(tmp_path / "host"), True)]) as fs:
        with_mount = _export(fs)
    with ContainerFS(str(rootfs)) as fs:
        without = _export(fs)
    assert "vol/secret" in _names(with_mount)
    assert "vol/secret" not in _names(without)
    assert "vol" in _names(without)


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()
