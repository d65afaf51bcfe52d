"""berth.container.view: the ViewDB, its snapshots, names and lookups."""

from __future__ import annotations

import random

import pytest

from berth import errdefs
from berth.container.container import Record
from berth.container.state import State
from berth.container.view import NameConflict, Snapshot, ViewDB
from berth.types.container import Config, HostConfig

ID_A = "a1b2c3" + "0" * 58
ID_B = "a1b2d4" + "1" * 58
ID_C = "ffee00" + "2" * 58


def snap(
    ident: str, name: str, *, created: str = "2024-01-02T03:04:05Z", image: str = "img"
) -> Snapshot:
    record = Record(
        id=ident,
        created=created,
        path="/bin/sh",
        args=["-c", "true"],
        config=Config(image=image),
        image="sha256:" + "9" * 64,
        name=name,
        driver="overlay2",
    )
    return Snapshot.of(record, HostConfig())


def db_with(*snaps: Snapshot) -> ViewDB:
    db = ViewDB()
    for s in snaps:
        db.save(s)
        db.reserve_name(s.name, s.id)
    return db


def test_snapshot_of_parses_times() -> None:
    rec = Record(
        id=ID_A,
        created="2024-01-02T03:04:05.5Z",
        path="p",
        args=[],
        config=Config(),
        image="",
        name="/x",
        driver="vfs",
        state=State(started_at="2024-01-02T03:04:06Z", finished_at="0001-01-01T00:00:00Z"),
    )
    s = Snapshot.of(rec, HostConfig(network_mode="host"))
    assert s.id == ID_A
    assert s.name == "/x"
    assert s.created_ns == 1704164645_500_000_000
    assert s.started_ns == 1704164646_000_000_000
    assert s.finished_ns == -62135596800_000_000_000
    assert s.host_config.network_mode == "host"
    assert s.record is rec


def test_save_get_and_all() -> None:
    db = ViewDB()
    a, b = snap(ID_A, "/a"), snap(ID_B, "/b")
    db.save(a)
    db.save(b)
    view = db.snapshot()
    assert len(view) == 2
    assert view.get(ID_A) is a
    assert view.get(ID_B) is b
    assert view.get(ID_C) is None
    assert sorted(s.id for s in view.all()) == [ID_A, ID_B]
    assert sorted(s.id for s in view) == [ID_A, ID_B]


def test_save_replaces_by_id() -> None:
    db = ViewDB()
    db.save(snap(ID_A, "/a", image="old"))
    newer = snap(ID_A, "/a", image="new")
    db.save(newer)
    view = db.snapshot()
    assert len(view) == 1
    assert view.get(ID_A) is newer


def test_snapshot_isolation() -> None:
    db = ViewDB()
    a = snap(ID_A, "/a")
    db.save(a)
    db.reserve_name("/a", ID_A)
    before = db.snapshot()

    db.save(snap(ID_B, "/b"))
    db.reserve_name("/b", ID_B)
    db.save(snap(ID_A, "/a", image="changed"))
    db.delete(ID_A)

    assert len(before) == 1
    assert before.get(ID_A) is a
    assert before.get(ID_B) is None
    assert before.get_id("b") is None
    assert before.get_id("a") == ID_A
    assert before.find("a") is a

    after = db.snapshot()
    assert after.get(ID_A) is None
    assert after.get_id("a") is None
    assert [s.id for s in after] == [ID_B]


def test_delete_releases_all_names_of_the_container() -> None:
    db = db_with(snap(ID_A, "/a"), snap(ID_B, "/b"))
    db.reserve_name("/alias/a", ID_A)
    db.delete(ID_A)
    view = db.snapshot()
    assert view.get(ID_A) is None
    assert view.get_all_names() == {ID_B: ["/b"]}
    # the name is free again
    db.reserve_name("/a", ID_C)
    assert db.snapshot().get_id("/a") == ID_C


def test_delete_unknown_id_is_a_noop() -> None:
    db = db_with(snap(ID_A, "/a"))
    db.delete(ID_C)
    assert len(db.snapshot()) == 1
    assert db.snapshot().get_id("a") == ID_A


def test_reserve_name_normalises_and_is_idempotent_for_the_holder() -> None:
    db = ViewDB()
    db.reserve_name("web", ID_A)
    db.reserve_name("/web", ID_A)
    view = db.snapshot()
    assert view.get_id("web") == ID_A
    assert view.get_id("/web") == ID_A
    assert view.get_all_names() == {ID_A: ["/web"]}


