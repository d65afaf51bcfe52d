"""The volume store: records on disk, crash safety, option volumes' mounts, copy-up."""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from berth import errdefs
from berth.events import Events, Message
from berth.volume.store import ANONYMOUS_LABEL, VolumeRecord, VolumeStore

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, chown)")


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ", 5)[4] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


class Users:
    """The daemon's answer to "who references this volume", settable by a test."""

    def __init__(self) -> None:
        self.by_volume: dict[str, list[str]] = {}

    def __call__(self, name: str) -> list[str]:
        return self.by_volume.get(name, [])


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "volumes"
    yield r
    # Leave no mount behind even when a test fails half-way.
    for mp in sorted(_mounts_under(tmp_path), key=len, reverse=True):
        os.system(f"umount -l '{mp}'")


@pytest.fixture
def store(root: Path, events: Events, users: Users) -> VolumeStore:
    return VolumeStore(root, events=events, users=users)


def _subscribe(events: Events) -> collections.deque[Message]:
    """The volume events published from now on."""
    _, sub = events.subscribe(lambda m: m.type == "volume", lambda: None, None)
    return sub.queue


def test_create_get_list_remove(store: VolumeStore, root: Path, events: Events) -> None:
    seen = _subscribe(events)
    rec = store.create("data", labels={"a": "b"})
    assert rec.name == "data"
    assert rec.driver == "local"
    assert rec.labels == {"a": "b"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rec.created)
    assert store.get("data") == rec
    assert [v.name for v in store.list()] == ["data"]
    data = root / "data" / "_data"
    assert store.path("data") == str(data)
    assert data.is_dir()
    assert data.stat().st_mode & 0o7777 == 0o755
    on_disk = msgspec.json.decode((root / "data" / "metadata.json").read_bytes(), type=VolumeRecord)
    assert on_disk == rec

    store.remove("data")
    assert not (root / "data").exists()
    assert store.list() == []
    with pytest.raises(errdefs.NotFound, match=r"^get data: no such volume$"):
        store.get("data")
    with pytest.raises(errdefs.NotFound):
        store.remove("data")
    assert [(m.action, m.actor_id, m.attributes) for m in seen] == [
        ("create", "data", {"driver": "local"}),
        ("destroy", "data", {"driver": "local"}),
    ]
    assert os.listdir(root) == []


def test_records_survive_a_restart(store: VolumeStore, root: Path, events: Events) -> None:
    a = store.create("aa", labels={"x": "1"}, options={"type": "tmpfs", "device": "tmpfs"})
    b = store.create(anonymous=True)
    again = VolumeStore(root, events=events, users=lambda _: [])
    assert again.list() == sorted([a, b], key=lambda r: r.name)


def test_generated_and_anonymous(store: VolumeStore) -> None:
    rec = store.create(anonymous=True, labels={"k": "v"})
    assert re.fullmatch(r"[0-9a-f]{64}", rec.name)
    assert rec.labels == {"k": "v", ANONYMOUS_LABEL: ""}
    other = store.create()
    assert other.name != rec.name
    assert other.labels == {}


