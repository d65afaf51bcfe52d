"""``docker builder prune`` of the classic builder's cache.

The classic builder's cache is images: each step's image, a child of the step before,
found again by :mod:`berth.builder.cache`.  Pruning it removes the images only the cache
holds (:func:`berth.image.prune.prune_build_cache` says which); dockerd's BuildKit
answers for its own cache and leaves these, so that ``builder prune`` there never makes a
classic build start cold or frees what its steps left.

The request is checked as moby's ``Builder.Prune`` and ``toBuildkitPruneInfo`` check it,
with their messages.  BuildKit's record fields are read as these images have them: every
one is a ``regular``, private record in no use (``inuse``, ``shared`` and ``private``
select all or nothing), its ``id`` the image ID, its ``parent`` the image's parent, its
``description`` the step that made it.  ``label`` is taken and not applied, as dockerd
takes it; ``unused-for`` is read as ``until`` of the image's creation (an image has no
last use).
"""

from __future__ import annotations

from collections.abc import Callable

from berth import errdefs
from berth.image.store import Image
from berth.types.filters import Filters
from berth.utils.gostr import go_quote
from berth.utils.timefmt import parse_timestamp

#: moby's builder-next ``cacheFields`` that are exposed, and the other keys its Prune
#: accepts (``label`` and ``label!`` taken and not applied, as there)
CACHE_FIELDS = ("id", "parent", "type", "description", "inuse", "shared", "private")
PRUNE_FILTERS = ("until", "unused-for", "label", "label!", *CACHE_FIELDS)


class BuildCachePruneError(errdefs.InvalidParameter):
    """dockerd wraps every refusal of its build backend in these words."""

    def __init__(self, message: str) -> None:
        super().__init__(f"failed to prune build cache: {message}")


def cache_filter(f: Filters) -> Callable[[Image], bool]:
    """Check *f* as moby does (in its order, with its messages) and return what selects
    an image of the cache."""
    try:
        f.validate(PRUNE_FILTERS)
    except errdefs.InvalidParameter as e:
        raise BuildCachePruneError(e.message) from None
    until, unused_for = f.get("until"), f.get("unused-for")
    if until and unused_for:
        raise BuildCachePruneError('conflicting filters: "until" and "unused-for"')
    key = "unused-for" if unused_for else "until"
    values = until + unused_for
    if len(values) > 1:
        raise BuildCachePruneError("filters expect only one value")
    cutoff: int | None = None
    if values:
        try:
            cutoff = parse_timestamp(values[0])
        except ValueError:
            raise BuildCachePruneError(
                f"{go_quote(key)} filter expects a duration (e.g., '24h') or a timestamp: "
                f"failed to parse value as time or duration: {go_quote(values[0])}"
            ) from None
    wanted: dict[str, str] = {}
    for field in CACHE_FIELDS:
        found = f.get(field)
        if len(found) > 1:
            raise BuildCachePruneError("filters expect only one value")
        if found:
            wanted[field] = found[0]

    def select(img: Image) -> bool:
        if cutoff is not None:
            created = img.created_ns
            if created is None or created > cutoff:
                return False
        return all(_matches(img, field, value) for field, value in wanted.items())

    return select


def _matches(img: Image, field: str, value: str) -> bool:
    if field == "id":
        return value.removeprefix("sha256:") == img.id.removeprefix("sha256:")
    if field == "parent":
        return value.removeprefix("sha256:") == img.parent.removeprefix("sha256:")
    if field == "type":
        return value == "regular"
    if field == "description":
        history = img.config.history
        return bool(history) and history[-1].created_by == value
    if field in ("inuse", "shared"):
        return value == "false"
    return value == "true"  # private
