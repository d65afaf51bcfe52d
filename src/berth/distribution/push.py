"""``docker push``: local images to a registry, as moby's ``distribution/push_v2.go``.

For each tag of the repository (or the one tag asked for) the image's layers are made
present in the target repository, up to ``max_concurrent_uploads`` at a time, cheapest way
first:

1. a layer this push already settled, or a blob the V2 metadata says holds the layer and a
   HEAD finds in the target repository: "Layer already exists";
2. a blob of the same layer in another repository of the same registry: a cross-repository
   mount, "Mounted from <repo>";
3. otherwise the layer's exact tar (its sha256 is the DiffID the config names) is gzipped to
   a temp file while hashing, then uploaded: "Pushing" … "Pushed".

Then the config blob (unless the registry has it) and a Docker v2 schema 2 manifest under
the tag; the manifest digest becomes a RepoDigest, and the result goes out as dockerd's
``<tag>: digest: … size: …`` line and ``aux`` message.  Every blob used is recorded in the
V2 metadata, so the next push of these layers is a HEAD.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast, runtime_checkable

from berth import errdefs
from berth.distribution.manifest import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Descriptor
from berth.distribution.metadata import V2Metadata, V2MetadataStore
from berth.distribution.progress import PROGRESS_STEP, Progress, Reporter, short_id
from berth.distribution.registry import AuthConfig, RegistryClient, RepositorySession
from berth.events import Events
from berth.image.reference import Reference, parse_normalized_named
from berth.image.store import ImageStore, ReferenceStore
from berth.layer import LayerStore, ROLayer

#: layers up to this size get one mount attempt and one existence check (moby's tiers)
_SMALL_LAYER = 100 << 10
_MIDDLE_LAYER = 10 << 20
#: gzip level of pushed layers (Go's ``gzip.DefaultCompression``)
_GZIP_LEVEL = 6


@runtime_checkable
class PushSource(Protocol):
    """What push needs of the image service (``berth.image.service.ImageService``)."""

    layers: LayerStore
    images: ImageStore
    references: ReferenceStore
    events: Events

    @property
    def tmp_dir(self) -> Path: ...


class PushCancelled(errdefs.Unavailable):
    """The client went away; dockerd's ``context canceled``."""

    def __init__(self) -> None:
        super().__init__("context canceled")


def push_reference(name: str, tag: str) -> Reference:
    """The reference ``POST /images/{name}/push?tag=`` names; bad input raises before any
    stream.  Without a tag (and none in *name*) every tag of the repository is pushed."""
    ref = parse_normalized_named(name)
    if tag:
        if ref.tag or ref.digest:
            raise errdefs.InvalidParameter(f"invalid reference {name!r}: the tag is given twice")
        ref = ref.with_tag(tag)
    if ref.digest:
        raise errdefs.InvalidParameter("cannot push a digest reference")
    return ref


@dataclass
class _PushState:
    """What one push knows the registry has, shared by the tags it pushes."""

    remote: dict[str, Descriptor] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Context:
    images: PushSource
    session: RepositorySession
    metadata: V2MetadataStore
    target: Reference  # the repository, no tag
    report: Reporter
    state: _PushState


