"""``docker pull``: a manifest, its config and its layers from a registry into the image service.

As moby's ``distribution/pull_v2.go``: the reference is resolved (``docker.io/library``
normalisation), the manifest fetched by tag or digest, the host's (or ``--platform``'s)
entry chosen from an index or manifest list, the config fetched and checked against its
digest, and the layers whose ChainID is not in the layer store downloaded, three at a time,
to temp files under the daemon's tmp dir while hashing.  They are registered in order
through the layer store's own unpacker (which decompresses), the image created from the
config (its ID is the config's digest), the reference tagged and the manifest digest kept as
a RepoDigest.  Progress goes out as dockerd's JSON messages.

Errors known before any layer moves (``prepare``: repository, tag or digest unknown, access
denied, registry unreachable) are raised before the caller starts its stream; what fails
later is raised from ``execute``.  Either way temp files are removed and the layers this
pull registered are released, so nothing is left half-registered.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from berth import errdefs
from berth.distribution.manifest import (
    DOCKER_FOREIGN_LAYER,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Manifest,
    parse_manifest,
    select_platform,
)
from berth.distribution.registry import AuthConfig, RegistryClient, RepositorySession
from berth.events import Events
from berth.image.reference import DEFAULT_TAG, Reference, parse_normalized_named
from berth.image.store import Image, ImageStore, ReferenceStore, decode_config
from berth.layer import LayerStore, ROLayer, chain_id
from berth.utils.platform import Platform, host_platform

Progress = Callable[[dict[str, Any]], None]

#: dockerd's default ``--max-concurrent-downloads``
MAX_CONCURRENT_DOWNLOADS = 3
#: the largest image config berth reads into memory
MAX_CONFIG_SIZE = 8 << 20
_PROGRESS_STEP = 512 << 10


@runtime_checkable
class PullTarget(Protocol):
    """What pull needs of the image service (``berth.image.service.ImageService``)."""

    layers: LayerStore
    images: ImageStore
    references: ReferenceStore
    events: Events

    @property
    def tmp_dir(self) -> Path: ...

    def tag_image(self, ident: str, ref: Reference) -> str | None: ...


@dataclass
class PullPlan:
    """What ``prepare`` found: the manifest to pull and where it came from."""

    reference: Reference  # as asked for (tag or digest)
    session: RepositorySession
    manifest: Manifest
    digest: str  # of the top-level manifest (index or manifest): the RepoDigest
    held: list[ROLayer] = field(default_factory=list)


def normalize_reference(from_image: str, tag: str = "") -> Reference:
    """``fromImage`` and ``tag`` as dockerd joins them: a digest tag means ``@``."""
    ref = parse_normalized_named(from_image)
    if tag:
        if ":" in tag:
            ref = Reference(ref.domain, ref.path, "", tag)
        else:
            ref = ref.name_only().with_tag(tag)
    if not ref.tag and not ref.digest:
        ref = ref.with_tag(DEFAULT_TAG)
    return ref


def prepare(
    client: RegistryClient,
    reference: Reference,
    auth: AuthConfig | None,
    platform: Platform | None,
) -> PullPlan:
    """Fetch the manifest (choosing the platform from an index); raises before any stream."""
    session = client.session(reference, auth=auth, actions=("pull",))
    ref = reference.digest or reference.tag or DEFAULT_TAG
    raw, media_type, digest = session.get_manifest(ref)
    manifest = parse_manifest(raw, media_type, ref=reference.familiar())
    if manifest.is_index:
        entry = select_platform(json.loads(raw), platform or host_platform())
        child = str(entry.get("digest", ""))
        raw2, media2, _ = session.get_manifest(child)
        manifest = parse_manifest(raw2, media2, ref=reference.familiar())
        if manifest.is_index or manifest.media_type in INDEX_TYPES:
            raise errdefs.InvalidParameter(
                f"manifest {child} for {reference.familiar()} is an index, not an image manifest"
            )
    if manifest.media_type not in MANIFEST_TYPES or manifest.config is None:
        raise errdefs.InvalidParameter(
            f"unsupported manifest type {manifest.media_type!r} for {reference.familiar()}"
        )
    return PullPlan(reference, session, manifest, digest)


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _bar(current: int, total: int) -> str:
    """dockerd's ``JSONProgress.String`` bar, without the terminal width games."""
    if total <= 0:
        return f"{_human(current)}"
    width = 50
    pct = min(current * width // total, width)
    arrow = ">" if pct < width else "="
    bar = "=" * max(pct - 1, 0) + (arrow if pct else "") + " " * (width - pct)
    return f"[{bar}]  {_human(current)}/{_human(total)}"


def _human(n: int) -> str:
    """Go's ``units.HumanSize`` (decimal, 4 significant digits)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.4g}{unit}"
        size /= 1000
    return f"{size:.4g}TB"


class _Reporter:
    """Serialises progress messages from the download threads."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, status: str, ident: str = "", **extra: Any) -> None:
        msg: dict[str, Any] = {"status": status}
        msg.update(extra)
        if ident:
            msg["id"] = ident
        with self._lock:
            self._progress(msg)

    def step(self, status: str, ident: str, current: int, total: int) -> None:
        detail: dict[str, int] = {"current": current}
        if total > 0:
            detail["total"] = total
        self(status, ident, progressDetail=detail, progress=_bar(current, total))


class _ExtractReader(io.RawIOBase):
    """A file read for registration, reporting "Extracting" as it goes."""

    def __init__(self, f: IO[bytes], report: _Reporter, ident: str, total: int) -> None:
        self._f = f
        self._report = report
        self._ident = ident
        self._total = total
        self._done = 0
        self._last = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._done += n
            if self._done - self._last >= _PROGRESS_STEP or self._done == self._total:
                self._last = self._done
                self._report.step("Extracting", self._ident, self._done, self._total)
        return int(n or 0)


def execute(images: PullTarget, plan: PullPlan, progress: Progress) -> str:
    """Download and register what *plan* names; the image ID."""
    report = _Reporter(progress)
    ref = plan.reference
    report(f"Pulling from {ref.path}", ref.digest or ref.tag or DEFAULT_TAG)
    session, manifest = plan.session, plan.manifest
    assert manifest.config is not None
    config_raw = _fetch_config(session, manifest.config)
    cfg = decode_config(config_raw)
    layers = [d for d in manifest.layers if d.media_type != DOCKER_FOREIGN_LAYER]
    diff_ids = list(cfg.rootfs.diff_ids)
    if len(diff_ids) != len(layers):
        raise errdefs.InvalidParameter(
            f"invalid manifest for {ref.familiar()}: {len(layers)} layers but "
            f"{len(diff_ids)} diff IDs in the image config"
        )
    chains: list[str] = []
    parent: str | None = None
    for diff_id in diff_ids:
        parent = chain_id(parent, diff_id)
        chains.append(parent)

    # The bottom layers already here are not downloaded again ("Already exists").
    present = 0
    while present < len(chains) and images.layers.lookup(chains[present]) is not None:
        present += 1
    for desc in layers[:present]:
        report("Already exists", _short(desc.digest), progressDetail={})
    missing = layers[present:]
    for desc in missing:
        report("Pulling fs layer", _short(desc.digest), progressDetail={})
    for desc in missing[MAX_CONCURRENT_DOWNLOADS:]:
        report("Waiting", _short(desc.digest), progressDetail={})

    held = plan.held
    temps: list[Path] = []
    pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_DOWNLOADS, thread_name_prefix="pull")
    futures: list[Future[Path]] = []
    try:
        for i in range(present):
            held.append(images.layers.get(chains[i]))
        for desc in missing:
            fd, name = tempfile.mkstemp(prefix="pull-", dir=images.tmp_dir)
            os.close(fd)
            path = Path(name)
            temps.append(path)
            futures.append(pool.submit(_download, session, desc, path, report))
        top: ROLayer | None = held[-1] if held else None
        for k, (desc, fut) in enumerate(zip(missing, futures, strict=True)):
            _wait_or_fail(fut, futures)
            path = fut.result()
            ident = _short(desc.digest)
            size = path.stat().st_size
            index = present + k
            existing = images.layers.lookup(chains[index])
            if existing is not None:  # another pull registered it meanwhile
                layer = images.layers.get(chains[index])
            else:
                with open(path, "rb") as f:
                    stream = io.BufferedReader(_ExtractReader(f, report, ident, size), 1 << 20)
                    layer = images.layers.register(stream, top, diff_ids[index])
            held.append(layer)
            top = layer
            path.unlink(missing_ok=True)
            report("Pull complete", ident, progressDetail={})
        img = images.images.create(config_raw)
    except BaseException:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for path in temps:
            path.unlink(missing_ok=True)
        _release(images, held)
        raise
    pool.shutdown(wait=True)
    _release(images, held)
    return _finish(images, plan, img, report)


