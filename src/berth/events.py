"""The events bus behind ``GET /events``: bounded subscribers, a short history.

Publishing never blocks: a subscriber that cannot keep up loses its oldest
events instead of making the daemon wait or grow (dockerd leaked thousands of
listeners, moby#32711).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from berth import metrics

HISTORY = 1000
QUEUE_DEPTH = 1024


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    action: str
    actor_id: str
    attributes: dict[str, str]
    time_ns: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_ns // 1_000_000_000,
            "timeNano": self.time_ns,
        }
        return out


@dataclass(eq=False)
class Subscriber:
    accept: Callable[[Message], bool]
    wake: Callable[[], None]
    queue: collections.deque[Message] = field(
        default_factory=lambda: collections.deque(maxlen=QUEUE_DEPTH)
    )


class Events:
    def __init__(self) -> None:
        self._history: collections.deque[Message] = collections.deque(maxlen=HISTORY)
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()

    def publish(self, type_: str, action: str, actor_id: str, attributes: dict[str, str]) -> None:
        msg = Message(type_, action, actor_id, attributes, time.time_ns())
        metrics.events_total.inc()
        with self._lock:
            self._history.append(msg)
            subs = list(self._subs)
        for sub in subs:
            if sub.accept(msg):
                sub.queue.append(msg)
                sub.wake()

    def subscribe(
        self, accept: Callable[[Message], bool], wake: Callable[[], None], since_ns: int | None
    ) -> tuple[list[Message], Subscriber]:
        """Past events at or after *since_ns* (when given) and a live subscription."""
        sub = Subscriber(accept, wake)
        with self._lock:
            past = (
                [m for m in self._history if m.time_ns >= since_ns and accept(m)]
                if since_ns is not None
                else []
            )
            self._subs.add(sub)
        return past, sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)
