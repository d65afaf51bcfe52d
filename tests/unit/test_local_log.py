"""berth.logger.local: moby's ``local`` log format (framed protobuf LogEntry), rotation with
compression, and reading with tail/since/until/follow through the shared file-logger code."""

from __future__ import annotations

import calendar
import gzip
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from berth.daemon.validate import local_log_options
from berth.logger import LocalLogger, LogMessage, read_logs
from berth.logger.copier import MAX_MESSAGE_SIZE, Copier
from berth.logger.local import LOCAL_FORMAT, decode_entry, encode_entry

SEC = 1_000_000_000
T0 = calendar.timegm((2024, 1, 2, 3, 4, 5)) * SEC
WATCHDOG_S = 20.0


def _entry_class() -> Any:
    """moby's ``LogEntry`` (entry.proto) built with the real protobuf runtime, to check against."""
    f = descriptor_pb2.FileDescriptorProto(name="entry_test.proto", package="logdriver")
    f.syntax = "proto3"
    T = descriptor_pb2.FieldDescriptorProto
    meta = f.message_type.add(name="PartialLogEntryMetadata")
    meta.field.add(name="last", number=1, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
    meta.field.add(name="id", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    meta.field.add(name="ordinal", number=3, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
    attr = f.message_type.add(name="LogAttr")
    attr.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    attr.field.add(name="value", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    e = f.message_type.add(name="LogEntry")
    e.field.add(name="source", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    e.field.add(name="time_nano", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    e.field.add(name="line", number=3, type=T.TYPE_BYTES, label=T.LABEL_OPTIONAL)
    e.field.add(name="partial", number=4, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
    e.field.add(
        name="partial_log_metadata",
        number=5,
        type=T.TYPE_MESSAGE,
        label=T.LABEL_OPTIONAL,
        type_name=".logdriver.PartialLogEntryMetadata",
    )
    e.field.add(
        name="attrs",
        number=6,
        type=T.TYPE_MESSAGE,
        label=T.LABEL_REPEATED,
        type_name=".logdriver.LogAttr",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logdriver.LogEntry"))


LogEntry = _entry_class()


def msg(i: int, stream: str = "stdout", step: int = SEC) -> LogMessage:
    return LogMessage(stream, b"message %06d\n" % i, T0 + i * step)


def seq(messages: list[LogMessage]) -> list[int]:
    return [int(m.line.split()[1]) for m in messages]


def frames(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        assert struct.unpack_from(">I", data, i + 4 + n)[0] == n
        out.append(data[i + 4 : i + 4 + n])
        i += 8 + n
    return out


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    d = tmp_path / "local-logs"
    d.mkdir()
    return d / "container.log"


# -- format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"source": "stdout", "time_ns": T0, "line": b"hello"},
        {"source": "stderr", "time_ns": -5 * SEC, "line": b""},
        {"source": "stdout", "time_ns": T0, "line": b"x" * 300, "partial": True},
        {
            "source": "stdout",
            "time_ns": 1,
            "line": b"\xff\x00",
            "partial": True,
            "last": True,
            "partial_id": "ab" * 32,
            "ordinal": 7,
        },
    ],
)
def test_entry_bytes_match_protobuf(kw: dict[str, Any]) -> None:
    """Byte for byte what the protobuf runtime (and so gogo's MarshalTo) produces."""
    framed = encode_entry(**kw)
    (body,) = frames(framed)
    ref = LogEntry(source=kw["source"], time_nano=kw["time_ns"], line=kw["line"])
    if kw.get("partial"):
        ref.partial = True
        ref.partial_log_metadata.last = kw.get("last", False)
        ref.partial_log_metadata.id = kw.get("partial_id", "")
        ref.partial_log_metadata.ordinal = kw.get("ordinal", 0)
    assert body == ref.SerializeToString(deterministic=True)


def test_decode_reads_what_protobuf_writes() -> None:
    ref = LogEntry(source="stderr", time_nano=T0, line=b"abc")
    ref.attrs.add(key="tag", value="web")
    got = decode_entry(ref.SerializeToString())
    assert got == LogMessage("stderr", b"abc\n", T0, (("tag", "web"),))
    piece = LogEntry(source="stdout", time_nano=T0, line=b"abc", partial=True)
    piece.partial_log_metadata.ordinal = 1
    assert decode_entry(piece.SerializeToString()) == LogMessage("stdout", b"abc", T0)
    piece.partial_log_metadata.last = True
    assert decode_entry(piece.SerializeToString()) == LogMessage("stdout", b"abc\n", T0)
    assert decode_entry(b"\x0a\x05ab") is None


def test_long_line_pieces_are_marked_like_moby(log_path: Path) -> None:
    with LocalLogger(log_path, compress=False, max_file=1) as lg:
        cp = Copier("stdout", lg.log)
        cp.feed(b"a" * (MAX_MESSAGE_SIZE * 2 + 5) + b"\nshort\n", now_ns=T0)
    entries = [LogEntry.FromString(b) for b in frames(log_path.read_bytes())]
    assert [(e.partial, e.partial_log_metadata.ordinal, e.partial_log_metadata.last)
            for e in entries] == [(True, 1, False), (True, 2, False), (True, 3, True),
                                  (False, 0, False)]  # fmt: skip
    assert len({e.partial_log_metadata.id for e in entries[:3]}) == 1
    assert len(entries[0].partial_log_metadata.id) == 64
    assert entries[2].line == b"aaaaa"
    got = list(read_logs(log_path, fmt=LOCAL_FORMAT))
    assert b"".join(m.line for m in got) == b"a" * (MAX_MESSAGE_SIZE * 2 + 5) + b"\nshort\n"


# -- rotation, compression, reading -------------------------------------------------------


def test_defaults_rotate_and_compress(log_path: Path) -> None:
    lg = LocalLogger(log_path)
    assert (lg.max_size, lg.max_file, lg.compress) == (20 * 1024 * 1024, 5, True)
    lg.close()
    # and what the daemon passes for a container that sets no option
    assert local_log_options({}) == (20 * 1024 * 1024, 5, True)


def test_rotation_with_compression_and_reads(log_path: Path) -> None:
    n = 400
    with LocalLogger(log_path, max_size=2000, max_file=4, compress=True) as lg:
        for i in range(n):
            lg.log(msg(i))
    names = sorted(p.name for p in log_path.parent.iterdir())
    assert names == [
        "container.log",
        "container.log.1.gz",
        "container.log.2.gz",
        "container.log.3.gz",
    ]
    with gzip.open(f"{log_path}.1.gz") as f:
        assert frames(f.read())  # a plain gzip of whole frames
    everything = seq(list(read_logs(log_path, fmt=LOCAL_FORMAT)))
    assert everything == list(range(everything[0], n))
    assert everything[0] > 0
    assert seq(list(read_logs(log_path, fmt=LOCAL_FORMAT, tail=100))) == list(range(n - 100, n))
    assert seq(list(read_logs(log_path, fmt=LOCAL_FORMAT, tail=0))) == []
    since = list(read_logs(log_path, fmt=LOCAL_FORMAT, since_ns=T0 + (n - 50) * SEC))
    assert seq(since) == list(range(n - 50, n))
    until = list(read_logs(log_path, fmt=LOCAL_FORMAT, until_ns=T0 + (n - 60) * SEC, tail=20))
    assert seq(until) == []  # tail first, then until: the last 20 are all later
    window = read_logs(
        log_path, fmt=LOCAL_FORMAT, since_ns=T0 + (n - 30) * SEC, until_ns=T0 + (n - 21) * SEC
    )
    assert seq(list(window)) == list(range(n - 30, n - 20))


def test_follow_across_rotations(log_path: Path) -> None:
    # Enough files that none is rotated out before the follower reads it: with fewer,
    # a follower that falls behind loses messages, as moby's does (and says so).
    lg = LocalLogger(log_path, max_size=1000, max_file=1000, compress=True)
    lg.log(msg(0))
    stop = threading.Event()
    reader = read_logs(log_path, follow=True, logger=lg, stop=stop)
    got: list[LogMessage] = []

    def consume() -> None:
        for m in reader:
            got.append(m)

    t = threading.Thread(target=consume)
    t.start()
    try:
        for i in range(1, 200):
            lg.log(msg(i))
    finally:
        lg.close()
        t.join(WATCHDOG_S)
    assert not t.is_alive()
    assert lg.position.rotation >= 3
    assert seq(got) == list(range(200))


def test_torn_frame_is_cut_back_on_reopen(log_path: Path) -> None:
    with LocalLogger(log_path, compress=False, max_file=1) as lg:
        for i in range(3):
            lg.log(msg(i))
    whole = os.path.getsize(log_path)
    with open(log_path, "ab") as f:
        f.write(encode_entry("stdout", T0, b"torn")[:-3])
    with LocalLogger(log_path, compress=False, max_file=1) as lg:
        assert os.path.getsize(log_path) == whole
        lg.log(msg(3))
    assert seq(list(read_logs(log_path, fmt=LOCAL_FORMAT))) == [0, 1, 2, 3]
    assert seq(list(read_logs(log_path, fmt=LOCAL_FORMAT, tail=2))) == [2, 3]
