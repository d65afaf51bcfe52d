"""HTTP/1.1 over asyncio streams with the h11 state machine.

No framework: the Engine API needs things frameworks hide — per-message
flushing of chunked streams, responses whose headers go out long before the
body (``/wait``), and raw hijacked connections with half-close for attach and
exec.  This module knows HTTP, not Docker: routing and the Engine's rules live
in :mod:`berth.api.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from berth import errdefs
from berth.api._chunked import ChunkedDecoder
from berth.api._tls import start_tls_server

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
#: the largest body read whole (JSON); streamed bodies (load, cp, build) have no limit
MAX_BODY = 8 << 20
#: the largest request head (Go's http.DefaultMaxHeaderBytes, which dockerd keeps)
MAX_HEAD = 1 << 20
#: seconds an idle connection waits for its next request, then for the rest of its head
#: (a client that sends a head a byte at a time holds a connection this long at most)
IDLE_TIMEOUT = 120.0
HEAD_TIMEOUT = 60.0
#: after refusing a body, what of the rest is read (and dropped) so that the client,
#: still sending, reads the answer instead of a reset; Go's server reads 256 KiB
_LINGER_BYTES = 4 << 20
_LINGER_TIMEOUT = 2.0
#: seconds a TLS client has to finish its handshake
_HANDSHAKE_TIMEOUT = 10


class ClientGone(Exception):
    """The peer closed the connection while we were writing to it."""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class StreamingResponse:
    """A body sent with chunked encoding, each yielded piece flushed at once."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Hijack:
    """Take over the raw connection after the handler's own status line.

    *run* receives any bytes the client sent after the request (they belong
    to the raw stream), the reader and the writer, once the response head has
    been written; the connection is closed when it returns.
    """

    run: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    head: bytes


AnyResponse = Response | StreamingResponse | Hijack


