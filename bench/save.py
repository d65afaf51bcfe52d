"""Issue 14's ``docker save`` figure: the registry bench's 3-layer image, saved to a file.

The image (``registry.bench_image``: busybox's rootfs and two layers of 64 MiB, 136 MB of
tar) comes from the cached OCI layout, put into each engine once by ``docker load`` of a
docker-archive made from it (no registry needed). Each sample times ``docker save -o`` and
then checks the tarball, untimed: its manifest names the image's config, and every layer
file is the uncompressed tar whose sha256 is the DiffID the config lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from engines import Engine, Failed
from registry import BenchImage, bench_image
from workloads import Workload

SAVE_IMAGE = "berth-bench-save:latest"


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def _docker_archive(image: BenchImage, path: Path) -> None:
    """A docker-archive (what ``docker load`` of any engine reads) of the layout's image,
    its gzip blobs as they are: loaders decompress layer files themselves."""
    blobs = image.layout / "blobs" / "sha256"
    config = image.config_digest.removeprefix("sha256:")
    layers = [layer.digest.removeprefix("sha256:") for layer in image.layers]
    manifest = [
        {
            "Config": f"blobs/sha256/{config}",
            "RepoTags": [SAVE_IMAGE],
            "Layers": [f"blobs/sha256/{h}" for h in layers],
        }
    ]
    with tarfile.open(path, "w") as tf:
        for h in [config, *layers]:
            tf.add(blobs / h, f"blobs/sha256/{h}")
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def _check(path: Path, image: BenchImage) -> None:
    """The saved tarball holds the image: config and every layer tar by its DiffID."""
    with tarfile.open(path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        _expect(len(manifest) == 1, f"manifest.json lists {len(manifest)} images")
        (item,) = manifest
        _expect(
            # blobs/sha256/<hex> (dockerd 25 on, berth) or <hex>.json (older dockerd)
            item["Config"].rsplit("/", 1)[-1].removesuffix(".json")
            == image.config_digest.removeprefix("sha256:"),
            f"saved config {item['Config']}, the image is {image.config_digest}",
        )
        _expect(item["RepoTags"] == [SAVE_IMAGE], f"RepoTags {item['RepoTags']}")
        want = [layer.diff_id for layer in image.layers]
        got = []
        for name in item["Layers"]:
            f = tf.extractfile(name)
            _expect(f is not None, f"layer {name} is not a file in the tarball")
            assert f is not None
            h = hashlib.sha256()
            while chunk := f.read(1 << 20):
                h.update(chunk)
            got.append("sha256:" + h.hexdigest())
        _expect(got == want, f"saved layers hash to {got}, the DiffIDs are {want}")


def save_workloads(tmp: Path, cache: Path, seed: int) -> list[Workload]:
    """``docker save`` of the bench image; built (or taken from the cache) on first use."""
    state: dict[str, BenchImage] = {}

    def image() -> BenchImage:
        if "image" not in state:
            state["image"] = bench_image(cache, seed)
        return state["image"]

    def setup(e: Engine) -> None:
        archive = tmp / "save-input.tar"
        if not archive.exists():
            _docker_archive(image(), archive)
        e.ok("load", "-i", str(archive))
        got = e.out("image", "inspect", "-f", "{{.Id}}", SAVE_IMAGE)
        _expect(got == image().config_digest, f"loaded {got}, want {image().config_digest}")

    def sample(e: Engine) -> float:
        out = tmp / f"saved-{e.name}.tar"
        out.unlink(missing_ok=True)
        try:
            r = e.ok("save", "-o", str(out), SAVE_IMAGE)
            _check(out, image())
        finally:
            out.unlink(missing_ok=True)
        return r.seconds

    def teardown(e: Engine) -> None:
        e.ok("rmi", SAVE_IMAGE)

    return [
        Workload(
            "save -o (3 layers, 136 MB of tar)",
            sample,
            rounds=9,
            setup=setup,
            teardown=teardown,
        )
    ]
