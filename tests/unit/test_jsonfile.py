"""berth.logger: the json-file driver (format, rotation, tail/since/until, follow) and the copier."""

from __future__ import annotations

import calendar
import gzip
import logging
import os
import random
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.logger import JSONFileLogger, LogMessage, _files, read_logs
from berth.logger._codec import (
    decode_entries,
    decode_entry,
    encode_entry,
    format_time,
    parse_time,
)
from berth.logger.copier import MAX_MESSAGE_SIZE, Copier
from berth.utils.timefmt import format_rfc3339_nano

SEC = 1_000_000_000
# 2024-01-02T03:04:05Z, computed independently of the code under test.
T0 = calendar.timegm((2024, 1, 2, 3, 4, 5)) * SEC
WATCHDOG_S = 20.0


def msg(i: int, stream: str = "stdout", step: int = SEC) -> LogMessage:
    """Message number *i*: fixed-length line, time T0 + i*step."""
    return LogMessage(stream, b"message %06d\n" % i, T0 + i * step)


def seq(messages: list[LogMessage]) -> list[int]:
    return [int(m.line.split()[1]) for m in messages]


def write(path: Path, messages: list[LogMessage], **kw: object) -> JSONFileLogger:
    lg = JSONFileLogger(path, **kw)  # type: ignore[arg-type]
    for m in messages:
        lg.log(m)
    return lg


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "c0ffee-json.log"


def encoded(m: LogMessage) -> bytes:
    return encode_entry(m.line, m.stream.encode(), b"", m.time_ns)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- exact bytes ------------------------------------------------------------------------


def test_line_format_is_mobys(log_path: Path) -> None:
    lg = write(
        log_path,
        [
            LogMessage("stdout", b"hi\n", T0 + 123_456_789),
            LogMessage("stderr", b"oops\n", T0 + 500_000_000),
            LogMessage("stdout", b"no newline", T0),
        ],
    )
    lg.close()
    assert log_path.read_bytes() == (
        b'{"log":"hi\\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}\n'
        b'{"log":"oops\\n","stream":"stderr","time":"2024-01-02T03:04:05.5Z"}\n'
        b'{"log":"no newline","stream":"stdout","time":"2024-01-02T03:04:05Z"}\n'
    )


@pytest.mark.parametrize(
    ("line", "escaped"),
    [
        # moby's jsonlogbytes escaper: HTML-safe <, >, &; \n and \r short; other controls \u00XX
        (b"<a href='x'>&amp;</a>\n", b"\\u003ca href='x'\\u003e\\u0026amp;\\u003c/a\\u003e\\n"),
        (b'say "hi" \\o/\n', b'say \\"hi\\" \\\\o/\\n'),
        (b"tab\there\r\n", b"tab\\u0009here\\r\\n"),
        (b"\x00\x01\x1b[31mred\x1b[0m\x1f\n", b"\\u0000\\u0001\\u001b[31mred\\u001b[0m\\u001f\\n"),
        (b"\x7f stays\n", b"\x7f stays\\n"),
        # valid UTF-8 is written as it is, U+2028/9 escaped
        ("héllo ✓ 😀\n".encode(), "héllo ✓ 😀\\n".encode()),
        ("a\u2028b\u2029c\n".encode(), b"a\\u2028b\\u2029c\\n"),
        # each byte that is not valid UTF-8 becomes \ufffd (Go's DecodeRune, one byte at a time)
        (b"\xff\n", b"\\ufffd\\n"),
        (b"x\xe2\x82y\n", b"x\\ufffd\\ufffdy\\n"),  # truncated 3-byte sequence: two bytes
        (b"\xed\xa0\x80\n", b"\\ufffd\\ufffd\\ufffd\\n"),  # UTF-8-encoded surrogate
        (b"\xc0\x80\n", b"\\ufffd\\ufffd\\n"),  # overlong NUL
        (b"\xe2\x82\xac\xe2\x82\n", "€".encode() + b"\\ufffd\\ufffd\\n"),
        ("\ufffd real\n".encode(), "\ufffd real\\n".encode()),  # a real U+FFFD stays raw
    ],
)
def test_escaping_matches_moby(log_path: Path, line: bytes, escaped: bytes) -> None:
    write(log_path, [LogMessage("stdout", line, T0)]).close()
    assert log_path.read_bytes() == (
        b'{"log":"' + escaped + b'","stream":"stdout","time":"2024-01-02T03:04:05Z"}\n'
    )


