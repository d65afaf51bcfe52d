"""The image service on its own, as the Daemon wires it: what it needs of the
container side (the events bus, which containers use an image) is injected, and
it publishes the image events itself, with the attributes dockerd gives them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.events import Events, Message
from berth.graphdriver import new_driver
from berth.image.service import ImageService
from berth.types.filters import Filters
from berth.types.image import ImportOptions


def _layer() -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    buf.seek(0)
    return buf


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


def _published(events: Events) -> list[tuple[str, str, str, dict[str, str]]]:
    past, sub = events.subscribe(lambda m: True, lambda: None, 0)
    events.unsubscribe(sub)
    return [(m.type, m.action, m.actor_id, m.attributes) for m in past if _image(m)]


def _image(m: Message) -> bool:
    return m.type == "image"


def test_import_tag_delete_publish_image_events(svc: ImageService, events: Events) -> None:
    options = ImportOptions(repo="hello", tag="1", message="Imported from -")
    svc.check_import(options)
    ident = svc.import_image(_layer(), options)
    assert svc.inspect("hello:1")["Comment"] == "Imported from -"
    svc.tag("hello:1", "hello", "2")
    layer = svc.get_image(ident).chain_id
    svc.delete("hello:1", False, True)
    items = svc.delete("hello:2", False, True)
    assert layer in {i.Deleted for i in items}  # the answer lists the layer; no event for it
    assert _published(events) == [
        ("image", "import", ident, {"name": ident}),
        ("image", "tag", ident, {"name": "hello:2"}),
        # dockerd's LogImageEvent(imgID, imgID, "untag"): the image, not the tag removed
        ("image", "untag", ident, {"name": ident}),
        ("image", "untag", ident, {"name": ident}),
        ("image", "delete", ident, {"name": ident}),
    ]


def test_image_events_carry_the_image_labels_while_it_exists(
    svc: ImageService, events: Events
) -> None:
    options = ImportOptions(repo="labelled", changes=["LABEL a=b name=mine"])
    ident = svc.import_image(_layer(), options)
    svc.tag("labelled", "other", "1")
    svc.delete("other:1", False, True)
    svc.delete("labelled", False, True)
    # as dockerd: the image's labels first, "name" over them; a delete finds no image
    assert _published(events) == [
        ("image", "import", ident, {"a": "b", "name": ident}),
        ("image", "tag", ident, {"a": "b", "name": "other:1"}),
        ("image", "untag", ident, {"a": "b", "name": ident}),
        ("image", "untag", ident, {"a": "b", "name": ident}),
        ("image", "delete", ident, {"name": ident}),
    ]


def test_a_bad_import_is_refused_before_the_body(svc: ImageService) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        svc.check_import(ImportOptions(platform="windows/amd64"))


def test_the_injected_users_count_and_conflict(svc: ImageService, users: Users) -> None:
    ident = svc.import_image(_layer(), ImportOptions(repo="used"))
    users.by_image[ident] = [("a" * 64, False), ("b" * 64, True)]
    (row,) = svc.list_images(Filters(), False, False)
    assert row.Containers == 2
    with pytest.raises(errdefs.Conflict, match="container aaaaaaaaaaaa is using"):
        svc.delete("used", False, True)
    users.by_image.clear()
    assert next(r.Deleted for r in svc.delete("used", False, True) if r.Deleted) == ident
