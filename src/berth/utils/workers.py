"""A thread pool whose idle threads exit.

A thread keeps what glibc's malloc cached for it (up to seven free chunks of each small
size, some hundred KiB) for as long as it lives, and no ``malloc_trim`` can return those
pages. ``ThreadPoolExecutor`` keeps every thread it ever started, so after a burst of
work berthd stayed 3 MB above its idle RSS in the caches of some twenty threads that had
nothing to do. Here a thread that waits *linger* seconds for work exits, and its cache
goes back to the heap, from where the daemon's periodic trim gives it to the kernel.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: seconds an idle thread waits for work before it exits
LINGER = 5.0

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerPool(Executor):
    """Runs what is submitted on up to *max_workers* daemon threads, reusing a waiting
    thread before it starts another; the threads do not hold the process at exit."""

    def __init__(self, max_workers: int, name: str, *, linger: float = LINGER) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
        self._name = name
        self._linger = linger
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Item] = deque()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0
        self._serial = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads are alive now."""
        with self._cond:
            return len(self._threads)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.append((fut, fn, args, kwargs))
            # Each queued item needs a waiting thread that will look at the queue: one
            # that timed out still looks before it exits, so counting it is safe.
            if len(self._queue) <= self._waiting:
                self._cond.notify()
            elif len(self._threads) < self._max:
                self._serial += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{self._serial}", daemon=True
                )
                try:
                    thread.start()
                except BaseException:
                    self._queue.pop()
                    raise
                self._threads.add(thread)
            # else a busy thread takes it when it is done
        return fut

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            _run(item)
            del item  # not kept alive while the next wait lasts

    def _next(self) -> _Item | None:
        """The next item, or None when this thread is to exit."""
        with self._cond:
            while not self._queue:
                if not self._closed:
                    self._waiting += 1
                    try:
                        self._cond.wait(self._linger)
                    finally:
                        self._waiting -= 1
                    if self._queue:
                        break
                # Closed, timed out, or woken for an item that a busy thread took first:
                # nobody is owed this thread.
                self._threads.discard(threading.current_thread())
                return None
            return self._queue.popleft()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with *cancel_futures*, drop what has not started; with
        *wait*, return once every thread has finished what is queued and exited."""
        with self._cond:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def _run(item: _Item) -> None:
    # A function of its own so that the result is let go on return.
    fut, fn, args, kwargs = item
    if not fut.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        fut.set_exception(e)
    else:
        fut.set_result(result)
