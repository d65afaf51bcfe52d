"""Build image archives by hand: docker-archive (docker save) and OCI image layouts.

Hostile variants are built by passing odd member names or wrong digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(
    files: dict[str, bytes | str | None], symlinks: dict[str, str] | None = None
) -> bytes:
    """A layer tar: *files* maps a path to contents (None makes a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = int(time.time())
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
                continue
            raw = data.encode() if isinstance(data, str) else data
            info.size = len(raw)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(raw))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def image_config(
    diff_ids: list[str],
    cmd: list[str] | None = None,
    labels: dict[str, str] | None = None,
    **extra: Any,
) -> bytes:
    """An image config; *labels* join ``built=by-hand``, e.g. one a test filters its own by."""
    cfg: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {
            "Cmd": cmd or ["sh"],
            "Env": ["PATH=/bin"],
            "Labels": {"built": "by-hand", **(labels or {})},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
            for i in range(len(diff_ids))
        ],
    }
    cfg.update(extra)
    return json.dumps(cfg).encode()


@dataclass
class Member:
    name: str
    data: bytes = b""
    symlink: str | None = None


@dataclass
class Archive:
    members: list[Member] = field(default_factory=list)

    def add(self, name: str, data: bytes) -> None:
        self.members.append(Member(name, data))

    def link(self, name: str, target: str) -> None:
        self.members.append(Member(name, symlink=target))

    def build(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for m in self.members:
                info = tarfile.TarInfo(m.name)
                info.mtime = int(time.time())
                if m.symlink is not None:
                    info.type = tarfile.SYMTYPE
                    info.linkname = m.symlink
                    tf.addfile(info)
                else:
                    info.size = len(m.data)
                    info.mode = 0o644
                    tf.addfile(info, io.BytesIO(m.data))
        return buf.getvalue()


def docker_archive(
    layers: list[bytes],
    tags: list[str],
    *,
    compress: bool = False,
    config: bytes | None = None,
    layer_names: list[str] | None = None,
) -> bytes:
    """What ``docker save`` (<= 24) writes: manifest.json, <id>.json, <n>/layer.tar."""
    diff_ids = [sha256(layer) for layer in layers]
    cfg = config if config is not None else image_config(diff_ids)
    ar = Archive()
    names = []
    for i, layer in enumerate(layers):
        name = layer_names[i] if layer_names else f"{i:064x}/layer.tar"
        names.append(name)
        ar.add(name, gzip.compress(layer) if compress else layer)
    cfg_name = sha256(cfg)[7:] + ".json"
    ar.add(cfg_name, cfg)
    manifest = [{"Config": cfg_name, "RepoTags": tags, "Layers": names}]
    ar.add("manifest.json", json.dumps(manifest).encode())
    return ar.build()


def oci_layout(
    layers: list[bytes],
    name: str | None,
    *,
    ref_name: str | None = None,
    wrong_blob: bool = False,
) -> bytes:
    """An OCI image layout with gzip layers, optionally nested under an index."""
    diff_ids = [sha256(layer) for layer in layers]
    cfg = image_config(diff_ids, cmd=["echo", "oci"])
    ar = Archive()
    layer_descs = []
    for layer in layers:
        blob = gzip.compress(layer)
        digest = sha256(blob)
        ar.add(f"blobs/sha256/{digest[7:]}", blob + (b"x" if wrong_blob else b""))
        layer_descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": len(blob),
            }
        )
    ar.add(f"blobs/sha256/{sha256(cfg)[7:]}", cfg)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(cfg),
                "size": len(cfg),
            },
            "layers": layer_descs,
        }
    ).encode()
    ar.add(f"blobs/sha256/{sha256(manifest)[7:]}", manifest)
    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    ar.add(f"blobs/sha256/{sha256(nested)[7:]}", nested)
    annotations = {}
    if name:
        annotations["io.containerd.image.name"] = name
    if ref_name:
        annotations["org.opencontainers.image.ref.name"] = ref_name
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": sha256(nested),
                "size": len(nested),
                "annotations": annotations,
            }
        ],
    }
    ar.add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    ar.add("index.json", json.dumps(index).encode())
    return ar.build()
