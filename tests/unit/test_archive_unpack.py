"""berth.archive.apply_layer: applying (hostile) layer tars into a directory."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import (
    OPAQUE_XATTR,
    ContainerFS,
    InvalidLayer,
    apply_layer,
    clean_member_name,
    detect_compression,
    digest_stream,
)

Entry = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = int(kw.pop("mtime", 1_600_000_000))  # type: ignore[call-overload]
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def reg(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    ti = _info(name, tarfile.REGTYPE, mode, **kw)
    ti.size = len(data)
    return ti, data


def dir_(name: str, mode: int = 0o755, **kw: object) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode, **kw), None


def sym(name: str, target: str, **kw: object) -> Entry:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw), None


def hard(name: str, target: str, mode: int = 0o644, **kw: object) -> Entry:
    return _info(name, tarfile.LNKTYPE, mode, linkname=target, **kw), None


def make_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    t = tmp_path / "target"
    t.mkdir()
    return t


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the target that no layer may touch."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim").write_bytes(b"precious")
    os.chmod(o / "victim", 0o600)
    os.utime(o / "victim", (1000, 1000))
    (o / "sub").mkdir()
    os.utime(o / "sub", (2000, 2000))
    return o


def tree(root: Path) -> dict[str, tuple[int, int, float, bytes | str | None]]:
    """Everything under *root*: mode, size, mtime and content or link target."""
    out: dict[str, tuple[int, int, float, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            content: bytes | str | None = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                content = Path(p).read_bytes()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime, content)
    return out


def apply(data: bytes, target: Path, whiteouts: str = "overlay") -> tuple[str, int]:
    return apply_layer(io.BytesIO(data), str(target), whiteouts)


def apply_hostile(
    data: bytes, target: Path, outside: Path, whiteouts: str = "overlay"
) -> InvalidLayer:
    before = tree(outside)
    with pytest.raises(InvalidLayer) as exc:
        apply(data, target, whiteouts)
    assert tree(outside) == before
    assert not (outside.parent / "escape").exists()
    return exc.value


# -- helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", "a"),
        ("./a/b", "a/b"),
        ("a//b/", "a/b"),
        ("a/./b", "a/b"),
        ("a/../b", "b"),
        (".", ""),
        ("./", ""),
        ("a/..", ""),
        ("..a", "..a"),
        ("a/..b", "a/..b"),
    ],
)
def test_clean_member_name(name: str, expected: str) -> None:
    assert clean_member_name(name) == expected


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "./../x", "/x", "/", "//etc/passwd"])
def test_clean_member_name_refuses_escapes(name: str) -> None:
    with pytest.raises(InvalidLayer):
        clean_member_name(name)


def test_invalid_layer_is_invalid_parameter() -> None:
    assert issubclass(InvalidLayer, errdefs.InvalidParameter)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"BZh91AY", "bzip2"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"ustar", "none"),
        (b"", "none"),
    ],
)
def test_detect_compression(head: bytes, kind: str) -> None:
    assert detect_compression(head) == kind


# -- regular content --------------------------------------------------------------


def test_apply_files_dirs_links_modes_owners_and_times(target: Path) -> None:
    data = make_tar(
        dir_("etc/", 0o750, mtime=1000, uid=10, gid=20),
        reg("etc/conf", b"hello", 0o640, mtime=2000, uid=1234, gid=5678),
        reg("etc/exe", b"#!/bin/sh\n", 0o4755, mtime=2100),
        sym("etc/link", "conf", mtime=3000, uid=7, gid=8),
        sym("abs", "/etc/passwd"),
        hard("etc/hard", "etc/conf", 0o640, mtime=2000, uid=1234, gid=5678),
        dir_("./empty/", 0o1777),
        reg("new/auto/file", b"x"),
    )
    digest, size = apply(data, target)
    assert digest == sha(data)
    assert size == len(b"hello") + len(b"#!/bin/sh\n") + 1 + len("conf") + len("/etc/passwd")

    etc = os.lstat(target / "etc")
    assert stat.S_ISDIR(etc.st_mode)
    assert stat.S_IMODE(etc.st_mode) == 0o750
    assert (etc.st_uid, etc.st_gid) == (10, 20)
    assert etc.st_mtime == 1000  # set after its children were written

    conf = os.lstat(target / "etc" / "conf")
    assert (target / "etc" / "conf").read_bytes() == b"hello"
    assert stat.S_IMODE(conf.st_mode) == 0o640
    assert (conf.st_uid, conf.st_gid) == (1234, 5678)
    assert conf.st_mtime == 2000
    assert conf.st_nlink == 2

    assert stat.S_IMODE(os.lstat(target / "etc" / "exe").st_mode) == 0o4755

    link = os.lstat(target / "etc" / "link")
    assert stat.S_ISLNK(link.st_mode)
    assert os.readlink(target / "etc" / "link") == "conf"
    assert (link.st_uid, link.st_gid) == (7, 8)
    assert link.st_mtime == 3000
    assert os.readlink(target / "abs") == "/etc/passwd"

    hard_st = os.lstat(target / "etc" / "hard")
    assert hard_st.st_ino == conf.st_ino

    assert stat.S_IMODE(os.lstat(target / "empty").st_mode) == 0o1777
    assert (target / "new" / "auto" / "file").read_bytes() == b"x"
    assert (target / "new" / "auto").is_dir()


def test_hardlink_with_absolute_linkname_is_relative_to_the_root(target: Path) -> None:
    apply(make_tar(reg("d/f", b"1"), hard("d/h", "/d/f")), target)
    assert os.stat(target / "d" / "h").st_ino == os.stat(target / "d" / "f").st_ino


def test_device_nodes_and_fifos(target: Path) -> None:
    null = _info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)
    blk = _info("dev/loop9", tarfile.BLKTYPE, 0o660, devmajor=7, devminor=9)
    fifo = _info("run/fifo", tarfile.FIFOTYPE, 0o620)
    apply(make_tar((null, None), (blk, None), (fifo, None)), target)
    st = os.lstat(target / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(target / "dev" / "loop9")
    assert stat.S_ISBLK(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 9)
    st = os.lstat(target / "run" / "fifo")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o620


def test_xattrs_from_pax_headers(target: Path) -> None:
    ti, data = reg("f", b"x")
    ti.pax_headers = {"SCHILY.xattr.user.berth": "value"}
    apply(make_tar((ti, data)), target)
    assert os.getxattr(target / "f", "user.berth") == b"value"


def test_later_entries_replace_earlier_ones(target: Path) -> None:
    (target / "was_dir").mkdir()
    (target / "was_dir" / "child").write_bytes(b"old")
    (target / "was_file").write_bytes(b"old")
    (target / "keep_dir").mkdir()
    (target / "keep_dir" / "child").write_bytes(b"kept")
    data = make_tar(
        reg("was_dir", b"now a file"),
        dir_("was_file", 0o700),
        dir_("keep_dir", 0o711),
        reg("twice", b"first"),
        reg("twice", b"second"),
    )
    apply(data, target)
    assert (target / "was_dir").read_bytes() == b"now a file"
    assert (target / "was_file").is_dir()
    assert stat.S_IMODE(os.lstat(target / "was_file").st_mode) == 0o700
    assert (target / "keep_dir" / "child").read_bytes() == b"kept"
    assert stat.S_IMODE(os.lstat(target / "keep_dir").st_mode) == 0o711
    assert (target / "twice").read_bytes() == b"second"


def test_root_entry_is_ignored(target: Path) -> None:
    os.chmod(target, 0o755)
    data = make_tar(dir_("./", 0o700, uid=99), reg("./a", b"1"))
    apply(data, target)
    assert (target / "a").read_bytes() == b"1"
    root = os.lstat(target)
    assert stat.S_IMODE(root.st_mode) == 0o755
    assert root.st_uid == 0
    assert sorted(os.listdir(target)) == ["a"]


# -- digests ------------------------------------------------------------------------


def _layer() -> bytes:
    return make_tar(dir_("d/"), reg("d/f", b"payload" * 1000), sym("d/l", "f"))


def _identity(b: bytes) -> bytes:
    return b


def _xz(b: bytes) -> bytes:
    return lzma.compress(b, format=lzma.FORMAT_XZ)


@pytest.mark.parametrize(
    "compress",
    [_identity, gzip.compress, bz2.compress, _xz],
    ids=["none", "gzip", "bzip2", "xz"],
)
def test_diff_id_is_sha256_of_the_uncompressed_tar(
    target: Path, compress: Callable[[bytes], bytes]
) -> None:
    plain = _layer()
    packed = compress(plain)
    digest, size = apply(packed, target)
    assert digest == sha(plain)
    assert size == 7000 + 1
    assert (target / "d" / "f").read_bytes() == b"payload" * 1000
    assert digest_stream(io.BytesIO(packed)) == (sha(plain), len(plain))


def test_diff_id_includes_bytes_after_the_end_of_archive(target: Path) -> None:
    plain = _layer() + b"\0" * 4096 + b"trailing"
    digest, _ = apply(plain, target)
    assert digest == sha(plain)


def test_cut_zstd_is_refused(target: Path) -> None:
    """zstd layers are decoded (tests/unit/test_compress.py); one cut short is the client's."""
    with pytest.raises(InvalidLayer, match="invalid or truncated layer tar: zstd: "):
        apply(b"\x28\xb5\x2f\xfd" + b"\0" * 100, target)