def test_create_is_idempotent(store: VolumeStore, events: Events) -> None:
    first = store.create("vol", labels={"a": "1"})
    seen = _subscribe(events)
    again = store.create("vol", labels={"b": "2"}, driver="")
    assert again == first
    assert again.labels == {"a": "1"}
    assert list(seen) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a", "create a: volume name is too short, names should be at least two alphanumeric"),
        ("../x", 'create ../x: "../x" includes invalid characters for a local volume name'),
        ("a/b", 'create a/b: "a/b" includes invalid characters'),
        (".hidden", 'create .hidden: ".hidden" includes invalid characters'),
    ],
)
def test_bad_names(store: VolumeStore, root: Path, name: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        store.create(name)
    assert str(e.value).startswith(message)
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": "1m"}, 'create vol: invalid option: "size"'),
        ({"type": "tmpfs"}, 'create vol: missing required option: "device"'),
        ({"device": "/dev/sda"}, 'create vol: missing required option: "type"'),
        ({"o": "size=1m"}, 'create vol: missing required option: "device"'),
        ({"o": "bind", "device": "/x"}, 'create vol: missing required option: "type"'),
    ],
)
def test_bad_options(store: VolumeStore, root: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        store.create("vol", options=options)
    assert str(e.value) == message
    assert os.listdir(root) == []


def test_unknown_driver(store: VolumeStore, root: Path) -> None:
    with pytest.raises(errdefs.NotFound) as e:
        store.create("vol", driver="nfsplug")
    assert str(e.value) == (
        'create vol: error looking up volume plugin nfsplug: plugin "nfsplug" not found'
    )
    assert os.listdir(root) == []


def test_existing_volume_of_another_driver_conflicts(root: Path, events: Events) -> None:
    (root / "plg").mkdir(parents=True)
    (root / "plg" / "_data").mkdir()
    rec = VolumeRecord(name="plg", driver="other", created="2024-01-01T00:00:00Z")
    (root / "plg" / "metadata.json").write_bytes(msgspec.json.encode(rec))
    store = VolumeStore(root, events=events, users=lambda _: [])
    with pytest.raises(errdefs.Conflict, match="volume name must be unique"):
        store.create("plg")
    with pytest.raises(errdefs.NotFound, match='plugin "other" not found'):
        store.mount("plg", "c1")


def test_in_use_is_refused(store: VolumeStore, users: Users, root: Path) -> None:
    store.create("vol")
    users.by_volume["vol"] = ["c1", "c2"]
    with pytest.raises(errdefs.Conflict) as e:
        store.remove("vol")
    assert str(e.value) == "remove vol: volume is in use - [c1, c2]"
    with pytest.raises(errdefs.Conflict):
        store.remove("vol", force=True)
    assert (root / "vol" / "_data").is_dir()
    users.by_volume.clear()
    # a mount the daemon has not recorded yet counts too
    store.mount("vol", "c3")
    with pytest.raises(errdefs.Conflict, match=r"in use - \[c3\]"):
        store.remove("vol")
    store.unmount("vol", "c3")
    store.remove("vol")
    assert not (root / "vol").exists()


def test_crash_leftovers_swept_and_legacy_adopted(root: Path, events: Events) -> None:
    root.mkdir()
    (root / ".tmp-half-1234" / "_data").mkdir(parents=True)
    (root / ".trash-gone-abcd" / "_data").mkdir(parents=True)
    (root / ".trash-gone-abcd" / "_data" / "f").write_text("x")
    legacy = root / "old" / "_data"
    legacy.mkdir(parents=True)
    (legacy / "keep").write_text("kept")
    os.utime(root / "old", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (root / "junk").mkdir()  # neither metadata nor _data: not a volume
    (root / "metadata.db").write_bytes(b"")  # dockerd's file, say: not a volume

    store = VolumeStore(root, events=events, users=lambda _: [])
    assert sorted(os.listdir(root)) == ["junk", "metadata.db", "old"]
    assert [v.name for v in store.list()] == ["old"]
    old = store.get("old")
    assert old.driver == "local"
    assert old.created == "2020-09-13T12:26:40.123456789Z"
    assert (legacy / "keep").read_text() == "kept"
    # adopted for good: the record is written, the time stays
    assert (root / "old" / "metadata.json").is_file()
    assert VolumeStore(root, events=events, users=lambda _: []).get("old") == old


def test_remove_never_follows_a_symlink_out(store: VolumeStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    store.create("vol")
    data = Path(store.path("vol"))
    (data / "link").symlink_to(outside)
    (data / "file-link").symlink_to(outside / "precious")
    store.remove("vol")
    assert (outside / "precious").read_text() == "keep me"
    assert not (root / "vol").exists()


@root_only
def test_tmpfs_volume_mounted_by_first_user_unmounted_by_last(
    store: VolumeStore, root: Path
) -> None:
    store.create("tmp", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    data = root / "tmp" / "_data"
    assert _mounts_under(data) == []
    assert store.mount("tmp", "c1") == str(data)
    assert _mounts_under(data) == [str(data)]
    assert store.mount("tmp", "c2") == str(data)
    assert _mounts_under(data) == [str(data)]  # not twice
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split(" ")[4] == str(data))
    assert " - tmpfs tmpfs " in line
    assert "size=1024k" in line
    (data / "f").write_text("in tmpfs")
    store.unmount("tmp", "c1")
    assert _mounts_under(data) == [str(data)]
    store.unmount("tmp", "c2")
    assert _mounts_under(data) == []
    assert not (data / "f").exists()
    store.unmount("tmp", "c2")  # again: nothing to undo
    store.unmount("nosuch", "c2")


@root_only
def test_bind_volume_of_a_host_dir(store: VolumeStore, root: Path, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "hello").write_text("from host")
    store.create("bnd", options={"type": "none", "o": "bind", "device": str(host)})
    data = Path(store.mount("bnd", "c1"))
    assert (data / "hello").read_text() == "from host"
    (data / "new").write_text("from container")
    assert (host / "new").read_text() == "from container"
    # removal of a mounted volume is refused while in use, and never touches the bind source
    with pytest.raises(errdefs.Conflict):
        store.remove("bnd")
    store.unmount("bnd", "c1")
    assert _mounts_under(data) == []
    store.create("ro", options={"type": "none", "o": "bind,ro", "device": str(host)})
    ro = Path(store.mount("ro", "c1"))
    with pytest.raises(OSError):
        (ro / "nope").write_text("x")
    store.unmount("ro", "c1")
    store.remove("bnd")
    store.remove("ro")
    assert sorted(os.listdir(host)) == ["hello", "new"]


@root_only
def test_remove_unmounts_a_leftover_mount_never_deleting_through_it(
    root: Path, events: Events, tmp_path: Path
) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "precious").write_text("keep me")
    store = VolumeStore(root, events=events, users=lambda _: [])
    store.create("bnd", options={"type": "none", "o": "bind", "device": str(host)})
    store.mount("bnd", "c1")
    # berthd dies with the volume mounted; the container is gone after the restart
    again = VolumeStore(root, events=events, users=lambda _: [])
    again.remove("bnd")
    assert (host / "precious").read_text() == "keep me"
    assert _mounts_under(root) == []
    assert not (root / "bnd").exists()


@root_only
def test_mounted_data_adopted_after_restart(root: Path, events: Events) -> None:
    store = VolumeStore(root, events=events, users=lambda _: [])
    store.create("tmp", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    data = Path(store.mount("tmp", "c1"))
    (data / "f").write_text("still here")

    again = VolumeStore(root, events=events, users=lambda _: [])
    assert again.mount("tmp", "c1") == str(data)
    assert _mounts_under(data) == [str(data)]  # adopted, not mounted a second time
    assert (data / "f").read_text() == "still here"
    again.unmount("tmp", "c1")
    assert _mounts_under(data) == []


@root_only
def test_mount_failure_is_reported_and_not_counted(store: VolumeStore, root: Path) -> None:
    store.create("bad", options={"type": "none", "o": "bind", "device": "/nonexistent/dir"})
    with pytest.raises(errdefs.System, match=r"^failed to mount local volume: "):
        store.mount("bad", "c1")
    store.remove("bad")  # the failed mount left no user behind


@root_only
def test_copy_up_keeps_owner_mode_links(store: VolumeStore, tmp_path: Path) -> None:
    src = tmp_path / "rootfs" / "var" / "lib" / "app"
    (src / "sub").mkdir(parents=True)
    os.chown(src, 1000, 1000)
    os.chmod(src, 0o750)
    (src / "sub" / "f").write_text("image content")
    os.chown(src / "sub" / "f", 1234, 5678)
    os.chmod(src / "sub" / "f", 0o640)
    os.utime(src / "sub" / "f", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    os.link(src / "sub" / "f", src / "hard")
    (src / "abs").symlink_to("/etc/shadow")
    (src / "rel").symlink_to("sub/f")
    store.create("vol")
    data = Path(store.path("vol"))

    assert store.copy_up("vol", str(src)) is True
    st = (data / "sub" / "f").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert st.st_mtime_ns == 1_500_000_000_000_000_000
    assert (data / "sub" / "f").read_text() == "image content"
    assert os.readlink(data / "abs") == "/etc/shadow"
    assert os.readlink(data / "rel") == "sub/f"
    assert (data / "hard").stat().st_ino == st.st_ino
    top = data.stat()
    assert (top.st_uid, top.st_gid, top.st_mode & 0o7777) == (1000, 1000, 0o750)
    assert store.size("vol") == len("image content") + len("/etc/shadow") + len("sub/f")

    # a volume with content is never copied into again
    (src / "later").write_text("new in image")
    assert store.copy_up("vol", str(src)) is False
    assert not (data / "later").exists()


def test_copy_up_does_nothing_without_content(store: VolumeStore, tmp_path: Path) -> None:
    store.create("vol")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert store.copy_up("vol", str(empty)) is False
    assert store.copy_up("vol", str(tmp_path / "missing")) is False
    link = tmp_path / "link"
    link.symlink_to(tmp_path)  # a symlink as source is not followed
    assert store.copy_up("vol", str(link)) is False
    assert os.listdir(store.path("vol")) == []
    with pytest.raises(errdefs.NotFound):
        store.copy_up("nosuch", str(tmp_path))


def test_size(store: VolumeStore) -> None:
    store.create("vol")
    data = Path(store.path("vol"))
    assert store.size("vol") == 0
    (data / "d").mkdir()
    (data / "d" / "a").write_bytes(b"x" * 1000)
    os.link(data / "d" / "a", data / "b")  # counted once
    (data / "c").write_bytes(b"y" * 24)
    assert store.size("vol") == 1024
    assert store.size("nosuch") == -1
