"""A thread pool whose idle threads exit.

A thread keeps what glibc's malloc cached for it (up to seven free chunks of each small
size, some hundred KiB) for as long as it lives, and no ``malloc_trim`` can return those
pages. ``ThreadPoolExecutor`` keeps every thread it ever started, so after a burst of
work berthd stayed 3 MB above its idle RSS in the caches of some twenty threads that had
nothing to do. Here a thread that waits *linger* seconds for work exits, and its cache
goes back to the heap, from where the daemon's periodic trim gives it to the kernel.

Threads take work from a ``SimpleQueue`` as ``ThreadPoolExecutor``'s do (a handoff in C,
not a Python condition: 90 rather than 155 µs for a call made from the event loop).
"""

from __future__ import annotations

import queue
import threading
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
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        # Threads waiting for work less items waiting for a thread (negative when every
        # thread is busy): under the lock, so that a thread gives up only when nothing
        # was queued meanwhile.
        self._spare = 0
        self._serial = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads are alive now."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._spare <= 0 and len(self._threads) < self._max:
                self._serial += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{self._serial}", daemon=True
                )
                thread.start()  # it waits for the item put below
                self._threads.add(thread)
                self._spare += 1
            self._spare -= 1
            self._queue.put((fut, fn, args, kwargs))
        return fut

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._linger)
            except queue.Empty:
                with self._lock:
                    if self._queue.qsize() == 0:  # else something came as the wait ended
                        self._spare -= 1
                        self._threads.discard(threading.current_thread())
                        return
                continue
            if item is None:  # shutdown
                with self._lock:
                    self._threads.discard(threading.current_thread())
                return
            self._run(item)
            del item  # not kept alive while the next wait lasts

    def _run(self, item: _Item) -> None:
        # A method of its own so that the result is let go on return.
        fut, fn, args, kwargs = item
        if not fut.set_running_or_notify_cancel():
            self._back()
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self._back()
            fut.set_exception(e)
        else:
            self._back()
            fut.set_result(result)

    def _back(self) -> None:
        """This thread is about to wait again: counted before the caller learns of the
        result, so that its next submission finds the thread rather than starting one."""
        with self._lock:
            self._spare += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with *cancel_futures*, drop what has not started; with
        *wait*, return once every thread has finished what is queued and exited."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            item[0].cancel()
                for _ in self._threads:
                    self._queue.put(None)  # one each, after what is queued
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()
