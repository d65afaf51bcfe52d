"""``docker load``: images from a docker-archive or an OCI image layout tarball.

The archive is read in place (never unpacked to disk), members are found by
confined path resolution, every blob is checked against its digest and every
layer against the DiffID its config names.  Work happens in three phases —
read and check every manifest, register every layer, then create images and
tags — so an archive that fails anywhere imports nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from berth import errdefs
from berth.archive import decompress, detect_compression
from berth.image.reference import Reference, parse_normalized_named
from berth.image.store import decode_config
from berth.layer import ROLayer, chain_id
from berth.types.image import ImageConfig
from berth.utils.platform import host_platform
from berth.utils.timefmt import parse_rfc3339

if TYPE_CHECKING:
    from berth.image.service import ImageService

log = logging.getLogger(__name__)

_MAX_LINKS = 64
_MAX_JSON = 64 << 20

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


class InvalidArchive(errdefs.InvalidParameter):
    pass


class _ManifestItem(msgspec.Struct):
    Config: str
    Layers: list[str]
    RepoTags: list[str] | None = None
    Parent: str = ""


class _Descriptor(msgspec.Struct):
    mediaType: str = ""
    digest: str = ""
    size: int = 0
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None


class _Index(msgspec.Struct):
    manifests: list[_Descriptor] = msgspec.field(default_factory=list)
    mediaType: str = ""


class _Manifest(msgspec.Struct):
    config: _Descriptor
    layers: list[_Descriptor] = msgspec.field(default_factory=list)
    mediaType: str = ""


@dataclass
class _LayerSource:
    member: str
    diff_id: str
    digest: str = ""  # blob digest to check (OCI), "" for docker-archive


@dataclass
class _Entry:
    raw_config: bytes
    config: ImageConfig
    layers: list[_LayerSource]
    tags: list[Reference]
    held: list[ROLayer] = field(default_factory=list)
    parent: str = ""  # manifest.json's Parent: the image this one was built on


class _Archive:
    """Random access to the members of a tar, with confined path resolution."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
            self.members: dict[str, tarfile.TarInfo] = {}
            for m in self.tar:
                name = posixpath.normpath(m.name.lstrip("/"))
                self.members[name] = m
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InvalidArchive(f"invalid archive: {e}") from None

    def close(self) -> None:
        self.tar.close()

    def resolve(self, name: str) -> tarfile.TarInfo:
        """The regular file *name* refers to, following in-archive symlinks."""
        path = name
        for _ in range(_MAX_LINKS):
            cleaned = posixpath.normpath(posixpath.join("/", path)).lstrip("/")
            if path.startswith("/") or posixpath.normpath(path).startswith(".."):
                raise InvalidArchive(f"invalid archive: path {name!r} is outside of the archive")
            m = self.members.get(cleaned)
            if m is None:
                raise InvalidArchive(f"invalid archive: {name} not found in the archive")
            if m.issym():
                target = m.linkname
                if target.startswith("/"):
                    raise InvalidArchive(
                        f"invalid archive: {name} links outside of the archive ({target})"
                    )
                path = posixpath.join(posixpath.dirname(cleaned), target)
                continue
            if m.islnk():
                path = m.linkname
                continue
            if not m.isreg():
                raise InvalidArchive(f"invalid archive: {name} is not a regular file")
            return m
        raise InvalidArchive(f"invalid archive: too many links resolving {name}")

    def exists(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, limit: int = _MAX_JSON) -> bytes:
        m = self.resolve(name)
        if m.size > limit:
            raise InvalidArchive(f"invalid archive: {name} is too large ({m.size} bytes)")
        f = self.tar.extractfile(m)
        assert f is not None
        try:
            data = f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InvalidArchive(f"invalid archive: reading {name}: {e}") from None
        if len(data) != m.size:
            raise InvalidArchive(f"invalid archive: {name} is truncated")
        return data

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        m = self.resolve(name)
        f = self.tar.extractfile(m)
        assert f is not None
        yield f