class Request:
    """One request; the body is read lazily so large uploads stream."""

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._conn = conn
        self.method = method
        parts = urlsplit(target)
        self.path = unquote(parts.path)
        self._raw_query = parts.query
        self._query: dict[str, list[str]] | None = None
        self.headers: dict[str, str] = {}
        for k, v in headers:
            key = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {val}" if key in self.headers else val
        self.params: dict[str, str] = {}
        self.api_version: tuple[int, int] = (0, 0)
        self._body_done = False
        #: a chunked body is decoded by the connection, not h11 (see _chunked); one
        #: decoding, resumed by whoever reads on (the cycle's end drains what is left)
        self._chunked: AsyncIterator[bytes] | None = (
            conn.chunked_body()
            if self.headers.get("transfer-encoding", "").strip().lower() == "chunked"
            else None
        )

    @property
    def query(self) -> dict[str, list[str]]:
        """The query parameters, parsed on first use (most requests have none)."""
        if self._query is None:
            self._query = parse_qs(self._raw_query, keep_blank_values=True)
        return self._query

    # -- body -------------------------------------------------------------
    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the request body in pieces as they arrive; a body whose framing is broken
        is InvalidParameter, and the connection closes after the answer."""
        if self._body_done:
            return
        if self._chunked is not None:
            try:
                async for piece in self._chunked:
                    yield piece
            except h11.RemoteProtocolError as e:
                raise self._malformed(e) from None
            self._body_done = True
            return
        while True:
            try:
                event = await self._conn.next_event()
            except h11.RemoteProtocolError as e:
                if self._conn.reader.at_eof():
                    raise ClientGone(str(e)) from None  # closed mid-body: nobody to answer
                raise self._malformed(e) from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return
            else:
                raise ClientGone("connection closed while reading the request body")

    def _malformed(self, e: h11.RemoteProtocolError) -> errdefs.InvalidParameter:
        self._conn.abandon()  # the rest of the stream cannot be framed: nothing more is read
        return errdefs.InvalidParameter(f"malformed request body: {e}")

    async def body(self, limit: int | None = None) -> bytes:
        """The whole body; TooLarge past *limit* bytes (MAX_BODY), and the connection is
        then closed after the answer rather than read to the end of what the client
        sends."""
        limit = MAX_BODY if limit is None else limit
        declared = self.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            self._conn.abandon()
            raise errdefs.TooLarge(_too_large(limit))
        parts: list[bytes] = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > limit:
                self._conn.abandon()
                raise errdefs.TooLarge(_too_large(limit))
            parts.append(chunk)
        return b"".join(parts)

    @property
    def body_consumed(self) -> bool:
        return self._body_done

    @property
    def bodyless(self) -> bool:
        """No body follows the head (no Content-Length above 0, no chunked encoding)."""
        h = self.headers
        return "transfer-encoding" not in h and h.get("content-length", "0").strip() == "0"

    # -- hijack support ------------------------------------------------------
    @property
    def reader(self) -> asyncio.StreamReader:
        return self._conn.reader

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.headers.get("connection", "").lower() and bool(
            self.headers.get("upgrade")
        )


class _Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Callable[[Request], Awaitable[AnyResponse]],
        extra_headers: list[tuple[str, str]],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.handler = handler
        self.extra_headers = extra_headers
        #: the rest of the request is not read: the connection closes after the answer
        self.abandoned = False
        #: the head of the request being served
        self._request: h11.Request | None = None
        #: what followed a chunked body read here, until h11 catches up (_catch_up)
        self._after_body: bytes | None = None

    def abandon(self) -> None:
        self.abandoned = True

    async def _next_request(self) -> h11.Event | type[h11.PAUSED]:
        """The next request's head (or the end of the connection): the client has
        IDLE_TIMEOUT to start it and HEAD_TIMEOUT more to finish it, else ClientGone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IDLE_TIMEOUT
        started = False
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(_READ_SIZE)
            except TimeoutError:
                raise ClientGone("no complete request head in time") from None
            if data and not started:
                started = True
                deadline = loop.time() + HEAD_TIMEOUT
            self.h11.receive_data(data)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(_READ_SIZE)
                self.h11.receive_data(data)
                continue
            return event  # type: ignore[return-value]

    async def chunked_body(self) -> AsyncIterator[bytes]:
        """The body of the chunked request being served, a piece per read, decoded here
        rather than by h11 (which makes an event of each 32 KiB chunk).

        h11 is then put where it would be had it read the body itself (see _past_body),
        at once or, when the answer is still being sent, once it is.
        """
        decoder = ChunkedDecoder()
        data = bytes(self.h11.trailing_data[0])  # what came with the head
        while True:
            pieces = decoder.feed(data)
            if pieces:
                yield _joined(pieces)
            if decoder.done:
                break
            data = await self.reader.read(_READ_SIZE)
            if not data:
                raise ClientGone("connection closed while reading the request body")
        self._after_body = decoder.leftover
        self._catch_up()

    def _catch_up(self) -> None:
        """After a chunked body read here: a fresh h11 connection that has read the head
        with an empty body and holds what followed, and has sent the answer if it was
        sent whole already, so that keep-alive and pipelining go on as on h11's path.
        An answer still streaming is waited for (the cycle's end calls again)."""
        leftover, request = self._after_body, self._request
        state = self.h11.our_state
        if leftover is None or request is None or state not in (h11.SEND_RESPONSE, h11.DONE):
            return
        self._after_body = None
        self.h11 = _past_body(request, leftover)
        if state is h11.DONE:  # as sent already (its bytes are not sent again)
            self.h11.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            self.h11.send(h11.EndOfMessage())

    async def send(self, *events: h11.Event) -> None:
        """Send *events* in one write: a whole small response is one syscall."""
        data = b"".join(self.h11.send(e) or b"" for e in events)
        if data:
            self.writer.write(data)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError) as e:
                raise ClientGone(str(e)) from e

    def _headers(
        self, extra: list[tuple[str, str]], content_type: str | None
    ) -> list[tuple[str, str]]:
        headers = list(self.extra_headers)
        if content_type:
            headers.append(("Content-Type", content_type))
        headers.extend(extra)
        return headers

    async def serve(self) -> None:
        try:
            while True:
                try:
                    event = await self._next_request()
                except h11.RemoteProtocolError as e:
                    await self._send_protocol_error(e)
                    return
                if isinstance(event, h11.Request):
                    if _head_size(event) > MAX_HEAD:  # it came whole in one read
                        too_big = h11.RemoteProtocolError(
                            f"request head is larger than {_size(MAX_HEAD)}", 431
                        )
                        await self._send_protocol_error(too_big)
                        return
                    keep_going = await self._handle(event)
                    if not keep_going:
                        return
                else:
                    # ConnectionClosed, or PAUSED after an unhonoured upgrade.
                    return
        except (ClientGone, ConnectionError):
            return
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _send_protocol_error(self, e: h11.RemoteProtocolError) -> None:
        """Answer a request h11 refused (a bad or too large head), then let the client,
        maybe still sending, read that answer before the connection closes."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = b'{"message":"bad request: ' + str(e).replace('"', "'").encode() + b'"}\n'
        with contextlib.suppress(Exception):
            await self.send(
                h11.Response(
                    status_code=e.error_status_hint,
                    headers=[
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ],
                )
            )
            await self.send(h11.Data(data=body))
            await self.send(h11.EndOfMessage())
        await self._linger()

    async def _handle(self, event: h11.Request) -> bool:
        """Serve one request; return whether the connection stays open."""
        self._request, self._after_body = event, None
        request = Request(
            self, event.method.decode(), event.target.decode("latin-1"), list(event.headers)
        )
        response = await self.handler(request)
        head_only = request.method == "HEAD"
        if isinstance(response, Hijack):
            await self._hijack(request, response)
            return False
        if isinstance(response, Response):
            headers = self._headers(response.headers, response.content_type)
            if not any(k.lower() == "content-length" for k, _ in headers):
                headers.append(("Content-Length", str(len(response.body))))
            events: list[h11.Event] = [h11.Response(status_code=response.status, headers=headers)]
            if response.body and not head_only and response.status not in (204, 304):
                events.append(h11.Data(data=response.body))
            events.append(h11.EndOfMessage())
            await self.send(*events)
        else:
            await self._stream(response, request)
        return await self._finish_cycle(request)

    async def _stream(self, response: StreamingResponse, request: Request) -> None:
        if request.bodyless and not request.body_consumed:
            # Its end is already here: taken now, the stream can watch for the client
            # going away (logs -f, stats, events, wait) instead of finding out at the
            # next write.
            await request.body()
        headers = self._headers(response.headers, response.content_type)
        try:
            await self.send(h11.Response(status_code=response.status, headers=headers))
        except BaseException:
            await _aclose(response.chunks)  # its producer may hold resources until closed
            raise
        pump = asyncio.ensure_future(self._pump_chunks(response.chunks))
        if self.h11.their_state is not h11.DONE:
            # The handler may still be reading the body: the socket is its.
            await pump
            await self.send(h11.EndOfMessage())
            return
        watcher = asyncio.ensure_future(self._watch_disconnect())
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pump.cancel()
            watcher.cancel()
            raise
        if pump in done:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            pump.result()
            await self.send(h11.EndOfMessage())
            return
        # The client went away (``docker run -d`` drops its /wait): stop producing.
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientGone):
            await pump
        raise ClientGone("client closed the connection during a streamed response")

    async def _pump_chunks(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                if chunk:
                    await self.send(h11.Data(data=chunk))
        finally:
            await _aclose(chunks)

    async def _watch_disconnect(self) -> None:
        """Return when the peer closes; anything it sends meanwhile is kept for h11."""
        while True:
            try:
                data = await self.reader.read(_READ_SIZE)
            except ConnectionError:  # reset rather than closed: gone all the same
                return
            if not data:
                return
            self.h11.receive_data(data)

    async def _hijack(self, request: Request, hijack: Hijack) -> None:
        # The response head is written raw, as dockerd does: h11 cannot speak
        # the legacy "200 then raw stream" form and the 101 must carry
        # Docker's reason phrase.
        trailing, _closed = self.h11.trailing_data
        self.writer.write(hijack.head)
        await self.writer.drain()
        await hijack.run(bytes(trailing), self.reader, self.writer)

    async def _linger(self) -> None:
        """End our side, then read and drop what the client still sends, for a while."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            dropped = 0
            async with asyncio.timeout(_LINGER_TIMEOUT):
                while dropped < _LINGER_BYTES:
                    data = await self.reader.read(_READ_SIZE)
                    if not data:
                        break
                    dropped += len(data)

    async def _finish_cycle(self, request: Request) -> bool:
        self._catch_up()
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            return False
        if self.abandoned:
            await self._linger()
            return False
        if not request.body_consumed and self.h11.their_state is h11.SEND_BODY:
            # A client that is still sending (an upload refused early) must be read to
            # the end: closing now would make it fail on a broken pipe before it reads
            # the answer already sent.
            async for _ in request.stream():
                pass
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


