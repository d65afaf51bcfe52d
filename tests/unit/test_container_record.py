"""A container's decoded records share their strings: the ViewDB's snapshots and the live
record of every container hold one copy of what is the same in each (and equal values)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from berth.container.container import Container, Record, decode_host_config, decode_record
from berth.types.container import Config, HostConfig, LogConfig

IMAGE = "sha256:" + "ab" * 32


def _record(ident: str) -> Record:
    return Record(
        id=ident,
        created="2026-12-06T01:00:00.000000001Z",
        path="sleep",
        args=["1"],
        config=Config(
            image="busybox", cmd=["sleep", "1"], labels={"com.docker.compose.project": "web"}
        ),
        image=IMAGE,
        name="/" + ident[:6],
        driver="overlay2",
    )


def _host_config() -> HostConfig:
    return HostConfig(
        log_config=LogConfig(type="json-file", config={"max-size": "10m"}),
        masked_paths=["/proc/asound", "/proc/acpi"],
    )


def test_decoded_copies_share_their_strings_and_keep_their_values() -> None:
    raw_a = msgspec.json.encode(_record("a" * 64))
    raw_b = msgspec.json.encode(_record("b" * 64))
    a, b = decode_record(raw_a), decode_record(raw_b)
    assert a.image is b.image and a.config.cmd[0] is b.config.cmd[0]
    ((key_a, value_a),) = a.config.labels.items()
    ((key_b, value_b),) = b.config.labels.items()
    assert key_a is key_b and value_a is value_b
    assert msgspec.json.encode(a) == raw_a and msgspec.json.encode(b) == raw_b
    assert a.id != b.id
    raw_hc = msgspec.json.encode(_host_config())
    h1, h2 = decode_host_config(raw_hc), decode_host_config(raw_hc)
    assert h1.masked_paths is not h2.masked_paths  # containers stay separate
    assert all(x is y for x, y in zip(h1.masked_paths or [], h2.masked_paths or [], strict=True))
    assert h1.log_config.config["max-size"] is h2.log_config.config["max-size"]
    assert msgspec.json.encode(h1) == raw_hc


def test_the_live_record_shares_with_its_snapshots(tmp_path: Path) -> None:
    record = _record("c" * 64)
    labels = record.config.labels
    live = Container(tmp_path, record, _host_config())
    assert live.record.config.labels is labels  # the same objects, their strings swapped
    raw, raw_hc = live.encode()
    snap = decode_record(raw)
    assert snap.image is live.record.image and snap.name is live.record.name
    assert snap.config.labels is not live.record.config.labels
    assert decode_host_config(raw_hc).masked_paths == live.host_config.masked_paths


def test_the_attach_hub_and_exit_event_are_made_once_at_first_use(tmp_path: Path) -> None:
    import threading

    stopped = Container(tmp_path, _record("d" * 64), _host_config())
    assert stopped._streams is None and stopped._exited is None  # nothing made yet
    assert stopped.exited.is_set()  # not running: exited, as it was made
    running_record = _record("e" * 64)
    running_record.state.running = True
    running = Container(tmp_path, running_record, _host_config())
    hubs, events = [], []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        hubs.append(running.streams)
        events.append(running.exited)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len({id(h) for h in hubs}) == 1 and len({id(e) for e in events}) == 1
    assert not running.exited.is_set()
