"""``--metrics-addr``: dockerd's engine metrics, berthd's process and its API requests in
Prometheus's text format, read with prometheus_client's own parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.testing import Berthd, running_berthd
from tests.e2e.registries import free_port


@pytest.fixture(scope="module")
def measured(busybox_tar: Path) -> Iterator[tuple[Berthd, int]]:
    port = free_port()
    with running_berthd(["--metrics-addr", f"127.0.0.1:{port}"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d, port


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_engine_process_and_api_metrics(measured: tuple[Berthd, int]) -> None:
    d, port = measured
    d.docker("run", "--rm", "busybox", "true")
    d.docker("create", "--name", "metered", "busybox", "true")
    try:
        m = _samples(port)
        assert m[("engine_daemon_container_actions_seconds_count", (("action", "create"),))] >= 2
        assert m[("engine_daemon_container_actions_seconds_count", (("action", "start"),))] >= 1
        assert m[("engine_daemon_container_states_containers", (("state", "stopped"),))] == 1
        assert m[("engine_daemon_container_states_containers", (("state", "running"),))] == 0
        assert m[("engine_daemon_events_total", ())] > 0
        assert m[("process_resident_memory_bytes", ())] > 0
        assert m[("process_open_fds", ())] > 0
        assert m[("berth_threads", ())] > 0 and m[("berth_asyncio_tasks", ())] >= 1
        created = (
            "berth_api_requests_total",
            (("method", "POST"), ("resource", "containers"), ("status", "201")),
        )
        assert m[created] >= 2
        info = [k for k in m if k[0] == "engine_daemon_engine_info"]
        assert len(info) == 1 and ("os_type", "linux") in info[0][1]
    finally:
        d.docker("rm", "metered")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=30)
    assert e.value.code == 404
    e.value.close()