def push(
    images: PushSource,
    client: RegistryClient,
    metadata: V2MetadataStore,
    ref: Reference,
    auth: AuthConfig | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> None:
    """Push *ref*'s tag, or every tag of its repository when it has none."""
    report = Reporter(progress)
    repo = ref.name_only()
    report(f"The push refers to repository [{repo.name}]")
    tagged = sorted(
        (
            (r, ident)
            for r, ident in images.references.all().items()
            if r.domain == ref.domain and r.path == ref.path and r.tag and not r.digest
        ),
        key=lambda pair: str(pair[0]),  # dockerd's ReferencesByName: lexical
    )
    if not tagged:
        raise errdefs.NotFound(
            f"An image does not exist locally with the tag: {ref.familiar_name()}"
        )
    if ref.tag:
        ident = images.references.get(ref)
        if ident is None:
            raise errdefs.NotFound(f"tag does not exist: {ref.familiar()}")
        tagged = [(ref, ident)]
    state = _PushState(cancel=cancel or threading.Event())
    ctx = _Context(
        images,
        client.session(ref, auth=auth, actions=("pull", "push")),
        metadata,
        repo,
        report,
        state,
    )
    for tag_ref, ident in tagged:
        _push_tag(ctx, client.max_concurrent_uploads, tag_ref, ident)
    images.events.publish("image", "push", ref.familiar(), {"name": ref.familiar_name()})


def _push_tag(ctx: _Context, concurrency: int, ref: Reference, ident: str) -> None:
    img = ctx.images.images.get(ident)
    if img is None:
        raise errdefs.NotFound(f"could not find image from tag {ref.familiar()}: {ident}")
    config_raw = ctx.images.images.raw_config(ident)
    chain: list[ROLayer] = []  # bottom first, as the config lists the DiffIDs
    layer = img.layer
    while layer is not None:
        chain.append(layer)
        layer = layer.parent
    chain.reverse()
    # Each distinct layer once, top first: the order dockerd reports them in.
    unique: dict[str, ROLayer] = {}
    for layer in reversed(chain):
        unique.setdefault(layer.diff_id, layer)
    for diff_id in unique:
        ctx.report.update(short_id(diff_id), "Preparing")
    for diff_id in list(unique)[concurrency:]:
        ctx.report.update(short_id(diff_id), "Waiting")
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push")
    futures: dict[str, Future[Descriptor]] = {}
    try:
        for diff_id, layer in unique.items():
            futures[diff_id] = pool.submit(_push_layer, ctx, layer)
        done, _ = wait_futures(futures.values(), return_when=FIRST_EXCEPTION)
        for fut in done:
            if fut.exception() is not None:
                fut.result()
        remote = {d: f.result() for d, f in futures.items()}
    except BaseException:
        ctx.state.cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if ctx.state.cancel.is_set():
        raise PushCancelled()

    config_desc = Descriptor(DOCKER_CONFIG, ident, len(config_raw))
    if ctx.session.head_blob(ident) is None:
        ctx.session.upload_blob(ident, len(config_raw), io.BytesIO(config_raw))
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config_desc.to_dict(),
        "layers": [remote[layer.diff_id].to_dict() for layer in chain],
    }
    # Go's json.MarshalIndent(m, "", "   "), as docker/distribution's schema2 builder.
    raw = json.dumps(manifest, indent=3, separators=(",", ": ")).encode()
    digest = ctx.session.put_manifest(ref.tag, raw, DOCKER_MANIFEST)
    ctx.report(f"{ref.tag}: digest: {digest} size: {len(raw)}")
    by_digest = Reference(ref.domain, ref.path, "", digest)
    if ctx.images.references.get(by_digest) is None:
        ctx.images.references.add(by_digest, ident)
    ctx.report.aux({"Tag": ref.tag, "Digest": digest, "Size": len(raw)})


def _push_layer(ctx: _Context, layer: ROLayer) -> Descriptor:
    diff_id = layer.diff_id
    ident = short_id(diff_id)
    state = ctx.state
    if state.cancel.is_set():
        raise PushCancelled()
    with state.lock:
        known = state.remote.get(diff_id)
    if known is not None:
        ctx.report.update(ident, "Layer already exists")
        return known
    if layer.size > _MIDDLE_LAYER:
        max_mounts, max_checks, any_repo = 4, 3, True
    elif layer.size > _SMALL_LAYER:
        max_mounts, max_checks, any_repo = 3, 1, False
    else:
        max_mounts, max_checks, any_repo = 1, 1, False
    entries = ctx.metadata.get(diff_id)
    target = ctx.target.name

    # 1. A blob known to hold this layer may already be in the target repository.
    found = _existing(ctx, diff_id, _ranked(entries, ctx.target, any_repo=True), 1)
    if found is None:
        # 2. Mount it from another repository of the same registry.
        location = ""
        mounts = [
            e
            for e in _ranked(entries, ctx.target, any_repo=True)
            if e.SourceRepository != target
            and e.SourceRepository.split("/", 1)[0] == ctx.target.domain
        ][:max_mounts]
        for e in mounts:
            source = e.SourceRepository.split("/", 1)[1]
            mounted, started = ctx.session.mount_blob(e.Digest, source)
            if mounted:
                size = ctx.session.head_blob(e.Digest)
                desc = Descriptor(DOCKER_LAYER, e.Digest, size or 0)
                ctx.metadata.add(diff_id, e.Digest, target)
                ctx.report.update(ident, f"Mounted from {source}")
                return _settled(state, diff_id, desc)
            location = started or location
        if max_checks > 1:
            found = _existing(
                ctx, diff_id, _ranked(entries, ctx.target, any_repo=any_repo), max_checks
            )
        if found is None:
            # 3. Compress and upload.
            return _upload(ctx, layer, location)
    ctx.report.update(ident, "Layer already exists")
    return _settled(state, diff_id, found)


