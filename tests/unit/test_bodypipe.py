"""BodyPipe: request bodies handed from the event loop to a blocking reader thread."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
import threading
from collections.abc import AsyncIterator
from typing import IO, Any

import pytest

from berth.api import bodypipe
from berth.api.bodypipe import BodyPipe

TIMEOUT = 30.0


async def _chunks(data: bytes, size: int, seen: list[int] | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if seen is not None:
            seen.append(i)
        yield data[i : i + size]
        await asyncio.sleep(0)


def _run(pipe: BodyPipe, body: AsyncIterator[bytes], consume: object) -> object:
    """Feed on a loop while *consume(reader)* runs in a thread, as the API does."""

    async def main() -> object:
        feeder = asyncio.ensure_future(pipe.feed(body))
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(consume, pipe.reader),  # type: ignore[arg-type]
                TIMEOUT,
            )
        finally:
            pipe.close_reader()
            await asyncio.wait_for(feeder, TIMEOUT)

    return asyncio.run(main())


def test_small_reads_from_big_chunks_take_each_byte_once() -> None:
    """read1 and read of a few hundred bytes at a time out of 256 KiB chunks (a tar's
    headers out of one socket read), with a read of the rest in the middle of a chunk."""
    data = bytes(range(251)) * 5000
    sizes = [512, 11, 501, 1, 4096]

    def consume(reader: Any) -> bytes:  # the pipe's reader: read1 as well as read
        parts = []
        for i in range(1000):  # about 1 MB of the 1.25
            size = sizes[i % len(sizes)]
            piece = reader.read1(size) if i % 2 else reader.read(size)
            assert 0 < len(piece) <= size
            parts.append(piece)
        parts.append(reader.read())
        return b"".join(parts)

    pipe = BodyPipe()
    assert _run(pipe, _chunks(data, 256 * 1024), consume) == data
    assert pipe._queued == 0


@pytest.mark.parametrize("read_size", [1, 7, 512, 32768, 1 << 20, -1])
def test_reader_gets_every_byte_in_order(read_size: int) -> None:
    data = bytes(range(256)) * 4099  # not a multiple of any chunk or read size

    def consume(reader: IO[bytes]) -> bytes:
        if read_size < 0:
            return reader.read()
        parts = []
        while chunk := reader.read(read_size):
            assert len(chunk) == read_size or not reader.read(1)  # short only at the end
            parts.append(chunk)
        return b"".join(parts)

    assert _run(BodyPipe(), _chunks(data, 1000), consume) == data


def test_readinto_and_tarfile_stream() -> None:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        payload = b"x" * 300_000
        info = tarfile.TarInfo("f")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()

    def consume(reader: IO[bytes]) -> str:
        with tarfile.open(fileobj=reader, mode="r|") as tf:
            for m in tf:
                f = tf.extractfile(m)
                assert f is not None
                return hashlib.sha256(f.read()).hexdigest()
        return ""

    assert _run(BodyPipe(), _chunks(data, 32768), consume) == hashlib.sha256(payload).hexdigest()
    got = bytearray(10)
    pipe = BodyPipe()
    assert _run(pipe, _chunks(b"abc", 2), lambda r: r.readinto(got)) == 3  # type: ignore[attr-defined]
    assert bytes(got[:3]) == b"abc"


def test_a_slow_reader_holds_the_feeder_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodypipe, "_QUEUE_LIMIT", 64 * 1024)
    data = b"y" * (2 << 20)
    pipe = BodyPipe()
    most = [0]

    def consume(reader: IO[bytes]) -> int:
        total = 0
        while chunk := reader.read(4096):
            most[0] = max(most[0], pipe._queued)
            total += len(chunk)
        return total

    assert _run(pipe, _chunks(data, 8192), consume) == len(data)
    assert most[0] <= 64 * 1024 + 8192  # bounded: never the whole body in memory


def test_a_reader_that_gives_up_lets_the_feeder_drain() -> None:
    data = b"z" * (64 << 20)  # more than the queue holds
    fed: list[int] = []
    pipe = BodyPipe()

    def consume(reader: IO[bytes]) -> bytes:
        head = reader.read(10)
        reader.close()  # refused after the first bytes, as a bad tarball is
        return head

    assert _run(pipe, _chunks(data, 1 << 20, fed), consume) == b"z" * 10
    assert len(fed) == 64  # the rest of the body was read (and dropped), not left hanging


def test_end_of_body_wakes_a_waiting_reader() -> None:
    pipe = BodyPipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.reader.read(100)))

    async def main() -> None:
        reader.start()
        await asyncio.sleep(0.05)
        await pipe.feed(_chunks(b"short", 2))

    asyncio.run(main())
    reader.join(TIMEOUT)
    assert got == [b"short"]
