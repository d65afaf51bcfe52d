"""``docker image prune`` in the image service, on a real layer store (vfs): which
images go (dangling heads, or every unused one), the filters and their refusals, what
is reclaimed, the events, and that a container being created keeps its image."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.events import Events
from berth.graphdriver import new_driver
from berth.image.reference import parse_normalized_named
from berth.image.service import ImageService
from berth.image.store import Image
from berth.layer import ROLayer
from berth.types.filters import Filters
from berth.types.image import PruneReport

OLD = "2020-01-02T03:04:05Z"
NEW = "2030-01-02T03:04:05Z"


class Users:
    """The container side's answer to "which containers use this image"."""

    def __init__(self) -> None:
        self.by_image: dict[str, list[tuple[str, bool]]] = {}

    def __call__(self) -> dict[str, list[tuple[str, bool]]]:
        return self.by_image


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def svc(tmp_path: Path, events: Events, users: Users) -> Iterator[ImageService]:
    driver = new_driver("vfs", tmp_path)
    yield ImageService(tmp_path, driver, events=events, image_users=users, tmp_dir=tmp_path)
    driver.cleanup()


def layer_tar(name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(b"x" * size))
    return buf.getvalue()


def make_image(
    svc: ImageService,
    layers: list[bytes],
    *,
    tag: str = "",
    parent: Image | None = None,
    labels: dict[str, str] | None = None,
    created: str = OLD,
    with_config: bool = True,
) -> Image:
    """An image of *layers* (registered on one another), as a load or commit makes it."""
    top: ROLayer | None = None
    held: list[ROLayer] = []
    for data in layers:
        top = svc.layers.register(io.BytesIO(data), top)
        held.append(top)
    doc: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in held]},
    }
    if created:
        doc["created"] = created
    if with_config:
        doc["config"] = {"Cmd": ["sh"], "Labels": labels}
    img = svc.images.create(json.dumps(doc).encode(), parent=parent.id if parent else "")
    for layer in held:
        svc.layers.release(layer)
    if tag:
        svc.tag_image(img.id, parse_normalized_named(tag))
    return img


def prune(svc: ImageService, **flt: str | list[str]) -> PruneReport:
    args = {k.replace("_not", "!"): [v] if isinstance(v, str) else v for k, v in flt.items()}
    return svc.prune_images(Filters(args))


def deleted(report: PruneReport) -> list[str]:
    return [i.Deleted for i in report.ImagesDeleted or [] if i.Deleted]


def untagged(report: PruneReport) -> list[str]:
    return [i.Untagged for i in report.ImagesDeleted or [] if i.Untagged]


def present(svc: ImageService, img: Image) -> bool:
    return svc.images.get(img.id) is not None


def test_dangling_only_by_default(svc: ImageService) -> None:
    tagged = make_image(svc, [layer_tar("a", 100)], tag="kept:1")
    dangling = make_image(svc, [layer_tar("b", 200)])
    # A nameless parent of a tagged image is no dangling image: it goes with its child.
    parent = make_image(svc, [layer_tar("c", 300)])
    child = make_image(svc, [layer_tar("c", 300), layer_tar("d", 50)], tag="child:1", parent=parent)
    b = dangling.layer
    assert b is not None
    report = prune(svc)
    assert deleted(report) == [dangling.id, b.chain_id]
    assert untagged(report) == []
    assert report.SpaceReclaimed == b.size == 200
    assert all(present(svc, i) for i in (tagged, parent, child))
    assert not present(svc, dangling)
    assert svc.layers.lookup(b.chain_id) is None
    # Nothing left to prune: ImagesDeleted is null, as dockerd's nil slice.
    again = prune(svc, dangling="true")
    assert (again.ImagesDeleted, again.SpaceReclaimed) == (None, 0)


def test_digest_references_alone_do_not_make_an_image_tagged(svc: ImageService) -> None:
    img = make_image(svc, [layer_tar("a", 10)])
    ref = parse_normalized_named("example.com/app@sha256:" + "ab" * 32)
    svc.tag_image(img.id, ref)
    report = prune(svc)
    assert untagged(report) == ["example.com/app@sha256:" + "ab" * 32]
    assert deleted(report)[0] == img.id