def test_empty_fields_are_left_out_and_attrs_sorted(log_path: Path) -> None:
    lg = write(
        log_path,
        [LogMessage("stdout", b"", T0), LogMessage("", b"x\n", T0)],
        attrs={"tag": "<web>", "a": "1\t2"},
    )
    lg.close()
    assert lines_of(log_path) == [
        b'{"stream":"stdout","attrs":{"a":"1\\t2","tag":"\\u003cweb\\u003e"},'
        b'"time":"2024-01-02T03:04:05Z"}\n',
        b'{"log":"x\\n","attrs":{"a":"1\\t2","tag":"\\u003cweb\\u003e"},'
        b'"time":"2024-01-02T03:04:05Z"}\n',
    ]
    got = list(read_logs(log_path))
    assert got[1].attrs == (("a", "1\t2"), ("tag", "<web>"))
    assert got[1].line == b"x\n"


@pytest.mark.parametrize(
    "ns",
    [0, T0, T0 + 1, T0 + 10, T0 + 999_999_999, T0 + 120_000_000, -1, -SEC, 253402300799 * SEC],
)
def test_time_format_and_parse_agree_with_timefmt(ns: int) -> None:
    text = format_time(ns).decode()
    assert text == format_rfc3339_nano(ns)
    assert parse_time(text) == ns


def test_time_parse_cache_handles_same_second_and_offsets() -> None:
    assert parse_time("2024-01-02T03:04:05.1Z") == T0 + 100_000_000
    assert parse_time("2024-01-02T03:04:05.000000002Z") == T0 + 2
    assert parse_time("2024-01-02T05:04:05.5+02:00") == T0 + 500_000_000
    with pytest.raises(ValueError):
        parse_time("2024-13-02T03:04:05.1Z")


