"""Items from a blocking producer thread to the event loop, in batches
(``berth.api.streams.iterate_batches_in_thread``: docker logs, attach's replay)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from berth.api.streams import iterate_batches_in_thread


def test_every_item_arrives_in_order_in_batches_no_larger_than_the_depth() -> None:
    def make(stop: threading.Event) -> Iterator[int]:
        yield from range(200_000)

    async def main() -> list[list[int]]:
        batches = []
        async for batch in iterate_batches_in_thread(make, depth=1000):
            batches.append(batch)
            if len(batches) % 7 == 0:
                await asyncio.sleep(0.001)  # a slow consumer: the producer waits for room
        return batches

    batches = asyncio.run(main())
    assert [i for b in batches for i in b] == list(range(200_000))
    assert max(map(len, batches)) <= 1000
    assert len(batches) < 200_000 // 10  # the loop is woken per batch, not per item


def test_an_item_put_while_the_loop_goes_to_wait_is_not_left_behind() -> None:
    """One item at a time, each put as the loop has just found the queue empty: a
    wake-up lost between the loop's look and its wait would hang the stream."""
    rounds = 3000
    taken = threading.Semaphore(0)

    def make(stop: threading.Event) -> Iterator[int]:
        for i in range(rounds):
            yield i
            taken.acquire()  # the next one once the loop has this one

    async def main() -> int:
        n = 0
        stream = iterate_batches_in_thread(make)
        while True:
            try:
                batch = await asyncio.wait_for(stream.__anext__(), 10)
            except StopAsyncIteration:
                return n
            assert batch == [n]
            n += 1
            taken.release()

    assert asyncio.run(main()) == rounds


def test_a_producer_error_reaches_the_consumer_after_what_came_before() -> None:
    def make(stop: threading.Event) -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    async def main() -> list[int]:
        got: list[int] = []
        async for batch in iterate_batches_in_thread(make):
            got += batch
        return got

    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(main())


def test_a_consumer_that_leaves_stops_a_producer_waiting_for_room() -> None:
    stopped = threading.Event()

    def make(stop: threading.Event) -> Iterator[int]:
        i = 0
        try:
            while True:  # only the handoff can stop it
                yield i
                i += 1
        finally:
            stopped.set()

    async def main() -> None:
        stream = iterate_batches_in_thread(make, depth=10)
        first = await stream.__anext__()
        assert first[0] == 0 and len(first) <= 10
        await asyncio.sleep(0.05)  # the producer fills the queue and waits for room
        assert not stopped.is_set()
        await stream.aclose()

    asyncio.run(main())
    assert stopped.wait(5)
