"""``docker pull``: manifests, configs and layers from a registry into the image service.

As moby's ``distribution/pull_v2.go`` and ``xfer/download.go``: the reference is resolved
(``docker.io/library`` normalisation), the manifest fetched by tag or digest, the host's (or
``--platform``'s) entry chosen from an index or manifest list, and the config fetched and
checked against its digest.  An image whose config is already here is only tagged.  Else the
layers whose ChainID is not in the layer store are downloaded — at most
``client.max_concurrent_downloads`` at a time across the daemon, as dockerd's transfer manager
— while hashing, and registered in order as soon as their parents are in; then the image is
created from the config (its ID is the config's digest), the reference tagged and the manifest
digest kept as a RepoDigest.  A reference without tag or digest pulls every tag of the
repository.  Progress goes out as dockerd's JSON messages.

Downloads go to the image service's ``downloads_dir``, one file per blob digest, not to a temp
file: an interrupted pull (the client gone, the registry cut, the daemon restarted) leaves
what arrived there, and the next pull of that blob goes on from it with a Range request
(a complete one is only hashed again).  A file is removed once its layer is registered.

Errors known before any layer moves (``prepare``: repository, tag or digest unknown, access
denied, registry unreachable) are raised before the caller starts its stream; what fails
later is raised from ``execute``.  Either way the layers this pull registered are released,
so nothing is left half-registered; a blob that can never make its layer (digest mismatch,
a tar that does not apply) is not kept.  A set *cancel* flag (the client went away) stops
the pull within a fraction of a second, cutting the downloads' connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, runtime_checkable

from berth import errdefs
from berth.distribution._transport import Cancel
from berth.distribution.manifest import (
    DOCKER_FOREIGN_LAYER,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Manifest,
    parse_manifest,
    select_platform,
)
from berth.distribution.metadata import V2MetadataStore
from berth.distribution.progress import PROGRESS_STEP, Progress, Reporter, short_id
from berth.distribution.registry import (
    AuthConfig,
    Cancelled,
    DigestMismatch,
    RegistryClient,
    RepositorySession,
)
from berth.events import Events
from berth.image.reference import DEFAULT_TAG, Reference, parse_normalized_named
from berth.image.store import Image, ImageStore, ReferenceStore, decode_config
from berth.layer import LayerStore, ROLayer, chain_id
from berth.utils.platform import Platform, host_platform

__all__ = [
    "Cancelled",
    "Progress",
    "PullPlan",
    "PullTarget",
    "Resolved",
    "execute",
    "normalize_reference",
    "prepare",
    "pull",
]

#: the largest image config berth reads into memory
MAX_CONFIG_SIZE = 8 << 20
#: seconds between two looks at the cancel flag while waiting for something else
_POLL = 0.1
#: seconds before the first retry of a failed blob transfer; the n-th waits n times this
RETRY_DELAY = 5
_HASH_CHUNK = 1 << 20


@runtime_checkable
class PullTarget(Protocol):
    """What pull needs of the image service (``berth.image.service.ImageService``)."""

    layers: LayerStore
    images: ImageStore
    references: ReferenceStore
    events: Events
    downloads_dir: Path

    def tag_image(self, ident: str, ref: Reference) -> str | None: ...


@dataclass(frozen=True)
class Resolved:
    """One image manifest to pull and the reference (tag or digest) it was found by."""

    reference: Reference
    manifest: Manifest
    digest: str  # of the top-level manifest (index or manifest): the RepoDigest


@dataclass
class PullPlan:
    """What ``prepare`` found: the repository, what to pull of it, the first manifest."""

    reference: Reference  # as asked: tagged, digested, or name only (every tag)
    session: RepositorySession
    platform: Platform | None
    refs: list[Reference]  # tagged or digested, in the order they are pulled
    first: Resolved | None  # refs[0]'s manifest; None when the repository has no tags


def normalize_reference(from_image: str, tag: str = "") -> Reference:
    """``fromImage`` and ``tag`` as dockerd joins them: a digest tag means ``@``; neither a
    tag nor a digest means every tag (``docker pull -a`` sends no tag)."""
    ref = parse_normalized_named(from_image)
    if tag:
        if ":" in tag:
            ref = Reference(ref.domain, ref.path, "", tag)
        else:
            ref = ref.name_only().with_tag(tag)
    return ref


def prepare(
    client: RegistryClient,
    reference: Reference,
    auth: AuthConfig | None,
    platform: Platform | None,
) -> PullPlan:
    """The tags (for a name alone) and the first manifest; raises before any stream."""
    session = client.session(reference, auth=auth, actions=("pull",))
    if reference.tag or reference.digest:
        refs = [reference]
    else:
        refs = [reference.with_tag(t) for t in session.tags()]
    first = resolve(session, refs[0], platform) if refs else None
    return PullPlan(reference, session, platform, refs, first)


def resolve(session: RepositorySession, ref: Reference, platform: Platform | None) -> Resolved:
    """The image manifest *ref* names, the platform's entry taken from an index."""
    raw, media_type, digest = session.get_manifest(ref.digest or ref.tag or DEFAULT_TAG)
    manifest = parse_manifest(raw, media_type, ref=ref.familiar())
    if manifest.is_index:
        entry = select_platform(json.loads(raw), platform or host_platform())
        child = str(entry.get("digest", ""))
        raw2, media2, _ = session.get_manifest(child)
        manifest = parse_manifest(raw2, media2, ref=ref.familiar())
        if manifest.is_index or manifest.media_type in INDEX_TYPES:
            raise errdefs.InvalidParameter(
                f"manifest {child} for {ref.familiar()} is an index, not an image manifest"
            )
    if manifest.media_type not in MANIFEST_TYPES or manifest.config is None:
        raise errdefs.InvalidParameter(
            f"unsupported manifest type {manifest.media_type!r} for {ref.familiar()}"
        )
    return Resolved(ref, manifest, digest)


