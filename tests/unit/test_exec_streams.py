"""Exec stream logic: detach key parsing and filtering, the end of a run, output through a
FIFO to the log and attached clients, body field names."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from berth import errdefs
from berth.api.httputils import fold_field_names
from berth.container import stream
from berth.container.stream import (
    DEFAULT_DETACH_KEYS,
    DetachFilter,
    ProcessIO,
    Streams,
    parse_detach_keys,
)
from berth.types.container import ExecOptions, ExecStartConfig


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("", DEFAULT_DETACH_KEYS),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        ("ctrl-x,y", b"\x18y"),
        ("CTRL-A, a", b"\x01a"),
        ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", bytes([0, 27, 28, 29, 30, 31])),
    ],
)
def test_parse_detach_keys(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-1", "ctrl-", "ctrl-ab", "ab", ",", "alt-x"])
def test_parse_detach_keys_refuses(spec: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"Invalid escape keys \(.*\) provided"):
        parse_detach_keys(spec)


def test_detach_filter_holds_a_prefix_until_decided() -> None:
    f = DetachFilter(b"\x10\x11")
    assert f.feed(b"ab\x10") == (b"ab", False)
    assert f.feed(b"c") == (b"\x10c", False)  # not the sequence after all
    assert f.feed(b"\x10") == (b"", False)
    assert f.feed(b"\x11rest") == (b"", True)


def test_fold_field_names_matches_without_case() -> None:
    data = {"detachKeys": "ctrl-a,a", "cmd": ["sh"], "TTY": True, "Unknown": 1}
    assert fold_field_names(data, ExecOptions) == {
        "DetachKeys": "ctrl-a,a",
        "Cmd": ["sh"],
        "Tty": True,
        "Unknown": 1,
    }
    assert fold_field_names({"tty": True}, ExecStartConfig) == {"Tty": True}
    assert fold_field_names([1], ExecOptions) == [1]


def test_end_reaches_a_subscriber_whose_queue_is_full() -> None:
    async def main() -> list[tuple[str, bytes] | None]:
        hub = Streams()
        sub = hub.subscribe(frozenset({"stdout"}))
        while not sub.queue.full():
            sub.queue.put_nowait(("stdout", b"x"))
        hub.end()
        assert sub.ended
        depth = sub.queue.qsize()
        items = []
        while (item := await asyncio.wait_for(sub.get(), 5)) is not None:
            items.append(item)
        assert len(items) == depth  # every queued chunk first, then the end
        return items

    assert asyncio.run(main())


def test_a_subscription_left_before_the_end_is_not_ended() -> None:
    async def main() -> None:
        hub = Streams()
        sub = hub.subscribe(frozenset({"stdout"}))
        hub.unsubscribe(sub)
        hub.end()
        assert not sub.ended

    asyncio.run(main())


def test_output_reaches_log_and_clients_in_order_and_a_slow_client_holds_the_writer(
    tmp_path: Path,
) -> None:
    """Each read goes to the log sink and every attached client in order; a client whose
    queue is full stops the reading (the writer blocks once the FIFO is full) until it
    has taken its chunk, and the end comes after all the output."""
    # 20 MB: more than the FIFO's 1 MiB and 64 queued reads of at most 256 KiB each
    chunks = [b"%05d:" % i + b"x" * 4090 for i in range(5000)]
    expected = b"".join(chunks)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = Streams()
        slow = hub.subscribe(frozenset({"stdout"}))
        fast = hub.subscribe(frozenset({"stdout"}))
        logged: list[bytes] = []
        io = ProcessIO(
            tmp_path, "c", stdin=False, tty=False, hub=hub, sink=lambda s, d: logged.append(d)
        )
        io.open()
        await io.start_async()
        fd = os.open(io.stdio.stdout, os.O_WRONLY | os.O_CLOEXEC)
        # the placeholders go (closing fd is then the end of the output); a worker
        # thread's call, as the runtime makes it
        await loop.run_in_executor(None, io.connected)
        written = threading.Event()

        def write() -> None:
            for c in chunks:
                os.write(fd, c)
            os.close(fd)
            written.set()

        writer = loop.run_in_executor(None, write)

        async def drain(sub: object, delay: float) -> bytes:
            got = []
            while (item := await asyncio.wait_for(sub.get(), 10)) is not None:  # type: ignore[attr-defined]
                got.append(item[1])
                if delay:
                    await asyncio.sleep(delay)
            return b"".join(got)

        fast_task = asyncio.ensure_future(drain(fast, 0))
        await asyncio.sleep(0.3)  # the slow client has read nothing yet
        assert not written.is_set()  # so the writer is held back
        assert slow.queue.full()
        slow_data = await drain(slow, 0.0005)
        await writer
        assert slow_data == expected
        assert await fast_task == expected
        await asyncio.get_running_loop().run_in_executor(None, io.done.wait, 10)
        assert b"".join(logged) == expected
        io.close()

    asyncio.run(main())


async def _reads_of(tmp_path: Path, start_writer: Callable[[int], Awaitable[None]]) -> list[bytes]:
    """The reads a container's stdout FIFO gets from a writer given its write end (the
    writer closes it, or owns a copy: the end of the output is the last one closed)."""
    loop = asyncio.get_running_loop()
    reads: list[bytes] = []
    io = ProcessIO(tmp_path, "c", stdin=False, tty=False, sink=lambda s, d: reads.append(d))
    io.open()
    await io.start_async()
    fd = os.open(io.stdio.stdout, os.O_WRONLY | os.O_CLOEXEC)
    written = asyncio.ensure_future(start_writer(fd))
    await loop.run_in_executor(None, io.connected)
    await written
    await loop.run_in_executor(None, io.done.wait, 10)
    io.close()
    return reads


def test_small_pieces_that_come_fast_are_read_together(tmp_path: Path) -> None:
    """A writer's 4 KiB pieces one after another reach the log in far fewer reads than
    writes (each read costs the daemon more than the bytes in it); all of them, in order."""
    pieces = [b"%05d:" % i + b"y" * 4090 for i in range(2000)]

    def write(fd: int) -> None:
        for p in pieces:
            os.write(fd, p)
            time.sleep(0.0001)  # as a program's stdio flushes: a reader could keep up
        os.close(fd)

    async def writer(fd: int) -> None:
        await asyncio.get_running_loop().run_in_executor(None, write, fd)

    reads = asyncio.run(_reads_of(tmp_path, writer))
    assert b"".join(reads) == b"".join(pieces)
    assert len(reads) < len(pieces) // 2


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times an output reader waited for more to gather (in its first item)."""
    count = [0]
    hold = stream._Output.hold

    def counting_hold(self: stream._Output) -> None:
        count[0] += 1
        hold(self)

    monkeypatch.setattr(stream._Output, "hold", counting_hold)
    return count


