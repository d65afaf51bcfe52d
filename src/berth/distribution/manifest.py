"""Manifests and indexes: the four formats dockerd pulls, and choosing a platform.

Docker schema 2 and OCI manifests name a config and layers; Docker manifest
lists and OCI indexes name manifests per platform.  Schema 1 is refused as
dockerd 28 refuses it.  Descriptors are checked here (digest syntax, sizes) so
that nothing later trusts a malformed one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from berth import errdefs
from berth.utils.platform import Platform

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
#: what a manifest GET accepts; schema 1 is asked for too, so that it can be refused
#: by name rather than met as an unknown 404 or a registry-side conversion
ALL_MANIFEST_TYPES = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    SCHEMA1_SIGNED,
    SCHEMA1,
)

#: containerd's and dockerd's limit on a manifest body
MAX_MANIFEST_SIZE = 4 << 20

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})\Z")


def valid_digest(digest: str) -> bool:
    return bool(_DIGEST.match(digest))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            p: dict[str, str] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            d["platform"] = p
        return d


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (``config`` and ``layers``) or index (``manifests``)."""

    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def schema1_error(ref: str = "") -> errdefs.InvalidParameter:
    """dockerd 28's refusal of schema 1 (``DeprecatedSchema1ImageError``)."""
    msg = (
        "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support "
        "has been removed."
    )
    if ref:
        msg += (
            f" Suggest the author of {ref} to upgrade the image to the OCI Format or"
            " Docker Image manifest v2, schema 2."
        )
    return errdefs.InvalidParameter(
        msg + " More information at https://docs.docker.com/go/deprecated-image-specs/"
    )


def detect_media_type(raw: bytes, header: str) -> str:
    """The manifest's media type: the body's ``mediaType`` where it names one, else the
    Content-Type, else the shape of the body (old registries answer ``application/json``)."""
    header = header.split(";", 1)[0].strip().lower()
    doc = _load(raw)
    body_mt = doc.get("mediaType")
    if isinstance(body_mt, str) and body_mt:
        return body_mt
    if header in ALL_MANIFEST_TYPES:
        return header
    if doc.get("schemaVersion") == 1:
        return SCHEMA1_SIGNED if "signatures" in doc else SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return header