# -- whiteouts ---------------------------------------------------------------------


def test_overlay_whiteout_becomes_a_0_0_char_device(target: Path) -> None:
    (target / "d").mkdir()
    (target / "d" / "gone").write_bytes(b"x")
    (target / "d" / "gonedir").mkdir()
    (target / "d" / "gonedir" / "child").write_bytes(b"x")
    data = make_tar(reg("d/.wh.gone"), reg("d/.wh.gonedir"), reg(".wh.never_existed"))
    apply(data, target, "overlay")
    for p in (target / "d" / "gone", target / "d" / "gonedir", target / "never_existed"):
        st = os.lstat(p)
        assert stat.S_ISCHR(st.st_mode), p
        assert st.st_rdev == os.makedev(0, 0)
    assert not (target / "d" / ".wh.gone").exists()
    assert sorted(os.listdir(target / "d")) == ["gone", "gonedir"]


def test_overlay_opaque_dir_gets_the_xattr(target: Path) -> None:
    (target / "d").mkdir()
    (target / "d" / "old").write_bytes(b"x")
    apply(make_tar(dir_("d/"), reg("d/.wh..wh..opq"), reg("d/new", b"n")), target, "overlay")
    assert os.getxattr(target / "d", OPAQUE_XATTR) == b"y"
    # overlay leaves the lower content to the mount: nothing is deleted here
    assert sorted(os.listdir(target / "d")) == ["new", "old"]
    assert not (target / "d" / ".wh..wh..opq").exists()


