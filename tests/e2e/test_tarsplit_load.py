"""After ``docker load`` through a real berthd, each layer's tar comes back from the daemon's
data root byte for byte: what ``docker push`` and ``docker save`` will send."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from berth.graphdriver import new_driver
from berth.layer import LayerStore, ROLayer
from berth.testing import busybox_rootfs_tar, running_berthd
from berth.utils.mountinfo import mounts_under
from tests.e2e.archives import docker_archive, sha256


def _tar(*members: tuple[str, bytes | None], trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue() + trailing


def test_loaded_layers_reassemble_to_their_diff_ids(tmp_path: Path) -> None:
    deep = "/".join(["long-directory-name"] * 8)
    layers = [
        busybox_rootfs_tar(tmp_path / "busybox.tar").read_bytes(),
        _tar(
            ("etc", None),
            ("etc/.wh.group", b""),
            (deep, None),
            (f"{deep}/file", b"behind a PAX path\n"),
            ("srv/empty", b""),
        ),
        _tar(("last", b"with bytes after the end blocks"), trailing=b"\0" * 2048 + b"tail"),
    ]
    archive = tmp_path / "image.tar"
    archive.write_bytes(docker_archive(layers, ["tarsplit-e2e:1"], compress=True))
    with running_berthd() as d:
        d.docker("load", "-i", str(archive))
        diff_ids = json.loads(
            d.docker(
                "image", "inspect", "--format", "{{json .RootFS.Layers}}", "tarsplit-e2e:1"
            ).stdout
        )
        assert d.stop() == 0
        (driver_name,) = [p.name for p in (d.data_root / "image").iterdir()]
        driver = new_driver(driver_name, d.data_root)
        try:
            store = LayerStore(d.data_root / "image" / driver_name / "layerdb", driver)
            by_diff = {layer.diff_id: layer for layer in store.layers()}
            got: list[bytes] = []
            for diff_id in diff_ids:
                layer: ROLayer = by_diff[diff_id]
                with tempfile.TemporaryFile() as out:
                    store.tar_stream(layer, out)
                    out.seek(0)
                    got.append(out.read())
        finally:
            driver.cleanup()
        assert mounts_under(str(d.data_root)) == []
    assert diff_ids == [sha256(layer) for layer in layers]
    assert got == layers
