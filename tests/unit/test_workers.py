"""berth.utils.workers: a pool whose idle threads exit."""

from __future__ import annotations

import queue
import random
import threading
import time
import weakref
from concurrent.futures import CancelledError, Future, wait
from typing import Any

import pytest

from berth.utils.workers import WorkerPool


def _until(cond: object, timeout: float = 10.0) -> bool:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_results_and_exceptions_reach_the_future() -> None:
    pool = WorkerPool(2, "t")
    assert pool.submit(divmod, 7, 2).result(5) == (3, 1)
    assert pool.submit(int, "7", base=8).result(5) == 7
    fut = pool.submit(int, "x")
    with pytest.raises(ValueError):
        fut.result(5)
    pool.shutdown()


def test_a_waiting_thread_is_reused_before_another_starts() -> None:
    pool = WorkerPool(8, "t")
    for i in range(50):
        assert pool.submit(int, i).result(5) == i
    assert pool.threads == 1
    pool.shutdown()


def test_up_to_max_workers_run_at_once_and_the_rest_wait_their_turn() -> None:
    pool = WorkerPool(3, "t")
    barrier = threading.Barrier(3, timeout=5)
    release = threading.Event()
    running: list[int] = []

    def task(i: int) -> int:
        running.append(i)
        if i < 3:
            barrier.wait()  # fails unless all three run together
            release.wait(5)
        return i

    futures = [pool.submit(task, i) for i in range(5)]
    assert _until(lambda: len(running) == 3)
    assert pool.threads == 3
    assert sorted(running) == [0, 1, 2]  # the other two are queued, not on a fourth thread
    release.set()
    assert [f.result(5) for f in futures] == list(range(5))
    assert pool.threads <= 3
    pool.shutdown()


def test_idle_threads_exit_after_the_linger() -> None:
    pool = WorkerPool(4, "linger-test", linger=0.05)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(4)]
    assert _until(lambda: pool.threads == 4)
    gate.set()
    wait(futures, 5)
    assert _until(lambda: pool.threads == 0)
    assert _until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("linger-test")]
    )
    # and a new submission starts a thread again
    assert pool.submit(lambda: 7).result(5) == 7
    pool.shutdown()


def test_nothing_is_lost_when_submissions_meet_threads_that_time_out() -> None:
    """Submissions from several threads, spaced around a linger of a millisecond, so
    that items keep arriving while threads decide to exit: every one must run."""
    pool = WorkerPool(3, "t", linger=0.001)
    futures: list[Future[int]] = []
    lock = threading.Lock()

    def submitter(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(400):
            fut = pool.submit(int, i)
            with lock:
                futures.append(fut)
            time.sleep(rng.choice((0, 0, 0.0005, 0.001, 0.0015)))

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done, not_done = wait(futures, 10)
    assert not not_done
    assert len(done) == 1600
    pool.shutdown()


def test_a_finished_item_is_not_kept_alive_by_its_idle_thread() -> None:
    class Payload:
        pass

    pool = WorkerPool(1, "t")
    ref: list[weakref.ref[Payload]] = []

    def make() -> None:
        p = Payload()
        ref.append(weakref.ref(p))

    pool.submit(make).result(5)
    assert pool.threads == 1
    assert ref[0]() is None
    fut = pool.submit(Payload)
    kept = weakref.ref(fut.result(5))
    del fut
    assert _until(lambda: kept() is None)  # once the thread is back waiting
    pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_refuses_more() -> None:
    pool = WorkerPool(1, "t")
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: 1)
    assert _until(first.running)
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(CancelledError):
        queued.result(1)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 2)
    gate.set()
    assert first.result(5) is True
    assert _until(lambda: pool.threads == 0)


def test_shutdown_with_wait_runs_what_is_queued_first() -> None:
    pool = WorkerPool(1, "t")
    gate = threading.Event()
    pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: 1)
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True)
    assert queued.result(0) == 1
    assert pool.threads == 0


class _SlowToGiveUp:
    """The pool's queue, with a pause between a wait that timed out and its thread's
    next step: the moment a submission can slip in."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.timed_out = threading.Event()
        self.go_on = threading.Event()

    def get(self, timeout: float | None = None) -> Any:
        try:
            return self.real.get(timeout=timeout)
        except queue.Empty:
            self.timed_out.set()
            self.go_on.wait(5)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_an_item_queued_as_its_thread_times_out_is_run() -> None:
    pool = WorkerPool(1, "t", linger=0.05)
    slow = _SlowToGiveUp(pool._queue)
    pool._queue = slow  # type: ignore[assignment]
    assert pool.submit(int, 1).result(5) == 1  # the one thread now waits for more
    assert slow.timed_out.wait(5)
    fut = pool.submit(int, 2)  # the waiting thread is counted on: none is started
    assert pool.threads == 1
    slow.go_on.set()
    assert fut.result(5) == 2
    pool.shutdown()