def test_all_removes_every_unused_image_and_keeps_the_used_whole(
    svc: ImageService, users: Users
) -> None:
    tagged = make_image(svc, [layer_tar("a", 100)], tag="unused:1")
    parent = make_image(svc, [layer_tar("c", 300)])
    child = make_image(svc, [layer_tar("c", 300), layer_tar("d", 50)], tag="child:1", parent=parent)
    used = make_image(svc, [layer_tar("u", 70)], tag="used:1")
    svc.tag_image(used.id, parse_normalized_named("used:2"))
    users.by_image[used.id] = [("c" * 64, False)]  # a stopped container
    report = prune(svc, dangling="false")
    assert not any(present(svc, i) for i in (tagged, parent, child))
    assert sorted(untagged(report)) == ["child:1", "unused:1"]
    # dockerd would untag one of used:1/used:2 (moby#36295); berth keeps both.
    assert present(svc, used)
    assert sorted(svc.repo_tags(used.id)[0]) == ["used:1", "used:2"]
    assert report.SpaceReclaimed == 100 + 300 + 50
    assert len(svc.images.all()) == 1


def test_space_reclaimed_counts_only_the_layers_removed(svc: ImageService) -> None:
    base = make_image(svc, [layer_tar("base", 1000)], tag="base:1")
    # The same layer under another config: pruning it frees no layer.
    twin = make_image(svc, [layer_tar("base", 1000)], labels={"twin": "1"})
    report = prune(svc)
    assert deleted(report) == [twin.id]
    assert report.SpaceReclaimed == 0
    # One layer of its own on the shared one: only that layer counts.
    above = make_image(svc, [layer_tar("base", 1000), layer_tar("top", 40)])
    top = above.layer
    assert top is not None and top.parent is not None
    report = prune(svc)
    assert deleted(report) == [above.id, top.chain_id]
    assert report.SpaceReclaimed == top.size == 40
    assert present(svc, base) and svc.layers.lookup(top.parent.chain_id) is not None


def test_until_takes_timestamps_and_durations(svc: ImageService) -> None:
    old = make_image(svc, [layer_tar("o", 1)], created=OLD)
    new = make_image(svc, [layer_tar("n", 1)], created=NEW)
    undated = make_image(svc, [layer_tar("u", 1)], created="")
    report = prune(svc, until="2025-01-01T00:00:00Z")
    assert deleted(report)[0] == old.id
    assert present(svc, new) and present(svc, undated)
    old = make_image(svc, [layer_tar("o", 1)], created=OLD)
    report = prune(svc, until="24h")  # made in 2020: more than a day ago
    assert deleted(report)[0] == old.id
    assert present(svc, new) and present(svc, undated)  # not yet made; no date at all
    report = prune(svc, until=str(2**40))  # unix seconds, far ahead: the 2030 one too
    assert deleted(report)[0] == new.id
    assert present(svc, undated)


def test_label_filters(svc: ImageService) -> None:
    a = make_image(svc, [layer_tar("a", 1)], labels={"keep": "no", "team": "x"})
    b = make_image(svc, [layer_tar("b", 1)], labels={"keep": "yes"})
    c = make_image(svc, [layer_tar("c", 1)])
    report = prune(svc, label="team")
    assert deleted(report)[0] == a.id
    assert present(svc, b) and present(svc, c)
    prune(svc, label_not="keep=yes")
    assert present(svc, b) and not present(svc, c)
    assert prune(svc, label="keep=no").ImagesDeleted is None
    assert present(svc, b)


def test_an_image_without_a_config_is_not_filtered_by_label(svc: ImageService) -> None:
    # moby: `img.Config != nil && !matchLabels(...)`: no config section, no label check
    bare = make_image(svc, [layer_tar("a", 1)], with_config=False)
    prune(svc, label="anything")
    assert not present(svc, bare)


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"foo": ["bar"]}, "invalid filter 'foo'"),
        ({"reference": ["x"]}, "invalid filter 'reference'"),
        ({"dangling": ["maybe"]}, "invalid filter 'dangling=[maybe]'"),
        (
            {"until": ["abc"]},
            "invalid value for 'until' filter: failed to parse value as time or duration: \"abc\"",
        ),
        ({"until": ["1h", "2h"]}, "more than one until filter specified"),
    ],
)
def test_bad_filters_are_refused_and_nothing_goes(
    svc: ImageService, events: Events, flt: dict[str, list[str]], message: str
) -> None:
    img = make_image(svc, [layer_tar("a", 1)])
    with pytest.raises(errdefs.InvalidParameter) as e:
        svc.prune_images(Filters(flt))
    assert e.value.message == message
    assert present(svc, img)
    past, sub = events.subscribe(lambda m: m.action == "prune", lambda: None, 0)
    events.unsubscribe(sub)
    assert past == []
    assert svc.prune_running.acquire(blocking=False)  # released after the refusal


def test_one_prune_at_a_time(svc: ImageService) -> None:
    img = make_image(svc, [layer_tar("a", 1)])
    busy = pytest.raises(errdefs.Conflict, match="a prune operation is already running")
    with svc.prune_running, busy:
        prune(svc)
    assert present(svc, img)