def test_aufs_meta_whiteouts_are_ignored(target: Path) -> None:
    apply(make_tar(reg(".wh..wh.aufs"), reg("d/.wh..wh.orph"), reg("a", b"1")), target)
    assert sorted(os.listdir(target)) == ["a", "d"]
    assert os.listdir(target / "d") == []


@pytest.mark.parametrize("name", [".wh.", "d/.wh..", "d/.wh..."])
def test_bad_whiteout_names(target: Path, name: str) -> None:
    with pytest.raises(InvalidLayer, match="invalid whiteout entry"):
        apply(make_tar(reg(name)), target)


def test_delete_mode_whiteout_removes(target: Path) -> None:
    (target / "d").mkdir()
    (target / "d" / "gone").write_bytes(b"x")
    (target / "d" / "gonedir").mkdir()
    (target / "d" / "gonedir" / "child").write_bytes(b"x")
    (target / "d" / "stays").write_bytes(b"s")
    os.symlink("/etc", target / "d" / "gonelink")
    data = make_tar(
        reg("d/.wh.gone"), reg("d/.wh.gonedir"), reg("d/.wh.gonelink"), reg("d/.wh.absent")
    )
    apply(data, target, "delete")
    assert sorted(os.listdir(target / "d")) == ["stays"]
    assert os.path.isdir("/etc")


