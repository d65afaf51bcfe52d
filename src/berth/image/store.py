"""The image store (``imagedb``) and the reference store (``repositories.json``).

An image is its config JSON; its ID is the sha256 of those exact bytes,
kept verbatim in ``imagedb/content/sha256/<hex>``.  Each image holds one
reference on its top layer, so layers live exactly as long as some image or
container needs them.  A config is written only after all its layers are
registered: a crash can leave layers without an image (released at start)
but never an image without layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from berth import errdefs
from berth.image.reference import Reference, parse_normalized_named
from berth.layer import LayerStore, ROLayer, chain_ids
from berth.types.image import ImageConfig
from berth.utils.atomic import sweep_temp, write_file
from berth.utils.timefmt import format_rfc3339_nano, now_ns, parse_rfc3339

log = logging.getLogger(__name__)

_config_decoder = msgspec.json.Decoder(ImageConfig)


def decode_config(raw: bytes) -> ImageConfig:
    try:
        cfg = _config_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise errdefs.InvalidParameter(f"invalid image config: {e}") from None
    if cfg.rootfs.type != "layers":
        raise errdefs.InvalidParameter(
            f"invalid image config: unsupported rootfs type {cfg.rootfs.type!r}"
        )
    return cfg


@dataclass(eq=False)
class Image:
    id: str
    config: ImageConfig
    layer: ROLayer | None
    size: int
    parent: str = ""
    last_updated: str = ""
    children: set[str] = field(default_factory=set)

    @property
    def chain_id(self) -> str | None:
        return self.layer.chain_id if self.layer else None

    @property
    def created_ns(self) -> int | None:
        """The config's ``created`` in ns since the epoch; None without a valid one."""
        if not self.config.created:
            return None
        try:
            return parse_rfc3339(self.config.created)
        except ValueError:
            return None


class ImageStore:
    def __init__(self, root: Path, layers: LayerStore) -> None:
        self.root = root
        self.layers = layers
        self._content = root / "content" / "sha256"
        self._metadata = root / "metadata" / "sha256"
        self._content.mkdir(parents=True, exist_ok=True)
        self._metadata.mkdir(parents=True, exist_ok=True)
        self._images: dict[str, Image] = {}
        self._lock = threading.RLock()
        self._load()

    def _load(self) -> None:
        sweep_temp(self._content)
        for entry in os.scandir(self._content):
            if entry.name.startswith("."):
                continue
            ident = "sha256:" + entry.name
            try:
                raw = Path(entry.path).read_bytes()
                if hashlib.sha256(raw).hexdigest() != entry.name:
                    raise errdefs.InvalidParameter("content does not match its digest")
                cfg = decode_config(raw)
                layer = self._acquire_top(cfg)
            except (OSError, errdefs.BerthError) as e:
                log.warning("dropping image %s: %s", ident, e)
                self._remove_files(ident)
                continue
            meta = self._metadata / entry.name
            parent = _read_opt(meta / "parent")
            last = _read_opt(meta / "lastUpdated")
            self._images[ident] = Image(
                ident, cfg, layer, layer.total_size() if layer else 0, parent, last
            )
        for img in self._images.values():
            if img.parent in self._images:
                self._images[img.parent].children.add(img.id)

    def _acquire_top(self, cfg: ImageConfig) -> ROLayer | None:
        diff_ids = cfg.rootfs.diff_ids
        if not diff_ids:
            return None
        return self.layers.get(chain_ids(diff_ids)[-1])

    def create(self, raw: bytes, parent: str = "") -> Image:
        """Store config *raw* (whose layers must be registered) and return its image."""
        cfg = decode_config(raw)
        ident = "sha256:" + hashlib.sha256(raw).hexdigest()
        non_empty = sum(1 for h in cfg.history if not h.empty_layer)
        if cfg.history and non_empty > len(cfg.rootfs.diff_ids):
            raise errdefs.InvalidParameter("too many non-empty layers in History section")
        with self._lock:
            existing = self._images.get(ident)
            if existing is not None:
                return existing
            layer = self._acquire_top(cfg)
            try:
                write_file(self._content / ident[7:], raw, 0o600)
            except BaseException:
                if layer is not None:
                    self.layers.release(layer)
                raise
            img = Image(ident, cfg, layer, layer.total_size() if layer else 0)
            self._images[ident] = img
            if parent:
                self.set_parent(ident, parent)
            return img

    def set_parent(self, ident: str, parent: str) -> None:
        with self._lock:
            img = self._images[ident]
            meta = self._metadata / ident[7:]
            meta.mkdir(parents=True, exist_ok=True)
            write_file(meta / "parent", parent.encode())
            img.parent = parent
            if parent in self._images:
                self._images[parent].children.add(ident)

    def set_last_updated(self, ident: str) -> None:
        with self._lock:
            img = self._images.get(ident)
            if img is None:
                return
            stamp = format_rfc3339_nano(now_ns())
            meta = self._metadata / ident[7:]
            meta.mkdir(parents=True, exist_ok=True)
            write_file(meta / "lastUpdated", stamp.encode())
            img.last_updated = stamp

    def set_built_locally(self, ident: str) -> None:
        """Mark *ident* as made by a build on this daemon (moby's ``SetBuiltLocally``):
        only such images are the build cache's candidates, never pulled or loaded ones."""
        with self._lock:
            if ident not in self._images:
                return
            meta = self._metadata / ident[7:]
            meta.mkdir(parents=True, exist_ok=True)
            # a marker, not state: written without the sync of an atomic write (one per
            # build step); lost to a crash, it only takes the image out of the cache
            (meta / "builtLocally").write_bytes(b"true")

    def is_built_locally(self, ident: str) -> bool:
        return _read_opt(self._metadata / ident.removeprefix("sha256:") / "builtLocally") == "true"

    def raw_config(self, ident: str) -> bytes:
        """The config exactly as stored: its sha256 is the image ID (push sends it)."""
        try:
            return (self._content / ident.removeprefix("sha256:")).read_bytes()
        except FileNotFoundError:
            raise errdefs.NotFound(f"No such image: {ident}") from None

    def get(self, ident: str) -> Image | None:
        return self._images.get(ident)

    def all(self) -> list[Image]:
        with self._lock:
            return list(self._images.values())

    def search(self, prefix: str) -> Image | None:
        """The image whose ID starts with *prefix* (with or without ``sha256:``)."""
        prefix = prefix.removeprefix("sha256:")
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return None
        found: Image | None = None
        with self._lock:
            for ident, img in self._images.items():
                if ident[7:].startswith(prefix):
                    if found is not None:
                        return None
                    found = img
        return found

    def delete(self, ident: str) -> list[ROLayer]:
        """Forget image *ident*; return the layers that went with it."""
        with self._lock:
            img = self._images.pop(ident, None)
            if img is None:
                return []
            if img.parent in self._images:
                self._images[img.parent].children.discard(ident)
            for child in img.children:
                child_img = self._images.get(child)
                if child_img is not None:
                    child_img.parent = ""
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._metadata / child[7:] / "parent")
            self._remove_files(ident)
            if img.layer is not None:
                return self.layers.release(img.layer)
            return []

    def _remove_files(self, ident: str) -> None:
        try:
            os.unlink(self._content / ident[7:])
        except FileNotFoundError:
            pass
        shutil.rmtree(self._metadata / ident[7:], ignore_errors=True)