def test_one_write_per_message(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lg = JSONFileLogger(log_path)
    calls: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        calls.append(fd)
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    for i in range(5):
        lg.log(msg(i))
    monkeypatch.undo()
    lg.close()
    assert len(calls) == 5
    assert len(lines_of(log_path)) == 5


def test_file_mode_and_append(log_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write(log_path, [msg(0)]).close()
    finally:
        os.umask(old)
    assert log_path.stat().st_mode & 0o777 == 0o640
    write(log_path, [msg(1)]).close()  # reopening appends
    assert seq(list(read_logs(log_path))) == [0, 1]


def test_log_after_close_raises(log_path: Path) -> None:
    lg = write(log_path, [msg(0)])
    lg.close()
    lg.close()  # idempotent
    with pytest.raises(errdefs.Unavailable):
        lg.log(msg(1))


@pytest.mark.parametrize(
    "kw",
    [
        {"max_size": 0},
        {"max_size": -5},
        {"max_file": 0},
        {"compress": True, "max_size": 100, "max_file": 1},
        {"compress": True, "max_file": 3},
    ],
)
def test_invalid_options(log_path: Path, kw: dict[str, object]) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        JSONFileLogger(log_path, **kw)  # type: ignore[arg-type]


# -- reading what moby wrote, odd bytes, corruption ---------------------------------------


def test_reads_lines_written_by_moby(log_path: Path) -> None:
    log_path.write_bytes(
        b'{"log":"\\u003chtml\\u003e \\u0026 \\ufffd\\n","stream":"stdout","time":"2024-01-02T03:04:05.000000001Z"}\n'
        b'{"log":"partial","stream":"stderr","attrs":{"tag":"web"},"time":"2024-01-02T03:04:05.1Z"}\n'
        b'{"log":"tab\\u0009\\ttab\\n","stream":"stdout","time":"2024-01-02T05:04:06+02:00"}\n'
        b'{"log":"\\ud83d\\ude00 pair, lone: \\ud800\\n","stream":"stdout","time":"2024-01-02T03:04:07Z"}\n'
    )
    got = list(read_logs(log_path))
    assert got == [
        LogMessage("stdout", "<html> & \ufffd\n".encode(), T0 + 1),
        LogMessage("stderr", b"partial", T0 + 100_000_000, (("tag", "web"),)),
        LogMessage("stdout", b"tab\t\ttab\n", T0 + SEC),
        LogMessage("stdout", "😀 pair, lone: \ufffd\n".encode(), T0 + 2 * SEC),
    ]


def test_reads_raw_invalid_utf8_like_go(log_path: Path) -> None:
    # Go's decoder replaces each invalid byte inside a JSON string with U+FFFD.
    log_path.write_bytes(b'{"log":"a\xffb\\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}\n')
    assert [m.line for m in read_logs(log_path)] == ["a\ufffdb\n".encode()]


def test_round_trip_of_text_with_controls(log_path: Path) -> None:
    lines = [
        "héllo ✓ 😀 中文\n".encode(),
        b"\x1b[1;32mgreen\x1b[0m\tand\rcarriage\n",
        b'quotes " and \\ backslash </script>\n',
        bytes(range(1, 0x80)).replace(b"\n", b"") + b"\n",
    ]
    write(log_path, [LogMessage("stderr", line, T0 + i) for i, line in enumerate(lines)]).close()
    assert [m.line for m in read_logs(log_path)] == lines
    bad = b"bad \xc3\x28 utf8 \xff\n"
    write(log_path, [LogMessage("stdout", bad, T0 + 9)]).close()
    assert list(read_logs(log_path))[-1].line == "bad \ufffd( utf8 \ufffd\n".encode()


def test_truncated_last_line_is_skipped(log_path: Path) -> None:
    write(log_path, [msg(i) for i in range(3)]).close()
    with log_path.open("ab") as f:
        f.write(b'{"log":"cut short by a cra')
    assert seq(list(read_logs(log_path))) == [0, 1, 2]
    assert seq(list(read_logs(log_path, tail=2))) == [1, 2]
    assert seq(list(read_logs(log_path, since_ns=T0 + SEC))) == [1, 2]


def test_reopening_a_torn_log_keeps_later_lines_whole(log_path: Path) -> None:
    write(log_path, [msg(0)]).close()
    with log_path.open("ab") as f:
        f.write(b'{"log":"torn')
    write(log_path, [msg(1), msg(2)]).close()
    assert seq(list(read_logs(log_path))) == [0, 1, 2]


def test_corrupt_blank_and_nul_padded_lines(log_path: Path) -> None:
    write(log_path, [msg(0)]).close()
    with log_path.open("ab") as f:
        f.write(b"\n   \n")
        f.write(b"not json at all\n")
        f.write(b'{"log":5,"stream":"stdout","time":"2024-01-02T03:04:05Z"}\n')
        f.write(b'{"log":"x\\n","time":"yesterday"}\n')
        f.write(b'["array"]\n')
        f.write(b"\x00\x00\x00" + encoded(msg(1)))
        f.write(encoded(msg(2)).rstrip(b"\n"))  # complete, but no newline
    assert seq(list(read_logs(log_path))) == [0, 1, 2]
    assert seq(list(read_logs(log_path, tail=2))) == [1, 2]


def test_missing_time_is_go_zero_time() -> None:
    m = decode_entry(b'{"log":"x\\n","stream":"stdout"}')
    assert m is not None
    assert format_rfc3339_nano(m.time_ns) == "0001-01-01T00:00:00Z"


def test_reader_releases_files(log_path: Path) -> None:
    write(log_path, [msg(i) for i in range(10)], max_size=100, max_file=4).close()
    before = open_fds()
    assert len(list(read_logs(log_path))) > 0
    assert open_fds() == before
    reader = read_logs(log_path)
    next(reader)
    reader.close()
    assert open_fds() == before
    with read_logs(log_path, tail=3) as r:
        assert len(list(r)) == 3
    assert open_fds() == before


def test_missing_log_reads_nothing(tmp_path: Path) -> None:
    assert list(read_logs(tmp_path / "nope.log")) == []


# -- copier -----------------------------------------------------------------------------


def collect() -> tuple[list[LogMessage], Callable[[LogMessage], None]]:
    out: list[LogMessage] = []
    return out, out.append


def test_copier_splits_on_newlines() -> None:
    out, sink = collect()
    c = Copier("stdout", sink)
    c.feed(b"a\nbb\n\nccc", now_ns=1)
    assert [(m.line, m.time_ns) for m in out] == [(b"a\n", 1), (b"bb\n", 1), (b"\n", 1)]
    assert c.pending == 3
    c.feed(b"c\nd", now_ns=2)
    c.flush(now_ns=3)
    assert [(m.line, m.time_ns, m.partial) for m in out[3:]] == [
        (b"cccc\n", 1, False),  # stamped when its first byte arrived
        (b"d", 2, True),  # the partial rest at EOF, without a newline
    ]
    assert all(m.stream == "stdout" for m in out)
    c.flush(now_ns=4)
    assert len(out) == 5


def test_copier_16k_limit() -> None:
    out, sink = collect()
    c = Copier("stderr", sink)
    c.feed(b"x" * (MAX_MESSAGE_SIZE - 1) + b"\n", now_ns=1)  # fits: one message
    c.feed(b"y" * MAX_MESSAGE_SIZE + b"\n", now_ns=2)  # exactly 16 KiB: partial + "\n"
    c.feed(b"z" * 40000, now_ns=3)
    c.feed(b"z" * 100 + b"\nnext\n", now_ns=4)
    assert [(len(m.line), m.partial, m.time_ns) for m in out] == [
        (MAX_MESSAGE_SIZE, False, 1),
        (MAX_MESSAGE_SIZE, True, 2),
        (1, False, 2),
        (MAX_MESSAGE_SIZE, True, 3),
        (MAX_MESSAGE_SIZE, True, 3),
        (40100 - 2 * MAX_MESSAGE_SIZE + 1, False, 3),  # the line keeps its first byte's time
        (5, False, 4),
    ]
    assert out[2].line == b"\n"
    assert b"".join(m.line for m in out[3:6]) == b"z" * 40100 + b"\n"


def test_copier_chunking_does_not_change_messages() -> None:
    rng = random.Random(7)
    data = b"".join(
        rng.choice([b"", b"\n", b"short\n", b"w" * rng.randrange(1, 40000) + b"\n", b"tail"])
        for _ in range(60)
    )
    whole, sink = collect()
    c = Copier("stdout", sink)
    c.feed(data, now_ns=5)
    c.flush()
    pieces, sink2 = collect()
    c2 = Copier("stdout", sink2)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 7, 100, 2048, 16384, 70000])
        c2.feed(data[i : i + n], now_ns=5)
        i += n
    c2.flush()
    assert [m.line for m in pieces] == [m.line for m in whole]
    assert b"".join(m.line for m in whole) == data
    assert all(len(m.line.rstrip(b"\n")) <= MAX_MESSAGE_SIZE for m in whole)
    assert all(m.line.endswith(b"\n") or len(m.line) == MAX_MESSAGE_SIZE for m in whole[:-1])


