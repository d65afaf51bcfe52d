"""``docker save``: images as the tarball current dockerd writes, streamed.

The layout is moby's (``image/tarexport/save.go``, dockerd 25 and later): one
tar that is at once an OCI image layout and a docker-archive, whose files a
directory walk puts in this order::

    blobs/
    blobs/sha256/
    blobs/sha256/<hex>   image configs (by image ID), layer tars (by DiffID,
                         uncompressed) and one OCI manifest per image
    index.json           OCI index: a manifest per tag, annotated with the full name
                         (io.containerd.image.name) and the tag (...ref.name); one
                         without annotations for an image saved by ID
    manifest.json        docker-archive: Config, RepoTags, Layers, Parent (when the
                         parent is saved too), LayerSources
    oci-layout
    repositories         {name: {tag: DiffID of the top layer}}, when a tag is saved

No file is a link or a copy of another, and nothing is staged: every name is
resolved, every document built and every layer's tar length learnt from its
tar-split record before the first byte, so that a missing image or a layer that
cannot be reproduced is an HTTP error, not a broken tarball.  The layers are
then written straight from the layer store (:meth:`LayerStore.tar_stream`),
byte for byte the tars they were registered from.  A failure part way (a
layer's files changed under it) raises; the caller must then cut the stream
rather than end it, so the client sees an error and not a short tarball.

Left out: the legacy v1 JSON of every layer that moby still writes as an extra
blob; nothing in the tarball refers to it and no loader reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, cast

import msgspec

from berth import errdefs
from berth.image.reference import Reference, parse_any
from berth.image.store import Image
from berth.layer import ROLayer
from berth.utils.platform import Platform
from berth.utils.timefmt import parse_rfc3339

if TYPE_CHECKING:
    from berth.image.service import ImageService

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
#: moby writes this exact text (with its space), no newline
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'

_BLOCK = 512
_WRITE_BUFFER = 1 << 20


# -- the JSON documents, fields in Go's order ---------------------------------------------------


class _LayerSource(msgspec.Struct):
    """A docker/distribution ``Descriptor`` (``LayerSources`` values)."""

    mediaType: str
    size: int
    digest: str


class _ManifestItem(msgspec.Struct, omit_defaults=True):
    Config: str
    RepoTags: list[str] | None  # null for an image saved by ID, as Go writes a nil slice
    Layers: list[str]
    Parent: str = ""
    LayerSources: dict[str, _LayerSource] | None = None


class _Descriptor(msgspec.Struct, omit_defaults=True):
    """An OCI descriptor."""

    mediaType: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None


class _Manifest(msgspec.Struct):
    schemaVersion: int
    mediaType: str
    config: _Descriptor
    layers: list[_Descriptor]


class _Index(msgspec.Struct):
    schemaVersion: int
    mediaType: str
    manifests: list[_Descriptor]


def _json(value: object) -> bytes:
    """Go's ``json.Marshal``: map keys sorted, struct fields in declaration order."""
    return msgspec.json.encode(value, order="deterministic")


# -- which images ------------------------------------------------------------------------------


@dataclass
class _Saved:
    image: Image
    tags: list[Reference] = field(default_factory=list)


def _not_found(name: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"No such image: {name}")


def resolve(svc: ImageService, names: list[str]) -> list[_Saved]:
    """The images *names* stand for, in the order first named, with the tags to record.

    As moby's ``parseNames``: an ID or ID prefix saves the image without a tag;
    ``name:tag`` saves that tag; a name alone saves every tag of that
    repository (or, with none, the image whose ID starts with it); a digest
    reference saves its image without a tag.
    """
    saved: dict[str, _Saved] = {}

    def add(img: Image, ref: Reference | None) -> None:
        entry = saved.setdefault(img.id, _Saved(img))
        if ref is not None and not ref.digest:
            tagged = ref.tag_name_only()
            if tagged not in entry.tags:
                entry.tags.append(tagged)

    def by_prefix(name: str) -> Image:
        img = svc.images.search(name)
        if img is None:
            raise _not_found(name)
        return img

    for name in names:
        parsed = parse_any(name)
        if isinstance(parsed, str):
            img = svc.images.get(parsed)
            if img is None:
                raise _not_found(name)
            add(img, None)
        elif parsed.familiar_name() == "sha256":
            add(by_prefix(name), None)
        elif not parsed.tag and not parsed.digest:
            refs = sorted(
                ((r, ident) for r, ident in svc.references.all().items() if r.name == parsed.name),
                key=lambda pair: str(pair[0]),
            )
            found = [(svc.images.get(ident), r) for r, ident in refs]
            if not any(img is not None for img, _ in found):
                add(by_prefix(name), None)
            for img, r in found:
                if img is not None:
                    add(img, r)
        else:
            ident = svc.references.get(parsed)
            img = svc.images.get(ident) if ident is not None else None
            if img is None:
                raise _not_found(parsed.familiar())
            add(img, parsed)
    return list(saved.values())


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}


