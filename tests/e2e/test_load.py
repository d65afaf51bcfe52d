"""Load: 200 docker-py clients at once, each mixing ps, inspect, logs, events and
run --rm, for BERTH_LOAD_SECONDS (20 in CI; the issue's figures come from a longer run).
Every answer is checked; none may fail.  The request rate is printed, never asserted."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, running_berthd, wait_for

CLIENTS = 200
SECONDS = float(os.environ.get("BERTH_LOAD_SECONDS", "20"))


@pytest.fixture
def loaded(busybox_tar: Path) -> Iterator[Berthd]:
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


def test_two_hundred_clients_get_correct_answers(loaded: Berthd) -> None:
    import docker  # type: ignore[import-untyped]

    d = loaded
    assert d.proc is not None
    since = int(time.time()) - 1  # steady's create and start are in every events window
    steady = d.docker(
        "run", "-d", "--name", "steady", "busybox", "sh", "-c", "echo ready; exec sleep 600"
    ).stdout.strip()
    wait_for(lambda: d.docker("logs", "steady").stdout == "ready\n", what="steady's output")
    fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))

    def ps(api: Any) -> None:
        assert any(c["Id"] == steady for c in api.containers(all=True))

    def inspect(api: Any) -> None:
        assert api.inspect_container("steady")["State"]["Running"] is True

    def logs(api: Any) -> None:
        assert api.logs("steady") == b"ready\n"

    def events(api: Any) -> None:
        until = int(time.time())
        seen = list(api.events(since=since, until=until, decode=True))
        # the stream ends at until with what the history holds of the window; it may hold
        # nothing of it: a bounded ring (as dockerd's) that a starved client thread (200
        # in one process) can let move past its window before its request goes out
        assert all(since <= e["time"] <= until and e["Type"] for e in seen)
        if seen:
            with lock:
                done["events (not empty)"] += 1

    def run_rm(api: Any) -> None:
        c = api.create_container("busybox", ["echo", "hi"])
        api.start(c)
        assert api.wait(c, timeout=120)["StatusCode"] == 0
        assert api.logs(c) == b"hi\n"
        api.remove_container(c)

    ops: list[tuple[str, Callable[[Any], None], int]] = [
        ("ps", ps, 30),
        ("inspect", inspect, 30),
        ("logs", logs, 20),
        ("events", events, 15),
        ("run --rm", run_rm, 5),
    ]
    names = [name for name, _, weight in ops for _ in range(weight)]
    by_name = {name: fn for name, fn, _ in ops}
    done: Counter[str] = Counter()
    failed: list[str] = []
    lock = threading.Lock()
    end = time.monotonic() + SECONDS

    def client(seed: int) -> None:
        rng = random.Random(seed)
        api = docker.APIClient(base_url="unix://" + d.sock, version="1.43", timeout=120)
        try:
            while time.monotonic() < end:
                name = rng.choice(names)
                try:
                    by_name[name](api)
                except Exception as e:  # every failure is counted and shown
                    with lock:
                        failed.append(f"{name}: {type(e).__name__}: {e}")
                else:
                    with lock:
                        done[name] += 1
        finally:
            api.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    total = sum(done.values())
    print(
        f"\n{CLIENTS} clients, {took:.0f} s: {total} requests ({total / took:.0f}/s), "
        f"{len(failed)} failed; {dict(done)}"
    )
    assert failed == [], failed[:10]
    assert all(done[name] > 0 for name in [*by_name, "events (not empty)"])
    d.docker("rm", "-f", "steady")
    wait_for(lambda: d.docker("ps", "-aq").stdout == "", what="the containers removed")
    wait_for(
        lambda: len(os.listdir(f"/proc/{d.proc.pid}/fd")) <= fds,  # type: ignore[union-attr]
        what="berthd's descriptors back where they were",
    )