def test_delete_mode_opaque_keeps_what_the_layer_added(target: Path) -> None:
    (target / "d").mkdir()
    (target / "d" / "old").write_bytes(b"x")
    (target / "d" / "olddir").mkdir()
    (target / "d" / "olddir" / "f").write_bytes(b"x")
    (target / "d" / "replaced").write_bytes(b"old")
    (target / "other").write_bytes(b"untouched")
    data = make_tar(
        dir_("d/"),
        reg("d/new", b"n"),
        reg("d/replaced", b"new"),
        reg("d/.wh..wh..opq"),
        reg("d/after", b"a"),
    )
    apply(data, target, "delete")
    assert sorted(os.listdir(target / "d")) == ["after", "new", "replaced"]
    assert (target / "d" / "replaced").read_bytes() == b"new"
    assert (target / "other").read_bytes() == b"untouched"
    with pytest.raises(OSError):
        os.getxattr(target / "d", OPAQUE_XATTR)


def test_delete_mode_opaque_through_a_symlinked_parent(target: Path) -> None:
    (target / "d").mkdir()
    (target / "d" / "old").write_bytes(b"x")
    data = make_tar(reg("d/new", b"n"), sym("l", "d"), reg("l/.wh..wh..opq"))
    apply(data, target, "delete")
    assert sorted(os.listdir(target / "d")) == ["new"]


# -- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        reg("../escape", b"x"),
        reg("a/../../escape", b"x"),
        reg("/etc/berth-unit-should-not-exist", b"x"),
        dir_("../escape/"),
        sym("../escape", "/"),
        reg("../.wh.escape"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "dir", "symlink-name", "whiteout"],
)
def test_entry_names_outside_the_root_are_refused(
    target: Path, outside: Path, entry: Entry
) -> None:
    err = apply_hostile(make_tar(entry), target, outside)
    assert "invalid tar entry" in str(err)
    assert not os.path.exists("/etc/berth-unit-should-not-exist")


CLIMBING = [
    ("a", "../outside/victim"),
    ("a", ".."),
    ("sub/a", "../../outside"),
    ("sub/deeper/a", "../../../../../../../../../outside/victim"),
    ("sub/b", "./c/../../../outside/sub"),
]


@pytest.mark.parametrize("whiteouts", ["overlay", "delete"])
@pytest.mark.parametrize(("name", "link"), CLIMBING)
def test_symlink_climbing_above_the_root_is_stored_as_is(
    target: Path, outside: Path, name: str, link: str, whiteouts: str
) -> None:
    # dockerd extracts in a chroot, where such a link is legal: it resolves
    # inside the container at run time.  On the host it would reach "outside".
    before = tree(outside)
    apply(make_tar(sym(name, link, mtime=7)), target, whiteouts)
    assert os.readlink(target / name) == link
    assert os.lstat(target / name).st_mtime == 7
    assert tree(outside) == before


def test_absolute_symlink_to_a_host_path_is_stored_as_is(target: Path, outside: Path) -> None:
    before = tree(outside)
    apply(make_tar(sym("abs", str(outside / "victim")), sym("root", "/")), target)
    assert os.readlink(target / "abs") == str(outside / "victim")
    assert os.readlink(target / "root") == "/"
    assert tree(outside) == before


def _through_climbing_links() -> bytes:
    """Entries that go through "d" and "f", symlinks that climb into "outside" on the host."""
    return make_tar(
        reg("d/new", b"new"),
        reg("d/victim", b"mine"),
        dir_("d/sub/", mode=0o700, mtime=3),
        reg("d/sub/deep", b"deep"),
        hard("h", "d/victim"),
        hard("hf", "f", mode=0o777),  # a hard link to the symlink, not through it
        reg("d/.wh.gone"),
    )