def _normalized(os_name: str, arch: str, variant: str) -> tuple[str, str, str]:
    """containerd's ``platforms.Normalize`` for what images here carry."""
    os_name, arch, variant = os_name.lower() or "linux", arch.lower(), variant.lower()
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    if (arch, variant) in (("amd64", "v1"), ("arm64", "8"), ("arm64", "v8"), ("arm64", "v8.0")):
        variant = ""  # the default variant
    elif arch == "arm" and variant in ("", "7"):
        variant = "v7"
    elif arch == "arm" and variant in ("5", "6", "8"):
        variant = "v" + variant
    return os_name, arch, variant


def check_platform(saved: list[_Saved], platform: Platform) -> None:
    """Refuse an image that is not of *platform* (moby: ``platforms.OnlyStrict``)."""
    want = _normalized(platform.os, platform.architecture, platform.variant)
    for entry in saved:
        cfg = entry.image.config
        if _normalized(cfg.os, cfg.architecture, cfg.variant) != want:
            raise errdefs.NotFound(
                f"no suitable export target found for platform {platform}: image "
                f"{entry.image.id} is {cfg.os or 'linux'}/{cfg.architecture}"
                + (f"/{cfg.variant}" if cfg.variant else "")
            )


# -- the tarball -------------------------------------------------------------------------------


@dataclass
class _Blob:
    mtime: int
    data: bytes = b""
    layer: ROLayer | None = None
    size: int = 0


def _created(img: Image) -> int:
    """The image's creation time in seconds, which moby gives its config and layer files."""
    try:
        return parse_rfc3339(img.config.created) // 1_000_000_000 if img.config.created else 0
    except ValueError:
        return 0


def _layers_of(img: Image) -> list[ROLayer]:
    chain: list[ROLayer] = []
    layer = img.layer
    while layer is not None:
        chain.append(layer)
        layer = layer.parent
    chain.reverse()
    if [layer.diff_id for layer in chain] != list(img.config.rootfs.diff_ids):
        raise errdefs.System(f"image {img.id}: its layers do not match its config's rootfs")
    return chain


