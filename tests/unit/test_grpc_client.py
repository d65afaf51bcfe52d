"""berth.runtime._grpc against grpcio's own server (installed to generate the stubs): unary
calls, status and details, deadlines, server streams and their cancellation, flow control
both ways, many threads on one connection, and a server that goes away and comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2

from berth.runtime._api.api.services.events.v1 import events_pb2
from berth.runtime._api.api.services.version.v1 import version_pb2
from berth.runtime._grpc import Channel, RpcError, StatusCode, Stub

VERSION = version_pb2.DESCRIPTOR.services_by_name["Version"]
EVENTS = events_pb2.DESCRIPTOR.services_by_name["Events"]


class Server:
    """grpcio serving the Version and Events services on a unix socket, with handlers the
    test sets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version: Callable[[Any, Any], Any] = lambda req, ctx: version_pb2.VersionResponse(
            version="1.7", revision=dict(ctx.invocation_metadata()).get("ns", "")
        )
        self.publish: Callable[[Any, Any], Any] = lambda req, ctx: empty_pb2.Empty()
        self.subscribe: Callable[[Any, Any], Iterator[Any]] = lambda req, ctx: iter(())
        self._server: Any = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    VERSION.full_name,
                    {
                        "Version": grpc.unary_unary_rpc_method_handler(
                            lambda req, ctx: self.version(req, ctx),  # noqa: PLW0108 - set later
                            request_deserializer=empty_pb2.Empty.FromString,
                            response_serializer=version_pb2.VersionResponse.SerializeToString,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    EVENTS.full_name,
                    {
                        "Publish": grpc.unary_unary_rpc_method_handler(
                            lambda req, ctx: self.publish(req, ctx),  # noqa: PLW0108 - set later
                            request_deserializer=events_pb2.PublishRequest.FromString,
                            response_serializer=empty_pb2.Empty.SerializeToString,
                        ),
                        "Subscribe": grpc.unary_stream_rpc_method_handler(
                            lambda req, ctx: self.subscribe(req, ctx),  # noqa: PLW0108 - set later
                            request_deserializer=events_pb2.SubscribeRequest.FromString,
                            response_serializer=events_pb2.Envelope.SerializeToString,
                        ),
                    },
                ),
            )
        )
        server.add_insecure_port(f"unix://{self.path}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait(5)
            self._server = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "grpc.sock")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def channel(server: Server) -> Iterator[Channel]:
    ch = Channel(str(server.path), max_message=4 << 20)
    yield ch
    ch.close()


def test_unary_call_with_metadata(channel: Channel) -> None:
    resp = Stub(channel, VERSION).Version(empty_pb2.Empty(), metadata=(("ns", "berth"),))
    assert (resp.version, resp.revision) == ("1.7", "berth")


def test_status_and_details_reach_the_caller(server: Server, channel: Channel) -> None:
    def refuse(req: Any, ctx: Any) -> Any:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "container x: not found (é, 100%)")

    server.version = refuse
    with pytest.raises(RpcError) as e:
        Stub(channel, VERSION).Version(empty_pb2.Empty(), timeout=5)
    assert e.value.code() is StatusCode.NOT_FOUND
    assert e.value.details() == "container x: not found (é, 100%)"


def test_a_deadline_ends_the_call_and_the_connection_serves_on(
    server: Server, channel: Channel
) -> None:
    release = threading.Event()

    def slow(req: Any, ctx: Any) -> Any:
        release.wait(5)
        return version_pb2.VersionResponse(version="late")

    server.version = slow
    stub = Stub(channel, VERSION)
    with pytest.raises(RpcError) as e:
        stub.Version(empty_pb2.Empty(), timeout=0.2)
    assert e.value.code() is StatusCode.DEADLINE_EXCEEDED
    release.set()
    server.version = lambda req, ctx: version_pb2.VersionResponse(version="again")
    assert stub.Version(empty_pb2.Empty(), timeout=5).version == "again"


def _envelope(i: int) -> events_pb2.Envelope:
    return events_pb2.Envelope(
        topic=f"/tasks/exit/{i}", event=any_pb2.Any(type_url="t", value=b"x" * i)
    )


def test_a_server_stream_yields_each_message_then_ends(server: Server, channel: Channel) -> None:
    server.subscribe = lambda req, ctx: (_envelope(i) for i in range(50))
    got = list(Stub(channel, EVENTS).Subscribe(events_pb2.SubscribeRequest(filters=["a"])))
    assert [m.topic for m in got] == [f"/tasks/exit/{i}" for i in range(50)]
    assert got[49].event.value == b"x" * 49


