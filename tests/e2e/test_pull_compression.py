"""``docker pull`` of layers that are not gzip: zstd, recompressed by skopeo on the way in."""

from __future__ import annotations

import json

from berth.testing import Berthd
from tests.e2e.registries import (
    OciImage,
    Registry,
    oci_image,  # noqa: F401  (fixtures are taken from the module's namespace)
    registry,  # noqa: F401
)

OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def test_pull_zstd_layers_and_run(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
    image_cleanup: list[str],
) -> None:
    digest = registry.push(oci_image, "zbox:latest", compress_format="zstd")
    # what the registry serves really is zstd, so gzip cannot pass for it
    index = registry.manifest("zbox", digest).json()
    amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    manifest = registry.manifest("zbox", amd64["digest"]).json()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_ZSTD] * 2
    for layer in manifest["layers"]:
        assert registry.blob("zbox", layer["digest"]).body.startswith(ZSTD_MAGIC)

    ref = f"{registry.host}/zbox:latest"
    image_cleanup.append(ref)
    out = berthd.docker("pull", ref).stdout
    assert f"Digest: {digest}" in out
    assert f"Status: Downloaded newer image for {ref}" in out

    # the DiffIDs are of the plain tars, so the image is the gzip original's, layer for layer
    inspect = json.loads(berthd.docker("image", "inspect", ref).stdout)[0]
    assert inspect["Id"] == oci_image.images["amd64"].image_id
    assert inspect["RootFS"]["Layers"] == oci_image.diff_ids

    run = berthd.docker("run", "--rm", ref, "cat", "/" + oci_image.layer2_path)
    assert run.stdout == oci_image.layer2_content.decode()
