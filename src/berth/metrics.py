"""What ``--metrics-addr`` serves in Prometheus's text format: dockerd's engine metrics
(``engine_daemon_*``, the names moby's ``daemon/metrics.go`` registers), berthd's own
process (RSS, open files, CPU: ``process_*``), its threads and asyncio tasks, and the API's
requests (``berth_api_*``), so that a soak or a load can be watched while it runs.

One registry of berth's own, not prometheus_client's global one; values that are read
rather than counted (container states, event subscribers, tasks) are taken at each scrape
from functions the daemon registers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from berth.utils.lazypkg import skip_init

skip_init("prometheus_client")  # its HTTP servers and exposition: at the first scrape

from prometheus_client.metrics import Counter, Gauge, Histogram  # noqa: E402
from prometheus_client.metrics_core import GaugeMetricFamily  # noqa: E402
from prometheus_client.process_collector import ProcessCollector  # noqa: E402
from prometheus_client.registry import Collector, CollectorRegistry  # noqa: E402

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: moby's buckets for container actions (seconds)
_ACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

container_actions = Histogram(
    "engine_daemon_container_actions_seconds",
    "The number of seconds it takes to process each container action",
    ["action"],
    buckets=_ACTION_BUCKETS,
    registry=REGISTRY,
)
events_total = Counter("engine_daemon_events", "The number of events logged", registry=REGISTRY)
health_checks = Counter(
    "engine_daemon_health_checks", "The total number of health checks", registry=REGISTRY
)
health_checks_failed = Counter(
    "engine_daemon_health_checks_failed",
    "The total number of failed health checks",
    registry=REGISTRY,
)
engine_info = Gauge(
    "engine_daemon_engine_info",
    "The information related to the engine and the OS it is running on",
    ["version", "commit", "architecture", "graphdriver", "kernel", "os", "os_type", "daemon_id"],
    registry=REGISTRY,
)
api_requests = Counter(
    "berth_api_requests",
    "Requests answered, by method, first path segment and status",
    ["method", "resource", "status"],
    registry=REGISTRY,
)
api_seconds = Histogram(
    "berth_api_request_seconds",
    "Seconds from a request's head to its answer's head (a stream's start)",
    ["method"],
    registry=REGISTRY,
)


@contextmanager
def container_action(action: str) -> Iterator[None]:
    """Time a container action that succeeds, as moby's ``UpdateSince`` after each."""
    start = time.monotonic()
    yield
    container_actions.labels(action).observe(time.monotonic() - start)


class _Readings(Collector):
    """Gauges read at scrape time from the functions the daemon registered."""

    def __init__(self) -> None:
        self.states: Callable[[], dict[str, int]] | None = None
        self.subscribers: Callable[[], int] | None = None
        self.tasks: Callable[[], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.states is not None:
            family = GaugeMetricFamily(
                "engine_daemon_container_states_containers",
                "The count of containers in various states",
                labels=["state"],
            )
            for state, count in self.states().items():
                family.add_metric([state], count)
            yield family
        if self.subscribers is not None:
            yield GaugeMetricFamily(
                "engine_daemon_events_subscribers_total",
                "The number of current subscribers to events",
                value=self.subscribers(),
            )
        if self.tasks is not None:
            yield GaugeMetricFamily(
                "berth_asyncio_tasks", "asyncio tasks of the API's loop", value=self.tasks()
            )
        yield GaugeMetricFamily("berth_threads", "berthd's threads", value=threading.active_count())


readings = _Readings()
REGISTRY.register(readings)


def exposition() -> bytes:
    from prometheus_client.exposition import generate_latest

    return generate_latest(REGISTRY)
