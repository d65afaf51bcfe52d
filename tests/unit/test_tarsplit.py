"""tar-split: a registered layer's tar comes back byte for byte (its DiffID) from a real
LayerStore over overlay2 and vfs, as push and save need it."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import pack_layer_diff
from berth.graphdriver import new_driver
from berth.graphdriver.base import Driver
from berth.image.service import ImageService
from berth.layer import LayerStore, ROLayer
from berth.layer.store import TAR_SPLIT, TAR_SPLIT_REFUSED
from berth.testing import busybox_rootfs_tar
from tests.e2e.archives import docker_archive
from tests.unit.layertars import (
    MTIME,
    Entry,
    dir_,
    hard,
    info,
    make_tar,
    reg,
    sha256,
    stream_of,
    sym,
)


def register(store: LayerStore, data: bytes, parent: ROLayer | None = None) -> ROLayer:
    return store.register(io.BytesIO(data), parent)


def roundtrip(store: LayerStore, data: bytes, parent: ROLayer | None = None) -> ROLayer:
    layer = register(store, data, parent)
    assert layer.diff_id == sha256(data)
    got = stream_of(store, layer)
    assert sha256(got) == layer.diff_id
    assert got == data
    return layer


def test_busybox_rootfs(store: LayerStore, tmp_path: Path) -> None:
    data = busybox_rootfs_tar(tmp_path / "busybox.tar").read_bytes()
    roundtrip(store, data)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_and_odd_names(store: LayerStore, fmt: int) -> None:
    deep = "/".join(["d" * 40] * 4)  # 163 characters: beyond ustar's name and prefix split
    data = make_tar(
        dir_("./"),
        dir_("./etc/"),
        reg("./etc/x", b"dot-slash\n"),
        dir_(deep),
        reg(f"{deep}/{'f' * 120}", b"long\n" * 100),
        sym(f"{deep}/{'s' * 110}", "../" * 3 + "t" * 150),
        hard(f"{deep}/{'h' * 110}", f"{deep}/{'f' * 120}"),
        reg("ünï-çødé.txt", "ü".encode() * 7),
        reg("raw-\udcff-name", b"not utf-8 on disk"),
        fmt=fmt,
    )
    roundtrip(store, data)


def test_links_whiteouts_opaque_dirs_and_empty_files(store: LayerStore) -> None:
    base = roundtrip(
        store,
        make_tar(
            dir_("a"),
            reg("a/old", b"old\n"),
            reg("a/kept", b"kept\n"),
            dir_("d"),
            reg("d/gone", b"gone\n"),
            dir_("d/sub"),
            reg("d/sub/deep", b"deep\n"),
        ),
    )
    fifo = info("a/fifo", tarfile.FIFOTYPE, 0o600), None
    child = roundtrip(
        store,
        make_tar(
            dir_("a"),
            reg("a/.wh.old"),
            reg("a/empty"),
            reg("a/file", os.urandom(5000)),
            hard("a/file-link", "a/file"),
            sym("a/rel-link", "file"),
            sym("a/abs-link", "/etc/passwd"),
            fifo,
            dir_("d"),
            reg("d/.wh..wh..opq"),
            reg("d/new", b"new\n"),
            reg("b/implicit-parent", b"made without a directory entry\n"),
        ),
        base,
    )
    assert child.parent is base
    assert stream_of(store, base)  # the parent's record is its own


def test_gzip_input_gives_the_uncompressed_tar(store: LayerStore) -> None:
    plain = make_tar(dir_("z"), reg("z/a", os.urandom(100_000)), reg("z/b", b"b" * 513))
    layer = store.register(io.BytesIO(gzip.compress(plain)), None)
    assert layer.diff_id == sha256(plain)
    assert stream_of(store, layer) == plain


@pytest.mark.parametrize(
    "trailing",
    [b"\0" * 9000, b"garbage after the end blocks", os.urandom(3 << 20)],
    ids=["zeros", "text", "3MiB"],
)
def test_bytes_after_the_end_blocks(store: LayerStore, trailing: bytes) -> None:
    roundtrip(store, make_tar(reg("f", b"x" * 700), trailing=trailing))


def test_entries_that_leave_no_file_stay_in_the_record(store: LayerStore) -> None:
    """Data of entries not written to disk (aufs bookkeeping, a whiteout with data, an
    unknown type) and a sparse file's stored map and chunks are kept verbatim."""
    sparse = info("sparse", tarfile.REGTYPE)
    sparse.pax_headers = {"GNU.sparse.map": "0,4,100000,4", "GNU.sparse.size": "100004"}
    sparse.size = 8
    unknown = info("odd", b"Z")
    unknown.size = 3 << 20
    data = make_tar(
        dir_(".wh..wh.plnk"),
        reg(".wh..wh.plnk/123.456", b"aufs link data" * 100),
        reg(".wh.nothing", b"a whiteout with contents"),
        (unknown, os.urandom(3 << 20)),
        (sparse, b"headtail"),
        reg("after", b"still in step"),
    )
    layer = roundtrip(store, data)
    root = store.driver.apply_target(layer.cache_id)
    assert (root / "sparse").read_bytes() == b"head" + bytes(99996) + b"tail"
    assert (root / "after").read_bytes() == b"still in step"