def test_prune_events(svc: ImageService, events: Events) -> None:
    img = make_image(svc, [layer_tar("a", 123)], tag="gone:1", labels={"l": "v"})
    past, sub = events.subscribe(lambda m: True, lambda: None, 0)
    events.unsubscribe(sub)
    start = len(past)
    prune(svc, dangling="false")
    past, sub = events.subscribe(lambda m: True, lambda: None, 0)
    events.unsubscribe(sub)
    got = [(m.type, m.action, m.actor_id, m.attributes) for m in past[start:]]
    assert got == [
        ("image", "untag", img.id, {"l": "v", "name": img.id}),
        ("image", "delete", img.id, {"name": img.id}),
        ("image", "prune", "", {"reclaimed": "123"}),
    ]


def test_a_container_being_created_keeps_its_image(svc: ImageService, users: Users) -> None:
    img = make_image(svc, [layer_tar("a", 10)], tag="busy:1")
    layer = img.layer
    assert layer is not None
    cid = "f" * 64
    entered, release = threading.Event(), threading.Event()

    def init(path: Path, lowers: list[Path]) -> None:
        entered.set()
        assert release.wait(10)

    made = threading.Thread(target=svc.create_rw_layer, args=(cid, img, init))
    made.start()
    try:
        assert entered.wait(10)
        # The container side does not list it yet: the pin alone keeps the image.
        assert deleted(prune(svc, dangling="false")) == []
        with pytest.raises(errdefs.Conflict, match="container ffffffffffff is using"):
            svc.delete("busy:1", False, True)
        with pytest.raises(errdefs.Conflict, match="stopped container ffffffffffff"):
            svc.delete(img.id, False, True)
    finally:
        release.set()
        made.join()
    assert svc.layers.get_rw_layer(cid).parent is layer
    assert deleted(prune(svc, dangling="false")) == []  # made, still not listed
    users.by_image[img.id] = [(cid, False)]  # now listed: the pin gives way to it
    assert deleted(prune(svc, dangling="false")) == []
    assert svc.users() == {img.id: [(cid, False)]}
    users.by_image.clear()
    svc.release_rw_layer(cid)  # the container is removed
    report = prune(svc, dangling="false")
    assert deleted(report) == [img.id, layer.chain_id]
    assert report.SpaceReclaimed == 10


def test_an_image_deleted_before_its_container_stands_on_it_is_not_found(
    svc: ImageService,
) -> None:
    img = make_image(svc, [layer_tar("a", 10)], tag="racy:1")
    prune(svc, dangling="false")  # between the create's lookup and its layers
    with pytest.raises(errdefs.NotFound, match="No such image"):
        svc.create_rw_layer("e" * 64, img, lambda path, lowers: None)
    with pytest.raises(errdefs.NotFound):
        svc.layers.get_rw_layer("e" * 64)
    assert svc.users() == {}


# -- the build cache (``docker builder prune``) ------------------------------------------------


def built(svc: ImageService, img: Image) -> Image:
    svc.images.set_built_locally(img.id)
    return img


def test_build_cache_prune_takes_what_only_the_cache_holds(
    svc: ImageService, users: Users, tmp_path: Path
) -> None:
    step = built(svc, make_image(svc, [layer_tar("a", 100)]))
    final = built(
        svc, make_image(svc, [layer_tar("a", 100), layer_tar("f", 1)], tag="app:1", parent=step)
    )
    old_step = built(svc, make_image(svc, [layer_tar("o", 300)], created=OLD))
    left = built(svc, make_image(svc, [layer_tar("o", 300), layer_tar("p", 7)], parent=old_step))
    used = built(svc, make_image(svc, [layer_tar("u", 5)]))
    users.by_image[used.id] = [("c1", False)]
    loaded = make_image(svc, [layer_tar("l", 9)])  # pulled or loaded: never the cache's
    everything = lambda img: True  # noqa: E731

    # By default: what no named or used image stands on
    deleted, reclaimed = svc.prune_build_cache(everything=False, select=everything)
    assert deleted == sorted(i.id[7:] for i in (old_step, left))
    assert reclaimed == 307
    assert all(present(svc, i) for i in (step, final, used, loaded))

    # Everything: the steps under named images too; the named image loses its parent
    # (on disk as well) and nothing else
    deleted, reclaimed = svc.prune_build_cache(everything=True, select=everything)
    assert (deleted, reclaimed) == ([step.id[7:]], 0)
    assert svc.images.get(final.id) is final and final.parent == ""
    assert list(tmp_path.rglob(f"{final.id[7:]}/parent")) == []
    assert all(present(svc, i) for i in (final, used, loaded))
    assert svc.prune_build_cache(everything=True, select=everything) == ([], 0)
