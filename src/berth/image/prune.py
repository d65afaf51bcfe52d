"""``docker image prune``: moby's ``ImagesPrune`` over the image service.

Which images go is decided as dockerd decides it: by default the heads (images no
other image names as its parent) without a tag; with ``dangling=false`` every image
that is not a nameless parent.  Each goes through the same delete as ``docker rmi``
(no force, parents pruned), so a container — running, stopped, or being created —
keeps its image with all its names, and a conflict only leaves that image where it is.  What the
answer says was reclaimed is the size of the layers actually removed: a layer still
under a kept image counts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from berth import errdefs
from berth.types.filters import Filters
from berth.types.image import DeleteItem, PruneReport
from berth.utils.gostr import go_quote
from berth.utils.timefmt import parse_timestamp

if TYPE_CHECKING:
    from berth.image.service import ImageService
    from berth.image.store import Image

log = logging.getLogger(__name__)

#: moby's ``imagesAcceptedFilters``
PRUNE_FILTERS = ("dangling", "label", "label!", "until")


def until_from_filters(filters: Filters) -> int | None:
    """The ``until`` filter in ns since the epoch (a timestamp, or a Go duration back
    from now, as moby's ``timestamp.Parse``), or None without one."""
    values = filters.get("until")
    if not values:
        return None
    if len(values) > 1:
        raise errdefs.InvalidParameter("more than one until filter specified")
    try:
        return parse_timestamp(values[0])
    except ValueError:
        raise errdefs.InvalidParameter(
            "invalid value for 'until' filter: failed to parse value as time or duration: "
            + go_quote(values[0])
        ) from None


def match_labels(filters: Filters, labels: dict[str, str] | None) -> bool:
    """``label`` must all match, and no ``label!`` may (moby's ``matchLabels``)."""
    if not filters.match_kv_list("label", labels):
        return False
    return not (filters.contains("label!") and filters.match_kv_list("label!", labels))


def prune_images(svc: ImageService, filters: Filters) -> PruneReport:
    """Remove the unused images *filters* select; one prune at a time (409)."""
    if not svc.prune_running.acquire(blocking=False):
        raise errdefs.Conflict("a prune operation is already running")
    try:
        filters.validate(PRUNE_FILTERS)
        dangling_only = filters.get_bool_or_default("dangling", True)
        until = until_from_filters(filters)
        # Sizes before anything goes: a removed layer is no longer in the store.
        sizes = {layer.chain_id: layer.size for layer in svc.layers.layers()}
        deleted: list[DeleteItem] = []
        for img in _candidates(svc, filters, dangling_only, until):
            deleted.extend(_prune_one(svc, img, dangling_only))
        reclaimed = sum(sizes.get(item.Deleted, 0) for item in deleted if item.Deleted)
    finally:
        svc.prune_running.release()
    svc.events.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
    return PruneReport(ImagesDeleted=deleted or None, SpaceReclaimed=reclaimed)


def _candidates(
    svc: ImageService, filters: Filters, dangling_only: bool, until: int | None
) -> list[Image]:
    """The images the filters select, oldest first (moby walks a map: any order)."""
    out: list[tuple[int, str, Image]] = []
    for img in svc.images.all():
        if dangling_only and img.children:
            continue  # not a head
        if img.children and not svc.references.references(img.id):
            continue  # a nameless parent goes with its last child, never alone
        created = img.created_ns
        if until is not None and (created is None or created > until):
            continue
        config = img.config.config
        # As moby: an image without a config section is not filtered by label.
        if config is not None and not match_labels(filters, config.labels):
            continue
        out.append((created or 0, img.id, img))
    out.sort(key=lambda t: (t[0], t[1]))
    return [img for _, _, img in out]


def _prune_one(svc: ImageService, img: Image, dangling_only: bool) -> list[DeleteItem]:
    """Delete *img* as ``docker rmi`` without force would: through each of its
    references when it has some (all of them with ``-a``; only digests otherwise, an
    image with a tag is not dangling), by ID when it has none.  The image's state is
    read again under the delete lock, so that an image tagged or put to use since the
    candidates were listed is judged as it is now.

    An image a container uses is left whole.  dockerd's graphdriver store goes
    through the references one by one and refuses only the last, so that ``-a``
    strips all but one tag from an image in use (moby#36295, open, "should be
    changed"); here a container's image keeps every name it has."""
    records: list[DeleteItem] = []
    with svc.delete_lock:
        if svc.images.get(img.id) is None:
            return records  # went with a child pruned before it
        if svc.users().get(img.id):
            return records
        refs = svc.references.references(img.id)
        if not refs:
            targets = [img.id.removeprefix("sha256:")]
        elif not dangling_only or not any(ref.tag for ref in refs):
            targets = [str(ref) for ref in refs]
        else:
            targets = []
        for target in targets:
            try:
                records.extend(svc.delete(target, False, True))
            except errdefs.Conflict:
                continue
            except errdefs.BerthError as e:
                log.warning("failed to prune image %s: %s", target, e)
    return records


def prune_build_cache(
    svc: ImageService, *, everything: bool, select: Callable[[Image], bool]
) -> tuple[list[str], int]:
    """``docker builder prune`` of the classic builder's cache: remove the images that only
    the cache holds, and say which (oldest first) and the bytes of the layers that went.

    Those are the images built on this daemon with no name that no container uses.  By
    default only the ones no named or used image descends from go (what builds left
    behind); with *everything*, the steps under named images too, so that their next
    build starts cold.  A named image keeps working without its parent chain: it is
    dropped from its metadata, as a pulled image has none.
    """
    if not svc.prune_running.acquire(blocking=False):
        raise errdefs.Conflict("a prune operation is already running")
    try:
        sizes = {layer.chain_id: layer.size for layer in svc.layers.layers()}
        deleted: list[str] = []
        reclaimed = 0
        with svc.delete_lock:
            used = {ident for ident, found in svc.users().items() if found}
            held = set(used)
            if not everything:
                for img in svc.images.all():
                    if img.id in used or svc.references.references(img.id):
                        held.update(_ancestry(svc, img))
            candidates = [
                img
                for img in svc.images.all()
                if img.id not in held
                and svc.images.is_built_locally(img.id)
                and not svc.references.references(img.id)
                and select(img)
            ]
            candidates.sort(key=lambda img: (img.created_ns or 0, img.id))
            for img in candidates:
                svc.emit("delete", img.id)  # while its labels are there, as moby
                removed = svc.images.delete(img.id)
                reclaimed += sum(sizes.get(layer.chain_id, 0) for layer in removed)
                deleted.append(img.id.removeprefix("sha256:"))
    finally:
        svc.prune_running.release()
    return deleted, reclaimed


def _ancestry(svc: ImageService, img: Image) -> Iterator[str]:
    seen: set[str] = set()
    current: Image | None = img
    while current is not None and current.id not in seen:
        seen.add(current.id)
        yield current.id
        current = svc.images.get(current.parent) if current.parent else None