def test_a_file_behind_a_symlink_of_the_same_layer(store: LayerStore) -> None:
    layer = roundtrip(
        store, make_tar(dir_("real"), sym("lnk", "real"), reg("lnk/file", b"through the link"))
    )
    assert (store.driver.apply_target(layer.cache_id) / "real" / "file").exists()


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ((reg("f", b"first"), reg("f", b"second")), "'f'"),
        ((dir_("d"), reg("d/f", b"first"), reg("d/.wh.f")), "'d/f'"),
        ((dir_("d"), reg("d/f", b"first"), sym("d", "elsewhere")), "'d'"),
        ((reg("f", b"first"), hard("g", "f"), reg("f", b"again")), "'f'"),
    ],
    ids=["same-name-twice", "whiteout-of-own-file", "dir-replaced", "rewritten-after-link"],
)
def test_a_tar_that_overwrites_its_own_file_is_refused(
    store: LayerStore, entries: tuple[Entry, ...], named: str
) -> None:
    data = make_tar(*entries)
    layer = register(store, data)  # applying it is fine: the last write wins, as in dockerd
    assert layer.diff_id == sha256(data)
    meta = store.root / "sha256" / layer.chain_id.removeprefix("sha256:")
    assert not (meta / TAR_SPLIT).exists()
    with pytest.raises(errdefs.System) as err, tempfile.TemporaryFile() as out:
        store.tar_stream(layer, out)
    message = str(err.value)
    assert layer.diff_id in message and "cannot be reproduced" in message
    assert named in message


def test_unreproducible_mark_survives_a_restart(store: LayerStore) -> None:
    layer = register(store, make_tar(reg("f", b"1"), reg("f", b"2")))
    again = LayerStore(store.root, store.driver)
    reloaded = again.get(layer.chain_id)
    meta = store.root / "sha256" / layer.chain_id.removeprefix("sha256:")
    assert "'f'" in (meta / TAR_SPLIT_REFUSED).read_text()
    with pytest.raises(errdefs.System, match="cannot be reproduced"):
        stream_of(again, reloaded)


def test_record_is_read_again_after_a_restart(store: LayerStore) -> None:
    data = make_tar(dir_("x"), reg("x/y", b"y" * 10_000))
    layer = register(store, data)
    leftover = store.root / "sha256" / ".tmp-register-crashed"
    leftover.mkdir()
    (leftover / TAR_SPLIT).write_bytes(b"half")
    again = LayerStore(store.root, store.driver)
    assert not leftover.exists()
    assert stream_of(again, again.get(layer.chain_id)) == data


def test_second_register_keeps_the_first_record_and_failures_leave_nothing(
    store: LayerStore,
) -> None:
    data = make_tar(reg("f", b"content"))
    first = register(store, data)
    meta = store.root / "sha256" / first.chain_id.removeprefix("sha256:")
    record = (meta / TAR_SPLIT).read_bytes()
    second = register(store, data)
    assert second is first and first.references == 2
    assert (meta / TAR_SPLIT).read_bytes() == record
    with pytest.raises(errdefs.InvalidParameter, match="does not match its digest"):
        store.register(io.BytesIO(make_tar(reg("g", b"x"))), None, sha256(b"other"))
    assert [p.name for p in (store.root / "sha256").iterdir()] == [meta.name]
    assert store.driver.list_ids() == [first.cache_id]


