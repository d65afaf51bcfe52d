"""What one client can cost the HTTP server: a body read whole has a limit (413, and the
connection closes instead of reading the rest), a head must come in time, an idle
connection is closed, and none of it stalls another client.  The server runs in the
test's event loop on a unix socket; the timeouts are shortened for the test."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.api import _http
from berth.api._http import Request, Response
from berth.api.errors import classify
from tests.unit.httpserve import serve


async def _handler(req: Request) -> Response:
    try:
        body = await req.body()
    except errdefs.BerthError as e:
        status, message = classify(e)
        return Response(status, json.dumps({"message": message}).encode(), "application/json")
    return Response(200, json.dumps({"read": len(body)}).encode(), "application/json")


async def _request(
    sock: str, raw: bytes, *, closes: bool = True
) -> tuple[int, dict[str, Any], bytes]:
    """Send *raw* and read the answer; (status, body, what came after it until the server
    closed the connection, when it is expected to)."""
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        body = json.loads(await reader.readexactly(length))
        rest = await asyncio.wait_for(reader.read(), 5) if closes else b""
        return status, body, rest
    finally:
        writer.close()


def _post(size: int, declared: int | None = None) -> bytes:
    length = size if declared is None else declared
    head = f"POST /x HTTP/1.1\r\nHost: b\r\nContent-Length: {length}\r\n\r\n".encode()
    return head + b" " * size


def test_a_body_over_the_limit_is_413_and_closes_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "MAX_BODY", 1 << 20)

    async def test(sock: str) -> None:
        # declared too large: refused before a byte of the body is read
        status, body, rest = await _request(sock, _post(0, declared=1 << 30))
        assert status == 413 and rest == b""
        assert body == {"message": "request body is larger than 1 MiB: berth does not read it"}
        # chunked, found too large while reading: the same
        chunk = b"%x\r\n%s\r\n" % (1 << 19, b" " * (1 << 19))
        chunked = b"POST /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
        status, _, rest = await _request(sock, chunked)
        assert (status, rest) == (413, b"")
        status, body, _ = await _request(sock, _post(1 << 20), closes=False)  # at the limit
        assert (status, body) == (200, {"read": 1 << 20})

    serve(tmp_path, _handler, test)


def test_slow_and_idle_clients_are_let_go_without_stalling_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(_http, "HEAD_TIMEOUT", 0.5)

    async def test(sock: str) -> None:
        idle = await asyncio.open_unix_connection(sock)
        slow = await asyncio.open_unix_connection(sock)
        slow[1].write(b"GET /x HTTP/1.1\r\n")  # a head that never ends
        # meanwhile another client is served at once
        status, body, _ = await _request(sock, _post(3), closes=False)
        assert (status, body) == (200, {"read": 3})
        for reader, writer in (idle, slow):
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            writer.close()
        # a kept-alive connection serves its requests, then goes when left idle
        reader, writer = await asyncio.open_unix_connection(sock)
        for _ in range(2):
            writer.write(_post(1))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    serve(tmp_path, _handler, test)


def test_a_head_over_the_limit_is_431(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "MAX_HEAD", 64 << 10)

    async def test(sock: str) -> None:
        huge = b"GET /x?filters=" + b"a" * (100 << 10) + b" HTTP/1.1\r\nHost: b\r\n\r\n"
        status, body, rest = await _request(sock, huge)  # it arrives in one read
        assert (status, rest) == (431, b"")
        assert body == {"message": "bad request: request head is larger than 64 KiB"}

    serve(tmp_path, _handler, test)
