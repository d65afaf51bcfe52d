"""ViewDB: an in-memory, snapshot-readable store of containers and names.

Writers replace an ``immutables.Map`` under a lock; readers take the current
maps in O(1) and work on them without locks, so ``docker ps`` and
``inspect`` never wait for (or see half of) a container being changed.  The
objects stored are copies decoded from the JSON just written to disk: nothing
a reader holds is ever mutated.  Name reservations live here too, which
makes "reserve a name" and "look up by name" one consistent thing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import immutables

from berth import errdefs
from berth.container.container import Record
from berth.types.container import HostConfig
from berth.utils.timefmt import parse_rfc3339


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A container frozen at its last checkpoint, with what queries filter on."""

    record: Record
    host_config: HostConfig
    created_ns: int
    started_ns: int
    finished_ns: int
    #: Views derived from this snapshot alone (an inspect answer), kept until the
    #: next checkpoint replaces the snapshot; what is put here is never mutated.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @classmethod
    def of(cls, record: Record, host_config: HostConfig) -> Snapshot:
        st = record.state
        return cls(
            record=record,
            host_config=host_config,
            created_ns=parse_rfc3339(record.created),
            started_ns=parse_rfc3339(st.started_at),
            finished_ns=parse_rfc3339(st.finished_at),
        )


class NameConflict(errdefs.Conflict):
    def __init__(self, name: str, holder: str) -> None:
        super().__init__(
            f'Conflict. The container name "{name}" is already in use by container "{holder}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )
        self.name = name
        self.holder = holder


#: IDs are indexed by their first characters, so that a short ID (``docker inspect
#: 3f2a1b``) is found among a few rather than by testing every container's ID
_PREFIX = 3


class View:
    """A consistent read-only view of the ViewDB at one moment."""

    __slots__ = ("_by_prefix", "_containers", "_names")

    def __init__(
        self,
        containers: immutables.Map[str, Snapshot],
        names: immutables.Map[str, str],
        by_prefix: immutables.Map[str, frozenset[str]],
    ) -> None:
        self._containers = containers
        self._names = names
        self._by_prefix = by_prefix

    def __len__(self) -> int:
        return len(self._containers)

    def all(self) -> list[Snapshot]:
        return list(self._containers.values())

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self._containers.values())

    def get(self, ident: str) -> Snapshot | None:
        return self._containers.get(ident)

    def get_id(self, name: str) -> str | None:
        if not name.startswith("/"):
            name = "/" + name
        return self._names.get(name)

    def get_all_names(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, ident in self._names.items():
            out.setdefault(ident, []).append(name)
        return out

    def get_by_prefix(self, prefix: str) -> str | None:
        """The one ID starting with *prefix*; Conflict-free None when there is none.

        Raises InvalidParameter when the prefix is ambiguous.
        """
        found: str | None = None
        candidates: frozenset[str] | immutables.Map[str, Snapshot] = self._containers
        if len(prefix) >= _PREFIX:
            candidates = self._by_prefix.get(prefix[:_PREFIX], frozenset())
        for ident in candidates:
            if ident.startswith(prefix):
                if found is not None:
                    raise errdefs.InvalidParameter(
                        f"multiple IDs found with provided prefix: {prefix}"
                    )
                found = ident
        return found

    def find(self, ref: str) -> Snapshot:
        """Look a container up as dockerd does: full ID, then name, then ID prefix."""
        if not ref:
            raise errdefs.InvalidParameter('invalid name or ID supplied: ""')
        snap = self._containers.get(ref)
        if snap is not None:
            return snap
        ident = self.get_id(ref)
        if ident is not None:
            snap = self._containers.get(ident)
            if snap is not None:
                return snap
        ident = self.get_by_prefix(ref)
        if ident is not None:
            snap = self._containers.get(ident)
            if snap is not None:
                return snap
        raise errdefs.NotFound(f"No such container: {ref}")


class ViewDB:
    def __init__(self) -> None:
        self._containers: immutables.Map[str, Snapshot] = immutables.Map()
        self._names: immutables.Map[str, str] = immutables.Map()
        self._by_prefix: immutables.Map[str, frozenset[str]] = immutables.Map()
        #: each container's names, for the writers: a delete must not scan every name
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> View:
        return View(self._containers, self._names, self._by_prefix)

    def save(self, snap: Snapshot) -> None:
        with self._lock:
            if snap.id not in self._containers:
                key = snap.id[:_PREFIX]
                held = self._by_prefix.get(key, frozenset())
                self._by_prefix = self._by_prefix.set(key, held | {snap.id})
            self._containers = self._containers.set(snap.id, snap)

    def delete(self, ident: str) -> None:
        with self._lock:
            held = self._held.pop(ident, ())
            if held:
                with self._names.mutate() as names:
                    for name in held:
                        del names[name]
                    self._names = names.finish()
            if ident in self._containers:
                self._containers = self._containers.delete(ident)
                key = ident[:_PREFIX]
                rest = self._by_prefix.get(key, frozenset()) - {ident}
                self._by_prefix = (
                    self._by_prefix.set(key, rest) if rest else self._by_prefix.delete(key)
                )

    def reserve_name(self, name: str, ident: str) -> None:
        if not name.startswith("/"):
            name = "/" + name
        with self._lock:
            holder = self._names.get(name)
            if holder is not None and holder != ident:
                raise NameConflict(name, holder)
            self._names = self._names.set(name, ident)
            self._held.setdefault(ident, set()).add(name)

    def release_name(self, name: str) -> None:
        if not name.startswith("/"):
            name = "/" + name
        with self._lock:
            holder = self._names.get(name)
            if holder is not None:
                self._names = self._names.delete(name)
                held = self._held.get(holder)
                if held is not None:
                    held.discard(name)
                    if not held:
                        del self._held[holder]
