"""Stream helpers: multiplexed frames, hijacked connections, detach keys, thread bridges."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from berth import errdefs

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
STREAM_IDS = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR}
RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q

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


def parse_detach_keys(spec: str) -> bytes:
    """``ctrl-p,ctrl-q`` → the bytes that detach (moby's term.ToBytes)."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        k = key.strip().lower()
        if len(k) == 1:
            out.append(ord(k))
        elif k.startswith("ctrl-") and len(k) == 6:
            c = k[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise errdefs.InvalidParameter(f"Invalid escape keys ({spec}) provided")
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


async def iterate_in_thread(
    make: Callable[[threading.Event], Iterator[T]], depth: int = 256
) -> AsyncIterator[T]:
    """Run a blocking iterator in a thread and yield its items on the loop.

    The iterator gets a stop event, set when the consumer goes away.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[int, object]) -> None:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                fut.result(0.5)
                return
            except TimeoutError:
                continue
            except Exception:
                return
        fut.cancel()

    def run() -> None:
        try:
            for item in make(stop):
                if stop.is_set():
                    return
                put((0, item))
            put((1, None))
        except BaseException as e:
            put((2, e))

    thread = threading.Thread(target=run, name="berth-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == 1:
                return
            if kind == 2:
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            while not queue.empty():
                queue.get_nowait()