def _read_opt(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


class _Repositories(msgspec.Struct):
    Repositories: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)


class ReferenceStore:
    """Tags and digests → image IDs, persisted like moby's ``repositories.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._refs: dict[Reference, str] = {}
        self._lock = threading.RLock()
        self._load()

    def _load(self) -> None:
        try:
            data = msgspec.json.decode(self.path.read_bytes(), type=_Repositories)
        except FileNotFoundError:
            return
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise errdefs.System(f"{self.path} is corrupt: {e}") from None
        for refs in data.Repositories.values():
            for ref_str, ident in refs.items():
                try:
                    self._refs[parse_normalized_named(ref_str)] = ident
                except errdefs.InvalidParameter:
                    log.warning("skipping invalid reference %r in %s", ref_str, self.path)

    def _save(self) -> None:
        repos: dict[str, dict[str, str]] = {}
        for ref, ident in self._refs.items():
            repos.setdefault(ref.familiar_name(), {})[ref.familiar()] = ident
        ordered = {k: dict(sorted(v.items())) for k, v in sorted(repos.items())}
        write_file(self.path, msgspec.json.encode(_Repositories(ordered)), 0o600)

    def add(self, ref: Reference, ident: str) -> str | None:
        """Point *ref* at *ident* (replacing silently); return the previous image."""
        if ref.familiar_name() == "sha256":
            raise errdefs.InvalidParameter(
                "refusing to create an ambiguous tag using digest algorithm as name"
            )
        if ref.digest:
            ref = Reference(ref.domain, ref.path, "", ref.digest)
        with self._lock:
            previous = self._refs.get(ref)
            if previous is not None and ref.digest and previous != ident:
                raise errdefs.Conflict(f"Cannot overwrite digest {ref.digest}")
            self._refs[ref] = ident
            self._save()
            return previous

    def delete(self, ref: Reference) -> bool:
        ref = ref.tag_name_only()
        with self._lock:
            if ref not in self._refs:
                return False
            del self._refs[ref]
            self._save()
            return True

    def get(self, ref: Reference) -> str | None:
        key = Reference(ref.domain, ref.path, "", ref.digest) if ref.digest else ref.tag_name_only()
        return self._refs.get(key)

    def references(self, ident: str) -> list[Reference]:
        with self._lock:
            refs = [r for r, i in self._refs.items() if i == ident]
        refs.sort(key=str)
        return refs

    def all(self) -> dict[Reference, str]:
        with self._lock:
            return dict(self._refs)
