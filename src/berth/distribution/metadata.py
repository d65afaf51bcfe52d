"""Which registry blobs hold which layers: moby's ``v2metadata-by-diffid`` and
``diffid-by-digest``.

A layer is identified locally by its DiffID (the digest of its uncompressed tar) and on a
registry by the digest of a compressed blob.  Pull records the blob it came from and push
the blob it made, each with the repository it went to, so that a later push can answer
"Layer already exists" after a HEAD, or mount the blob from another repository of the same
registry, instead of compressing and uploading the layer again.

The files are dockerd's layout (``<image-root>/distribution/``), one JSON list per DiffID,
written atomically.  Entries carry no HMAC of the credentials that saw them (dockerd's way
to prefer mounts the same user made); berth keeps the field empty, as dockerd does for
anonymous pulls.
"""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec

from berth.distribution.manifest import valid_digest
from berth.utils.atomic import sweep_temp, write_file

#: dockerd keeps at most this many entries per DiffID (the newest)
MAX_ENTRIES = 50


class V2Metadata(msgspec.Struct, frozen=True):
    """One blob known to hold a layer, and the repository it was seen in."""

    Digest: str
    SourceRepository: str
    HMAC: str = ""


_decoder = msgspec.json.Decoder(list[V2Metadata])


class V2MetadataStore:
    """DiffID → blobs that hold it; blob digest → DiffID."""

    def __init__(self, root: Path) -> None:
        self._by_diff_id = root / "v2metadata-by-diffid" / "sha256"
        self._by_digest = root / "diffid-by-digest" / "sha256"
        for d in (self._by_diff_id, self._by_digest):
            d.mkdir(parents=True, exist_ok=True)
            sweep_temp(d)
        self._lock = threading.Lock()

    @staticmethod
    def _name(digest: str) -> str | None:
        if not valid_digest(digest) or not digest.startswith("sha256:"):
            return None
        return digest[len("sha256:") :]

    def get(self, diff_id: str) -> list[V2Metadata]:
        """The blobs known for *diff_id*, oldest first (as dockerd keeps them)."""
        name = self._name(diff_id)
        if name is None:
            return []
        try:
            return _decoder.decode((self._by_diff_id / name).read_bytes())
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return []

    def diff_id(self, digest: str) -> str | None:
        """The DiffID of the layer blob *digest*, when berth has seen it."""
        name = self._name(digest)
        if name is None:
            return None
        try:
            value = (self._by_digest / name).read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return value if valid_digest(value) else None

    def add(self, diff_id: str, digest: str, source_repository: str) -> None:
        """Record that blob *digest* of *source_repository* (a full name such as
        ``127.0.0.1:5000/busybox``) holds the layer *diff_id*; newest last."""
        key, blob = self._name(diff_id), self._name(digest)
        if key is None or blob is None:
            return
        entry = V2Metadata(digest, source_repository)
        with self._lock:
            entries = [e for e in self.get(diff_id) if e != entry]
            entries.append(entry)
            write_file(self._by_diff_id / key, msgspec.json.encode(entries[-MAX_ENTRIES:]), 0o644)
            write_file(self._by_digest / blob, diff_id.encode(), 0o644)

    def remove(self, diff_id: str, entry: V2Metadata) -> None:
        """Forget *entry* (the registry no longer has the blob there)."""
        key = self._name(diff_id)
        if key is None:
            return
        with self._lock:
            entries = self.get(diff_id)
            if entry not in entries:
                return
            entries.remove(entry)
            write_file(self._by_diff_id / key, msgspec.json.encode(entries), 0o644)