def test_a_cancelled_stream_raises_cancelled_in_its_reader(
    server: Server, channel: Channel
) -> None:
    def forever(req: Any, ctx: Any) -> Iterator[Any]:
        yield _envelope(1)
        while ctx.is_active():
            time.sleep(0.01)

    server.subscribe = forever
    stream = Stub(channel, EVENTS).Subscribe(events_pb2.SubscribeRequest())
    it = iter(stream)
    assert next(it).topic == "/tasks/exit/1"
    threading.Timer(0.2, stream.cancel).start()
    with pytest.raises(RpcError) as e:
        next(it)
    assert e.value.code() is StatusCode.CANCELLED
    # the connection is still good
    assert Stub(channel, VERSION).Version(empty_pb2.Empty(), timeout=5).version == "1.7"


def test_flow_control_both_ways(server: Server, channel: Channel) -> None:
    """A request over HTTP/2's initial 64 KiB window (an OCI spec can be), and answers
    bigger than it."""
    sizes: list[int] = []

    def publish(req: Any, ctx: Any) -> Any:
        sizes.append(len(req.event.value))
        return empty_pb2.Empty()

    server.publish = publish
    server.subscribe = lambda req, ctx: (_envelope(1 << 20) for _ in range(3))
    big = events_pb2.PublishRequest(
        topic="/t", event=any_pb2.Any(type_url="t", value=b"s" * 300_000)
    )
    Stub(channel, EVENTS).Publish(big, timeout=10)
    assert sizes == [300_000]
    got = list(Stub(channel, EVENTS).Subscribe(events_pb2.SubscribeRequest()))
    assert [len(m.event.value) for m in got] == [1 << 20] * 3


def test_an_answer_over_the_limit_is_refused(server: Server, channel: Channel) -> None:
    server.subscribe = lambda req, ctx: iter([_envelope(5 << 20)])
    with pytest.raises(RpcError) as e:
        list(Stub(channel, EVENTS).Subscribe(events_pb2.SubscribeRequest()))
    assert e.value.code() is StatusCode.RESOURCE_EXHAUSTED


def test_many_threads_share_one_connection(server: Server, channel: Channel) -> None:
    def version(req: Any, ctx: Any) -> Any:
        time.sleep(0.001)
        return version_pb2.VersionResponse(version=dict(ctx.invocation_metadata())["n"])

    server.version = version
    stub = Stub(channel, VERSION)

    def calls(n: int) -> list[str]:
        md = (("n", str(n)),)
        return [stub.Version(empty_pb2.Empty(), metadata=md, timeout=10).version for _ in range(25)]

    with futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(calls, range(16)))
    assert results == [[str(n)] * 25 for n in range(16)]


def test_a_server_that_goes_away_fails_open_calls_and_a_new_one_is_dialled(
    server: Server, channel: Channel
) -> None:
    server.subscribe = lambda req, ctx: _hang(ctx)
    stream = iter(Stub(channel, EVENTS).Subscribe(events_pb2.SubscribeRequest()))
    failed: list[StatusCode] = []

    def read() -> None:
        try:
            next(stream)
        except RpcError as e:
            failed.append(e.code())

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    server.stop()
    reader.join(10)
    assert failed == [StatusCode.UNAVAILABLE]
    with pytest.raises(RpcError) as e:
        Stub(channel, VERSION).Version(empty_pb2.Empty(), timeout=2)
    assert e.value.code() is StatusCode.UNAVAILABLE
    server.path.unlink(missing_ok=True)
    server.start()
    assert Stub(channel, VERSION).Version(empty_pb2.Empty(), timeout=5).version == "1.7"


def _hang(ctx: Any) -> Iterator[Any]:
    while ctx.is_active():
        time.sleep(0.01)
    return
    yield


def test_a_closed_channel_refuses_calls(channel: Channel) -> None:
    channel.close()
    with pytest.raises(RpcError) as e:
        Stub(channel, VERSION).Version(empty_pb2.Empty())
    assert e.value.code() is StatusCode.CANCELLED


def test_a_connection_out_of_stream_ids_is_replaced(
    channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = Stub(channel, VERSION)
    assert stub.Version(empty_pb2.Empty(), timeout=5).version == "1.7"
    conn = channel._conn
    assert conn is not None
    monkeypatch.setattr(conn.h2, "highest_outbound_stream_id", 2**31 - 1)
    with pytest.raises(RpcError) as e:
        stub.Version(empty_pb2.Empty(), timeout=5)
    assert e.value.code() is StatusCode.UNAVAILABLE
    assert stub.Version(empty_pb2.Empty(), timeout=5).version == "1.7"
    assert channel._conn is not conn
