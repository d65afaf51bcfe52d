"""``docker save`` below the API: a layer's tar length known from its tar-split record
before the tar is written, and the archive the image service streams from it."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import pack_layer_diff
from berth.events import Events
from berth.graphdriver import new_driver
from berth.image.save import ImageArchive
from berth.image.service import ImageService
from berth.layer import LayerStore, ROLayer
from berth.layer.store import TAR_SPLIT
from berth.testing import busybox_rootfs_tar
from berth.utils.platform import Platform
from tests.e2e.archives import docker_archive
from tests.unit.layertars import (
    MTIME,
    sha256,
    stream_of,
)


def _tar(
    *members: tuple[str, bytes | None], fmt: int = tarfile.PAX_FORMAT, trailing: bytes = b""
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue() + trailing


LAYERS = {
    "busybox": None,  # filled from the busybox rootfs
    "long names, GNU": _tar(("d/" + "n" * 150, b"gnu long name\n"), fmt=tarfile.GNU_FORMAT),
    "long names, PAX": _tar(("é/" + "x" * 200, b"pax\n"), ("empty", b"")),
    # segments whose payloads end on each base64 padding (0, 1 and 2 '=')
    "1 byte after the end": _tar(("a", b"a"), trailing=b"\x01"),
    "2 bytes after the end": _tar(("a", b"a"), trailing=b"\x01\x02"),
    "3 bytes after the end": _tar(("a", b"a"), trailing=b"\x01\x02\x03"),
    "whiteouts": _tar(("etc", None), ("etc/.wh.group", b""), ("etc/.wh..wh..opq", b"")),
    # a file bigger than the recorder's flush size, and many small ones
    "big and small": _tar(
        ("big", os.urandom(3 << 20)), *((f"s/{i}", bytes([i % 256]) * i) for i in range(300))
    ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_tar_size_is_the_length_of_the_stream(store: LayerStore, tmp_path: Path, name: str) -> None:
    data = LAYERS[name] or busybox_rootfs_tar(tmp_path / "bb.tar").read_bytes()
    layer = store.register(io.BytesIO(data), None)
    assert store.tar_size(layer) == len(data)
    assert stream_of(store, layer) == data
    # asked again after a restart (no cache), the record gives the same answer
    again = LayerStore(store.root, store.driver)
    assert again.tar_size(again.get(layer.chain_id)) == len(data)


def test_tar_size_refuses_a_layer_that_cannot_be_reproduced(store: LayerStore) -> None:
    layer = store.register(io.BytesIO(_tar(("dup", b"first"), ("dup", b"second"))), None)
    with pytest.raises(errdefs.System) as err:
        store.tar_size(layer)
    assert f"layer {layer.diff_id} cannot be reproduced as the tar it came from" in str(err.value)


def _drop_record(store: LayerStore, layer: ROLayer) -> None:
    os.unlink(store.root / "sha256" / layer.chain_id.removeprefix("sha256:") / TAR_SPLIT)


def test_tar_size_without_record(store: LayerStore, tmp_path: Path) -> None:
    """vfs: refused.  overlay2: the diff dir is packed into nothing, and only a layer
    whose tar was written that way (moby's TarWithOptions) comes out as its DiffID."""
    written = _tar(("etc", None), ("etc/file", b"contents\n"))
    layer = store.register(io.BytesIO(written), None)
    _drop_record(store, layer)
    with pytest.raises(errdefs.System, match="has no tar-split data"):
        store.tar_size(layer)
    if store.driver.whiteout_format != "overlay":
        return
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "file").write_bytes(b"contents\n")
    for p in (tree / "etc" / "file", tree / "etc"):
        os.utime(p, (MTIME, MTIME))
    with tempfile.TemporaryFile() as out:
        pack_layer_diff(str(tree), out)
        out.seek(0)
        packed = out.read()
    layer = store.register(io.BytesIO(packed), None)
    _drop_record(store, layer)
    assert store.tar_size(layer) == len(packed)
    assert stream_of(store, layer) == packed


