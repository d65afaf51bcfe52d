"""Container state as persisted, and the strings ``docker ps`` shows for it."""

from __future__ import annotations

import msgspec
from msgspec import field

from berth.types.container import Health
from berth.utils.timefmt import ZERO_TIME, human_duration, now_ns, parse_rfc3339


class State(msgspec.Struct, rename="pascal"):
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = field(default=False, name="OOMKilled")
    removal_in_progress: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = field(default=0, name="ExitCode")
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    health: Health | None = None

    def status(self) -> str:
        """The one-word state (``State.Status`` in inspect, ``State`` in ps)."""
        if self.running:
            if self.paused:
                return "paused"
            if self.restarting:
                return "restarting"
            return "running"
        if self.removal_in_progress:
            return "removing"
        if self.dead:
            return "dead"
        if self.started_at == ZERO_TIME:
            return "created"
        return "exited"

    def describe(self, now: int | None = None) -> str:
        """The human ``Status`` column of ``docker ps`` (moby ``State.String``)."""
        t = now if now is not None else now_ns()
        if self.running:
            up = human_duration(t - parse_rfc3339(self.started_at))
            if self.paused:
                return f"Up {up} (Paused)"
            if self.restarting:
                ago = human_duration(t - parse_rfc3339(self.finished_at))
                return f"Restarting ({self.exit_code}) {ago} ago"
            if self.health is not None and self.health.status:
                return f"Up {up} ({health_string(self.health.status)})"
            return f"Up {up}"
        if self.removal_in_progress:
            return "Removal In Progress"
        if self.dead:
            return "Dead"
        if self.started_at == ZERO_TIME:
            return "Created"
        if self.finished_at == ZERO_TIME:
            return ""
        ago = human_duration(t - parse_rfc3339(self.finished_at))
        return f"Exited ({self.exit_code}) {ago} ago"


def health_string(status: str) -> str:
    return "health: starting" if status == "starting" else status
