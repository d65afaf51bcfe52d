"""Restart policies with dockerd's back-off (moby's restartmanager).

The delay starts at 100 ms and doubles on each restart up to one minute; a
container that ran for ten seconds or more starts over at 100 ms.  A
container stopped by the user is never restarted by its policy.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from berth.utils.timefmt import now_ns, parse_rfc3339

if TYPE_CHECKING:
    from berth.container.container import Container

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER_NS = 10 * 1_000_000_000


class RestartManager:
    def __init__(self) -> None:
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()

    def should_restart(self, container: Container, exit_code: int) -> tuple[bool, float]:
        rec = container.record
        policy = container.host_config.restart_policy
        name = policy.name
        if rec.has_been_manually_stopped or container.state.removal_in_progress:
            return False, 0.0
        if name in {"always", "unless-stopped"}:
            restart = True
        elif name == "on-failure":
            restart = exit_code != 0 and (
                policy.maximum_retry_count == 0 or rec.restart_count < policy.maximum_retry_count
            )
        else:
            restart = False
        if not restart:
            self.forget(container.id)
            return False, 0.0
        with self._lock:
            ran_ns = now_ns() - parse_rfc3339(container.state.started_at)
            delay = self._delays.get(container.id, 0.0)
            delay = (
                BACKOFF_START
                if delay == 0.0 or ran_ns >= RESET_AFTER_NS
                else min(delay * 2, BACKOFF_MAX)
            )
            self._delays[container.id] = delay
        return True, delay

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._delays.pop(container_id, None)
