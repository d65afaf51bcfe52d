"""berth.types.filters: the ``filters`` query argument, as moby's filters.Args."""

from __future__ import annotations

import pytest

from berth import errdefs
from berth.types.filters import Filters


def test_from_param_current_form() -> None:
    f = Filters.from_param('{"label":{"a=b":true,"c":true},"status":{"running":true}}')
    assert sorted(f.keys()) == ["label", "status"]
    assert f.get("label") == ["a=b", "c"]
    assert f.get("status") == ["running"]
    assert f.contains("label")
    assert not f.contains("name")
    assert f.get("name") == []
    assert bool(f)


def test_from_param_drops_false_values() -> None:
    f = Filters.from_param('{"status":{"running":true,"exited":false}}')
    assert f.get("status") == ["running"]


def test_from_param_legacy_list_form() -> None:
    f = Filters.from_param('{"name":["web","db"],"dangling":["true"]}')
    assert f.get("name") == ["db", "web"]
    assert f.get("dangling") == ["true"]


@pytest.mark.parametrize("raw", ["", "   ", "{}"])
def test_from_param_empty(raw: str) -> None:
    f = Filters.from_param(raw)
    assert not f
    assert f.keys() == []


@pytest.mark.parametrize("raw", ["{", "not json", '{"a":', "{'a': {}}"])
def test_from_param_invalid_json(raw: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        Filters.from_param(raw)
    assert "invalid filter" in str(exc.value)
    assert "is not valid JSON" in str(exc.value)


@pytest.mark.parametrize("raw", ["[]", '"x"', "3"])
def test_from_param_not_an_object(raw: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="expected a JSON object"):
        Filters.from_param(raw)


def test_from_param_value_of_wrong_type() -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        Filters.from_param('{"name":"web"}')
    assert str(exc.value) == "invalid filter: value of 'name' must be an object"


def test_validate() -> None:
    f = Filters({"label": ["x"], "name": ["y"]})
    f.validate(["label", "name", "id"])
    with pytest.raises(errdefs.InvalidParameter) as exc:
        Filters({"label": ["x"], "x": ["1"]}).validate({"label", "name"})
    assert str(exc.value) == "invalid filter 'x'"


def test_validate_empty_filters_accepts_anything() -> None:
    Filters().validate([])


def test_with_values_is_a_copy() -> None:
    f = Filters({"name": ["a"]})
    g = f.with_values("name", ["b"]).with_values("id", ["c"])
    assert f.get("name") == ["a"]
    assert not f.contains("id")
    assert g.get("name") == ["a", "b"]
    assert g.get("id") == ["c"]


def test_exact_match() -> None:
    f = Filters({"status": ["running", "paused"]})
    assert f.exact_match("status", "running")
    assert f.exact_match("status", "paused")
    assert not f.exact_match("status", "run")
    assert not f.exact_match("status", "exited")
    assert f.exact_match("other", "anything")  # key absent: no filtering


def test_unique_exact_match() -> None:
    assert Filters({"k": ["a"]}).unique_exact_match("k", "a")
    assert not Filters({"k": ["a"]}).unique_exact_match("k", "b")
    assert not Filters({"k": ["a", "b"]}).unique_exact_match("k", "a")
    assert Filters().unique_exact_match("k", "a")


def test_fuzzy_match() -> None:
    f = Filters({"id": ["abc", "123"]})
    assert f.fuzzy_match("id", "abcdef")
    assert f.fuzzy_match("id", "abc")
    assert f.fuzzy_match("id", "123456")
    assert not f.fuzzy_match("id", "xabc")
    assert not f.fuzzy_match("id", "ab")
    assert Filters().fuzzy_match("id", "whatever")


def test_match_regex() -> None:
    f = Filters({"name": ["^web-[0-9]+$"]})
    assert f.match("name", "web-12")
    assert not f.match("name", "web-x")
    assert not f.match("name", "myweb-1")
    # unanchored patterns are searched anywhere
    g = Filters({"name": ["db"]})
    assert g.match("name", "mydb1")
    assert not g.match("name", "d-b")
    assert Filters().match("name", "x")


def test_match_exact_value_wins_over_regex_reading() -> None:
    # "a+b" as a regex does not match the text "a+b"; moby tries exact first.
    f = Filters({"name": ["a+b"]})
    assert f.match("name", "a+b")
    assert f.match("name", "aaab")
    assert not f.match("name", "b")


def test_match_skips_invalid_regex() -> None:
    f = Filters({"name": ["(", "ok"]})
    assert f.match("name", "look")
    assert not f.match("name", "nope")
    assert Filters({"name": ["("]}).match("name", "(") is True  # exact
    assert Filters({"name": ["("]}).match("name", "x(") is False


def test_match_kv_list() -> None:
    labels = {"a": "1", "b": "", "c": "x=y"}
    assert Filters({"label": ["a"]}).match_kv_list("label", labels)
    assert Filters({"label": ["a=1"]}).match_kv_list("label", labels)
    assert not Filters({"label": ["a=2"]}).match_kv_list("label", labels)
    assert Filters({"label": ["b"]}).match_kv_list("label", labels)
    assert Filters({"label": ["b="]}).match_kv_list("label", labels)
    assert not Filters({"label": ["a="]}).match_kv_list("label", labels)
    assert Filters({"label": ["c=x=y"]}).match_kv_list("label", labels)
    assert not Filters({"label": ["d"]}).match_kv_list("label", labels)
    # every value must match
    assert Filters({"label": ["a=1", "b"]}).match_kv_list("label", labels)
    assert not Filters({"label": ["a=1", "d"]}).match_kv_list("label", labels)
    assert not Filters({"label": ["a=1", "c=x"]}).match_kv_list("label", labels)


def test_match_kv_list_without_sources() -> None:
    assert not Filters({"label": ["a"]}).match_kv_list("label", {})
    assert not Filters({"label": ["a"]}).match_kv_list("label", None)
    assert Filters().match_kv_list("label", None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["true"], True), (["1"], True), (["false"], False), (["0"], False), (["1", "true"], True)],
)
def test_get_bool_or_default(values: list[str], expected: bool) -> None:
    f = Filters({"dangling": values})
    assert f.get_bool_or_default("dangling", not expected) is expected


def test_get_bool_or_default_absent_key_gives_default() -> None:
    assert Filters().get_bool_or_default("dangling", True) is True
    assert Filters({"x": ["1"]}).get_bool_or_default("dangling", False) is False


@pytest.mark.parametrize(
    ("values", "shown"),
    [(["foo"], "[foo]"), (["true", "false"], "[false true]"), (["0", "1"], "[0 1]")],
)
def test_get_bool_or_default_invalid(values: list[str], shown: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        Filters({"dangling": values}).get_bool_or_default("dangling", False)
    assert str(exc.value) == f"invalid filter 'dangling={shown}'"


def test_get_bool_or_default_key_without_values() -> None:
    f = Filters.from_param('{"dangling":{"true":false}}')
    with pytest.raises(errdefs.InvalidParameter) as exc:
        f.get_bool_or_default("dangling", False)
    assert str(exc.value) == "invalid filter 'dangling'"