def test_a_changed_file_fails_the_digest_check(store: LayerStore) -> None:
    layer = register(store, make_tar(reg("f", b"abcdef")))
    (store.driver.apply_target(layer.cache_id) / "f").write_bytes(b"abcdeF")
    with pytest.raises(errdefs.System, match=f"layer {layer.diff_id}: the reassembled tar"):
        stream_of(store, layer)
    (store.driver.apply_target(layer.cache_id) / "f").write_bytes(b"short")
    with pytest.raises(errdefs.System, match="'f' in the layer is not the regular file"):
        stream_of(store, layer)


# -- layers registered before the record was kept ---------------------------------------------


def _drop_record(store: LayerStore, layer: ROLayer) -> None:
    os.unlink(store.root / "sha256" / layer.chain_id.removeprefix("sha256:") / TAR_SPLIT)


def test_without_record_a_layer_is_refused_unless_its_diff_packs_to_the_digest(
    store: LayerStore, tmp_path: Path
) -> None:
    layer = register(store, busybox_rootfs_tar(tmp_path / "bb.tar").read_bytes())
    _drop_record(store, layer)
    with pytest.raises(errdefs.System) as err:
        stream_of(store, layer)
    assert str(err.value) == (
        f"layer {layer.diff_id} has no tar-split data (it was registered before berth kept "
        "it), so its tar cannot be reproduced: pull or load the image again"
    )


def test_overlay2_without_record_packs_the_diff_dir(tmp_path: Path) -> None:
    driver = new_driver("overlay2", tmp_path / "data")
    try:
        store = LayerStore(tmp_path / "data" / "layerdb", driver)
        tree = tmp_path / "tree"
        (tree / "etc" / "sub").mkdir(parents=True)
        (tree / "etc" / "a").write_bytes(b"a" * 1000)
        os.link(tree / "etc" / "a", tree / "etc" / "b")
        os.symlink("a", tree / "etc" / "c")
        (tree / "empty").write_bytes(b"")
        for p in sorted(tree.rglob("*"), reverse=True):
            os.utime(p, (MTIME, MTIME), follow_symlinks=False)
        with tempfile.TemporaryFile() as out:
            digest, length = pack_layer_diff(str(tree), out)
            out.seek(0)
            packed = out.read()
        assert (digest, length) == (sha256(packed), len(packed))
        layer = register(store, packed)
        _drop_record(store, layer)
        assert stream_of(store, layer) == packed

        # Whiteouts as the diff dir holds them go out as moby writes them.
        child = register(
            store, make_tar(dir_("etc"), reg("etc/.wh.a"), reg("etc/sub/.wh..wh..opq")), layer
        )
        diff = driver.apply_target(child.cache_id)
        assert stat.S_ISCHR(os.lstat(diff / "etc" / "a").st_mode)
        with tempfile.TemporaryFile() as out:
            pack_layer_diff(str(diff), out)
            out.seek(0)
            with tarfile.open(fileobj=out) as tf:
                got = [(m.name, m.type, m.size) for m in tf]
        assert got == [
            ("etc", tarfile.DIRTYPE, 0),
            ("etc/.wh.a", tarfile.REGTYPE, 0),
            ("etc/sub", tarfile.DIRTYPE, 0),
            ("etc/sub/.wh..wh..opq", tarfile.REGTYPE, 0),
        ]
    finally:
        driver.cleanup()


# -- docker load ------------------------------------------------------------------------------


def test_loaded_image_layers_give_back_the_config_diff_ids(driver: Driver, tmp_path: Path) -> None:
    from berth.events import Events

    svc = ImageService(
        tmp_path / "data", driver, events=Events(), image_users=dict, tmp_dir=tmp_path
    )
    deep = "p" * 200
    layers = [
        busybox_rootfs_tar(tmp_path / "bb.tar").read_bytes(),
        make_tar(
            dir_("etc"), reg("etc/.wh.group"), reg(f"etc/{deep}", b"long"), hard("l", f"etc/{deep}")
        ),
        make_tar(reg("tail", b"t"), trailing=b"\0" * 4096 + b"trailer"),
    ]
    archive = tmp_path / "image.tar"
    archive.write_bytes(docker_archive(layers, ["tarsplit:load"], compress=True))
    svc.load(archive)
    img = svc.get_image("tarsplit:load")
    assert img.chain_id is not None
    top = svc.layers.lookup(img.chain_id)
    assert top is not None
    chain: list[ROLayer] = []
    layer: ROLayer | None = top
    while layer is not None:
        chain.insert(0, layer)
        layer = layer.parent
    assert [lyr.diff_id for lyr in chain] == img.config.rootfs.diff_ids
    assert [stream_of(svc.layers, lyr) for lyr in chain] == layers