class ImageArchive:
    """The images to save, resolved and checked, holding a reference on their layers
    until :meth:`close`; :meth:`write_to` streams the tarball once."""

    def __init__(
        self, svc: ImageService, saved: list[_Saved], on_saved: Callable[[str], None]
    ) -> None:
        self._layers = svc.layers
        self._on_saved = on_saved
        self._ids = [entry.image.id for entry in saved]
        self._held: list[ROLayer] = []
        self._lock = threading.Lock()
        try:
            for entry in saved:
                if entry.image.layer is not None:
                    self._held.append(svc.layers.get(entry.image.layer.chain_id))
            self._blobs: dict[str, _Blob] = {}
            self._files = self._build(svc, saved)
        except BaseException:
            self.close()
            raise

    def _build(self, svc: ImageService, saved: list[_Saved]) -> list[tuple[str, bytes]]:
        blobs = self._blobs
        items: list[_ManifestItem] = []
        descriptors: list[_Descriptor] = []
        repositories: dict[str, dict[str, str]] = {}
        for entry in saved:
            img = entry.image
            layers = _layers_of(img)
            if not layers:
                raise errdefs.NotImplementedFeature(
                    f"image {img.id} has no layers, and saving an empty image is not "
                    "implemented (empty export - not implemented)"
                )
            created = _created(img)
            sources: dict[str, _LayerSource] = {}
            layer_descs: list[_Descriptor] = []
            for layer in layers:
                hexpart = layer.diff_id.removeprefix("sha256:")
                blob = blobs.get(hexpart)
                if blob is None:
                    size = self._layers.tar_size(layer)  # refuses an unreproducible layer
                    blob = blobs[hexpart] = _Blob(created, layer=layer, size=size)
                sources[layer.diff_id] = _LayerSource(MT_OCI_LAYER, blob.size, layer.diff_id)
                layer_descs.append(_Descriptor(MT_OCI_LAYER, layer.diff_id, blob.size))
            raw = svc.images.raw_config(img.id)
            blobs.setdefault(img.id.removeprefix("sha256:"), _Blob(created, raw, size=len(raw)))
            manifest = _json(
                _Manifest(
                    2,
                    MT_OCI_MANIFEST,
                    _Descriptor(MT_OCI_CONFIG, img.id, len(raw)),
                    layer_descs,
                )
            )
            manifest_digest = "sha256:" + _sha256(manifest)
            blobs.setdefault(manifest_digest[7:], _Blob(0, manifest, size=len(manifest)))
            untagged = _Descriptor(MT_OCI_MANIFEST, manifest_digest, len(manifest))
            top = layers[-1].diff_id.removeprefix("sha256:")
            for ref in entry.tags:
                repositories.setdefault(ref.familiar_name(), {})[ref.tag] = top
                descriptors.append(
                    _Descriptor(
                        untagged.mediaType,
                        untagged.digest,
                        untagged.size,
                        {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag},
                    )
                )
            if not entry.tags:
                descriptors.append(untagged)
            items.append(
                _ManifestItem(
                    Config=f"blobs/sha256/{img.id.removeprefix('sha256:')}",
                    RepoTags=[ref.familiar() for ref in entry.tags] or None,
                    Layers=[f"blobs/sha256/{layer.diff_id[7:]}" for layer in layers],
                    LayerSources=sources,
                )
            )
        ids = {entry.image.id for entry in saved}
        for item, entry in zip(items, saved, strict=True):
            parent = entry.image.parent
            if parent and parent in ids and parent != entry.image.id:
                item.Parent = parent
        files = [
            ("index.json", _json(_Index(2, MT_OCI_INDEX, descriptors))),
            ("manifest.json", _json(items) + b"\n"),
            ("oci-layout", OCI_LAYOUT),
        ]
        if repositories:
            files.append(("repositories", _json(repositories) + b"\n"))
        return files

    def write_to(self, fd: int) -> None:
        """Write the tarball to *fd*, then announce each image saved; the references
        are released however it ends."""
        try:
            out = open(fd, "wb", buffering=_WRITE_BUFFER, closefd=False)  # noqa: SIM115
            try:
                self._write(out)
                out.flush()
            finally:
                with contextlib.suppress(OSError):  # what failed is already being raised
                    out.close()
            for ident in self._ids:
                self._on_saved(ident)
        finally:
            self.close()

    def _write(self, out: BinaryIO) -> None:
        out.write(_header("blobs/", 0, 0, tarfile.DIRTYPE, 0o755))
        out.write(_header("blobs/sha256/", 0, 0, tarfile.DIRTYPE, 0o755))
        for name in sorted(self._blobs):
            blob = self._blobs[name]
            out.write(_header(f"blobs/sha256/{name}", blob.size, blob.mtime))
            if blob.layer is None:
                out.write(blob.data)
            else:
                counted = _Exact(out, blob.size, blob.layer.diff_id)
                self._layers.tar_stream(blob.layer, cast(BinaryIO, counted))
                counted.check()
            out.write(bytes(_padded(blob.size) - blob.size))
        for name, data in self._files:
            out.write(_header(name, len(data), 0))
            out.write(data)
            out.write(bytes(_padded(len(data)) - len(data)))
        out.write(bytes(2 * _BLOCK))

    def close(self) -> None:
        """Release the layers (once; safe to call again)."""
        with self._lock:
            held, self._held = self._held, []
        for layer in held:
            with contextlib.suppress(Exception):
                self._layers.release(layer)


class _Exact:
    """Passes a layer's tar on, refusing to write more than the length its header
    announced; :meth:`check` refuses less."""

    def __init__(self, out: BinaryIO, size: int, diff_id: str) -> None:
        self._out = out
        self._left = size
        self._diff_id = diff_id

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if n > self._left:
            raise errdefs.System(
                f"layer {self._diff_id}: its tar is longer than its tar-split record says"
            )
        self._left -= n
        return self._out.write(data)

    def check(self) -> None:
        if self._left:
            raise errdefs.System(
                f"layer {self._diff_id}: its tar is {self._left} bytes shorter than its "
                "tar-split record says"
            )


def _padded(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


def _header(
    name: str, size: int, mtime: int, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> bytes:
    """A header as moby's archive.Tar writes one for a file the daemon wrote: root's,
    no user or group names, PAX records only when a value needs one (a layer of 8 GiB)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = mtime
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