def _decode_json(data: bytes, typ: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(data, type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidArchive(f"invalid {what}: {e}") from None


class _HashCheck(io.RawIOBase):
    """Check the sha256 of what is read against *digest* when the stream ends."""

    def __init__(self, inner: IO[bytes], digest: str, name: str) -> None:
        self._inner = inner
        self._digest = digest
        self._name = name
        self._h = hashlib.sha256()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        if not data and not self._done:
            self._done = True
            actual = "sha256:" + self._h.hexdigest()
            if actual != self._digest:
                raise InvalidArchive(
                    f"invalid archive: blob {self._name} does not match its digest "
                    f"{self._digest} (got {actual})"
                )
        self._h.update(data)
        n = len(data)
        b[:n] = data
        return n


def _parse_tags(tags: list[str]) -> list[Reference]:
    out = []
    for t in tags:
        ref = parse_normalized_named(t)
        if not ref.tag:
            raise InvalidArchive(f'invalid tag "{t}"')
        out.append(ref)
    return out


def _check_config(raw: bytes, n_layers: int) -> ImageConfig:
    cfg = decode_config(raw)
    if cfg.os and cfg.os != "linux":
        raise InvalidArchive(f"cannot load {cfg.os} image on linux")
    if n_layers != len(cfg.rootfs.diff_ids):
        raise InvalidArchive(
            f"invalid manifest, layers length mismatch: expected {n_layers}, "
            f"got {len(cfg.rootfs.diff_ids)}"
        )
    return cfg


def _docker_archive(ar: _Archive) -> list[_Entry]:
    items: list[_ManifestItem] | None = _decode_json(
        ar.read("manifest.json"),
        list[_ManifestItem] | None,  # type: ignore[arg-type]
        "manifest",
    )
    if items is None:
        raise InvalidArchive("invalid manifest, manifest cannot be null (but can be [])")
    entries = []
    for item in items:
        raw = ar.read(item.Config)
        cfg = _check_config(raw, len(item.Layers))
        layers = [
            _LayerSource(member, diff)
            for member, diff in zip(item.Layers, cfg.rootfs.diff_ids, strict=True)
        ]
        for src in layers:
            ar.resolve(src.member)
        entries.append(
            _Entry(raw, cfg, layers, _parse_tags(item.RepoTags or []), parent=item.Parent)
        )
    return entries


def _blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidArchive(f"invalid archive: unsupported or malformed digest {digest!r}")
    return f"blobs/sha256/{hexpart}"


def _read_blob(ar: _Archive, desc: _Descriptor) -> bytes:
    data = ar.read(_blob_path(desc.digest))
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
        raise InvalidArchive(f"invalid archive: blob {desc.digest} does not match its digest")
    return data


def _pick_platform(manifests: list[_Descriptor]) -> _Descriptor | None:
    host = host_platform()
    best: _Descriptor | None = None
    for d in manifests:
        p = d.platform or {}
        if (d.annotations or {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        if p.get("os", "linux") != "linux":
            continue
        if p.get("architecture", host.architecture) != host.architecture:
            continue
        variant = p.get("variant", "")
        if variant and host.variant and variant != host.variant:
            continue
        if best is None:
            best = d
    return best


def _oci_layout(ar: _Archive) -> list[_Entry]:
    if ar.exists("oci-layout"):
        layout = _decode_json(ar.read("oci-layout"), dict[str, Any], "oci-layout")
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise InvalidArchive("invalid archive: unsupported OCI image layout version")
    index: _Index = _decode_json(ar.read("index.json"), _Index, "index.json")
    entries = []
    for top in index.manifests:
        desc = top
        for _ in range(4):
            if desc.mediaType in (MT_OCI_INDEX, MT_DOCKER_LIST):
                nested: _Index = _decode_json(_read_blob(ar, desc), _Index, "image index")
                chosen = _pick_platform(nested.manifests)
                if chosen is None:
                    desc = _Descriptor()
                    break
                desc = chosen
            else:
                break
        if not desc.digest:
            continue
        if desc.mediaType not in (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST, ""):
            continue
        manifest: _Manifest = _decode_json(_read_blob(ar, desc), _Manifest, "image manifest")
        raw = _read_blob(ar, manifest.config)
        cfg = _check_config(raw, len(manifest.layers))
        layers = [
            _LayerSource(_blob_path(d.digest), diff, d.digest)
            for d, diff in zip(manifest.layers, cfg.rootfs.diff_ids, strict=True)
        ]
        for src in layers:
            ar.resolve(src.member)
        annotations = top.annotations or {}
        name = annotations.get(ANNOTATION_IMAGE_NAME, "")
        if not name:
            ref_name = annotations.get(ANNOTATION_REF_NAME, "")
            if "/" in ref_name or ":" in ref_name:
                name = ref_name
        entries.append(_Entry(raw, cfg, layers, _parse_tags([name]) if name else []))
    return entries


def _register_layers(svc: ImageService, ar: _Archive, entry: _Entry) -> None:
    parent: ROLayer | None = None
    for index, src in enumerate(entry.layers):
        cid = chain_id(parent.chain_id if parent else None, src.diff_id)
        existing = svc.layers.lookup(cid)
        if existing is not None:
            layer = svc.layers.get(cid)
        else:
            with ar.open(src.member) as f:
                stream: IO[bytes] = f
                if src.digest:
                    stream = io.BufferedReader(_HashCheck(f, src.digest, src.member))
                try:
                    layer = svc.layers.register(stream, parent, src.diff_id)
                except errdefs.InvalidParameter as e:
                    if "does not match its digest" in str(e) and not isinstance(e, InvalidArchive):
                        raise InvalidArchive(
                            f"invalid diffID for layer {index}: expected {src.diff_id!r}, "
                            f"content has another digest"
                        ) from None
                    raise
        entry.held.append(layer)
        parent = layer


def _plain_tar(path: Path) -> Path | None:
    """A decompressed copy of *path* if the whole archive is compressed, else None."""
    with open(path, "rb") as f:
        head = f.read(6)
    if detect_compression(head) == "none":
        return None
    plain = path.with_name(path.name + ".plain")
    try:
        with open(path, "rb") as src, open(plain, "wb") as dst:
            stream = decompress(src)
            shutil.copyfileobj(stream, dst, 1 << 20)
    except BaseException:
        plain.unlink(missing_ok=True)
        raise
    return plain


def load_archive(svc: ImageService, path: Path) -> list[str]:
    """Load every image in the tar at *path*; return the lines to show the user."""
    try:
        plain = _plain_tar(path)
    except (OSError, EOFError, ValueError) as e:
        raise InvalidArchive(f"invalid archive: cannot decompress it: {e}") from None
    try:
        return _load(svc, plain or path)
    finally:
        if plain is not None:
            plain.unlink(missing_ok=True)


def _load(svc: ImageService, path: Path) -> list[str]:
    ar = _Archive(path)
    entries: list[_Entry] = []
    try:
        if ar.exists("manifest.json"):
            entries = _docker_archive(ar)
        elif ar.exists("index.json"):
            entries = _oci_layout(ar)
        else:
            raise InvalidArchive(
                "invalid archive: it holds neither manifest.json (docker save) nor index.json "
                "(OCI image layout)"
            )
        try:
            for entry in entries:
                _register_layers(svc, ar, entry)
        except BaseException:
            for entry in entries:
                svc.release_layers(reversed(entry.held))
            raise
    finally:
        ar.close()

    messages: list[str] = []
    loaded: list[tuple[str, _Entry]] = []
    try:
        for entry in entries:
            img = svc.images.create(entry.raw_config)
            loaded.append((img.id, entry))
            tagged = False
            for ref in entry.tags:
                previous = svc.tag_image(img.id, ref)
                if previous is not None and previous != img.id:
                    messages.append(
                        f"The image {ref.familiar()} already exists, renaming the old one with "
                        f"ID {previous} to empty string\n"
                    )
                messages.append(f"Loaded image: {ref.familiar()}\n")
                tagged = True
            if not tagged:
                messages.append(f"Loaded image ID: {img.id}\n")
        _set_parents(svc, loaded)
    finally:
        for entry in entries:
            svc.release_layers(reversed(entry.held))
    return messages


def _set_parents(svc: ImageService, loaded: list[tuple[str, _Entry]]) -> None:
    """Record the Parent manifest.json names (moby's ``validatedParentLinks``): only one
    loaded from the same archive, and only if the child's history is the parent's plus
    one step (``checkValidParent``); any other claim is ignored."""
    ids = {ident for ident, _ in loaded}
    for ident, entry in loaded:
        parent = entry.parent
        if not parent or parent == ident or parent not in ids:
            continue
        child_img, parent_img = svc.images.get(ident), svc.images.get(parent)
        if child_img is None or parent_img is None:
            continue
        if _valid_parent(child_img.config, parent_img.config):
            svc.images.set_parent(ident, parent)
        else:
            log.warning("load: %s is not a valid parent for %s; not recorded", parent, ident)


def _valid_parent(child: ImageConfig, parent: ImageConfig) -> bool:
    if not child.history and not parent.history:
        return True
    if len(child.history) - len(parent.history) != 1:
        return False
    for p, c in zip(parent.history, child.history, strict=False):
        if _when(p.created) != _when(c.created):
            return False
        if (p.author, p.created_by, p.comment, p.empty_layer) != (
            c.author,
            c.created_by,
            c.comment,
            c.empty_layer,
        ):
            return False
    return True


def _when(created: str) -> int | str:
    """A history time as an instant (Go compares them with Equal), or as written."""
    try:
        return parse_rfc3339(created) if created else ""
    except ValueError:
        return created
