"""berth.daemon.names: container name validation and random names."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from berth import errdefs
from berth.container.view import NameConflict, ViewDB
from berth.daemon import names
from berth.daemon.names import (
    ADJECTIVES,
    SURNAMES,
    random_name,
    reserve_name,
    validate_name,
)

ID = "abcdef012345" + "6" * 52
OTHER = "fedcba987654" + "3" * 52


def test_random_name_format() -> None:
    for _ in range(200):
        name = random_name(0)
        left, sep, right = name.partition("_")
        assert sep == "_"
        assert left in ADJECTIVES
        assert right in SURNAMES
        assert name != "boring_wozniak"


def test_random_name_appends_a_digit_on_retry() -> None:
    for retry in (1, 2, 5):
        for _ in range(50):
            name = random_name(retry)
            m = re.fullmatch(r"([a-z]+)_([a-z]+)([0-9])", name)
            assert m, name
            assert m.group(1) in ADJECTIVES
            assert m.group(2) in SURNAMES


def test_random_name_never_boring_wozniak(monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter(["boring", "wozniak", "boring", "turing"])
    calls: list[Sequence[str]] = []

    def fake_choice(seq: Sequence[str]) -> str:
        calls.append(seq)
        return next(picks)

    monkeypatch.setattr(names.secrets, "choice", fake_choice)
    assert random_name(0) == "boring_turing"
    assert calls == [ADJECTIVES, SURNAMES, ADJECTIVES, SURNAMES]


def test_random_name_digit_comes_from_randbelow(monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter(["brave", "curie"])
    monkeypatch.setattr(names.secrets, "choice", lambda seq: next(picks))
    monkeypatch.setattr(names.secrets, "randbelow", lambda n: 7 if n == 10 else -1)
    assert random_name(3) == "brave_curie7"


def test_word_lists() -> None:
    assert "boring" in ADJECTIVES
    assert "wozniak" in SURNAMES
    assert len(set(ADJECTIVES)) == len(ADJECTIVES)
    assert len(set(SURNAMES)) == len(SURNAMES)
    assert all(re.fullmatch(r"[a-z]+", w) for w in (*ADJECTIVES, *SURNAMES))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("web", "/web"),
        ("/web", "/web"),
        ("ab", "/ab"),
        ("a.b-c_d", "/a.b-c_d"),
        ("9lives", "/9lives"),
        ("X_", "/X_"),
    ],
)
def test_validate_name(name: str, canonical: str) -> None:
    assert validate_name(name) == canonical


@pytest.mark.parametrize(
    "name", ["a", "/a", "bad!", "_x", "-x", ".x", "a b", "a/b", "//ab", "", "/", "abc\n", "ünï"]
)
def test_validate_name_errors(name: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_name(name)
    assert str(exc.value) == (
        f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    )


def test_reserve_given_name() -> None:
    db = ViewDB()
    assert reserve_name(db, ID, "web") == "/web"
    assert db.snapshot().get_id("/web") == ID
    with pytest.raises(NameConflict):
        reserve_name(db, OTHER, "/web")
    with pytest.raises(errdefs.InvalidParameter):
        reserve_name(db, OTHER, "bad!")
    assert db.snapshot().get_all_names() == {ID: ["/web"]}


def test_reserve_random_name() -> None:
    db = ViewDB()
    name = reserve_name(db, ID, "")
    assert re.fullmatch(r"/[a-z]+_[a-z]+", name)
    assert db.snapshot().get_id(name) == ID


def test_reserve_random_name_retries_with_a_digit(monkeypatch: pytest.MonkeyPatch) -> None:
    db = ViewDB()
    db.reserve_name("/taken_name", OTHER)
    retries: list[int] = []

    def fake_random_name(retry: int) -> str:
        retries.append(retry)
        return "taken_name" if retry == 0 else f"taken_name{retry}"

    monkeypatch.setattr(names, "random_name", fake_random_name)
    assert reserve_name(db, ID, "") == "/taken_name1"
    assert retries == [0, 1]


def test_reserve_falls_back_to_short_id_after_six_collisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = ViewDB()
    db.reserve_name("/always_taken", OTHER)
    retries: list[int] = []

    def fake_random_name(retry: int) -> str:
        retries.append(retry)
        return "always_taken"

    monkeypatch.setattr(names, "random_name", fake_random_name)
    assert reserve_name(db, ID, "") == "/abcdef012345"
    assert retries == [0, 1, 2, 3, 4, 5]
    view = db.snapshot()
    assert view.get_id("abcdef012345") == ID
    assert view.get_id("always_taken") == OTHER
