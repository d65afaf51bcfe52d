"""The image service: what the daemon asks of images (moby's ``daemon/images``).

It owns the layer store, the image store and the reference store of one
graph driver, resolves what users type (``busybox``, an ID prefix, a digest)
to images, and answers the image routes itself: the Daemon builds it and hands
it to them.  What it needs of the container side (the events bus, which
containers use an image) is injected, so it never imports the daemon.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from berth import errdefs
from berth.events import Events
from berth.graphdriver import Driver
from berth.image.commit import CommitConfig, commit_image
from berth.image.importer import import_image, prepare
from berth.image.load import load_archive
from berth.image.prune import prune_build_cache, prune_images
from berth.image.reference import Reference, parse_any, parse_normalized_named, repo_tag_reference
from berth.image.save import ImageArchive, check_platform, resolve
from berth.image.store import Image, ImageStore, ReferenceStore
from berth.layer import LayerStore, ROLayer, RWLayer, chain_id
from berth.layer.store import InitFunc
from berth.types.container import Config
from berth.types.filters import Filters
from berth.types.image import DeleteItem, HistoryItem, ImportOptions, PruneReport, Summary
from berth.types.wire import to_wire
from berth.utils.pathmatch import path_match
from berth.utils.platform import Platform
from berth.utils.stringid import truncate_id
from berth.utils.timefmt import ZERO_TIME, parse_rfc3339, parse_timestamp

log = logging.getLogger(__name__)

#: ``containers_using(image_id)`` → ``[(container_id, running)]`` in creation order.
ContainersUsing = Callable[[str], list[tuple[str, bool]]]

#: ``image_users()`` → ``{image_id: [(container_id, running)]}``, each list in creation
#: order: one snapshot of the containers, for ``docker rmi``'s conflicts and the
#: ``Containers`` count of ``docker images``.
ImageUsers = Callable[[], Mapping[str, list[tuple[str, bool]]]]

IMAGE_FILTERS = ("dangling", "label", "before", "since", "reference", "until")

#: a pull's kept download untouched this long is dropped at start-up (seconds)
STALE_DOWNLOAD_AGE = 24 * 3600


class ImageNotFound(errdefs.NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")


class ImageService:
    def __init__(
        self,
        data_root: Path,
        driver: Driver,
        *,
        events: Events,
        image_users: ImageUsers,
        tmp_dir: Path,
    ) -> None:
        self.driver = driver
        self.events = events
        self._image_users = image_users
        #: held while a delete or a prune decides and removes, and while a container's
        #: RW layer is pinned to its image: a delete never sees an image unused that a
        #: container being created is about to stand on
        self.delete_lock = threading.RLock()
        #: container ID → image ID, from the RW layer's creation until the container
        #: side lists the container (or its layer is released)
        self._creating: dict[str, str] = {}
        #: one prune at a time, as dockerd's pruneRunning
        self.prune_running = threading.Lock()
        #: where ``docker load`` spools its upload (the daemon's, emptied at start-up)
        self.tmp_dir = tmp_dir
        root = data_root / "image" / driver.name
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.layers = LayerStore(root / "layerdb", driver)
        self.images = ImageStore(root / "imagedb", self.layers)
        self.references = ReferenceStore(root / "repositories.json")
        #: where pulls keep blobs by digest until their layer is registered, so that an
        #: interrupted pull (client gone, registry cut, daemon restart) resumes without
        #: fetching them again; not the tmp dir, which is emptied at start-up
        self.downloads_dir = root / "distribution" / "downloads"
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_downloads(STALE_DOWNLOAD_AGE)

    def _sweep_downloads(self, max_age: float) -> None:
        """Drop downloads no pull has touched for *max_age* seconds: an image nobody
        asks for again should not keep its layers' bytes forever."""
        limit = time.time() - max_age
        try:
            entries = list(os.scandir(self.downloads_dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime >= limit:
                    continue
                os.unlink(entry.path)
            except IsADirectoryError:
                log.warning("unexpected directory in %s: %s", self.downloads_dir, entry.name)
            except OSError as e:
                log.warning("cannot remove stale download %s: %s", entry.path, e)

    # -- start-up ------------------------------------------------------------
    def drop_dangling_references(self) -> None:
        """Tags that point at images that are gone (e.g. a crash mid-delete)."""
        for ref, ident in self.references.all().items():
            if self.images.get(ident) is None:
                log.warning("removing tag %s of missing image %s", ref.familiar(), ident)
                self.references.delete(ref)

    # -- lookup --------------------------------------------------------------
    def get_image(self, ref_or_id: str) -> Image:
        """Resolve a name, digest, full ID or ID prefix, as ``GetImage`` does."""
        try:
            parsed = parse_any(ref_or_id)
        except errdefs.InvalidParameter:
            img = self.images.search(ref_or_id)
            if img is not None:
                return img
            raise
        if isinstance(parsed, str):
            img = self.images.get(parsed)
            if img is None:
                raise ImageNotFound(parsed)
            return img
        ident = self.references.get(parsed)
        if ident is not None:
            img = self.images.get(ident)
            if img is not None:
                return img
        img = self.images.search(ref_or_id)
        if img is not None:
            return img
        raise ImageNotFound(parsed.tag_name_only().familiar())

    def repo_tags(self, ident: str) -> tuple[list[str], list[str]]:
        tags: list[str] = []
        digests: list[str] = []
        for ref in self.references.references(ident):
            if ref.digest:
                digests.append(ref.familiar())
            else:
                tags.append(ref.familiar())
        return tags, digests

    # -- list ----------------------------------------------------------------
    def list_images(
        self,
        filters: Filters,
        all_images: bool,
        shared_size: bool,
    ) -> list[Summary]:
        filters.validate(IMAGE_FILTERS)
        dangling_only = (
            filters.get_bool_or_default("dangling", False)
            if filters.contains("dangling")
            else False
        )
        before: int | None = None
        since: int | None = None
        for value in filters.get("before"):
            t = self.get_image(value).created_ns or 0
            before = t if before is None else min(before, t)
        for value in filters.get("since"):
            t = self.get_image(value).created_ns or 0
            since = t if since is None else max(since, t)
        for value in filters.get("until"):
            try:
                t = parse_timestamp(value)
            except ValueError:
                raise errdefs.InvalidParameter(f"invalid filter 'until={value}'") from None
            before = t if before is None else min(before, t)
        patterns = filters.get("reference")
        users = self._image_users()

        shared: dict[str, int] = {}
        if shared_size:
            for img in self.images.all():
                layer = img.layer
                while layer is not None:
                    shared[layer.chain_id] = shared.get(layer.chain_id, 0) + 1
                    layer = layer.parent

        out: list[tuple[int, Summary]] = []
        for img in self.images.all():
            if dangling_only and img.children:
                continue
            created = img.created_ns or 0
            if (before is not None or since is not None) and not img.config.created:
                continue
            if before is not None and not created < before:
                continue
            if since is not None and not created > since:
                continue
            labels = img.config.config.labels if img.config.config else None
            if filters.contains("label") and not filters.match_kv_list("label", labels):
                continue
            tags: list[str] = []
            digests: list[str] = []
            for ref in self.references.references(img.id):
                if patterns and not any(_familiar_match(p, ref) for p in patterns):
                    continue
                (digests if ref.digest else tags).append(ref.familiar())
            if not tags and not digests:
                if not (all_images or not img.children):
                    continue
                if filters.contains("dangling") and not dangling_only:
                    continue
                if patterns:
                    continue
            elif dangling_only and tags:
                continue
            size = img.size
            summary = Summary(
                Containers=len(users.get(img.id, ())),
                Created=created // 1_000_000_000,
                Id=img.id,
                Labels=labels,
                ParentId=img.parent,
                RepoDigests=digests,
                RepoTags=tags,
                SharedSize=_shared(img.layer, shared) if shared_size else -1,
                Size=size,
            )
            out.append((created, summary))
        out.sort(key=lambda t: t[0], reverse=True)
        return [s for _, s in out]

    def layers_size(self) -> int:
        """``LayersSize`` of ``docker system df`` (moby's ``LayerDiskUsage``): the own size
        of every layer some image stands on, each once; layers no image uses (leaked by
        an interrupted pull) are not counted.  An untagged image with children adds
        nothing its children do not."""
        seen: set[str] = set()
        total = 0
        for img in self.images.all():
            layer = img.layer
            while layer is not None and layer.chain_id not in seen:
                seen.add(layer.chain_id)
                total += layer.size
                layer = layer.parent
        return total

    # -- inspect / history -------------------------------------------------------
    def inspect(self, ref_or_id: str) -> dict[str, Any]:
        """The current API's answer plus ``Container`` and ``ContainerConfig``.

        Those two are gone from API 1.45 on; as in moby, the router drops them
        and adds what other older versions show (``api/_versions.py``).
        """
        img = self.get_image(ref_or_id)
        cfg = img.config
        tags, digests = self.repo_tags(img.id)
        comment = cfg.comment or (cfg.history[-1].comment if cfg.history else "")
        out: dict[str, Any] = {
            "Id": img.id,
            "RepoTags": tags,
            "RepoDigests": digests,
            "Parent": img.parent,
            "Comment": comment,
        }
        if cfg.created:
            out["Created"] = cfg.created
        # Older clients' types require both, empty or not.
        out["Container"] = cfg.container
        out["ContainerConfig"] = (
            to_wire(cfg.container_config) if cfg.container_config else to_wire(_empty_config())
        )
        out["DockerVersion"] = cfg.docker_version
        out["Author"] = cfg.author
        out["Architecture"] = cfg.architecture
        if cfg.variant:
            out["Variant"] = cfg.variant
        out["Os"] = cfg.os or "linux"
        if cfg.os_version:
            out["OsVersion"] = cfg.os_version
        out["Size"] = img.size
        out["GraphDriver"] = {
            "Data": self.driver.metadata(img.layer.cache_id) if img.layer else None,
            "Name": self.driver.name,
        }
        out["RootFS"] = {"Type": cfg.rootfs.type, "Layers": list(cfg.rootfs.diff_ids)}
        out["Metadata"] = {"LastTagTime": img.last_updated or ZERO_TIME}
        out["Config"] = _image_config_view(cfg)
        return out

    def history(self, ref_or_id: str) -> list[HistoryItem]:
        img = self.get_image(ref_or_id)
        diff_ids = img.config.rootfs.diff_ids
        items: list[HistoryItem] = []
        chain: str | None = None
        layer_index = 0
        for h in img.config.history:
            size = 0
            if not h.empty_layer:
                if layer_index >= len(diff_ids):
                    raise errdefs.System("too many non-empty layers in History section")
                chain = chain_id(chain, diff_ids[layer_index])
                layer = self.layers.lookup(chain)
                size = layer.size if layer else 0
                layer_index += 1
            created = 0
            if h.created:
                try:
                    created = parse_rfc3339(h.created) // 1_000_000_000
                except ValueError:
                    created = 0
            items.append(HistoryItem("<missing>", created, h.created_by, None, size, h.comment))
        items.reverse()
        current: Image | None = img
        for item in items:
            if current is None:
                break
            item.Id = current.id
            tags, _ = self.repo_tags(current.id)
            item.Tags = tags or None
            current = self.images.get(current.parent) if current.parent else None
        return items

    # -- tag / delete ----------------------------------------------------------------
    def tag(self, ref_or_id: str, repo: str, tag: str) -> None:
        """``docker tag``; an empty *repo* tags nothing, as dockerd answers it."""
        ref = repo_tag_reference(repo, tag)
        if ref is None:
            return
        if ref.familiar_name() == "sha256":
            raise errdefs.InvalidParameter(
                "refusing to create an ambiguous tag using digest algorithm as name"
            )
        try:
            img = self.get_image(ref_or_id)
        except errdefs.InvalidParameter as e:
            raise errdefs.NotFound(str(e)) from None
        self.tag_image(img.id, ref)
        self.emit("tag", img.id, ref.familiar())

    def tag_image(self, ident: str, ref: Reference) -> str | None:
        previous = self.references.add(ref, ident)
        self.images.set_last_updated(ident)
        return previous

    def delete(self, ref_or_id: str, force: bool, prune: bool) -> list[DeleteItem]:
        """``docker rmi``: untag, and delete the image when nothing else names it.

        Events as dockerd logs them: ``untag`` and ``delete`` under the image's ID
        (``name`` the ID too, an untag with the image's labels), none for the layers."""
        with self.delete_lock:
            return self._delete(ref_or_id, force, prune)

    def _delete(self, ref_or_id: str, force: bool, prune: bool) -> list[DeleteItem]:
        if not ref_or_id.strip():
            raise errdefs.InvalidParameter("image name cannot be blank")
        in_use = self.users()  # one look at the containers for the whole delete

        def containers_using(image_id: str) -> list[tuple[str, bool]]:
            return in_use.get(image_id, [])

        img = self.get_image(ref_or_id)
        records: list[DeleteItem] = []
        repo_refs = self.references.references(img.id)
        removed_repository_ref = False
        if not _is_id_prefix(img.id, ref_or_id):
            users = containers_using(img.id)
            if not force and _is_single_reference(repo_refs) and users:
                raise errdefs.Conflict(
                    f'conflict: unable to remove repository reference "{ref_or_id}" (must force) '
                    f"- container {truncate_id(users[0][0])} is using its referenced image "
                    f"{truncate_id(img.id)}"
                )
            parsed = parse_normalized_named(ref_or_id)
            self.references.delete(parsed)
            records.append(DeleteItem(Untagged=parsed.tag_name_only().familiar()))
            self.emit("untag", img.id)
            repo_refs = self.references.references(img.id)
            if not parsed.digest and not any(
                r.name == parsed.name and not r.digest for r in repo_refs
            ):
                for r in repo_refs:
                    if r.name == parsed.name and r.digest:
                        self.references.delete(r)
                        records.append(DeleteItem(Untagged=r.familiar()))
                repo_refs = self.references.references(img.id)
            if repo_refs:
                return records
            removed_repository_ref = True
        elif _is_single_reference(repo_refs):
            conflict = self._conflict(
                img, hard_only=force, check_refs=False, users=containers_using(img.id)
            )
            if conflict is not None:
                raise errdefs.Conflict(conflict[0])
            for r in repo_refs:
                self.references.delete(r)
                records.append(DeleteItem(Untagged=r.familiar()))
                self.emit("untag", img.id)
        self._delete_helper(img, records, force, prune, removed_repository_ref, containers_using)
        return records

    def _conflict(
        self, img: Image, hard_only: bool, check_refs: bool, users: list[tuple[str, bool]]
    ) -> tuple[str, bool] | None:
        """(message, used-by-container) for the first conflict, as moby checks them."""
        short = truncate_id(img.id)
        if img.children:
            return (
                f"conflict: unable to delete {short} (cannot be forced) - image has dependent "
                "child images",
                False,
            )
        for cid, running in users:
            if running:
                return (
                    f"conflict: unable to delete {short} (cannot be forced) - image is being used "
                    f"by running container {truncate_id(cid)}",
                    True,
                )
        if hard_only:
            return None
        if check_refs and self.references.references(img.id):
            return (
                f"conflict: unable to delete {short} (must be forced) - image is referenced in "
                "multiple repositories",
                False,
            )
        for cid, running in users:
            if not running:
                return (
                    f"conflict: unable to delete {short} (must be forced) - image is being used "
                    f"by stopped container {truncate_id(cid)}",
                    True,
                )
        return None

    def _delete_helper(
        self,
        img: Image,
        records: list[DeleteItem],
        force: bool,
        prune: bool,
        quiet: bool,
        containers_using: ContainersUsing,
    ) -> None:
        conflict = self._conflict(
            img, hard_only=force, check_refs=True, users=containers_using(img.id)
        )
        if conflict is not None:
            message, used = conflict
            dangling = not self.references.references(img.id) and not img.children
            if quiet and (not dangling or used):
                return
            raise errdefs.Conflict(message)
        parent = img.parent
        for r in self.references.references(img.id):
            self.references.delete(r)
            records.append(DeleteItem(Untagged=r.familiar()))
            self.emit("untag", img.id)
        removed = self.images.delete(img.id)
        self.emit("delete", img.id)
        records.append(DeleteItem(Deleted=img.id))
        records.extend(DeleteItem(Deleted=layer.chain_id) for layer in removed)
        if not prune or not parent:
            return
        parent_img = self.images.get(parent)
        if parent_img is not None:
            self._delete_helper(parent_img, records, False, True, True, containers_using)

    def users(self) -> Mapping[str, list[tuple[str, bool]]]:
        """Which containers use each image: the container side's answer, plus the
        containers whose RW layer is made or being made but which it does not list yet
        (counted as stopped).  A pin the container side now lists is dropped."""
        users = self._image_users()
        with self.delete_lock:
            if not self._creating:
                return users
            listed = {cid for found in users.values() for cid, _ in found}
            merged = {ident: list(found) for ident, found in users.items()}
            for cid, ident in list(self._creating.items()):
                if cid in listed:
                    del self._creating[cid]
                else:
                    merged.setdefault(ident, []).append((cid, False))
            return merged

    def prune_images(self, filters: Filters) -> PruneReport:
        """``docker image prune`` (see :mod:`berth.image.prune`)."""
        return prune_images(self, filters)

    def prune_build_cache(
        self, *, everything: bool, select: Callable[[Image], bool]
    ) -> tuple[list[str], int]:
        """``docker builder prune``: the IDs of the cache's images removed and the bytes
        reclaimed (see :func:`berth.image.prune.prune_build_cache`)."""
        return prune_build_cache(self, everything=everything, select=select)

    # -- layers for containers -------------------------------------------------
    def create_rw_layer(self, container_id: str, img: Image | None, init: InitFunc) -> RWLayer:
        """The container's init and RW layers on *img*, which stays in use from here on:
        a delete or prune that runs before the container side lists the container
        counts it (:meth:`users`), and one that ran since the caller resolved *img* makes
        this a NotFound instead of a container on a deleted image."""
        if img is None:
            return self.layers.create_rw_layer(container_id, None, init)
        with self.delete_lock:
            if self.images.get(img.id) is None:
                raise ImageNotFound(img.id)
            self._creating[container_id] = img.id
        try:
            return self.layers.create_rw_layer(container_id, img.chain_id, init)
        except BaseException:
            with self.delete_lock:
                self._creating.pop(container_id, None)
            raise

    def container_listed(self, container_id: str) -> None:
        """The container side lists *container_id* from now on, so its users show the
        image's use: the pin taken at ``create_rw_layer`` goes.  (Kept until the layer's
        release instead, it outlived a ``run --rm``'s removal and made an ``rmi`` right
        after it see a stopped container that was no longer there.)"""
        with self.delete_lock:
            self._creating.pop(container_id, None)

    def release_rw_layer(self, container_id: str) -> None:
        with self.delete_lock:
            self._creating.pop(container_id, None)
        try:
            rw = self.layers.get_rw_layer(container_id)
        except errdefs.NotFound:
            return
        self.layers.unmount(rw)
        self.layers.release_rw_layer(rw)

    # -- import / load ---------------------------------------------------------
    def check_import(self, options: ImportOptions) -> None:
        """Refuse a bad import before its body is read."""
        prepare(options)

    def import_image(self, stream: IO[bytes], options: ImportOptions) -> str:
        ident = import_image(self, stream, options)
        self.emit("import", ident)
        return ident

    def commit_image(self, layer_tar: IO[bytes] | None, config: CommitConfig) -> str:
        """``docker commit``'s image: *layer_tar* (None: nothing changed) registered on
        the container's image and the child config made; all or nothing."""
        return commit_image(self, layer_tar, config)

    def load(self, path: Path) -> list[str]:
        messages = load_archive(self, path)
        seen: set[str] = set()
        for line in messages:
            name = line.split(": ", 1)[-1].strip()
            if not line.startswith("Loaded image"):
                continue
            try:
                ident = self.get_image(name).id
            except errdefs.NotFound:
                continue  # untagged again by a later entry of the same archive
            if ident not in seen:  # one event per image, under its ID, as moby's load
                seen.add(ident)
                self.emit("load", ident, ident)
        return messages

    def prepare_save(self, names: list[str], platform: Platform | None) -> ImageArchive:
        """``docker save``: every name resolved and every layer checked before the
        tarball's first byte; the archive announces ``save`` once it is written."""
        saved = resolve(self, names)
        if platform is not None:
            check_platform(saved, platform)
        return ImageArchive(self, saved, lambda ident: self.emit("save", ident))

    def emit(self, action: str, ident: str, name: str = "") -> None:
        """moby's LogImageEvent: the image's labels while it exists, then ``name``."""
        attributes: dict[str, str] = {}
        img = self.images.get(ident)
        if img is not None and img.config.config is not None:
            attributes.update(img.config.config.labels or {})
        attributes["name"] = name or ident
        self.events.publish("image", action, ident, attributes)

    def release_layers(self, layers: Iterable[ROLayer]) -> None:
        for layer in layers:
            self.layers.release(layer)


def _shared(layer: ROLayer | None, counts: dict[str, int]) -> int:
    total = 0
    while layer is not None:
        if counts.get(layer.chain_id, 0) > 1:
            total += layer.size
        layer = layer.parent
    return total


def _is_id_prefix(ident: str, ref: str) -> bool:
    return ident.startswith(ref) or ident[7:].startswith(ref)


def _is_single_reference(refs: list[Reference]) -> bool:
    if len(refs) <= 1:
        return len(refs) == 1
    tags = [r for r in refs if not r.digest]
    if len(tags) > 1:
        return False
    canonical = {r.name for r in refs if r.digest}
    single = tags[0] if tags else refs[0]
    return len(canonical) == 1 and single.name in canonical


def _familiar_match(pattern: str, ref: Reference) -> bool:
    return path_match(pattern, ref.familiar()) or path_match(pattern, ref.familiar_name())


def _empty_config() -> Any:
    return Config()


_LEGACY_CURRENT = {
    "Cmd": None,
    "Entrypoint": None,
    "Env": None,
    "Labels": None,
    "OnBuild": None,
    "User": "",
    "Volumes": None,
    "WorkingDir": "",
}
_OCI_CONFIG_FIELDS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
)


def _image_config_view(cfg: Any) -> dict[str, Any]:
    """The image's ``Config`` as dockerd 28 shows it: OCI fields over legacy defaults."""
    out: dict[str, Any] = dict(_LEGACY_CURRENT)
    if cfg.config is not None:
        wire = to_wire(cfg.config)
        for key in _OCI_CONFIG_FIELDS:
            value = wire.get(key)
            if value not in (None, "", False, [], {}):
                out[key] = value
    return dict(sorted(out.items()))