def test_copier_survives_a_failing_sink(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[bytes] = []

    def sink(m: LogMessage) -> None:
        seen.append(m.line)
        if m.line == b"bad\n":
            raise OSError("disk full")

    c = Copier("stdout", sink)
    with caplog.at_level(logging.ERROR):
        c.feed(b"bad\ngood\n")
    assert seen == [b"bad\n", b"good\n"]
    assert "failed to log" in caplog.text


def test_copier_into_logger_round_trip(log_path: Path) -> None:
    lg = JSONFileLogger(log_path)
    out = Copier("stdout", lg.log)
    err = Copier("stderr", lg.log)
    text = ("línea ✓\n" * 3 + "x" * 20000 + "\nend").encode()
    for i in range(0, len(text), 1000):
        out.feed(text[i : i + 1000], now_ns=T0 + i)
    err.feed(b"warning\n", now_ns=T0 + 10**9)
    out.flush()
    err.flush()
    lg.close()
    got = list(read_logs(log_path))
    assert b"".join(m.line for m in got if m.stream == "stdout") == text
    assert [m.line for m in got if m.stream == "stderr"] == [b"warning\n"]


# -- rotation ---------------------------------------------------------------------------


def line_len(tmp_path: Path) -> int:
    probe = JSONFileLogger(tmp_path / "probe.log")
    n = len(probe.encode(msg(0)))
    probe.close()
    return n


def test_rotation_like_moby(log_path: Path, tmp_path: Path) -> None:
    n = line_len(tmp_path)
    # moby rotates before a write once the file has *reached* max-size, so with
    # max-size 2n+1 every file holds three lines.
    lg = write(log_path, [msg(i) for i in range(10)], max_size=2 * n + 1, max_file=3)
    lg.close()
    d = log_path.parent
    assert sorted(p.name for p in d.glob(log_path.name + "*")) == [
        log_path.name,
        log_path.name + ".1",
        log_path.name + ".2",
    ]
    assert seq(list(read_logs(Path(str(log_path) + ".2")))) == [3, 4, 5]
    assert seq(list(read_logs(Path(str(log_path) + ".1")))) == [6, 7, 8]
    assert len(lines_of(log_path)) == 1
    assert seq(list(read_logs(log_path))) == list(range(3, 10))


def test_rotation_max_file_1_truncates(log_path: Path, tmp_path: Path) -> None:
    n = line_len(tmp_path)
    write(log_path, [msg(i) for i in range(7)], max_size=3 * n).close()
    assert [p.name for p in log_path.parent.glob(log_path.name + "*")] == [log_path.name]
    assert seq(list(read_logs(log_path))) == [6]


def test_rotation_counts_existing_size_after_reopen(log_path: Path, tmp_path: Path) -> None:
    n = line_len(tmp_path)
    write(log_path, [msg(0), msg(1)], max_size=2 * n, max_file=2).close()
    write(log_path, [msg(2)], max_size=2 * n, max_file=2).close()
    assert seq(list(read_logs(Path(str(log_path) + ".1")))) == [0, 1]
    assert seq(list(read_logs(log_path))) == [0, 1, 2]


def gzip_extra(path: Path) -> bytes:
    head = path.read_bytes()
    assert head[:4] == b"\x1f\x8b\x08\x04"
    (xlen,) = struct.unpack("<H", head[10:12])
    return head[12 : 12 + xlen]


def test_rotation_with_compress(log_path: Path, tmp_path: Path) -> None:
    n = line_len(tmp_path)
    lg = write(log_path, [msg(i) for i in range(11)], max_size=3 * n, max_file=4, compress=True)
    lg.close()  # waits for the background compression
    names = sorted(p.name for p in log_path.parent.glob(log_path.name + "*"))
    base = log_path.name
    assert names == [base, base + ".1.gz", base + ".2.gz", base + ".3.gz"]
    one = Path(str(log_path) + ".1.gz")
    assert [decode_entry(x) for x in gzip.decompress(one.read_bytes()).splitlines()] == [
        msg(i) for i in (6, 7, 8)
    ]
    # moby's gzip header: the time of the file's last message, for --since
    assert gzip_extra(one) == b'{"lastTime":"' + format_time(msg(8).time_ns) + b'"}'
    assert seq(list(read_logs(log_path))) == list(range(11))
    assert seq(list(read_logs(log_path, tail=5))) == [6, 7, 8, 9, 10]
    assert seq(list(read_logs(log_path, since_ns=msg(4).time_ns))) == list(range(4, 11))


def test_compressed_files_before_since_are_not_decompressed(
    log_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = line_len(tmp_path)
    write(log_path, [msg(i) for i in range(12)], max_size=3 * n, max_file=4, compress=True).close()
    calls: list[int] = []
    real = _files.decompress_to_temp

    def spy(fd: int, tmpdir: Path | None) -> tuple[int, int]:
        calls.append(fd)
        return real(fd, tmpdir)

    monkeypatch.setattr(_files, "decompress_to_temp", spy)
    assert seq(list(read_logs(log_path, since_ns=msg(7).time_ns))) == list(range(7, 12))
    assert len(calls) == 1  # only <log>.1.gz (messages 6-8) was opened up
    calls.clear()
    assert seq(list(read_logs(log_path, tail=2))) == [10, 11]
    assert calls == []


def test_no_lines_lost_across_many_rotations(log_path: Path) -> None:
    lg = write(log_path, [msg(i) for i in range(500)], max_size=1000, max_file=1000)
    lg.close()
    assert seq(list(read_logs(log_path))) == list(range(500))
    with JSONFileLogger(log_path, max_size=1000, max_file=1000) as lg2:
        assert seq(list(read_logs(log_path, logger=lg2))) == list(range(500))


# -- tail -------------------------------------------------------------------------------


@pytest.fixture
def rotated_log(log_path: Path, tmp_path: Path) -> Path:
    n = line_len(tmp_path)
    write(log_path, [msg(i) for i in range(10)], max_size=3 * n, max_file=5).close()
    # files: .3 = 0-2, .2 = 3-5, .1 = 6-8, current = 9
    return log_path


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (0, []),
        (1, [9]),
        (2, [8, 9]),
        (4, [6, 7, 8, 9]),
        (5, [5, 6, 7, 8, 9]),
        (10, list(range(10))),
        (11, list(range(10))),
        (1000, list(range(10))),
        (-1, list(range(10))),
    ],
)
def test_tail_across_rotated_files(rotated_log: Path, tail: int, expected: list[int]) -> None:
    assert seq(list(read_logs(rotated_log, tail=tail))) == expected


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = _files.decode_entry

    def counting(raw: bytes) -> LogMessage | None:
        calls[0] += 1
        return real(raw)

    real_block = _files.decode_entries

    def counting_block(lines: list[bytes]) -> list[LogMessage]:
        calls[0] += len(lines)
        return real_block(lines)

    monkeypatch.setattr(_files, "decode_entry", counting)
    monkeypatch.setattr(_files, "decode_entries", counting_block)
    return calls


