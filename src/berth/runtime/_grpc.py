"""gRPC client calls over HTTP/2 on a unix socket, for containerd's API.

berthd needs unary calls and one server stream (events) on one local socket;
grpcio's client carried 21 MB of berthd's 60 MB idle RSS (its core library
alone is 10 MB of resident text) for that.  Here HTTP/2 is h2's (sans-IO) and
gRPC is what remains: a 5-byte length prefix per message, the ``grpc-status``
and ``grpc-message`` trailers, and ``grpc-timeout``.

One :class:`Channel` holds one connection at a time, shared by every thread:
callers send under a lock and wait on a condition; a reader thread feeds the
h2 state machine and wakes them.  When the connection breaks (containerd
restarted) every open call fails with UNAVAILABLE and the next call dials
again.  :class:`Stub` makes a service's methods from the generated
``*_pb2`` descriptors, so no hand-written table of methods or types exists.
"""

from __future__ import annotations

import enum
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

_WINDOW = 16 << 20  # what containerd may send before we acknowledge (per stream)
_PREFIX = struct.Struct(">BI")  # compressed flag, message length


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """A call that did not end with status OK (grpcio's accessors, for its callers)."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Call:
    """One stream's state, changed by the reader under the connection's lock."""

    __slots__ = ("buffer", "done", "message", "status", "stream_id")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.buffer = bytearray()
        self.done = False
        self.status: StatusCode | None = None
        self.message = ""

    def finish(self, status: StatusCode, message: str) -> None:
        if not self.done:
            self.done = True
            self.status = status
            self.message = message

    def check_status(self) -> None:
        """(done) Raise the call's status unless it is OK."""
        if self.status is not StatusCode.OK:
            raise RpcError(self.status or StatusCode.UNKNOWN, self.message)

    def take_message(self, limit: int) -> bytes | None:
        """The next whole message in the buffer, if one has arrived."""
        if len(self.buffer) < _PREFIX.size:
            return None
        compressed, length = _PREFIX.unpack_from(self.buffer)
        if compressed:
            raise RpcError(StatusCode.INTERNAL, "compressed message without an encoding")
        if length > limit:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED, f"message of {length} bytes is over {limit}"
            )
        end = _PREFIX.size + length
        if len(self.buffer) < end:
            return None
        data = bytes(self.buffer[_PREFIX.size : end])
        del self.buffer[:end]
        return data


def _status_of(headers: list[tuple[str, str]]) -> tuple[StatusCode, str] | None:
    fields = dict(headers)
    raw = fields.get("grpc-status")
    if raw is None:
        return None
    try:
        code = StatusCode(int(raw))
    except ValueError:
        code = StatusCode.UNKNOWN
    return code, unquote(fields.get("grpc-message", ""))