@pytest.mark.parametrize("whiteouts", ["overlay", "delete"])
def test_entries_through_a_climbing_symlink_land_inside(
    target: Path, outside: Path, whiteouts: str
) -> None:
    """In one layer, or in a later one applied over a copy of it (vfs): resolved
    as a chroot resolves them, never on the host."""
    before = tree(outside)
    links = (sym("d", "../outside"), sym("f", "../../outside/victim"))
    (target / "outside").mkdir()
    (target / "outside" / "gone").write_bytes(b"in the layer")
    apply(make_tar(*links), target, whiteouts)
    apply(_through_climbing_links(), target, whiteouts)
    assert tree(outside) == before
    inner = target / "outside"
    assert (inner / "new").read_bytes() == b"new"
    assert (inner / "victim").read_bytes() == b"mine"
    assert (inner / "sub" / "deep").read_bytes() == b"deep"
    assert stat.S_IMODE(os.stat(inner / "sub").st_mode) == 0o700
    assert os.stat(inner / "sub").st_mtime == 3
    assert os.stat(target / "h").st_ino == os.stat(inner / "victim").st_ino
    assert os.readlink(target / "hf") == "../../outside/victim"
    if whiteouts == "overlay":
        assert stat.S_ISCHR(os.lstat(inner / "gone").st_mode)
    else:
        assert not os.path.lexists(inner / "gone")
    assert os.readlink(target / "d") == "../outside"


def test_climbing_symlink_then_entries_in_the_same_layer(target: Path, outside: Path) -> None:
    before = tree(outside)
    data = make_tar(
        sym("d", "../../../outside"),
        reg("d/victim", b"mine"),
        reg("d/.wh..wh..opq"),
        sym("d/sub", "../../../elsewhere"),
        reg("d/sub/x", b"x"),
    )
    apply(data, target)
    assert tree(outside) == before
    inner = target / "outside"
    assert (inner / "victim").read_bytes() == b"mine"
    assert os.getxattr(inner, OPAQUE_XATTR) == b"y"
    assert os.readlink(inner / "sub") == "../../../elsewhere"
    assert (target / "elsewhere" / "x").read_bytes() == b"x"  # made on the way
    assert not (outside.parent / "elsewhere").exists()


def test_replacing_a_climbing_symlink_replaces_the_link(target: Path, outside: Path) -> None:
    before = tree(outside)
    apply(make_tar(sym("f", "../outside/victim"), sym("d", "../outside/sub")), target)
    apply(make_tar(reg("f", b"a file now", mode=0o600), dir_("d/", mode=0o711)), target)
    assert tree(outside) == before
    assert (target / "f").read_bytes() == b"a file now"
    assert os.path.isdir(target / "d") and not os.path.islink(target / "d")
    assert stat.S_IMODE(os.stat(target / "d").st_mode) == 0o711


def test_relative_symlink_inside_is_fine(target: Path) -> None:
    apply(make_tar(sym("sub/deeper/a", "../../x"), sym("sub/b", "./c/../d")), target)
    assert os.readlink(target / "sub" / "deeper" / "a") == "../../x"
    assert os.readlink(target / "sub" / "b") == "./c/../d"


@pytest.mark.parametrize("link", ["../../etc/passwd", "../escape", "a/../../x"])
def test_hardlink_outside_is_refused(target: Path, outside: Path, link: str) -> None:
    err = apply_hostile(make_tar(hard("h", link)), target, outside)
    assert "invalid tar entry" in str(err)
    assert not os.path.lexists(target / "h")


def test_hardlink_to_a_host_file_via_absolute_name_is_refused(target: Path, outside: Path) -> None:
    victim = str(outside / "victim")
    err = apply_hostile(make_tar(hard("h", victim)), target, outside)
    assert "target not found in the layer" in str(err)
    assert os.stat(victim).st_nlink == 1


def test_hardlink_through_a_symlinked_dir_stays_inside(target: Path, outside: Path) -> None:
    before = tree(outside)
    data = make_tar(
        sym("l", str(outside)),
        reg(str(outside).lstrip("/") + "/victim", b"mine"),
        hard("h", "l/victim"),
    )
    apply(data, target)
    assert tree(outside) == before
    inner = target / str(outside).lstrip("/") / "victim"
    assert os.stat(target / "h").st_ino == os.stat(inner).st_ino
    assert os.stat(outside / "victim").st_nlink == 1


def test_write_through_symlink_to_root_lands_inside(target: Path) -> None:
    name = f"berth-unit-{uuid.uuid4().hex}"
    host = Path("/etc") / name
    try:
        apply(make_tar(sym("link", "/"), reg(f"link/etc/{name}", b"evil")), target)
        assert not host.exists()
        assert (target / "etc" / name).read_bytes() == b"evil"
        assert os.readlink(target / "link") == "/"
    finally:
        if host.exists():
            host.unlink()


