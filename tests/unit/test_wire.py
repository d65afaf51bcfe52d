"""``wire.encode`` (msgspec encoding the Structs, empty omitempty fields UNSET on copies)
writes exactly what ``to_wire`` (builtins, then keys deleted) gives, and never changes the
objects it is handed: a listing's mounts are the containers' own records."""

from __future__ import annotations

import copy
import random

import msgspec

from berth.types.container import (
    MountPoint,
    Port,
    Summary,
    SummaryHostConfig,
    SummaryNetworkSettings,
)
from berth.types.wire import encode, to_wire

_json = msgspec.json.Encoder()


def _random_summary(rng: random.Random) -> Summary:
    def text() -> str:
        return rng.choice(["", "x", "volume", "local"])

    return Summary(
        id=f"{rng.getrandbits(64):016x}",
        names=[f"/n{rng.randrange(100)}"] if rng.random() < 0.9 else [],
        ports=[
            Port(PrivatePort=80, Type="tcp", IP=rng.choice(["", "127.0.0.1"]), PublicPort=p)
            for p in rng.sample([0, 0, 8080, 9000], rng.randrange(3))
        ],
        size_rw=rng.choice([None, 0, 12]),
        size_root_fs=rng.choice([None, 0, 34]),
        labels=rng.choice([{}, {"a": "b"}]),
        host_config=SummaryHostConfig(
            network_mode="bridge", annotations=rng.choice([None, {}, {"k": "v"}])
        ),
        network_settings=rng.choice([None, SummaryNetworkSettings(networks={})]),
        mounts=[
            MountPoint(type=text(), name=text(), source="/s", destination="/d", driver=text())
            for _ in range(rng.randrange(3))
        ],
    )


def test_encode_is_to_wire_and_leaves_the_objects_alone() -> None:
    rng = random.Random(17)
    for _ in range(300):
        rows = [_random_summary(rng) for _ in range(rng.randrange(1, 6))]
        before = copy.deepcopy(rows)
        assert encode(rows) == _json.encode(to_wire(rows))
        assert encode(rows[0]) == _json.encode(to_wire(rows[0]))
        assert rows == before
        assert all(m.type is not msgspec.UNSET for r in rows for m in r.mounts)


def test_a_shared_mount_keeps_its_fields() -> None:
    shared = MountPoint(source="/s", destination="/d")  # Type, Name and Driver empty
    rows = [Summary(id="a", mounts=[shared]), Summary(id="b", mounts=[shared])]
    assert b'"Name"' not in encode(rows)
    assert (shared.type, shared.name, shared.driver) == ("", "", "")
    assert b'"Name":""' in _json.encode(shared)
