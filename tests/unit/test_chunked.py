"""Chunked request bodies: the decoder against every way a read can cut the stream, its
refusals, and the server around it (keep-alive, pipelining, an answer given before the
body ended, a bad frame)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest

from berth import errdefs
from berth.api._chunked import MAX_LINE, ChunkedDecoder
from berth.api._http import Request, Response, StreamingResponse
from berth.api.errors import classify
from tests.unit.httpserve import serve


def _chunked(body: bytes, sizes: list[int], trailers: bytes = b"") -> bytes:
    out, pos = [], 0
    for n in sizes:
        piece = body[pos : pos + n]
        pos += n
        out.append(
            b"%x;name=value\r\n%s\r\n" % (len(piece), piece)
            if n % 3 == 0
            else b"%X\r\n%s\r\n" % (len(piece), piece)
        )
    assert pos == len(body)
    return b"".join(out) + b"0\r\n" + trailers + b"\r\n"


def _decode(wire: bytes, cuts: list[int]) -> tuple[bytes, bytes]:
    decoder = ChunkedDecoder()
    got = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += [bytes(v) for v in decoder.feed(wire[last:cut])]
        last = cut
    assert decoder.done
    return b"".join(got), decoder.leftover


def test_every_cut_of_the_stream_gives_the_body_and_what_follows() -> None:
    rng = random.Random(17)
    body = rng.randbytes(5000)
    sizes = [1, 2, 3, 100, 4000, 894]
    wire = _chunked(body, sizes, b"X-Trailer: yes\r\n") + b"GET /next HTTP/1.1\r\n"
    for cut in range(len(wire)):  # every single split point
        assert _decode(wire, [cut]) == (body, b"GET /next HTTP/1.1\r\n")
    for _ in range(200):  # and many splits at once, a byte apart at times
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(2, 60)))
        assert _decode(wire, cuts) == (body, b"GET /next HTTP/1.1\r\n")


def test_the_data_comes_back_as_views_of_the_read() -> None:
    decoder = ChunkedDecoder()
    read = b"5\r\nhello\r\n6\r\n world\r\n"
    pieces = decoder.feed(read)
    assert [p.obj for p in pieces] == [read, read]
    assert b"".join(pieces) == b"hello world" and not decoder.done


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\n",  # not hex
        b"-5\r\nhello\r\n",
        b"0x5\r\nhello\r\n",
        b"5\r\nhello!\r\n",  # longer than its size
        b"11111111111111111\r\n",  # 17 digits
        b"5" * (MAX_LINE + 1),  # no end of line in sight
    ],
)
def test_bad_framing_is_refused(wire: bytes) -> None:
    with pytest.raises(h11.RemoteProtocolError) as err:
        ChunkedDecoder().feed(wire)
    assert err.value.error_status_hint == 400


# -- the server around it -----------------------------------------------------------------------
async def _sizes(req: Request) -> AsyncIterator[bytes]:
    async for piece in req.stream():
        yield b"%d\n" % len(piece)
    yield b"end\n"


async def _digest(req: Request) -> Response | StreamingResponse:
    if req.path == "/refuse":  # answers before reading: the body is drained after
        return Response(409, b'{"message":"no"}', "application/json")
    if req.path == "/stream":  # answers while it reads, as docker load and build do
        return StreamingResponse(_sizes(req), content_type="text/plain")
    h = hashlib.sha256()
    size = 0
    try:
        async for piece in req.stream():
            h.update(piece)
            size += len(piece)
    except errdefs.BerthError as e:
        status, message = classify(e)
        return Response(status, json.dumps({"message": message}).encode(), "application/json")
    body = json.dumps({"size": size, "sha256": h.hexdigest()}).encode()
    return Response(200, body, "application/json")


async def _answers(reader: asyncio.StreamReader, n: int) -> list[tuple[int, bytes, bytes]]:
    out = []
    for _ in range(n):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        out.append((int(head.split(b" ", 2)[1]), head, await reader.readexactly(length)))
    return out


def _put(path: str, body: bytes, sizes: list[int], extra: bytes = b"") -> bytes:
    head = b"PUT %s HTTP/1.1\r\nHost: b\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (
        path.encode(),
        extra,
    )
    return head + _chunked(body, sizes)


async def _one_answer(sock: str, raw: bytes) -> tuple[tuple[int, bytes, bytes], bytes]:
    """Send *raw*, read one answer, then what comes until the server closes (5 s at most)."""
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(raw)
        await writer.drain()
        (answer,) = await _answers(reader, 1)
        return answer, await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def test_pipelined_uploads_on_one_connection(tmp_path: Path) -> None:
    body = random.Random(3).randbytes(300_000)
    expect = json.loads(json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}))

    async def test(sock: str) -> None:
        reader, writer = await asyncio.open_unix_connection(sock)
        # three requests in one write: two chunked uploads around a plain GET
        writer.write(
            _put("/a", body, [32768] * 9 + [5088])
            + b"GET /b HTTP/1.1\r\nHost: b\r\n\r\n"
            + _put("/c", body, [300_000])
        )
        await writer.drain()
        answers = await _answers(reader, 3)
        assert [a[0] for a in answers] == [200, 200, 200]
        assert json.loads(answers[0][2]) == expect and json.loads(answers[2][2]) == expect
        assert json.loads(answers[1][2]) == {"size": 0, "sha256": hashlib.sha256().hexdigest()}
        # the connection is still open for more
        writer.write(_put("/d", b"x", [1], b"Connection: close\r\n"))
        (last,) = await _answers(reader, 1)
        assert json.loads(last[2])["size"] == 1 and b"connection: close" in last[1].lower()
        assert await reader.read() == b""  # as the client asked
        writer.close()

    serve(tmp_path, _digest, test)


_CHUNKED_PUT = b"PUT %s HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_an_answer_before_the_body_ends_keeps_the_connection(tmp_path: Path) -> None:
    async def test(sock: str) -> None:
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(_CHUNKED_PUT % b"/refuse" + b"4\r\nsome\r\n")
        await writer.drain()
        (refused,) = await _answers(reader, 1)
        assert refused[0] == 409
        # the client goes on sending the body, unharmed, then asks again on the connection
        writer.write(b"4\r\nmore\r\n0\r\n\r\n" + _put("/b", b"again", [2, 3]))
        await writer.drain()
        (again,) = await _answers(reader, 1)
        assert again[0] == 200 and json.loads(again[2])["size"] == 5
        writer.close()

    serve(tmp_path, _digest, test)


def test_an_answer_streamed_while_the_body_is_read_keeps_the_connection(tmp_path: Path) -> None:
    async def test(sock: str) -> None:
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(_put("/stream", b"x" * 70_000, [30_000, 40_000]) + _put("/b", b"ok", [2]))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
        streamed = await reader.readuntil(b"0\r\n\r\n")
        assert b"end\n" in streamed
        (after,) = await _answers(reader, 1)  # the pipelined request, on the same connection
        assert after[0] == 200 and json.loads(after[2])["size"] == 2
        writer.close()

    serve(tmp_path, _digest, test)


def test_a_bad_frame_is_400_and_closes(tmp_path: Path) -> None:
    async def test(sock: str) -> None:
        answer, rest = await _one_answer(sock, _CHUNKED_PUT % b"/a" + b"zz\r\n")
        assert answer[0] == 400 and rest == b""
        assert json.loads(answer[2]) == {
            "message": "malformed request body: invalid chunk size b'zz'"
        }

    serve(tmp_path, _digest, test)