def test_write_through_absolute_symlink_lands_inside(target: Path, outside: Path) -> None:
    before = tree(outside)
    data = make_tar(
        sym("link", str(outside)),
        reg("link/victim", b"overwritten?"),
        reg("link/evil", b"evil"),
        dir_("link/sub/newdir/"),
        sym("link2", str(outside / "victim")),
        reg("link2", b"replaces the symlink, not its target"),
    )
    apply(data, target)
    assert tree(outside) == before
    inner = target / str(outside).lstrip("/")
    assert (inner / "victim").read_bytes() == b"overwritten?"
    assert (inner / "evil").read_bytes() == b"evil"
    assert (inner / "sub" / "newdir").is_dir()
    assert not os.path.islink(target / "link2")
    assert (target / "link2").read_bytes() == b"replaces the symlink, not its target"


def test_write_through_relative_symlink_chain_lands_inside(target: Path, outside: Path) -> None:
    before = tree(outside)
    data = make_tar(
        dir_("a/b/"),
        sym("a/b/up", "../.."),  # the root itself: allowed
        sym("a/up2", "b/up/.."),  # root/.. is the root again
        reg("a/up2/escape", b"x"),
        reg("a/b/up/a/b/up/escape2", b"y"),
    )
    apply(data, target)
    assert tree(outside) == before
    assert not (outside.parent / "escape").exists()
    assert (target / "escape").read_bytes() == b"x"
    assert (target / "escape2").read_bytes() == b"y"


def test_whiteout_through_symlink_stays_inside(target: Path, outside: Path) -> None:
    before = tree(outside)
    data = make_tar(sym("l", str(outside)), reg("l/.wh.victim"), reg("l/.wh.sub"))
    apply(data, target, "delete")
    apply(
        make_tar(sym("m", str(outside)), reg("m/.wh.victim"), reg("m/.wh..wh..opq")),
        target,
        "overlay",
    )
    assert tree(outside) == before


def test_hardlink_to_symlink_does_not_chmod_its_target(target: Path, outside: Path) -> None:
    # chmod/utime on a hard link to a symlink must not follow it to the host.
    before = tree(outside)
    data = make_tar(
        sym("s", str(outside / "victim")),
        hard("h", "s", mode=0o777, mtime=5),
    )
    apply(data, target)
    assert tree(outside) == before
    assert stat.S_IMODE(os.stat(outside / "victim").st_mode) == 0o600
    assert os.readlink(target / "h") == str(outside / "victim")


def test_dir_mtime_is_not_set_through_a_later_symlink(target: Path, outside: Path) -> None:
    # "a/sub" gets its mtime at the end; by then "a" is a symlink to the host.
    before = tree(outside)
    data = make_tar(
        dir_("a/"),
        dir_("a/sub/", mtime=12345),
        sym("a", str(outside)),
    )
    apply(data, target)
    assert tree(outside) == before
    assert os.stat(outside / "sub").st_mtime == 2000


@pytest.mark.parametrize("whiteouts", ["overlay", "delete"])
def test_directory_replaced_behind_a_symlink_is_not_reused(
    target: Path, outside: Path, whiteouts: str
) -> None:
    # "a/x" is known to be a real directory; it is then whited out through the
    # symlink "b" and replaced (again through "b") by a symlink to the host.
    # A later "a/x/evil" must resolve the new symlink inside the target.
    before = tree(outside)
    data = make_tar(
        dir_("a/"),
        dir_("a/x/"),
        reg("a/x/first", b"1"),
        sym("b", "a"),
        reg("b/.wh.x"),
        sym("b/x", str(outside)),
        reg("a/x/evil", b"evil"),
        dir_("a/x/sub/"),
        reg("a/x/sub/evil2", b"evil"),
    )
    apply(data, target, whiteouts)
    assert tree(outside) == before
    inner = target / str(outside).lstrip("/")
    assert (inner / "evil").read_bytes() == b"evil"
    assert (inner / "sub" / "evil2").read_bytes() == b"evil"


