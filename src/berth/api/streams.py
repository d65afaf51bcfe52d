"""Stream helpers: multiplexed frames, hijacked connections, detach keys, thread bridges."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

# Detach keys are parsed and filtered below the api (exec create checks them too);
# the attach routes take them from here.
from berth.container.stream import DEFAULT_DETACH_KEYS, DetachFilter, parse_detach_keys

__all__ = [
    "DEFAULT_DETACH_KEYS",
    "MULTIPLEXED",
    "RAW",
    "STDERR",
    "STDIN",
    "STDOUT",
    "STREAM_IDS",
    "SYSTEMERR",
    "DetachFilter",
    "frame",
    "hijack_head",
    "iterate_batches_in_thread",
    "parse_detach_keys",
]

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
STREAM_IDS = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR}
RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"

T = TypeVar("T")


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame: [stream, 0, 0, 0, size (big-endian uint32)] + payload."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def hijack_head(
    content_type: str, upgrade: bool, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """The raw response head dockerd writes before handing over the connection."""
    lines = (
        [
            "HTTP/1.1 101 UPGRADED",
            f"Content-Type: {content_type}",
            "Connection: Upgrade",
            "Upgrade: tcp",
        ]
        if upgrade
        else ["HTTP/1.1 200 OK", f"Content-Type: {content_type}"]
    )
    lines.extend(f"{k}: {v}" for k, v in extra or [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Handoff(Generic[T]):
    """Items from a producer thread to the loop, taken in batches: the loop is woken
    once per batch, not once per item (a million log lines must not cost a million
    cross-thread calls).

    A put takes no lock unless the queue is full or the loop waits for it: the producer
    appends and then looks for a waiter, the loop sets its waiter and then looks at the
    queue, so one of them sees the other (deque appends and pops are atomic)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self._depth = depth
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiter: asyncio.Future[None] | None = None
        self._end: BaseException | None = None
        self._ended = False

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_resolve, waiter)

    def put(self, item: T, stop: threading.Event) -> bool:
        """Block while the consumer is *depth* items behind; False once it is gone."""
        items = self._items
        if len(items) >= self._depth:
            with self._cond:
                while len(items) >= self._depth:
                    if stop.is_set():
                        return False
                    self._cond.wait(0.5)
        if stop.is_set():
            return False
        items.append(item)
        if self._waiter is not None:
            with self._cond:
                self._wake()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended = True
            self._end = error
            self._wake()

    async def take(self) -> list[T] | None:
        """Everything queued (waiting for at least one item); None at the end."""
        items = self._items
        while True:
            with self._cond:
                if not items and not self._ended:
                    # set before the look below: a put it misses sees the waiter
                    waiter = self._waiter = self._loop.create_future()
                if items:
                    self._waiter = None
                    # popped one by one: the producer may append meanwhile
                    batch = [items.popleft() for _ in range(len(items))]
                    self._cond.notify_all()
                    return batch
                if self._ended:
                    if self._end is not None:
                        raise self._end
                    return None
            await waiter


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def iterate_batches_in_thread(
    make: Callable[[threading.Event], Iterator[T]], depth: int = 1024
) -> AsyncIterator[list[T]]:
    """Run a blocking iterator in a thread and yield what it made so far, in batches.

    The iterator gets a stop event, set when the consumer goes away.  *depth* bounds
    what waits between them: 4,096 log messages in flight (and the small objects they
    are made of) left berthd 2.7 MB above its start after a 50 MB ``docker logs``, in
    allocator arenas a few survivors keep; 1,024 leave 1.0 MB, for no loss of speed.
    """
    handoff: _Handoff[T] = _Handoff(asyncio.get_running_loop(), depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in make(stop):
                if stop.is_set() or not handoff.put(item, stop):
                    return
            handoff.finish()
        except BaseException as e:
            handoff.finish(e)

    thread = threading.Thread(target=run, name="berth-stream", daemon=True)
    thread.start()
    try:
        while (batch := await handoff.take()) is not None:
            yield batch
    finally:
        stop.set()
