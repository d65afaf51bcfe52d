"""Build cache models: what ``POST /build/prune`` answers."""

from __future__ import annotations

import msgspec


class CachePruneReport(msgspec.Struct):
    """moby's ``build.CachePruneReport``: ``CachesDeleted`` is ``null`` when nothing was
    removed, as dockerd's BuildKit answers with an empty cache."""

    CachesDeleted: list[str] | None
    SpaceReclaimed: int
