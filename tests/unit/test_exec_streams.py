"""Exec stream logic: detach key parsing and filtering, the end of a run, body field names."""

from __future__ import annotations

import asyncio

import pytest

from berth import errdefs
from berth.api.httputils import fold_field_names
from berth.container.stream import (
    DEFAULT_DETACH_KEYS,
    DetachFilter,
    Streams,
    parse_detach_keys,
)
from berth.types.container import ExecOptions, ExecStartConfig


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("", DEFAULT_DETACH_KEYS),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        ("ctrl-x,y", b"\x18y"),
        ("CTRL-A, a", b"\x01a"),
        ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", bytes([0, 27, 28, 29, 30, 31])),
    ],
)
def test_parse_detach_keys(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-1", "ctrl-", "ctrl-ab", "ab", ",", "alt-x"])
def test_parse_detach_keys_refuses(spec: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"Invalid escape keys \(.*\) provided"):
        parse_detach_keys(spec)


def test_detach_filter_holds_a_prefix_until_decided() -> None:
    f = DetachFilter(b"\x10\x11")
    assert f.feed(b"ab\x10") == (b"ab", False)
    assert f.feed(b"c") == (b"\x10c", False)  # not the sequence after all
    assert f.feed(b"\x10") == (b"", False)
    assert f.feed(b"\x11rest") == (b"", True)


def test_fold_field_names_matches_without_case() -> None:
    data = {"detachKeys": "ctrl-a,a", "cmd": ["sh"], "TTY": True, "Unknown": 1}
    assert fold_field_names(data, ExecOptions) == {
        "DetachKeys": "ctrl-a,a",
        "Cmd": ["sh"],
        "Tty": True,
        "Unknown": 1,
    }
    assert fold_field_names({"tty": True}, ExecStartConfig) == {"Tty": True}
    assert fold_field_names([1], ExecOptions) == [1]


def test_end_reaches_a_subscriber_whose_queue_is_full() -> None:
    async def main() -> list[tuple[str, bytes] | None]:
        hub = Streams()
        sub = hub.subscribe(frozenset({"stdout"}))
        while not sub.queue.full():
            sub.queue.put_nowait(("stdout", b"x"))
        hub.end()
        assert sub.ended
        depth = sub.queue.qsize()
        items = []
        while (item := await asyncio.wait_for(sub.get(), 5)) is not None:
            items.append(item)
        assert len(items) == depth  # every queued chunk first, then the end
        return items

    assert asyncio.run(main())


def test_a_subscription_left_before_the_end_is_not_ended() -> None:
    async def main() -> None:
        hub = Streams()
        sub = hub.subscribe(frozenset({"stdout"}))
        hub.unsubscribe(sub)
        hub.end()
        assert not sub.ended

    asyncio.run(main())