class _Connection:
    def __init__(self, path: str, on_dead: Callable[[_Connection], None]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise RpcError(StatusCode.UNAVAILABLE, f"connecting to {path}: {e.strerror}") from None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW)  # the connection's own window
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.calls: dict[int, _Call] = {}
        self.dead: str | None = None
        self._on_dead = on_dead
        self.sock.sendall(self.h2.data_to_send())
        self._reader = threading.Thread(target=self._read, name="containerd-grpc", daemon=True)
        self._reader.start()

    def flush(self) -> None:
        """Send what h2 has queued (lock held)."""
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def _read(self) -> None:
        reason = "connection closed by containerd"
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    if self.dead is not None:
                        break
                    self._handle(self.h2.receive_data(data))
                    self.flush()
                    self.changed.notify_all()
        except (OSError, h2.exceptions.ProtocolError) as e:
            reason = f"connection to containerd broken: {e}"
        finally:
            with self.lock:
                self._die(reason)  # after which nothing sends: the socket is this thread's
                self.sock.close()

    def _handle(self, events: list[h2.events.Event]) -> None:
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.buffer += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                call = self.calls.get(ev.stream_id)
                headers = [(str(k), str(v)) for k, v in ev.headers]
                status = _status_of(headers)
                if call is not None and status is not None:
                    call.finish(*status)
                elif call is not None and isinstance(ev, h2.events.ResponseReceived):
                    code = dict(headers).get(":status", "")
                    if code != "200":
                        call.finish(StatusCode.UNKNOWN, f"HTTP status {code}")
            elif isinstance(ev, h2.events.StreamEnded):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.finish(StatusCode.INTERNAL, "stream ended without a grpc-status")
            elif isinstance(ev, h2.events.StreamReset):
                call = self.calls.get(ev.stream_id)
                if call is not None:  # CANCELLED is kept for the calls berthd cancels
                    call.finish(
                        StatusCode.INTERNAL, f"stream reset by containerd ({ev.error_code})"
                    )
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._die(f"containerd closed the connection ({ev.error_code})")

    def _die(self, reason: str) -> None:
        """(lock held) Fail every open call; the channel dials anew for the next."""
        if self.dead is not None:
            return
        self.dead = reason
        for call in self.calls.values():
            call.finish(StatusCode.UNAVAILABLE, reason)
        self.changed.notify_all()
        self._on_dead(self)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        with self.lock:
            self._die("channel closed")
        self._reader.join(5)

    def open(
        self, path: str, body: bytes, metadata: tuple[tuple[str, str], ...], deadline: float | None
    ) -> _Call:
        """Start a call: headers, then the request message, flow control permitting."""
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        if deadline is not None:
            left = deadline - time.monotonic()
            headers.append(("grpc-timeout", f"{max(1, int(left * 1000))}m"))
        frame = _PREFIX.pack(0, len(body)) + body
        with self.lock:
            self._check()
            try:
                sid = self.h2.get_next_available_stream_id()
            except h2.exceptions.NoAvailableStreamIDError:
                self._die("no stream ID left on this connection")
                raise RpcError(StatusCode.UNAVAILABLE, "no stream ID left") from None
            call = _Call(sid)
            self.calls[sid] = call
            try:
                self.h2.send_headers(sid, headers)
                view = memoryview(frame)
                while True:
                    room = min(
                        self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size
                    )
                    if room >= len(view):
                        self.h2.send_data(sid, bytes(view), end_stream=True)
                        break
                    if room > 0:
                        self.h2.send_data(sid, bytes(view[:room]))
                        view = view[room:]
                    self.flush()
                    if not self._wait(deadline):
                        raise RpcError(StatusCode.DEADLINE_EXCEEDED, "sending the request")
                    self._check()
                self.flush()
            except RpcError:
                self._forget(call)
                raise
            except (h2.exceptions.H2Error, OSError) as e:
                # (stream IDs run out after 2^30 calls, too): the next call dials anew
                self._die(f"sending to containerd: {e!r}")
                raise RpcError(StatusCode.UNAVAILABLE, f"sending to containerd: {e!r}") from None
        return call

    def _check(self) -> None:
        if self.dead is not None:
            raise RpcError(StatusCode.UNAVAILABLE, self.dead)

    def _wait(self, deadline: float | None) -> bool:
        """(lock held) Wait for the reader; False once *deadline* has passed."""
        if deadline is None:
            self.changed.wait()
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.changed.wait(left)
        return True

    def cancel(self, call: _Call) -> None:
        """(lock held) End *call* as CANCELLED and reset its stream, if still open."""
        if not call.done and self.dead is None:
            call.finish(StatusCode.CANCELLED, "cancelled")
            try:
                self.h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
                self.flush()
            except (h2.exceptions.H2Error, OSError):
                pass

    def _forget(self, call: _Call) -> None:
        """(lock held) Drop *call*, cancelling it if it is still open."""
        self.calls.pop(call.stream_id, None)
        self.cancel(call)

    def result(self, call: _Call, deadline: float | None, limit: int) -> bytes:
        """The unary answer of *call*, or its status as an RpcError."""
        with self.lock:
            try:
                while not call.done:
                    if not self._wait(deadline):
                        raise RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
                call.check_status()
                message = call.take_message(limit)
                if message is None:
                    raise RpcError(StatusCode.INTERNAL, "the answer had no message")
                return message
            finally:
                self._forget(call)

    def messages(self, call: _Call, limit: int) -> Iterator[bytes]:
        """The messages of a server stream as they arrive, then its status."""
        try:
            while True:
                with self.lock:
                    while True:
                        message = call.take_message(limit)
                        if message is not None or call.done:
                            break
                        self.changed.wait()
                if message is None:
                    call.check_status()
                    return
                yield message
        finally:
            with self.lock:
                self._forget(call)


class ServerStream:
    """The answers of a server-streaming call; :meth:`cancel` ends it from any thread
    (the iterating one then gets RpcError CANCELLED)."""

    def __init__(self, conn: _Connection, call: _Call, response: type[Message], limit: int):
        self._conn = conn
        self._call = call
        self._response = response
        self._limit = limit

    def __iter__(self) -> Iterator[Any]:
        for raw in self._conn.messages(self._call, self._limit):
            msg = self._response()
            msg.ParseFromString(raw)
            yield msg

    def cancel(self) -> None:
        with self._conn.lock:
            self._conn.cancel(self._call)
            self._conn.changed.notify_all()


class Channel:
    """Calls to the gRPC server on the unix socket *path*."""

    def __init__(self, path: str, *, max_message: int = 64 << 20) -> None:
        self.path = path
        self.max_message = max_message
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._closed = False

    def _connection(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise RpcError(StatusCode.CANCELLED, "channel closed")
            if self._conn is None:
                self._conn = _Connection(self.path, self._lost)
            return self._conn

    def _lost(self, conn: _Connection) -> None:
        # called by the connection with its own lock held: never take it here
        if self._conn is conn:
            self._conn = None

    def unary(
        self,
        path: str,
        response: type[Message],
        request: Message,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float | None = None,
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self._connection()
        call = conn.open(path, request.SerializeToString(), metadata, deadline)
        raw = conn.result(call, deadline, self.max_message)
        msg = response()
        msg.ParseFromString(raw)
        return msg

    def stream(
        self,
        path: str,
        response: type[Message],
        request: Message,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> ServerStream:
        conn = self._connection()
        call = conn.open(path, request.SerializeToString(), metadata, None)
        return ServerStream(conn, call, response, self.max_message)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Stub:
    """A service's methods, made from its descriptor: ``stub.Create(request, metadata=...,
    timeout=...)`` for a unary method, ``stub.Subscribe(request, metadata=...)`` (a
    :class:`ServerStream`) for a server-streaming one."""

    def __init__(self, channel: Channel, service: ServiceDescriptor) -> None:
        self._methods: dict[str, Any] = {}
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            response = message_factory.GetMessageClass(method.output_type)
            if method.server_streaming:
                self._methods[method.name] = _bind(channel.stream, path, response)
            else:
                self._methods[method.name] = _bind(channel.unary, path, response)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError(name) from None


def _bind(fn: Any, path: str, response: type[Message]) -> Any:
    def call(request: Message, **kwargs: Any) -> Any:
        return fn(path, response, request, **kwargs)

    return call