def test_symlink_loop_is_refused(target: Path, outside: Path) -> None:
    err = apply_hostile(make_tar(sym("loop", "loop"), reg("loop/f", b"x")), target, outside)
    assert "too many levels of symbolic links" in str(err)


def _big_tar() -> bytes:
    return make_tar(reg("first", b"1"), reg("big", os.urandom(10_000)))


def test_truncated_tar_is_refused(target: Path, outside: Path) -> None:
    data = _big_tar()
    err = apply_hostile(data[:3000], target, outside)
    assert "invalid or truncated layer tar" in str(err)


def test_truncated_gzip_is_refused(target: Path, outside: Path) -> None:
    data = gzip.compress(_big_tar())
    apply_hostile(data[: len(data) // 2], target, outside)


@pytest.mark.parametrize(
    "data",
    [
        b"this is not a tar file at all" * 40,
        b"\x1f\x8b" + b"garbage" * 100,
        b"BZh9" + b"garbage" * 100,
        b"\xfd7zXZ\x00" + b"garbage" * 100,
        b"\x00" * 10,
        os.urandom(2048).replace(b"\x1f\x8b", b"xx"),
    ],
    ids=["text", "gzip", "bzip2", "xz", "short", "random"],
)
def test_garbage_is_refused(target: Path, outside: Path, data: bytes) -> None:
    apply_hostile(data, target, outside)
    assert os.listdir(target) == []


def test_digest_stream_of_garbage_gzip(target: Path) -> None:
    with pytest.raises(InvalidLayer):
        digest_stream(io.BytesIO(b"\x1f\x8b" + b"garbage" * 100))


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class _Trickle(io.RawIOBase):
    """A stream that returns at most 7 bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._chunks = _chunks(data, 7)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if not self._pending:
            self._pending = next(self._chunks, b"")
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@pytest.mark.parametrize("packed", [False, True])
def test_short_reads(target: Path, packed: bool) -> None:
    plain = _layer()
    data = gzip.compress(plain) if packed else plain
    digest, _ = apply_layer(_Trickle(data), str(target), "overlay")  # type: ignore[arg-type]
    assert digest == sha(plain)
    assert (target / "d" / "f").read_bytes() == b"payload" * 1000


def test_layers_and_docker_cp_create_entries_alike(tmp_path: Path) -> None:
    # One routine makes the entries of both (moby's createTarFile): same tree,
    # same owners, modes, times and xattrs, whichever front-end unpacked it.
    xattr_file, xattr_data = reg("d/x", b"attr", mode=0o600, uid=3, gid=4)
    xattr_file.pax_headers = {"SCHILY.xattr.user.berth": "v"}
    data = make_tar(
        dir_("d/", mode=0o750, uid=1, gid=2, mtime=1111),
        reg("d/f", b"data", mode=0o4755, uid=5, gid=6, mtime=2222),
        (xattr_file, xattr_data),
        sym("d/l", "f", uid=7, gid=8, mtime=3333),
        hard("d/h", "d/f", mtime=2222),
        (_info("d/fifo", tarfile.FIFOTYPE, 0o620, mtime=4444), None),
    )
    layer = tmp_path / "layer"
    layer.mkdir()
    apply(data, layer)
    copied = tmp_path / "copied"
    copied.mkdir()
    with ContainerFS(str(copied)) as fs:
        fs.extract(fs.extraction_dir("/"), io.BytesIO(data))

    def owners(root: Path) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(root)): (p.lstat().st_uid, p.lstat().st_gid) for p in root.rglob("*")
        }

    assert tree(layer) == tree(copied)
    assert owners(layer) == owners(copied)
    assert os.getxattr(layer / "d" / "x", "user.berth") == b"v"
    assert os.getxattr(copied / "d" / "x", "user.berth") == b"v"


def test_corrupt_deflate_data_is_refused(target: Path, outside: Path) -> None:
    """A valid gzip header over damaged deflate data is the client's fault, not a 500."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    err = apply_hostile(header + b"\xff" * 2000, target, outside)  # invalid block type
    assert "invalid or truncated layer tar" in str(err)