def test_reserve_name_conflict() -> None:
    db = ViewDB()
    db.reserve_name("/x", ID_A)
    with pytest.raises(NameConflict) as exc:
        db.reserve_name("x", ID_B)
    err = exc.value
    assert isinstance(err, errdefs.Conflict)
    assert str(err) == (
        f'Conflict. The container name "/x" is already in use by container "{ID_A}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    assert err.name == "/x"
    assert err.holder == ID_A
    assert db.snapshot().get_id("x") == ID_A


def test_release_name() -> None:
    db = ViewDB()
    db.reserve_name("/x", ID_A)
    held = db.snapshot()
    db.release_name("x")
    assert db.snapshot().get_id("x") is None
    assert held.get_id("x") == ID_A
    db.release_name("never-held")
    db.reserve_name("/x", ID_B)
    assert db.snapshot().get_id("/x") == ID_B
    db.delete(ID_A)  # the name it gave up is another's now and stays
    assert db.snapshot().get_id("/x") == ID_B


def test_get_all_names() -> None:
    db = db_with(snap(ID_A, "/a"), snap(ID_B, "/b"))
    db.reserve_name("/a2", ID_A)
    names = db.snapshot().get_all_names()
    assert {k: sorted(v) for k, v in names.items()} == {ID_A: ["/a", "/a2"], ID_B: ["/b"]}


# -- find -----------------------------------------------------------------------------


def test_find_by_full_id_name_and_prefix() -> None:
    a, b, c = snap(ID_A, "/alpha"), snap(ID_B, "/beta"), snap(ID_C, "/gamma")
    view = db_with(a, b, c).snapshot()
    assert view.find(ID_A) is a
    assert view.find("alpha") is a
    assert view.find("/alpha") is a
    assert view.find("a1b2c") is a
    assert view.find("a1b2d") is b
    assert view.find("ff") is c
    assert view.find(ID_C[:12]) is c


def test_find_prefers_full_id_then_name_then_prefix() -> None:
    # A container named like another's ID prefix: the name wins over the prefix.
    a = snap(ID_A, "/first")
    b = snap(ID_B, "/" + ID_A[:8])
    view = db_with(a, b).snapshot()
    assert view.find(ID_A[:8]) is b
    # A container named like another's full ID: the full ID wins over the name.
    c = snap(ID_C, "/" + ID_A)
    view = db_with(a, b, c).snapshot()
    assert view.find(ID_A) is a


def test_find_ambiguous_prefix() -> None:
    view = db_with(snap(ID_A, "/a"), snap(ID_B, "/b")).snapshot()
    with pytest.raises(errdefs.InvalidParameter) as exc:
        view.find("a1b2")
    assert str(exc.value) == "multiple IDs found with provided prefix: a1b2"


def test_find_missing() -> None:
    view = db_with(snap(ID_A, "/a")).snapshot()
    for ref in ("nope", "b", "a1b2c3x", "/zzz"):
        with pytest.raises(errdefs.NotFound) as exc:
            view.find(ref)
        assert str(exc.value) == f"No such container: {ref}"


def test_find_empty_reference() -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        ViewDB().snapshot().find("")
    assert str(exc.value) == 'invalid name or ID supplied: ""'


def test_find_reserved_name_without_container_falls_through() -> None:
    # A name reserved during create, before the container is saved.
    db = db_with(snap(ID_A, "/a"))
    db.reserve_name("/pending", ID_C)
    view = db.snapshot()
    with pytest.raises(errdefs.NotFound):
        view.find("pending")


def test_get_by_prefix() -> None:
    view = db_with(snap(ID_A, "/a"), snap(ID_C, "/c")).snapshot()
    assert view.get_by_prefix("a1") == ID_A
    assert view.get_by_prefix("ff") == ID_C
    assert view.get_by_prefix("00") is None


def test_prefix_lookups_agree_with_a_scan_of_every_id() -> None:
    """The index of IDs by their first characters finds what testing every ID finds, after
    saves and deletes, for short and long prefixes, and sees an ambiguity as one."""
    rng = random.Random(5)
    ids = sorted({"".join(rng.choices("0123456789abcdef", k=64)) for _ in range(3000)})
    db = db_with(*(snap(i, f"/c{n}") for n, i in enumerate(ids)))
    gone = set(rng.sample(ids, 1000)) | {ids[0]}
    for ident in gone:
        db.delete(ident)
    before = db.snapshot()
    db.save(snap(ids[0], "/again"))  # deleted, then back
    view = db.snapshot()
    alive = [i for i in ids if i not in gone or i == ids[0]]
    for ident in rng.sample(ids, 400):
        for size in (1, 2, 3, 4, 6, 12, 64):
            prefix = ident[:size]
            matches = [i for i in alive if i.startswith(prefix)]
            if len(matches) > 1:
                with pytest.raises(errdefs.InvalidParameter):
                    view.get_by_prefix(prefix)
            else:
                assert view.get_by_prefix(prefix) == (matches[0] if matches else None)
    assert view.get_by_prefix(ids[0][:12]) == ids[0]
    assert before.get_by_prefix(ids[0][:12]) is None  # an earlier view keeps what it had
