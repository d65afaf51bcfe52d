"""``docker container prune``."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon.delete import remove_container
from berth.types.container import PruneReport
from berth.types.filters import Filters, until_filter

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)
_running = threading.Lock()


def prune_containers(d: Daemon, filters: Filters) -> PruneReport:
    filters.validate(("label", "label!", "until"))
    until = until_filter(filters)
    if not _running.acquire(blocking=False):
        raise errdefs.Conflict("a prune operation is already running")
    try:
        deleted: list[str] = []
        reclaimed = 0
        for snap in d.view.snapshot().all():
            rec = snap.record
            if rec.state.running:
                continue
            if until is not None and snap.created_ns > until:
                continue
            labels = rec.config.labels or {}
            if not filters.match_kv_list("label", labels):
                continue
            if filters.contains("label!") and filters.match_kv_list("label!", labels):
                continue
            size, _ = d.container_sizes(rec.id)
            try:
                remove_container(d, rec.id, force=False, remove_volumes=False, link=False)
            except errdefs.BerthError as e:
                log.warning("prune: cannot remove %s: %s", rec.id[:12], e)
                continue
            deleted.append(rec.id)
            reclaimed += size or 0
        d.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return PruneReport(ContainersDeleted=deleted or None, SpaceReclaimed=reclaimed)
    finally:
        _running.release()