def execute(
    images: PullTarget,
    plan: PullPlan,
    progress: Progress,
    cancel: threading.Event | None = None,
    metadata: V2MetadataStore | None = None,
) -> list[str]:
    """Pull what *plan* names; the image IDs, one per reference.  A set *cancel* stops it
    (Cancelled), keeping what was downloaded for the next pull.  *metadata* learns which
    blob of this repository holds each layer, for later pushes."""
    puller = _Puller(images, plan, Reporter(progress), cancel or threading.Event(), metadata)
    ids: list[str] = []
    updated = False
    for i, ref in enumerate(plan.refs):
        resolved = plan.first if i == 0 and plan.first is not None else None
        if resolved is None:
            resolved = resolve(plan.session, ref, plan.platform)
        ident, new = puller.pull_one(resolved)
        ids.append(ident)
        updated = updated or new
    # One status for the whole request, as moby's pullRepository writes it.
    name = plan.reference.familiar()
    if updated:
        puller.report(f"Status: Downloaded newer image for {name}")
    else:
        puller.report(f"Status: Image is up to date for {name}")
    images.events.publish("image", "pull", name, {"name": plan.reference.familiar_name()})
    return ids


def pull(
    images: PullTarget,
    client: RegistryClient,
    reference: str | Reference,
    auth: AuthConfig | None,
    platform: Platform | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> str:
    """Pull one image (``:latest`` when *reference* names none) into *images*; its ID."""
    ref = reference if isinstance(reference, Reference) else parse_normalized_named(reference)
    ref = ref.tag_name_only()
    return execute(images, prepare(client, ref, auth, platform), progress, cancel)[0]


# -- kept downloads --------------------------------------------------------------------------


class _Downloads:
    """One downloads directory: a file per blob digest (``sha256-<hex>``) holding what has
    arrived, complete or not.

    The pulls of this daemon share it: one at a time writes a blob (the others wait, then
    find it complete), and a file goes once a pull registered its layer and no other pull
    still counts on it.  Verified blobs are remembered, so that they are not hashed again
    while the daemon runs; one found after a restart is.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Condition()
        self._writing: set[str] = set()
        self._users: dict[str, int] = {}
        self._consumed: set[str] = set()
        self._verified: set[str] = set()

    def path(self, digest: str) -> Path:
        algo, _, hex_ = digest.partition(":")
        return self.directory / f"{algo}-{hex_}"

    def claim(self, digest: str) -> None:
        with self._lock:
            self._users[digest] = self._users.get(digest, 0) + 1

    def release(self, digest: str, *, consumed: bool) -> None:
        """A pull is done with *digest*: its layer registered (*consumed*) or not."""
        with self._lock:
            users = self._users.get(digest, 1) - 1
            if consumed:
                self._consumed.add(digest)
            if users > 0:
                self._users[digest] = users
                return
            self._users.pop(digest, None)
            if digest not in self._consumed:
                return
            self._consumed.discard(digest)
            self._verified.discard(digest)
            self.path(digest).unlink(missing_ok=True)

    def discard(self, digest: str) -> None:
        """The blob cannot make its layer: drop the file now, whoever counts on it."""
        with self._lock:
            self._verified.discard(digest)
            self.path(digest).unlink(missing_ok=True)

    def verified(self, digest: str) -> bool:
        with self._lock:
            return digest in self._verified and self.path(digest).exists()

    def mark_verified(self, digest: str) -> None:
        with self._lock:
            self._verified.add(digest)

    @contextlib.contextmanager
    def exclusive(self, digest: str, stop: threading.Event) -> Iterator[None]:
        """Be the only writer of *digest* in this daemon while the block runs."""
        with self._lock:
            while digest in self._writing:
                if stop.is_set():
                    raise Cancelled()
                self._lock.wait(_POLL)
            self._writing.add(digest)
        try:
            yield
        finally:
            with self._lock:
                self._writing.discard(digest)
                self._lock.notify_all()


_DOWNLOADS: dict[Path, _Downloads] = {}
_DOWNLOADS_LOCK = threading.Lock()


def _downloads(directory: Path) -> _Downloads:
    with _DOWNLOADS_LOCK:
        found = _DOWNLOADS.get(directory)
        if found is None:
            found = _DOWNLOADS[directory] = _Downloads(directory)
        return found


class _Slots:
    """Download slots shared by every pull through one registry client, as dockerd's
    transfer manager limits a daemon's downloads, not each pull's."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0

    def acquire(self, limit: int, stop: threading.Event, on_wait: Callable[[], None]) -> None:
        with self._cond:
            if self._busy >= limit:
                on_wait()
            while self._busy >= limit:
                if stop.is_set():
                    raise Cancelled()
                self._cond.wait(_POLL)
            self._busy += 1

    def release(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify()


_SLOTS: weakref.WeakKeyDictionary[RegistryClient, _Slots] = weakref.WeakKeyDictionary()
_SLOTS_LOCK = threading.Lock()


def _slots(client: RegistryClient) -> _Slots:
    with _SLOTS_LOCK:
        found = _SLOTS.get(client)
        if found is None:
            found = _SLOTS[client] = _Slots()
        return found


# -- one pull --------------------------------------------------------------------------------


class _Puller:
    """The state of one ``execute``: who reports, what stops it, where blobs go."""

    def __init__(
        self,
        images: PullTarget,
        plan: PullPlan,
        report: Reporter,
        cancel: threading.Event,
        metadata: V2MetadataStore | None = None,
    ) -> None:
        self.images = images
        self.metadata = metadata
        self.plan = plan
        self.session = plan.session
        self.report = report
        #: set by the caller when its client went away
        self.cancel = cancel
        #: set by this pull to stop its own downloads (cancelled, or one of them failed);
        #: a Cancel, so that it cuts connections waiting on a stalled registry
        self.stop = Cancel()
        self.downloads = _downloads(images.downloads_dir)
        self.slots = _slots(plan.session.client)
        self._waiting: set[str] = set()
        self._waiting_lock = threading.Lock()

    def check(self) -> None:
        if self.cancel.is_set():
            self.stop.set()
            raise Cancelled()

    def pull_one(self, resolved: Resolved) -> tuple[str, bool]:
        """Pull one tag or digest; (image ID, whether the reference changed)."""
        ref = resolved.reference
        # dockerd shows the tag, or the whole reference when pulling by digest.
        self.report(f"Pulling from {ref.path}", ref.tag if ref.tag else str(ref))
        config = resolved.manifest.config
        assert config is not None
        img = self.images.images.get(config.digest)
        if img is None:  # else nothing to download: moby's pullSchema2Layers returns at once
            img = self._pull_image(resolved.manifest)
        self.report(f"Digest: {resolved.digest}")
        return img.id, self._tag(resolved, img.id)

    def _tag(self, resolved: Resolved, ident: str) -> bool:
        ref = resolved.reference
        updated = self.images.references.get(ref) != ident
        self.images.tag_image(ident, ref)
        if not ref.digest:  # the RepoDigest
            self.images.references.add(Reference(ref.domain, ref.path, "", resolved.digest), ident)
        return updated

    def _pull_image(self, manifest: Manifest) -> Image:
        assert manifest.config is not None
        config_raw = self._fetch_config(manifest.config)
        cfg = decode_config(config_raw)
        layers = [d for d in manifest.layers if d.media_type != DOCKER_FOREIGN_LAYER]
        diff_ids = list(cfg.rootfs.diff_ids)
        if len(diff_ids) != len(layers):
            raise errdefs.InvalidParameter("layers from manifest don't match image configuration")
        chains: list[str] = []
        parent: str | None = None
        for diff_id in diff_ids:
            parent = chain_id(parent, diff_id)
            chains.append(parent)
        held: list[ROLayer] = []
        claimed: list[str] = []  # blobs in the downloads dir this pull counts on
        created = False
        try:
            # The bottom layers already here are not downloaded again ("Already exists").
            present = 0
            while present < len(chains):
                found = self.images.layers.lookup(chains[present])
                if found is None:
                    break
                held.append(self.images.layers.get(chains[present]))
                self.report.update(short_id(layers[present].digest), "Already exists")
                self._registered(layers[present], diff_ids[present])
                present += 1
            if present < len(layers):
                self._download_and_register(layers, diff_ids, chains, present, held, claimed)
            self.check()
            img = self.images.images.create(config_raw)
            created = True
            return img
        finally:
            for layer in reversed(held):
                self.images.layers.release(layer)
            # Only an image that made it lets its blobs go: after a failure its layers
            # are released too, and the next pull registers them again from the files.
            for digest in claimed:
                self.downloads.release(digest, consumed=created)

    def _registered(self, desc: Descriptor, diff_id: str) -> None:
        """Layer *diff_id* is in the layer store, from blob *desc* of this repository
        (dockerd's ``DigestRegisterer.Registered``, called for layers found and made):
        a later push of the layer to this registry is a HEAD or a mount, not an upload."""
        if self.metadata is not None:
            self.metadata.add(diff_id, desc.digest, self.plan.reference.name)

    def _fetch_config(self, desc: Descriptor) -> bytes:
        """The config, verified (moby's ``pullSchema2Config`` and its messages)."""
        if desc.size > MAX_CONFIG_SIZE:
            raise errdefs.InvalidParameter(
                f"image config {desc.digest} is too large ({desc.size} bytes)"
            )
        buf = io.BytesIO()

        def check(_current: int, _total: int) -> None:
            self.check()
            if buf.tell() > MAX_CONFIG_SIZE:
                raise errdefs.InvalidParameter(f"image config {desc.digest} is too large")

        try:
            self.session.fetch_blob(desc.digest, buf, progress=check, cancel=self.stop)
        except DigestMismatch:
            raise errdefs.InvalidParameter(
                f"image config verification failed for digest {desc.digest}"
            ) from None
        except Cancelled:
            raise
        except errdefs.BerthError as e:
            raise _prefixed(e, "error pulling image configuration") from None
        raw = buf.getvalue()
        if desc.size and len(raw) != desc.size:
            raise errdefs.InvalidParameter(
                f"image config {desc.digest}: {len(raw)} bytes, the manifest says {desc.size}"
            )
        return raw

    # -- layers

    def _download_and_register(
        self,
        layers: list[Descriptor],
        diff_ids: list[str],
        chains: list[str],
        present: int,
        held: list[ROLayer],
        claimed: list[str],
    ) -> None:
        missing = layers[present:]
        first_use: dict[str, int] = {}
        for k, desc in enumerate(missing):
            first_use.setdefault(desc.digest, k)
        unique = [missing[k] for k in sorted(first_use.values())]
        for desc in unique:  # a blob twice in one image is fetched once, as dockerd's Key
            self.report.update(short_id(desc.digest), "Pulling fs layer")
        limit = self.session.client.max_concurrent_downloads
        for desc in unique[limit:]:
            self._note_waiting(desc)
        futures: dict[str, Future[Path]] = {}
        pool = ThreadPoolExecutor(max_workers=min(limit, len(unique)), thread_name_prefix="pull")
        try:
            for desc in unique:
                self.downloads.claim(desc.digest)
                claimed.append(desc.digest)
                futures[desc.digest] = pool.submit(self._download, desc)
            top: ROLayer | None = held[-1] if held else None
            for k, desc in enumerate(missing):
                path = self._wait(futures[desc.digest], futures.values())
                index = present + k
                first = k == first_use[desc.digest]
                layer = self._register(desc, path, top, diff_ids[index], chains[index], first)
                held.append(layer)
                top = layer
                self._registered(desc, diff_ids[index])
                if first:
                    self.report.update(short_id(desc.digest), "Pull complete")
        except BaseException:
            self.stop.set()  # the other downloads stop too, keeping what they have
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _wait(self, fut: Future[Path], futures: Iterable[Future[Path]]) -> Path:
        """*fut*'s file, failing at once when any download failed or the client left."""
        while not fut.done():
            pending = [f for f in futures if not f.done()]
            done, _ = wait_futures(pending, timeout=_POLL, return_when=FIRST_COMPLETED)
            for f in done:
                if f.exception() is not None:
                    f.result()
            self.check()
        return fut.result()

    def _register(
        self,
        desc: Descriptor,
        path: Path,
        top: ROLayer | None,
        diff_id: str,
        cid: str,
        report: bool,
    ) -> ROLayer:
        """Register the layer from its blob (moby's ``makeDownloadFunc`` after the
        download); *report*: "Extracting" shown (not for a blob's second use)."""
        if self.images.layers.lookup(cid) is not None:  # registered meanwhile (another pull)
            return self.images.layers.get(cid)
        ident = short_id(desc.digest)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                reader = _ExtractReader(f, self, ident, size, report=report)
                return self.images.layers.register(io.BufferedReader(reader, 1 << 20), top, diff_id)
        except Cancelled:
            raise
        except errdefs.InvalidParameter as e:
            # A verified blob that does not apply, or not to this DiffID, never will.
            self.downloads.discard(desc.digest)
            raise errdefs.InvalidParameter(f"failed to register layer: {e}") from None
        except errdefs.BerthError as e:
            raise _prefixed(e, "failed to register layer") from None
        except OSError as e:
            raise errdefs.System(f"failed to register layer: {e}") from None

    def _note_waiting(self, desc: Descriptor) -> None:
        with self._waiting_lock:
            if desc.digest in self._waiting:
                return
            self._waiting.add(desc.digest)
        self.report.update(short_id(desc.digest), "Waiting")

    def _download(self, desc: Descriptor) -> Path:
        """The blob's verified file: kept from an earlier pull, or fetched (resuming)."""
        ident = short_id(desc.digest)
        path = self.downloads.path(desc.digest)
        with self.downloads.exclusive(desc.digest, self.stop):
            if self.downloads.verified(desc.digest):
                self.report.update(ident, "Download complete")
                return path
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "r+b") as f:
                have = os.fstat(fd).st_size
                if desc.size and have > desc.size:
                    f.truncate(0)
                    have = 0
                if desc.size and have == desc.size:
                    # Complete when an earlier pull stopped: the bytes are hashed again.
                    self.report.update(ident, "Verifying Checksum")
                    if self._hash_file(f, desc.digest):
                        self.downloads.mark_verified(desc.digest)
                        self.report.update(ident, "Download complete")
                        return path
                    f.seek(0)
                    f.truncate(0)
                    have = 0
                self.slots.acquire(
                    self.session.client.max_concurrent_downloads,
                    self.stop,
                    lambda: self._note_waiting(desc),
                )
                try:
                    self._fetch(desc, f, have)
                except BaseException:
                    if f.seek(0, os.SEEK_END) == 0:  # nothing arrived: nothing to resume
                        path.unlink(missing_ok=True)
                    raise
                finally:
                    self.slots.release()
            self.downloads.mark_verified(desc.digest)
        self.report.update(ident, "Verifying Checksum")
        self.report.update(ident, "Download complete")
        return path

    def _fetch(self, desc: Descriptor, f: BinaryIO, have: int) -> None:
        """Fetch the rest of the blob into *f*; a transfer that fails (the registry cut
        the connection, answered 5xx or 429) is tried again, resuming, up to the
        daemon's ``--max-download-attempts``, after dockerd's back-off: 5 s, 10 s, ...
        ("Retrying in N seconds")."""
        attempts = self.session.client.max_download_attempts
        for attempt in range(1, attempts + 1):
            try:
                self._fetch_once(desc, f, f.seek(0, os.SEEK_END) if attempt > 1 else have)
                return
            except (Cancelled, DigestMismatch):
                raise
            except errdefs.Unavailable:
                if attempt >= attempts or self.stop.is_set():
                    raise
            self._back_off(short_id(desc.digest), attempt * RETRY_DELAY)

    def _back_off(self, ident: str, delay: int) -> None:
        for left in range(delay, 0, -1):
            self.report.update(ident, f"Retrying in {left} second{'s' if left > 1 else ''}")
            if self.stop.wait(1.0):
                raise Cancelled()
            self.check()

    def _fetch_once(self, desc: Descriptor, f: BinaryIO, have: int) -> None:
        ident = short_id(desc.digest)
        last = [-1]

        def on_progress(current: int, total: int) -> None:
            if current - last[0] >= PROGRESS_STEP or current == total:
                last[0] = current
                self.report.step("Downloading", ident, current, total if total > 0 else desc.size)

        try:
            try:
                self.session.fetch_blob(
                    desc.digest, f, progress=on_progress, offset=have, cancel=self.stop
                )
            except DigestMismatch:
                if not have or self.stop.is_set():
                    raise
                # The kept part may be what was wrong: once more from the start, as
                # dockerd retries a resumed download that fails verification.
                f.seek(0)
                f.truncate(0)
                last[0] = -1
                self.session.fetch_blob(desc.digest, f, progress=on_progress, cancel=self.stop)
        except DigestMismatch:
            f.truncate(0)
            self.downloads.discard(desc.digest)
            raise
        size = f.seek(0, os.SEEK_END)
        if desc.size and size != desc.size:
            f.truncate(0)
            raise errdefs.InvalidParameter(
                f"filesystem layer verification failed for digest {desc.digest}: "
                f"{size} bytes, the manifest says {desc.size}"
            )

    def _hash_file(self, f: BinaryIO, digest: str) -> bool:
        algo, _, want = digest.partition(":")
        h = hashlib.new(algo)
        f.seek(0)
        while chunk := f.read(_HASH_CHUNK):
            if self.stop.is_set():
                raise Cancelled()
            h.update(chunk)
        return h.hexdigest() == want


_KINDS: tuple[type[errdefs.BerthError], ...] = (
    errdefs.NotFound,
    errdefs.InvalidParameter,
    errdefs.Conflict,
    errdefs.Unauthorized,
    errdefs.Forbidden,
    errdefs.Unavailable,
    errdefs.NotModified,
    errdefs.NotImplementedFeature,
)


def _prefixed(e: errdefs.BerthError, prefix: str) -> errdefs.BerthError:
    """*e* with dockerd's context before its message, of the same errdefs class."""
    kind = next((k for k in _KINDS if isinstance(e, k)), errdefs.System)
    return kind(f"{prefix}: {e}")


class _ExtractReader(io.RawIOBase):
    """A downloaded blob read for registration: "Extracting" progress, and a stop (the
    layer store then removes what it applied) when the client went away."""

    def __init__(
        self, f: IO[bytes], puller: _Puller, ident: str, total: int, *, report: bool
    ) -> None:
        self._f = f
        self._puller = puller
        self._ident = ident
        self._total = total
        self._report = report
        self._done = 0
        self._last = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        self._puller.check()
        n = int(self._f.readinto(b) or 0)  # type: ignore[attr-defined]
        if n and self._report:
            self._done += n
            if self._done - self._last >= PROGRESS_STEP or self._done == self._total:
                self._last = self._done
                self._puller.report.step("Extracting", self._ident, self._done, self._total)
        return n