def test_corrupt_record_is_a_clear_error(store: LayerStore) -> None:
    layer = store.register(io.BytesIO(_tar(("a", b"a"))), None)
    (store.root / "sha256" / layer.chain_id.removeprefix("sha256:") / TAR_SPLIT).write_bytes(
        b"not gzip"
    )
    with pytest.raises(errdefs.System, match=f"layer {layer.diff_id}: tar-split: corrupt"):
        store.tar_size(layer)


# -- the archive -------------------------------------------------------------------------------


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[ImageService]:
    driver = new_driver("overlay2", tmp_path / "root")
    yield ImageService(
        tmp_path / "root", driver, events=Events(), image_users=dict, tmp_dir=tmp_path
    )
    driver.cleanup()


def _load(svc: ImageService, tmp_path: Path, layers: list[bytes], tags: list[str]) -> None:
    path = tmp_path / f"in-{len(list(tmp_path.iterdir()))}.tar"
    path.write_bytes(docker_archive(layers, tags))
    svc.load(path)


def _written(archive: ImageArchive) -> bytes:
    """What the archive writes into a pipe, read by another thread as the loop would."""
    r, w = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        archive.write_to(w)
    finally:
        os.close(w)
        reader.join()
        os.close(r)
    return b"".join(chunks)


def _save(svc: ImageService, names: list[str], platform: Platform | None = None) -> bytes:
    return _written(svc.prepare_save(names, platform))


def test_saved_layers_keep_their_bytes_and_references_are_released(
    svc: ImageService, tmp_path: Path
) -> None:
    base = _tar(("etc", None), ("etc/base", b"base\n"), trailing=b"\0" * 1024 + b"x")
    top = _tar(("etc", None), ("etc/top", b"top\n"))
    _load(svc, tmp_path, [base, top], ["two:1"])
    img = svc.get_image("two:1")
    assert img.layer is not None
    refs_before = img.layer.references
    data = _save(svc, ["two:1"])
    assert img.layer.references == refs_before  # released once written
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}  # type: ignore[union-attr]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-4:] == ["index.json", "manifest.json", "oci-layout", "repositories"]
    (item,) = json.loads(files["manifest.json"])
    assert [files[p] for p in item["Layers"]] == [base, top]
    assert json.loads(files["repositories"]) == {"two": {"1": sha256(top)[7:]}}
    # the tarball ends as Go's archive/tar ends one: two zero blocks, no record padding
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0


def test_nothing_is_held_when_a_name_is_missing(svc: ImageService, tmp_path: Path) -> None:
    _load(svc, tmp_path, [_tar(("a", b"a"))], ["one:1"])
    img = svc.get_image("one:1")
    assert img.layer is not None
    before = img.layer.references
    with pytest.raises(errdefs.NotFound, match="No such image: missing:latest"):
        svc.prepare_save(["one:1", "missing:latest"], None)
    assert img.layer.references == before
    archive = svc.prepare_save(["one:1"], None)
    assert img.layer.references == before + 1
    archive.close()
    archive.close()
    assert img.layer.references == before


def test_a_deleted_image_saves_until_the_archive_is_closed(
    svc: ImageService, tmp_path: Path
) -> None:
    layer = _tar(("kept", b"while saved\n"))
    _load(svc, tmp_path, [layer], ["going:1"])
    archive = svc.prepare_save(["going:1"], None)
    svc.delete("going:1", force=False, prune=True)
    assert svc.layers.layers()  # the archive holds it
    with tarfile.open(fileobj=io.BytesIO(_written(archive))) as tf:
        (item,) = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert tf.extractfile(item["Layers"][0]).read() == layer  # type: ignore[union-attr]
    assert svc.layers.layers() == []


def test_platform_must_match(svc: ImageService, tmp_path: Path) -> None:
    _load(svc, tmp_path, [_tar(("a", b"a"))], ["plat:1"])  # the archive's config says amd64
    svc.prepare_save(["plat:1"], Platform("linux", "amd64")).close()
    svc.prepare_save(["plat:1"], Platform("linux", "x86_64")).close()
    with pytest.raises(errdefs.NotFound, match="no suitable export target found for platform"):
        svc.prepare_save(["plat:1"], Platform("linux", "arm64", "v8"))