def _wait_or_fail(fut: Future[Path], futures: list[Future[Path]]) -> None:
    """Wait for *fut*, but fail at once if any other download failed first."""
    pending = {f for f in futures if not f.done()}
    while not fut.done():
        done, pending = wait_futures(pending, return_when=FIRST_COMPLETED)
        for f in done:
            if f.exception() is not None:
                f.result()


def _release(images: PullTarget, held: list[ROLayer]) -> None:
    for layer in reversed(held):
        images.layers.release(layer)
    held.clear()


def _fetch_config(session: RepositorySession, desc: Descriptor) -> bytes:
    if desc.size > MAX_CONFIG_SIZE:
        raise errdefs.InvalidParameter(f"image config {desc.digest} is too large ({desc.size})")
    buf = io.BytesIO()
    session.fetch_blob(desc.digest, buf)  # checks the digest
    raw = buf.getvalue()
    if desc.size and len(raw) != desc.size:
        raise errdefs.InvalidParameter(
            f"image config {desc.digest}: {len(raw)} bytes, the manifest says {desc.size}"
        )
    return raw


def _download(session: RepositorySession, desc: Descriptor, path: Path, report: _Reporter) -> Path:
    ident = _short(desc.digest)
    last = [0]

    def on_progress(current: int, total: int) -> None:
        if current - last[0] >= _PROGRESS_STEP or current == total:
            last[0] = current
            report.step("Downloading", ident, current, total if total > 0 else desc.size)

    with open(path, "wb") as f:
        session.fetch_blob(desc.digest, f, progress=on_progress)  # verifies; empties on mismatch
    if desc.size and path.stat().st_size != desc.size:
        raise errdefs.InvalidParameter(
            f"filesystem layer verification failed for digest {desc.digest}: size "
            f"{path.stat().st_size}, the manifest says {desc.size}"
        )
    report("Verifying Checksum", ident, progressDetail={})
    report("Download complete", ident, progressDetail={})
    return path


def _finish(images: PullTarget, plan: PullPlan, img: Image, report: _Reporter) -> str:
    ref = plan.reference
    updated = True
    if ref.digest:
        updated = images.references.get(ref) != img.id
        images.tag_image(img.id, ref)
    else:
        updated = images.references.get(ref) != img.id
        images.tag_image(img.id, ref)
        images.references.add(
            Reference(ref.domain, ref.path, "", plan.digest), img.id
        )  # the RepoDigest
    report(f"Digest: {plan.digest}")
    name = ref.familiar()
    if updated:
        report(f"Status: Downloaded newer image for {name}")
    else:
        report(f"Status: Image is up to date for {name}")
    images.events.publish("image", "pull", name, {"name": name})
    return img.id


def pull(
    images: PullTarget,
    client: RegistryClient,
    reference: str | Reference,
    auth: AuthConfig | None,
    platform: Platform | None,
    progress: Progress,
) -> str:
    """Pull *reference* into *images*; the image ID (its config's digest)."""
    ref = reference if isinstance(reference, Reference) else normalize_reference(reference)
    return execute(images, prepare(client, ref, auth, platform), progress)
