"""A small HTTP proxy on 127.0.0.1 in front of a registry, that misbehaves on request.

Pull tests need a registry that fails in the middle of things: a blob that is missing or
whose bytes are wrong, a connection cut half-way through a layer, an error status on the
manifest, a slow or stalled transfer.  :class:`FaultyProxy` forwards every request to the
registry (the Host header unchanged, so the registry's own URLs point back at the proxy) and
applies the first :class:`Fault` whose pattern matches the request's path::

    with FaultyProxy(registry.host) as proxy:
        proxy.add(Fault(r"/blobs/" + digest, cut_after=700_000, times=1))
        berthd.docker("pull", f"{proxy.host}/busybox:latest")      # 127.0.0.1 too: plain HTTP
        assert proxy.seen(r"/blobs/")[-1].cut

Every request is recorded (:attr:`FaultyProxy.requests`): method, path, the Range asked for,
the status answered, how many body bytes went out and how the transfer ended.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CHUNK = 64 << 10
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}


@dataclass
class Fault:
    """What to do to the requests whose path matches *pattern* (``re.search``).

    Without *status* the request goes to the registry and its answer is passed on, with
    the body changed as asked; with *status* the proxy answers alone (*body*, *headers*).
    *times*: how many requests it applies to (None: all of them).
    """

    pattern: str
    method: str | None = None  # None: any
    status: int | None = None  # answer this status without asking the registry
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # close the connection after this many body bytes
    corrupt_at: int | None = None  # flip the bits of the body byte at this offset
    rate: int | None = None  # at most this many body bytes per second
    stall_after: int | None = None  # then one byte every 0.1 s until released (or gone)
    delay: float = 0.0  # seconds to wait before answering
    times: int | None = None
    hits: int = 0
    stalling: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.pattern, path) is not None

    def release(self) -> None:
        """End a stall: the rest of the body goes out at full speed."""
        self.released.set()


@dataclass
class Seen:
    """One request the proxy answered."""

    method: str
    path: str
    range: str  # the Range header, "" when none
    status: int = 0
    sent: int = 0  # body bytes written to the client
    fault: Fault | None = None
    cut: bool = False  # the proxy cut the connection on purpose
    client_gone: bool = False  # the client closed the connection before the body's end
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


class FaultyProxy:
    """The proxy: ``host`` is what to pull from (``127.0.0.1:<port>``)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"faulty-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        for fault in self.faults:
            fault.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Behave again; stalled transfers go on at full speed."""
        with self._lock:
            faults, self.faults = self.faults, []
        for fault in faults:
            fault.release()

    def seen(self, pattern: str = "", method: str | None = "GET") -> list[Seen]:
        """The requests so far whose path matches *pattern*."""
        with self._lock:
            return [
                s
                for s in self.requests
                if re.search(pattern, s.path) and (method is None or s.method == method)
            ]

    @staticmethod
    def most_at_once(seen: list[Seen]) -> int:
        """The largest number of these requests that were being answered at one time."""
        events = sorted([(s.started, 1) for s in seen] + [(s.ended, -1) for s in seen])
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most

    def mark(self) -> int:
        """Where the record stands: ``requests[mark:]`` are the ones made after."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int, pattern: str = "", method: str | None = "GET") -> list[Seen]:
        with self._lock:
            later = self.requests[mark:]
        return [
            s
            for s in later
            if re.search(pattern, s.path) and (method is None or s.method == method)
        ]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                seen = Seen(self.command, self.path, self.headers.get("Range", ""))
                proxy._record(seen)
                try:
                    self._serve(seen)
                except (BrokenPipeError, ConnectionResetError):
                    seen.client_gone = True
                    self.close_connection = True
                finally:
                    seen.ended = time.monotonic()
                    seen.done.set()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def _serve(self, seen: Seen) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_for(self.command, self.path)
                seen.fault = fault
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and fault.status is not None:
                    seen.status = fault.status
                    self.send_response(fault.status)
                    headers = {"Content-Type": "application/json", **fault.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(fault.body)
                        seen.sent = len(fault.body)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS
                    }
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    self._relay(seen, resp, fault)
                finally:
                    conn.close()

            def _relay(
                self, seen: Seen, resp: http.client.HTTPResponse, fault: Fault | None
            ) -> None:
                seen.status = resp.status
                self.send_response(resp.status)
                length = resp.getheader("Content-Length")
                chunked = length is None and self.command != "HEAD" and resp.status != 204
                payload = resp.read() if chunked else None
                for k, v in resp.getheaders():
                    if k.lower() in _HOP_HEADERS or (chunked and k.lower() == "content-length"):
                        continue
                    self.send_header(k, v)
                if payload is not None:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                for chunk in self._chunks(resp, payload):
                    if not self._send(seen, chunk, fault):
                        return

            @staticmethod
            def _chunks(resp: http.client.HTTPResponse, payload: bytes | None) -> Iterator[bytes]:
                if payload is not None:
                    for i in range(0, len(payload), _CHUNK):
                        yield payload[i : i + _CHUNK]
                    return
                while chunk := resp.read(_CHUNK):
                    yield chunk

            def _send(self, seen: Seen, chunk: bytes, fault: Fault | None) -> bool:
                """Write *chunk* as *fault* wants; False once the connection is done for."""
                if fault is None:
                    self.wfile.write(chunk)
                    seen.sent += len(chunk)
                    return True
                start = seen.sent
                if fault.corrupt_at is not None and start <= fault.corrupt_at < start + len(chunk):
                    i = fault.corrupt_at - start
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if fault.cut_after is not None and start + len(chunk) >= fault.cut_after:
                    self.wfile.write(chunk[: fault.cut_after - start])
                    self.wfile.flush()
                    seen.sent = fault.cut_after
                    seen.cut = True
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return False
                if fault.stall_after is not None and start + len(chunk) > fault.stall_after:
                    head = max(fault.stall_after - start, 0)
                    self.wfile.write(chunk[:head])
                    seen.sent += head
                    chunk = chunk[head:]
                    fault.stalling.set()
                    while chunk and not fault.released.is_set():
                        if proxy._closing.is_set():
                            return False
                        self.wfile.write(chunk[:1])
                        self.wfile.flush()
                        seen.sent += 1
                        chunk = chunk[1:]
                        fault.released.wait(0.1)
                if fault.rate:
                    for i in range(0, len(chunk), 16 << 10):
                        piece = chunk[i : i + (16 << 10)]
                        self.wfile.write(piece)
                        self.wfile.flush()
                        seen.sent += len(piece)
                        time.sleep(len(piece) / fault.rate)
                    return True
                self.wfile.write(chunk)
                seen.sent += len(chunk)
                return True

        return Handler