def parse_manifest(raw: bytes, media_type: str = "", *, ref: str = "") -> Manifest:
    """Parse and check a manifest or index; *media_type* is the Content-Type (may be empty).

    *ref* (``docker.io/library/x:tag``) names the image in the schema 1 refusal."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidParameter(
            f"manifest too large: {len(raw)} bytes exceeds the limit of {MAX_MANIFEST_SIZE}"
        )
    mt = detect_media_type(raw, media_type)
    if mt in (SCHEMA1, SCHEMA1_SIGNED):
        raise schema1_error(ref)
    doc = _load(raw)
    header = media_type.split(";", 1)[0].strip().lower()
    if header in MANIFEST_TYPES + INDEX_TYPES and header != mt:
        raise errdefs.InvalidParameter(
            f"manifest media type {mt} does not match Content-Type {header}"
        )
    if mt not in MANIFEST_TYPES + INDEX_TYPES:
        raise errdefs.InvalidParameter(f"unsupported manifest media type {mt or '(none)'}")
    if doc.get("schemaVersion") != 2:
        version = doc.get("schemaVersion")
        raise errdefs.InvalidParameter(f"unsupported manifest schemaVersion {version!r}")
    if mt in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise errdefs.InvalidParameter("invalid manifest list: manifests is not a list")
        return Manifest(mt, manifests=tuple(_descriptor(d, "manifests") for d in items))
    config, layers = doc.get("config"), doc.get("layers")
    if not isinstance(config, dict):
        raise errdefs.InvalidParameter("invalid manifest: no config descriptor")
    if not isinstance(layers, list):
        raise errdefs.InvalidParameter("invalid manifest: layers is not a list")
    return Manifest(
        mt,
        config=_descriptor(config, "config"),
        layers=tuple(_descriptor(d, "layers") for d in layers),
    )


def _load(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise errdefs.InvalidParameter(f"invalid manifest: {e}") from None
    if not isinstance(doc, dict):
        raise errdefs.InvalidParameter("invalid manifest: not a JSON object")
    return doc


def _descriptor(d: object, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise errdefs.InvalidParameter(f"invalid manifest: {where} entry is not an object")
    mt, digest, size = d.get("mediaType", ""), d.get("digest"), d.get("size")
    if not isinstance(mt, str):
        raise errdefs.InvalidParameter(f"invalid manifest: {where} mediaType is not a string")
    if not isinstance(digest, str) or not valid_digest(digest):
        raise errdefs.InvalidParameter(f"invalid manifest: {where} has invalid digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errdefs.InvalidParameter(
            f"invalid manifest: {where} {digest} has invalid size {size!r}"
        )
    urls = d.get("urls") or []
    ann = d.get("annotations") or {}
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise errdefs.InvalidParameter(f"invalid manifest: {where} {digest} has invalid urls")
    if not isinstance(ann, dict):
        raise errdefs.InvalidParameter(
            f"invalid manifest: {where} {digest} has invalid annotations"
        )
    return Descriptor(
        mt,
        digest,
        size,
        _platform(d.get("platform")),
        tuple(urls),
        tuple((str(k), str(v)) for k, v in ann.items()),
    )


def _platform(p: object) -> Platform | None:
    if not isinstance(p, dict):
        return None
    os_, arch, variant = p.get("os", ""), p.get("architecture", ""), p.get("variant", "")
    if not all(isinstance(x, str) for x in (os_, arch, variant)):
        raise errdefs.InvalidParameter("invalid manifest: platform fields must be strings")
    if not os_ and not arch and not variant:
        return None
    return Platform(os_, arch, variant)


# ---- platform matching: containerd's platforms.Only, as dockerd's filterManifests uses it

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
}


def normalize(p: Platform) -> Platform:
    """containerd's ``platforms.Normalize``: arm64/v8 is arm64, arm is arm/v7, amd64/v1 is amd64."""
    os_ = p.os.lower()
    arch, variant = p.architecture.lower(), p.variant.lower()
    if arch == "armhf" and not variant:
        variant = "v7"
    elif arch == "armel" and not variant:
        variant = "v6"
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "arm64":
        if variant in ("8", "v8", "v8.0"):
            variant = ""
    elif arch == "arm":
        if variant == "":
            variant = "v7"
        elif variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    elif arch == "amd64" and variant in ("v1", "1"):
        variant = ""
    return Platform(os_, arch, variant)


def _vector(p: Platform) -> list[Platform]:
    """The platforms *p* runs, best first (containerd's ``platformVector``)."""
    p = normalize(p)
    out = [p]
    if p.architecture == "amd64" and p.variant.startswith("v") and p.variant[1:].isdigit():
        out += [
            Platform(p.os, "amd64", f"v{n}" if n > 1 else "")
            for n in range(int(p.variant[1:]) - 1, 0, -1)
        ]
    elif p.architecture == "arm" and p.variant[1:].isdigit():
        out += [Platform(p.os, "arm", f"v{n}") for n in range(int(p.variant[1:]) - 1, 4, -1)]
    elif p.architecture == "arm64":
        out += [Platform(p.os, "arm", f"v{n}") for n in range(8, 4, -1)]
    return out


def select_platform(index: dict[str, Any], platform: Platform) -> dict[str, Any]:
    """The descriptor of *index* (a parsed manifest list / OCI index) for *platform*.

    Entries without a platform match anything but rank last, as in dockerd;
    none matching → NotFound with dockerd's message."""
    vector = _vector(platform)
    best: tuple[int, int] | None = None
    chosen: dict[str, Any] | None = None
    for pos, entry in enumerate(index.get("manifests") or ()):
        if not isinstance(entry, dict):
            continue
        try:
            p = _platform(entry.get("platform"))
        except errdefs.InvalidParameter:
            continue
        if p is None:
            rank = len(vector)
        else:
            n = normalize(p)
            rank = next((i for i, v in enumerate(vector) if v == n), -1)
            if rank < 0:
                continue
        if best is None or (rank, pos) < best:
            best, chosen = (rank, pos), entry
    if chosen is None:
        raise errdefs.NotFound(f"no matching manifest for {platform} in the manifest list entries")
    return chosen