def _settled(state: _PushState, diff_id: str, desc: Descriptor) -> Descriptor:
    with state.lock:
        state.remote[diff_id] = desc
    return desc


def _ranked(entries: list[V2Metadata], target: Reference, *, any_repo: bool) -> list[V2Metadata]:
    """Newest first, those whose repository path shares more leading components with the
    target's first (moby's ``sortV2MetadataByLikenessAndAge``, without the HMAC tier)."""
    parts = target.name.split("/")

    def likeness(e: V2Metadata) -> int:
        n = 0
        for a, b in zip(e.SourceRepository.split("/"), parts, strict=False):
            if a != b:
                break
            n += 1
        return n

    chosen = [e for e in reversed(entries) if any_repo or e.SourceRepository == target.name]
    return sorted(chosen, key=likeness, reverse=True)


def _existing(
    ctx: _Context, diff_id: str, candidates: list[V2Metadata], limit: int
) -> Descriptor | None:
    """HEAD up to *limit* distinct digests in the target repository; the first found."""
    seen: set[str] = set()
    for e in candidates:
        if len(seen) >= limit:
            break
        if e.Digest in seen:
            continue
        seen.add(e.Digest)
        size = ctx.session.head_blob(e.Digest)
        if size is not None:
            if e.SourceRepository != ctx.target.name:
                ctx.metadata.add(diff_id, e.Digest, ctx.target.name)
            return Descriptor(DOCKER_LAYER, e.Digest, size)
        if e.SourceRepository == ctx.target.name:
            ctx.metadata.remove(diff_id, e)  # the registry lost it
    return None


class _GzipHashWriter(io.RawIOBase):
    """Gzip what is written into *out*, hashing the compressed bytes; reports the
    uncompressed bytes seen and stops when the push is cancelled."""

    def __init__(
        self, out: BinaryIO, on_progress: Callable[[int], None], cancel: threading.Event
    ) -> None:
        self._out = out
        self._zip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        self._hash = hashlib.sha256()
        self._on_progress = on_progress
        self._cancel = cancel
        self.raw_size = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._hash.update(data)
            self.size += len(data)

    def write(self, b: Any) -> int:
        if self._cancel.is_set():
            raise PushCancelled()
        data = bytes(b)
        self._emit(self._zip.compress(data))
        self.raw_size += len(data)
        self._on_progress(self.raw_size)
        return len(data)

    def finish(self) -> str:
        """Flush the compressor; the blob's digest."""
        self._emit(self._zip.flush())
        return "sha256:" + self._hash.hexdigest()


def _upload(ctx: _Context, layer: ROLayer, location: str) -> Descriptor:
    ident = short_id(layer.diff_id)
    last = [0]

    def on_progress(current: int) -> None:
        if current - last[0] >= PROGRESS_STEP:
            last[0] = current
            ctx.report.step("Pushing", ident, current, layer.size)

    fd, name = tempfile.mkstemp(prefix="push-", dir=ctx.images.tmp_dir)
    try:
        with os.fdopen(fd, "w+b") as f:
            writer = _GzipHashWriter(f, on_progress, ctx.state.cancel)
            ctx.images.layers.tar_stream(layer, cast(BinaryIO, writer))
            digest = writer.finish()
            ctx.report.step("Pushing", ident, writer.raw_size, layer.size)
            f.flush()
            f.seek(0)
            if ctx.state.cancel.is_set():
                raise PushCancelled()
            ctx.session.upload_blob(digest, writer.size, f, location=location)
    finally:
        os.unlink(name)
    ctx.report.update(ident, "Pushed")
    ctx.metadata.add(layer.diff_id, digest, ctx.target.name)
    return _settled(ctx.state, layer.diff_id, Descriptor(DOCKER_LAYER, digest, writer.size))
