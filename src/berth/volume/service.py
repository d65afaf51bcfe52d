"""The volume routes' service: the Engine API's view of the volume store.

Which containers use a volume is the container side's to say (``users``); the
store keeps the volumes, this module answers in the current API's shape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from berth import errdefs
from berth.types.filters import Filters
from berth.types.volume import (
    ANONYMOUS_LABEL,
    Volume,
    VolumeCreateRequest,
    VolumePruneReport,
    VolumeUsageData,
)
from berth.utils.timefmt import format_rfc3339, parse_rfc3339
from berth.volume.store import VolumeRecord, VolumeStore

_prune_lock = threading.Lock()


class VolumeService:
    def __init__(self, store: VolumeStore, users: Callable[[str], list[str]]) -> None:
        self.store = store
        self._users = users
        #: the answer for each record, while the store keeps that record (records are
        #: replaced, never changed): ``docker volume ls`` of hundreds rebuilds none
        self._answers: dict[str, tuple[VolumeRecord, Volume]] = {}

    def _answer(self, rec: VolumeRecord) -> Volume:
        cached = self._answers.get(rec.name)
        if cached is not None and cached[0] is rec:
            return cached[1]
        vol = self.to_api(rec)
        self._answers[rec.name] = (rec, vol)
        return vol

    def to_api(self, rec: VolumeRecord, usage: bool = False) -> Volume:
        created = format_rfc3339(parse_rfc3339(rec.created)) if rec.created else ""
        return Volume(
            created_at=created,
            driver=rec.driver,
            labels=dict(rec.labels) or None,
            mountpoint=self.store.path(rec.name),
            name=rec.name,
            options=dict(rec.options) or None,
            usage_data=VolumeUsageData(
                ref_count=len(self._users(rec.name)), size=self.store.size(rec.name)
            )
            if usage
            else None,
        )

    def local_volumes_size(self) -> list[Volume]:
        """The volumes of ``docker system df`` (moby's ``LocalVolumesSize``): the local
        driver's without driver options (an option volume's data is a mount of something
        else: a tmpfs, a device, NFS), with ``UsageData``: the bytes under its data
        directory and how many containers reference it."""
        return [
            self.to_api(rec, usage=True)
            for rec in self.store.list()
            if rec.driver == "local" and not rec.options
        ]

    # -- VolumeBackend ---------------------------------------------------------------------
    def list_volumes(self, filters: Filters) -> tuple[list[Volume], list[str]]:
        dangling: bool | None = None
        if filters.contains("dangling"):
            dangling = filters.get_bool_or_default("dangling", False)
        out = []
        records = self.store.list()
        if len(self._answers) > 2 * len(records) + 64:  # answers of removed volumes go
            names = {r.name for r in records}
            self._answers = {k: v for k, v in self._answers.items() if k in names}
        for rec in records:  # the store lists them by name
            if not filters.match("name", rec.name):
                continue
            if filters.contains("driver") and not filters.exact_match("driver", rec.driver):
                continue
            if not filters.match_kv_list("label", rec.labels):
                continue
            if dangling is not None and (not self._users(rec.name)) != dangling:
                continue
            out.append(self._answer(rec))
        return out, []

    def inspect_volume(self, name: str) -> Volume:
        return self.to_api(self.store.get(name))

    def create_volume(self, req: VolumeCreateRequest) -> Volume:
        labels = dict(req.labels or {})
        if not req.name:
            labels.setdefault(ANONYMOUS_LABEL, "")
        rec = self.store.create(
            req.name,
            driver=req.driver or "local",
            labels=labels,
            options=req.driver_opts,
            anonymous=not req.name,
        )
        return self.to_api(rec)

    def remove_volume(self, name: str, force: bool) -> None:
        try:
            self.store.remove(name, force=force)
        except errdefs.NotFound:
            if not force:
                raise

    def prune_volumes(self, filters: Filters, all_volumes: bool) -> VolumePruneReport:
        if not _prune_lock.acquire(blocking=False):
            raise errdefs.Conflict("a prune operation is already running")
        try:
            report = VolumePruneReport()
            for rec in self.store.list():
                if not all_volumes and ANONYMOUS_LABEL not in rec.labels:
                    continue
                if not filters.match_kv_list("label", rec.labels):
                    continue
                if filters.contains("label!") and filters.match_kv_list("label!", rec.labels):
                    continue
                if self._users(rec.name):
                    continue
                size = self.store.size(rec.name)
                try:
                    self.store.remove(rec.name)
                except errdefs.BerthError:
                    continue
                report.volumes_deleted.append(rec.name)
                report.space_reclaimed += max(size, 0)
            self.store.events.publish(
                "volume", "prune", "", {"reclaimed": str(report.space_reclaimed)}
            )
            return report
        finally:
            _prune_lock.release()