def _joined(pieces: list[memoryview]) -> bytes:
    """One bytes object of *pieces*: the read itself when they are all of it."""
    if len(pieces) == 1:
        (piece,) = pieces
        whole = piece.obj
        if isinstance(whole, bytes) and len(piece) == len(whole):
            return whole
    return b"".join(pieces)


def _past_body(request: h11.Request, leftover: bytes) -> h11.Connection:
    """A server connection that has read *request*'s head and an empty body (so it
    frames the answer and decides keep-alive as for the request), holding *leftover*."""
    head = [b"%s %s HTTP/%s\r\n" % (request.method, request.target, request.http_version)]
    head += [
        b"%s: %s\r\n" % (name, value)
        for name, value in request.headers
        if name not in (b"transfer-encoding", b"content-length", b"expect")
    ]
    head.append(b"content-length: 0\r\n\r\n")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(b"".join(head))
    if not isinstance(conn.next_event(), h11.Request) or not isinstance(
        conn.next_event(), h11.EndOfMessage
    ):
        raise h11.RemoteProtocolError("the request head could not be read again", 400)
    if leftover:
        conn.receive_data(leftover)
    return conn


def _head_size(event: h11.Request) -> int:
    return len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _too_large(limit: int) -> str:
    return f"request body is larger than {_size(limit)}: berth does not read it"


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class HTTPServer:
    """Accept connections on any number of sockets and hand requests to *handler*."""

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[AnyResponse]],
        extra_headers: list[tuple[str, str]],
    ) -> None:
        self._handler = handler
        self._extra_headers = extra_headers
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _Connection(reader, writer, self._handler, self._extra_headers).serve()
        except asyncio.CancelledError:
            pass  # shutting down; ending normally keeps asyncio from logging the cancel
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._tasks.discard(task)

    async def listen_unix(self, path: str) -> None:
        server = await asyncio.start_unix_server(self._on_connect, path=path, limit=_READ_SIZE)
        self._servers.append(server)

    async def listen_tcp(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Serve on *host*:*port*, through *tls* when given: a client that fails the
        handshake (no certificate the CA signed) is dropped before any request."""
        if tls is None:
            server = await asyncio.start_server(
                self._on_connect, host=host, port=port, limit=_READ_SIZE
            )
        else:
            server = await start_tls_server(
                self._on_connect,
                host,
                port,
                tls,
                limit=_READ_SIZE,
                handshake_timeout=_HANDSHAKE_TIMEOUT,
            )
        self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
