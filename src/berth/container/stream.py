"""The stdio of containers and exec processes (moby's StreamConfig).

A :class:`Streams` hub belongs to a container (or an exec) for its whole
life, so a client can attach *before* the process starts — ``docker run``
does — and receive that run's output.  A :class:`ProcessIO` is the plumbing
of one run: the FIFOs shared with containerd's shim, read on the event loop
and published to the hub and the log.

Output reaches each attached client through a bounded queue: a client that
does not read slows the container down, as with dockerd, instead of growing
berthd's memory.  The FIFOs are opened before the task is created and a
placeholder writer keeps each open until the shim has opened its end, so an
early reader never sees a false end of file.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from berth import errdefs
from berth.runtime.base import Stdio

log = logging.getLogger(__name__)

STDOUT = "stdout"
STDERR = "stderr"
#: reads queued for an attached client before the reading stops: reads are up to 256 KiB
#: (the pipe transport's), so at most 16 MB waits for a client that does not keep up
_QUEUE_DEPTH = 64
#: a read this long is a bulk writer's (the shim copies 32 KiB at a time)
_BULK = 32 * 1024
#: small reads this close together are a fast writer's small pieces...
_FREQUENT = 0.0005
#: ...left to gather in the FIFO this long before the next read, as are a bulk writer's
COALESCE = 0.001
#: an output FIFO's capacity (a pipe's is 64 KiB): what a bulk writer sends while the
#: reader waits stays in it instead of blocking the shim
_FIFO_SIZE = 1 << 20
#: a FIFO smaller than this (the system's pipe-max-size refused the size) is read at once
#: after a bulk read, as a wait would block the shim
_BULK_WAIT_SIZE = 256 * 1024
#: a stream whose last :data:`_MISSES` waits each gathered little is read at once this long
_BACKOFF = 0.1
_MISSES = 3

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q

#: Receives every chunk of output, on the event loop: ``sink(stream, data)``.
OutputSink = Callable[[str, bytes], None]

_CTRL_PUNCTUATION = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(spec: str) -> bytes:
    """``ctrl-p,ctrl-q`` → the bytes that detach (moby's term.ToBytes); the default
    sequence for an empty *spec*.  Here, not in the api, so that exec create can
    refuse a bad sequence as dockerd does."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        k = key.strip().lower()
        if len(k) == 1:
            out.append(ord(k))
        elif k.startswith("ctrl-") and len(k) == 6 and "a" <= k[5] <= "z":
            out.append(ord(k[5]) - ord("a") + 1)
        elif k.startswith("ctrl-") and len(k) == 6 and k[5] in _CTRL_PUNCTUATION:
            out.append(_CTRL_PUNCTUATION[k[5]])
        else:
            raise errdefs.InvalidParameter(f"Invalid escape keys ({spec}) provided")
    return bytes(out)


class DetachFilter:
    """Passes stdin through, holding back a possible detach sequence until decided."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, whether the detach sequence was completed)."""
        out = bytearray()
        for b in data:
            candidate = self._held + bytes([b])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    return bytes(out), True
                self._held = candidate
                continue
            out += self._held
            self._held = b""
            if self.keys.startswith(bytes([b])):
                self._held = bytes([b])
            else:
                out.append(b)
        return bytes(out), False


class LogSink(Protocol):
    """Where a container's output is logged (the json-file driver, usually)."""

    def sink(self, stream: str, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AttachInfo:
    """What an attaching client needs to know of a container."""

    container_id: str
    tty: bool
    open_stdin: bool
    stdin_once: bool
    streams: Streams


@dataclass(eq=False)
class Subscription:
    """One attached client's view of the output: (stream, data) items, None at the end."""

    streams: frozenset[str]
    queue: asyncio.Queue[tuple[str, bytes] | None] = field(
        default_factory=lambda: asyncio.Queue(_QUEUE_DEPTH)
    )
    #: The run's output is complete (the end marker is queued): a session that stops
    #: without it was left by its client (detached or gone), the process lives on.
    ended: bool = False

    async def get(self) -> tuple[str, bytes] | None:
        return await self.queue.get()


class Streams:
    """Attached clients of one container or exec; lives on the event loop."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._io: ProcessIO | None = None
        self._io_ready: asyncio.Event | None = None
        self._late_ends: set[asyncio.Task[None]] = set()

    def subscribe(self, streams: frozenset[str]) -> Subscription:
        sub = Subscription(streams)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        while not sub.queue.empty():  # unblock a publisher waiting on this queue
            sub.queue.get_nowait()

    def offer(self, stream: str, data: bytes) -> list[Subscription]:
        """Queue *data* for each subscriber of *stream* that has room; those without."""
        full: list[Subscription] = []
        for sub in self._subs:
            if stream in sub.streams:
                try:
                    sub.queue.put_nowait((stream, data))
                except asyncio.QueueFull:
                    full.append(sub)
        return full

    async def deliver(self, subs: list[Subscription], stream: str, data: bytes) -> None:
        """Queue *data* for *subs* (what :meth:`offer` left), waiting for room."""
        for sub in subs:
            if sub in self._subs:
                await sub.queue.put((stream, data))

    async def publish(self, stream: str, data: bytes) -> None:
        await self.deliver(self.offer(stream, data), stream, data)

    def end(self) -> None:
        """The run is over: every current subscriber gets its end marker (on the loop)."""
        for sub in list(self._subs):
            sub.ended = True
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:  # a slow reader still gets its end, after the rest
                task = asyncio.ensure_future(sub.queue.put(None))
                self._late_ends.add(task)
                task.add_done_callback(self._late_ends.discard)
        self._subs.clear()
        self._io = None

    def connect(self, io: ProcessIO) -> None:
        self._io = io
        if self._io_ready is not None:
            self._io_ready.set()
            self._io_ready = None

    async def write_stdin(self, data: bytes, wait: bool = True) -> bool:
        """Send *data* to the process's stdin, waiting for a process to start if need be."""
        while self._io is None:
            if not wait:
                return False
            if self._io_ready is None:
                self._io_ready = asyncio.Event()
            await self._io_ready.wait()
        return await self._io.write_stdin(data)

    async def close_stdin(self) -> None:
        if self._io is not None:
            await self._io.close_stdin()


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe behind *fd* (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


class ProcessIO:
    def __init__(
        self,
        fifo_dir: Path,
        name: str,
        *,
        stdin: bool,
        tty: bool,
        hub: Streams | None = None,
        sink: OutputSink | None = None,
        close_io: Callable[[], None] | None = None,
    ) -> None:
        self.dir = fifo_dir
        #: tells the runtime to close the process's stdin (containerd's CloseIO): the
        #: shim keeps the FIFO open itself, so closing our end is not an EOF.
        self.close_io = close_io
        self.name = name
        self.tty = tty
        self.hub = hub
        self.sink = sink
        self.stdio = Stdio(
            stdin=str(fifo_dir / f"{name}-stdin") if stdin else "",
            stdout=str(fifo_dir / f"{name}-stdout"),
            stderr="" if tty else str(fifo_dir / f"{name}-stderr"),
            terminal=tty,
        )
        self._read_fds: dict[str, int] = {}
        self._fifo_sizes: dict[str, int] = {}
        self._placeholders: list[int] = []
        self._stdin_fd = -1
        self._stdin_taken = False
        self._stdin_writer: asyncio.StreamWriter | None = None
        self._stdin_lock: asyncio.Lock | None = None
        self._waits: set[asyncio.Task[None]] = set()
        self._transports: list[asyncio.ReadTransport] = []
        self._open_streams = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Set when all output has been read and delivered.
        self.done = threading.Event()

    # -- set-up (worker thread) --------------------------------------------------
    def open(self) -> None:
        """Make the FIFOs and open our ends (before the task is created, or to reattach)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stream, path in ((STDOUT, self.stdio.stdout), (STDERR, self.stdio.stderr)):
            if not path:
                continue
            if not os.path.exists(path):
                os.mkfifo(path, 0o600)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._read_fds[stream] = fd
            with contextlib.suppress(OSError):  # over pipe-max-size: the size it has stays
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _FIFO_SIZE)
            self._fifo_sizes[stream] = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            # Keeps the FIFO from reporting end-of-file before the shim opens it.
            self._placeholders.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        if self.stdio.stdin:
            if not os.path.exists(self.stdio.stdin):
                os.mkfifo(self.stdio.stdin, 0o600)
            # Until the shim opens its reading end, O_WRONLY would fail (ENXIO); an
            # O_RDWR placeholder holds the FIFO meanwhile.  It must not be the fd we
            # write through: asyncio takes a readable write-pipe for a closed one.
            self._placeholders.append(
                os.open(self.stdio.stdin, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            )

    def connected(self) -> None:
        """The process has started and the shim has opened its ends (callable from a
        worker thread): take our stdin end and drop the placeholders."""
        if self.stdio.stdin and self._stdin_fd < 0 and not self._stdin_taken:
            self._stdin_taken = True
            self._stdin_fd = os.open(self.stdio.stdin, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._drop_placeholders()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._connect_stdin(), loop).result(10)

    def _drop_placeholders(self) -> None:
        for fd in self._placeholders:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._placeholders.clear()

    async def _connect_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        if self._stdin_fd >= 0:
            wpipe = os.fdopen(self._stdin_fd, "wb", buffering=0, closefd=True)
            self._stdin_fd = -1
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), wpipe
            )
            self._stdin_writer = asyncio.StreamWriter(transport, protocol, None, loop)
        if self.hub is not None and not self.done.is_set():
            self.hub.connect(self)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin reading output on *loop* (from a worker thread, before the process
        starts: the placeholders keep the FIFOs from an early end-of-file)."""
        self.loop = loop
        asyncio.run_coroutine_threadsafe(self.start_async(), loop).result(10)

    async def start_async(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._stdin_lock = asyncio.Lock()
        if not self._read_fds:
            self._finish()
            return
        self._open_streams = len(self._read_fds)
        for stream, fd in list(self._read_fds.items()):
            pipe = os.fdopen(fd, "rb", buffering=0, closefd=True)
            bulk_waits = self._fifo_sizes.get(stream, 0) >= _BULK_WAIT_SIZE
            transport, _ = await loop.connect_read_pipe(
                lambda s=stream, b=bulk_waits: _Output(self, s, bulk_waits=b),  # type: ignore[misc]
                pipe,
            )
            self._transports.append(transport)
        self._read_fds.clear()

    def _output(self, reader: _Output, stream: str, data: bytes) -> None:
        """A read of *stream*: to the log, then to attached clients.  A client whose queue
        is full holds this stream until it has taken the chunk (backpressure)."""
        if self.sink is not None:
            try:
                self.sink(stream, data)
            except Exception:
                log.exception("log sink failed")
        if self.hub is None:
            return
        full = self.hub.offer(stream, data)
        if full:
            reader.hold()
            wait = asyncio.ensure_future(self._deliver(reader, full, stream, data))
            self._waits.add(wait)
            wait.add_done_callback(self._waits.discard)

    async def _deliver(
        self, reader: _Output, subs: list[Subscription], stream: str, data: bytes
    ) -> None:
        assert self.hub is not None
        try:
            await self.hub.deliver(subs, stream, data)
        finally:
            reader.release()

    def _stream_ended(self) -> None:
        self._open_streams -= 1
        if self._open_streams <= 0:
            self._finish()

    def _finish(self) -> None:
        if self.done.is_set():
            return
        if self.hub is not None:
            self.hub.end()
        self.done.set()

    # -- stdin (event loop) ----------------------------------------------------------
    async def write_stdin(self, data: bytes) -> bool:
        """Send *data* to the process; False once its input is closed."""
        writer = self._stdin_writer
        if writer is None or writer.is_closing() or self._stdin_lock is None:
            return False
        async with self._stdin_lock:
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return False
        return True

    async def close_stdin(self) -> None:
        """End the process's input once the shim has read everything we wrote."""
        writer = self._stdin_writer
        self._stdin_writer = None
        if writer is None:
            return
        with contextlib.suppress(Exception):
            await writer.drain()
            pipe = writer.transport.get_extra_info("pipe")
            fd = pipe.fileno() if pipe is not None else -1
            for _ in range(2000):  # at most ~10 s for a process that stopped reading
                if fd < 0 or _unread(fd) == 0:
                    break
                await asyncio.sleep(0.005)
        with contextlib.suppress(Exception):
            writer.close()
        if self.close_io is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, self.close_io)

    # -- tear-down -----------------------------------------------------------------
    async def _cancel(self) -> None:
        for task in list(self._waits):
            task.cancel()
        # A stream closed before the end of its FIFO leaves the pipe open otherwise.
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        await self.close_stdin()
        self._finish()

    def close(self, *, remove: bool = True) -> None:
        """Close everything (callable from any thread); remove the FIFOs when *remove*."""
        self._stdin_taken = True
        self._drop_placeholders()
        for fd in list(self._read_fds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
        if self._stdin_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = -1
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(self._cancel())
            else:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self._cancel(), loop).result(5)
        else:
            self.done.set()
        if remove:
            for path in (self.stdio.stdin, self.stdio.stdout, self.stdio.stderr):
                if path:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)


class _Output(asyncio.Protocol):
    """One output FIFO of a :class:`ProcessIO`: each read is handled as it arrives, on
    the loop's own callback (no stream buffer, no task switch per chunk).

    Output that comes fast is left to gather: the shim passes it on in the writer's
    pieces (4 KiB for awk or a C program's stdout) and in pieces of 32 KiB at most, and
    reading each as it came cost berthd 55 µs a read, 200 reads a MB of 41-byte lines.
    So a small read (under :data:`_BULK`) that follows the previous one within
    :data:`_FREQUENT`, and a bulk read when the FIFO holds enough of what comes
    meanwhile (*bulk_waits*), make the next wait :data:`COALESCE`; an occasional line
    is read at once. A wait costs about as much as a read (the FIFO leaves the poll set
    and comes back, a timer runs): when the read after each of :data:`_MISSES` waits in
    a row after small reads is not more than twice the read before, the writer only
    writes a few pieces at a time (a 10 KB printf every millisecond: its waits cost
    berthd 35% more CPU than reading at once) and waits are left off for
    :data:`_BACKOFF`. A wait after a bulk read is not judged so: what it gathers is the
    writer's speed (awk's 41-byte lines fill a 1 ms wait with less than the read before,
    and calling that a miss left every read of such a writer to come at once).
    """

    def __init__(self, io: ProcessIO, stream: str, *, bulk_waits: bool = False) -> None:
        self._io = io
        self._stream = stream
        self._bulk_waits = bulk_waits
        self._transport: asyncio.ReadTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holds = 0
        self._last = 0.0  # the loop's time of the last read
        self._size = 0  # the last read's length, when a wait follows it (else 0)
        self._calm_until = 0.0  # no wait before this loop time
        self._misses = 0  # waits in a row that gathered little

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self._io._output(self, self._stream, data)
        loop = self._loop
        assert loop is not None
        now = loop.time()
        n = len(data)
        if self._size:  # the first read after a wait
            if n > 2 * self._size or self._size >= _BULK:
                self._misses = 0
            else:
                self._misses += 1
                if self._misses >= _MISSES:
                    self._calm_until = now + _BACKOFF
                    self._misses = 0
            self._size = 0
        elif now >= self._calm_until and (
            self._bulk_waits if n >= _BULK else now - self._last < _FREQUENT
        ):
            self._size = n
            self.hold()
            loop.call_later(COALESCE, self.release)
        self._last = now

    def hold(self) -> None:
        """Stop reading until as many :meth:`release` calls."""
        self._holds += 1
        if self._holds == 1 and self._transport is not None:
            self._transport.pause_reading()

    def release(self) -> None:
        self._holds -= 1
        transport = self._transport
        if self._holds == 0 and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._io._stream_ended()
