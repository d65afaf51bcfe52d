"""``docker ps``: the filter context built once per request and the check per container."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.daemon.list import Action, fold_filters, include
from berth.types.filters import Filters
from tests.unit.daemonharness import PROGRAMS, Harness, rootfs_tar
from tests.unit.fakeruntime import FakeRuntime


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    """One daemon with four created containers, c1 the oldest, c3 running."""
    root = Path(tempfile.mkdtemp(prefix="berth-ps-"))
    fake = FakeRuntime(PROGRAMS)
    harness = Harness(root / "d", fake, rootfs_tar(root / "rootfs.tar"))
    try:
        for i in range(1, 5):
            harness.create("server", name=f"c{i}", labels={"n": str(i)})
        harness.d.start_container("c3")
        yield harness
        harness.d.stop_container("c3", 10, "")
    finally:
        harness.close()
        fake.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _names(h: Harness, all_: bool = True, limit: int = -1, **flt: list[str]) -> list[str]:
    rows = h.d.list_containers(all_, limit, False, Filters(flt))
    return [row.names[0] for row in rows]


def test_newest_first_and_running_only_by_default(h: Harness) -> None:
    assert _names(h) == ["/c4", "/c3", "/c2", "/c1"]
    assert _names(h, all_=False) == ["/c3"]


def test_limit_lists_stopped_containers_too(h: Harness) -> None:
    assert _names(h, all_=False, limit=2) == ["/c4", "/c3"]
    assert _names(h, limit=3, label=["n=1"]) == ["/c1"]


def test_since_and_before(h: Harness) -> None:
    assert _names(h, since=["c2"]) == ["/c4", "/c3"]
    assert _names(h, before=["c3"]) == ["/c2", "/c1"]
    assert _names(h, since=["c1"], before=["c4"]) == ["/c3", "/c2"]


def test_status_filter_implies_all(h: Harness) -> None:
    assert _names(h, all_=False, status=["created"]) == ["/c4", "/c2", "/c1"]


def test_bad_values_fail_before_any_container_is_read(h: Harness) -> None:
    view = h.d.view.snapshot()
    for flt, message in (
        ({"bogus": ["x"]}, "invalid filter 'bogus'"),
        ({"status": ["sleeping"]}, "invalid filter 'status=sleeping'"),
        ({"health": ["ill"]}, "Unrecognised filter value for health: ill"),
        ({"exited": ["x"]}, "invalid syntax"),
        ({"is-task": ["maybe"]}, "invalid filter 'is-task=[maybe]'"),
        ({"publish": ["1:2"]}, "should not contain ':'"),
    ):
        with pytest.raises(errdefs.InvalidParameter, match=message.replace("[", r"\[")):
            fold_filters(h.d, view, True, -1, Filters(flt))
    with pytest.raises(errdefs.NotFound):
        fold_filters(h.d, view, True, -1, Filters({"since": ["nosuch"]}))


def test_include_stops_at_the_since_pivot_and_at_the_limit(h: Harness) -> None:
    view = h.d.view.snapshot()
    c1, c2, c3 = (view.find(n) for n in ("c1", "c2", "c3"))
    ctx = fold_filters(h.d, view, True, -1, Filters({"since": ["c2"]}))
    assert include(ctx, c3, 0) is Action.INCLUDE
    assert include(ctx, c2, 1) is Action.STOP
    assert include(ctx, c1, 1) is Action.STOP
    ctx = fold_filters(h.d, view, False, 1, Filters())
    assert include(ctx, c2, 0) is Action.INCLUDE
    assert include(ctx, c1, 1) is Action.STOP


def test_empty_volume_and_network_filters_match_nothing(h: Harness) -> None:
    assert _names(h, volume=[]) == []
    assert _names(h, network=[]) == []
    assert _names(h, isolation=[]) == ["/c4", "/c3", "/c2", "/c1"]


def test_since_names_a_container_before_an_id_prefix(h: Harness) -> None:
    """A name wins over an ID that starts with the same characters (moby's GetContainer)."""
    ids = {name: h.d.get_container(name).id for name in ("c1", "c2", "c3", "c4")}
    named = h.create("server", name=ids["c4"][:6])  # a name that is c4's ID prefix
    try:
        assert _names(h, before=[ids["c4"][:6]]) == ["/c4", "/c3", "/c2", "/c1"]
    finally:
        h.d.remove_container(named.id, True, False, False)
