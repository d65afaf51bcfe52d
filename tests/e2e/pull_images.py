"""Images made for the pull tests and put into a test registry through its HTTP API.

The OCI layout of :mod:`tests.e2e.registries` has busybox-static as its first layer, which the
session daemon often has already (``busybox:latest`` is imported from the same files), so a
pull of it downloads one small layer at most.  The pull tests need layers nobody has: each
:func:`upload_image` call makes layers of fresh random bytes (gzip cannot shrink them, so a
layer's blob is as large as asked), writes a Docker schema 2 manifest and config, and uploads
the blobs (POST then PUT, as the distribution spec's monolithic upload) and the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import urllib.parse
from dataclasses import dataclass, field

from tests.e2e.registries import MT_DOCKER_MANIFEST, Registry

MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A layer's tar: *files* by path (parents made as directories), mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for path, content in files.items():
            parent = os.path.dirname(path)
            parts = [p for p in parent.split("/") if p]
            for i in range(len(parts)):
                d = "/".join(parts[: i + 1])
                if d in dirs or ".." in parts[: i + 1]:
                    continue
                dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o644
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def random_layer(size: int, path: str = "data.bin") -> bytes:
    """A layer of one file of *size* random bytes, plus ``<path>.txt`` naming its digest."""
    data = os.urandom(size)
    note = hashlib.sha256(data).hexdigest().encode() + b"\n"
    return layer_tar({path: data, path + ".txt": note})


@dataclass
class Layer:
    digest: str  # of the gzip blob: what the registry and the progress ids know
    size: int
    diff_id: str

    @property
    def short(self) -> str:
        """The id dockerd's progress messages give the layer."""
        return self.digest.split(":", 1)[1][:12]


@dataclass
class PushedImage:
    repo: str
    tag: str
    manifest_digest: str
    config_digest: str  # the image ID once pulled
    layers: list[Layer] = field(default_factory=list)

    def ref(self, host: str) -> str:
        return f"{host}/{self.repo}:{self.tag}"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(reg: Registry, repo: str, data: bytes) -> str:
    """Upload *data* unless the repository has it; its digest."""
    digest = _sha256(data)
    if reg.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
        return digest
    r = reg.request("POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"}, b"")
    if r.status != 202:
        raise RuntimeError(f"starting an upload to {repo}: {r.status} {r.body!r}")
    location = urllib.parse.urlsplit(r.headers["location"])
    query = location.query + ("&" if location.query else "") + "digest=" + digest
    r = reg.request(
        "PUT",
        f"{location.path}?{query}",
        {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        data,
    )
    if r.status != 201:
        raise RuntimeError(f"uploading {digest} to {repo}: {r.status} {r.body!r}")
    return digest


def upload_image(
    reg: Registry,
    repo: str,
    tag: str,
    layer_tars: list[bytes],
    *,
    cmd: list[str] | None = None,
) -> PushedImage:
    """Upload an amd64/linux image of these layers (gzip) as ``repo:tag``."""
    layers: list[Layer] = []
    for tar in layer_tars:
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        layers.append(Layer(put_blob(reg, repo, blob), len(blob), _sha256(tar)))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z"} for _ in layers],
    }
    config_raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_digest = put_blob(reg, repo, config_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_MANIFEST,
        "config": {"mediaType": MT_DOCKER_CONFIG, "size": len(config_raw), "digest": config_digest},
        "layers": [
            {"mediaType": MT_DOCKER_LAYER, "size": layer.size, "digest": layer.digest}
            for layer in layers
        ],
    }
    raw = json.dumps(manifest, indent=3).encode()
    r = reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        {"Content-Type": MT_DOCKER_MANIFEST, "Content-Length": str(len(raw))},
        raw,
    )
    if r.status != 201:
        raise RuntimeError(f"putting the manifest of {repo}:{tag}: {r.status} {r.body!r}")
    return PushedImage(repo, tag, _sha256(raw), config_digest, layers)