def _bulk_writer(pieces: list[bytes]) -> Callable[[int], Awaitable[None]]:
    """Writes *pieces* as the shim passes on a fast writer's output: 32 KiB at a time."""

    def write(fd: int) -> None:
        for p in pieces:
            os.write(fd, p)
            time.sleep(0.0001)
        os.close(fd)

    async def writer(fd: int) -> None:
        await asyncio.get_running_loop().run_in_executor(None, write, fd)

    return writer


def test_a_bulk_writer_gathers_in_a_fifo_of_a_mebibyte(tmp_path: Path) -> None:
    """The shim's 32 KiB pieces of a fast writer wait in the FIFO (1 MiB, not a pipe's
    64 KiB) while the reader waits, so a few reads take many pieces; all of them, in order."""
    io = ProcessIO(tmp_path, "f", stdin=False, tty=False)
    io.open()
    fd = os.open(io.stdio.stdout, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == 1 << 20
    finally:
        os.close(fd)
        io.close()
    pieces = [b"%05d:" % i + b"b" * (32 * 1024 - 6) for i in range(640)]
    reads = asyncio.run(_reads_of(tmp_path, _bulk_writer(pieces)))
    assert b"".join(reads) == b"".join(pieces)
    assert len(reads) < len(pieces) // 3


def test_a_bulk_writer_is_read_at_once_when_the_fifo_stays_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits: list[int]
) -> None:
    """Where pipe-max-size keeps the FIFO small, a wait after a bulk read would block the
    shim: the next read comes at once (and the output is whole)."""
    monkeypatch.setattr(stream, "_FIFO_SIZE", 64 * 1024)
    pieces = [b"%05d:" % i + b"s" * (32 * 1024 - 6) for i in range(200)]
    reads = asyncio.run(_reads_of(tmp_path, _bulk_writer(pieces)))
    assert b"".join(reads) == b"".join(pieces)
    assert waits[0] < len(pieces) // 4  # a piece the pipe split may still be a small read


def test_a_writer_whose_pieces_do_not_gather_is_read_without_waiting(
    tmp_path: Path, waits: list[int]
) -> None:
    """A 10 KB printf every few milliseconds comes in three quick pieces: a wait after the
    second gathers only the third, and costs as much as the read it saves.  After a few
    such waits the stream is read at once for a while; the output is whole either way."""
    program = (
        "import os, sys, time\n"
        "fd = int(sys.argv[1])\n"
        "for i in range(300):\n"
        "    for piece in (b'%04d:' % i + b'z' * 4091, b'z' * 4096, b'z' * 1808):\n"
        "        os.write(fd, piece)\n"
        "        time.sleep(0.0001)\n"
        "    time.sleep(0.003)\n"
    )

    async def writer(fd: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", program, str(fd), pass_fds=(fd,)
        )
        os.close(fd)
        assert await proc.wait() == 0

    reads = asyncio.run(_reads_of(tmp_path, writer))
    assert b"".join(reads) == b"".join(b"%04d:" % i + b"z" * 9995 for i in range(300))
    assert waits[0] < 100