def test_tail_and_since_seek_instead_of_scanning(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = 40_000
    write(log_path, [msg(i, step=1000) for i in range(total)]).close()
    calls = count_decodes(monkeypatch)
    assert seq(list(read_logs(log_path, tail=10))) == list(range(total - 10, total))
    assert calls[0] < 100
    calls[0] = 0
    got = seq(
        list(
            read_logs(
                log_path,
                since_ns=msg(20_000, step=1000).time_ns,
                until_ns=msg(20_004, step=1000).time_ns,
            )
        )
    )
    assert got == [20_000, 20_001, 20_002, 20_003, 20_004]
    assert calls[0] < 2_000  # a bisection plus one scan window, not 20 000 lines


def test_tail_counts_only_whole_messages(log_path: Path) -> None:
    write(log_path, [msg(0), msg(1)]).close()
    with log_path.open("ab") as f:
        f.write(b"garbage\n\n")
    write(log_path, [msg(2)]).close()
    with log_path.open("ab") as f:
        f.write(b'{"log":"half')
    assert seq(list(read_logs(log_path, tail=2))) == [1, 2]


def test_tail_with_long_lines(log_path: Path) -> None:
    big = [LogMessage("stdout", b"%06d " % i + b"\x01" * 16000 + b"\n", T0 + i) for i in range(30)]
    write(log_path, big).close()
    got = list(read_logs(log_path, tail=7))
    assert got == big[-7:]


# -- since / until ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (T0 + 5 * SEC, 0, [5, 6, 7, 8, 9]),  # since is inclusive
        (T0 + 5 * SEC - 1, 0, [5, 6, 7, 8, 9]),
        (T0 + 5 * SEC + 1, 0, [6, 7, 8, 9]),
        (0, T0 + 3 * SEC, [0, 1, 2, 3]),  # until is inclusive
        (0, T0 + 3 * SEC - 1, [0, 1, 2]),
        (T0 + 4 * SEC, T0 + 4 * SEC, [4]),
        (T0 + 2 * SEC, T0 + 7 * SEC, [2, 3, 4, 5, 6, 7]),
        (T0 + 100 * SEC, 0, []),
        (1, 0, list(range(10))),
        (0, T0 - 1, []),
    ],
)
def test_since_until_boundaries(
    rotated_log: Path, since: int, until: int, expected: list[int]
) -> None:
    assert seq(list(read_logs(rotated_log, since_ns=since, until_ns=until))) == expected


def test_tail_then_since_as_moby(rotated_log: Path) -> None:
    # moby takes the last N lines first, then filters them by since
    assert seq(list(read_logs(rotated_log, tail=3, since_ns=T0 + 5 * SEC))) == [7, 8, 9]
    assert seq(list(read_logs(rotated_log, tail=8, since_ns=T0 + 5 * SEC))) == [5, 6, 7, 8, 9]
    assert seq(list(read_logs(rotated_log, tail=8, until_ns=T0 + 4 * SEC))) == [2, 3, 4]


def test_since_stops_filtering_after_first_match(log_path: Path) -> None:
    # timestamps need not be monotonic; moby lets everything after the first match through
    times = [1, 2, 5, 3, 6]
    write(log_path, [LogMessage("stdout", b"m%d\n" % t, T0 + t * SEC) for t in times]).close()
    got = [m.line for m in read_logs(log_path, since_ns=T0 + 4 * SEC)]
    assert got == [b"m5\n", b"m3\n", b"m6\n"]


def test_since_bisection_agrees_with_a_scan(log_path: Path) -> None:
    # many messages share a timestamp; the first of them must be found
    messages = [
        LogMessage("stdout", b"%06d %s\n" % (i, b"p" * (i % 50)), T0 + (i // 3) * SEC)
        for i in range(30_000)
    ]
    write(log_path, messages, max_size=400_000, max_file=100).close()
    rng = random.Random(3)
    for since in [T0, T0 + SEC, T0 + 9_999 * SEC, T0 + 10_000 * SEC] + [
        T0 + rng.randrange(-5, 10_005) * SEC + rng.choice([0, 1, -1]) for _ in range(12)
    ]:
        expected = [m for m in messages if m.time_ns >= since]
        assert list(read_logs(log_path, since_ns=since)) == expected, since


# -- follow -----------------------------------------------------------------------------


def consume(reader: Iterator[LogMessage], out: list[LogMessage]) -> threading.Thread:
    def run() -> None:
        for m in reader:
            out.append(m)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_follow_gets_new_lines_and_ends_on_close(log_path: Path) -> None:
    lg = write(log_path, [msg(0), msg(1)])
    stop = threading.Event()
    got: list[LogMessage] = []
    t = consume(read_logs(log_path, follow=True, logger=lg, stop=stop), got)

    def writer() -> None:
        for i in range(2, 300):
            lg.log(msg(i))
        lg.close()

    w = threading.Thread(target=writer)
    w.start()
    w.join(WATCHDOG_S)
    t.join(WATCHDOG_S)
    stop.set()
    assert not t.is_alive()
    assert seq(got) == list(range(300))


def test_follow_tail_0_only_new_lines(log_path: Path) -> None:
    lg = write(log_path, [msg(0), msg(1)])
    reader = read_logs(log_path, tail=0, follow=True, logger=lg)
    lg.log(msg(2))  # after read_logs returned: must be seen
    lg.log(msg(3))
    lg.close()
    assert seq(list(reader)) == [2, 3]


def test_follow_through_rotation_lockstep_max_file_1(log_path: Path, tmp_path: Path) -> None:
    # every write rotates (and the old file is unlinked): the follower must
    # finish the old file and continue in the new one without loss or repeats
    n = line_len(tmp_path)
    lg = write(log_path, [msg(0)], max_size=n)
    reader = read_logs(log_path, follow=True, logger=lg)
    got = [next(reader)]
    for i in range(1, 50):
        lg.log(msg(i))
        got.append(next(reader))
    lg.log(msg(50))
    lg.log(msg(51))  # two rotations before the reader looks again: 50 is gone
    lg.close()
    got += list(reader)
    assert seq(got) == [*range(50), 51]


@pytest.mark.parametrize("compress", [False, True])
def test_follow_through_free_running_rotations(log_path: Path, compress: bool) -> None:
    total = 3000
    lg = JSONFileLogger(log_path, max_size=2000, max_file=2000, compress=compress)
    stop = threading.Event()
    got: list[LogMessage] = []
    t = consume(read_logs(log_path, follow=True, logger=lg, stop=stop), got)

    def writer() -> None:
        for i in range(total):
            lg.log(msg(i))
        lg.close()

    w = threading.Thread(target=writer)
    w.start()
    w.join(WATCHDOG_S)
    t.join(WATCHDOG_S)
    stop.set()
    assert not t.is_alive()
    assert lg.position.rotation > 100
    assert seq(got) == list(range(total))


def test_follow_recovers_skipped_rotations_and_reports_lost_ones(
    log_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = line_len(tmp_path)
    lg = write(log_path, [msg(0)], max_size=2 * n, max_file=3)
    reader = read_logs(log_path, follow=True, logger=lg)  # holds the file with 0 (and 1)
    for i in range(1, 11):
        lg.log(msg(i))
    lg.close()
    # files now: .2 = 6-7, .1 = 8-9, current = 10; 2-5 were rotated out
    with caplog.at_level(logging.WARNING):
        got = seq(list(reader))
    assert got == [0, 1, 6, 7, 8, 9, 10]
    assert "missed" in caplog.text


def test_follow_stop(log_path: Path) -> None:
    lg = write(log_path, [msg(0)])
    stop = threading.Event()
    got: list[LogMessage] = []
    t = consume(read_logs(log_path, follow=True, logger=lg, stop=stop), got)
    lg.log(msg(1))
    while len(got) < 2 and t.is_alive():
        t.join(0.01)
    stop.set()
    lg.wake_readers()
    t.join(WATCHDOG_S)
    assert not t.is_alive()
    assert seq(got) == [0, 1]
    # without wake_readers the follower notices stop on its own
    stop2 = threading.Event()
    t2 = consume(read_logs(log_path, tail=0, follow=True, logger=lg, stop=stop2), [])
    stop2.set()
    t2.join(WATCHDOG_S)
    assert not t2.is_alive()
    lg.close()


def test_follow_until_in_the_past_returns(log_path: Path) -> None:
    lg = write(log_path, [msg(0), msg(1), msg(2)])
    # stops at a message after until ...
    got: list[LogMessage] = []
    t = consume(read_logs(log_path, follow=True, logger=lg, until_ns=T0 + SEC), got)
    t.join(WATCHDOG_S)
    assert not t.is_alive()
    assert seq(got) == [0, 1]
    # ... and, with no such message, once the clock is past until
    got = []
    t = consume(read_logs(log_path, follow=True, logger=lg, until_ns=T0 + 5 * SEC), got)
    t.join(WATCHDOG_S)
    assert not t.is_alive()
    assert seq(got) == [0, 1, 2]
    lg.close()


def test_follow_with_until_stops_at_later_message(log_path: Path) -> None:
    lg = write(log_path, [])
    now = T0 + 80 * 365 * 86400 * SEC  # 2103: the wall clock does not pass it during the test
    reader = read_logs(log_path, follow=True, logger=lg, until_ns=now + 2)
    got: list[LogMessage] = []
    t = consume(reader, got)
    for i in range(5):
        lg.log(LogMessage("stdout", b"%d\n" % i, now + i))
    t.join(WATCHDOG_S)
    assert not t.is_alive()
    assert [m.line for m in got] == [b"0\n", b"1\n", b"2\n"]
    lg.close()


def test_follow_without_logger_or_after_close_returns(log_path: Path) -> None:
    lg = write(log_path, [msg(0)])
    assert seq(list(read_logs(log_path, follow=True))) == [0]
    lg.close()
    assert seq(list(read_logs(log_path, follow=True, logger=lg))) == [0]


def test_follow_since_applies_to_new_messages(log_path: Path) -> None:
    lg = write(log_path, [msg(0), msg(1)])
    reader = read_logs(log_path, follow=True, logger=lg, since_ns=T0 + 3 * SEC)
    for i in range(2, 6):
        lg.log(msg(i))
    lg.close()
    assert seq(list(reader)) == [3, 4, 5]


def test_decode_entries_is_decode_entry_of_each_line() -> None:
    good = [
        encode_entry(b"line %d\n" % i, b"stdout", b"", 10**18 + i).rstrip(b"\n") for i in range(5)
    ]
    odd = [
        b"",  # blank
        b"  " + good[0] + b"\r",  # whitespace around
        b'{"log":"cut',  # cut short by a crash
        b"42",  # not an object
        b'{"log":"\\ud800x\\n","stream":"stderr","time":"2026-01-02T03:04:05Z"}',  # lone surrogate
        b'{"log":"t\\n","time":"not a time"}',
        b'{"log":"a\\n","stream":"stdout","attrs":{"k":"v"}}',
        b"\x00" + good[1],
    ]
    for lines in (good, good + odd, odd[::-1] + good):
        assert decode_entries(lines) == [m for m in map(decode_entry, lines) if m is not None]
    assert [m.line for m in decode_entries(good)] == [b"line %d\n" % i for i in range(5)]


# -- whole lines at once (the copier's batches) -----------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_batched_lines_are_the_bytes_of_one_by_one(tmp_path: Path, seed: int) -> None:
    """A copier handing its chunks' whole lines to ``log_lines`` writes exactly what one
    message at a time writes: escapes, empty lines, non-UTF-8, lines longer than a message,
    lines cut across chunks, attrs."""
    rng = random.Random(seed)
    pieces = [
        b"plain ascii line",
        b"",
        b'quote " and backslash \\ and <tag> & amp',
        b"tab\there\rcr",
        "unicode é ✓ \u2028".encode(),
        b"\xff\xfe not utf-8",
        b"x" * (MAX_MESSAGE_SIZE - 1),
        b"y" * MAX_MESSAGE_SIZE,
        b"z" * (MAX_MESSAGE_SIZE * 2 + 7),
    ]
    stream = b"".join(rng.choice(pieces) + b"\n" for _ in range(300)) + b"no newline at the end"
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    files = []
    for batched in (True, False):
        path = tmp_path / f"{batched}.log"
        logger = JSONFileLogger(path, attrs={"tag": "t<1>"})
        lines = logger.log_lines if batched else None
        copier = Copier("stdout", logger.log, lines=lines)
        for i, chunk in enumerate(chunks):
            copier.feed(chunk, now_ns=1_700_000_000_000_000_000 + i * 1_000)
        copier.flush()
        logger.close()
        files.append(path.read_bytes())
    assert files[0] == files[1]
    assert files[0].count(b"\n") > 300


def test_a_size_rotated_log_takes_messages_one_by_one(tmp_path: Path) -> None:
    logger = JSONFileLogger(tmp_path / "r.log", max_size=1000, max_file=2)
    assert not logger.log_lines("stdout", b"a\nb\n", [b"a", b"b"], 1)
    logger.close()
    assert (tmp_path / "r.log").read_bytes() == b""
