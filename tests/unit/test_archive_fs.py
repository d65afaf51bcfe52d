"""berth.archive.ContainerFS: ``docker cp``'s path rules, stats, archives and hostile tars.

The tests run on a directory tree standing in for a container's root, with a
volume and a bind-mounted file over it, and a host directory next to it that
nothing may touch.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import (
    GO_MODE_CHAR_DEVICE,
    GO_MODE_DEVICE,
    GO_MODE_DIR,
    GO_MODE_NAMED_PIPE,
    GO_MODE_SETGID,
    GO_MODE_SETUID,
    GO_MODE_STICKY,
    GO_MODE_SYMLINK,
    ContainerFS,
    Mount,
    container_abs_path,
    go_base,
    go_clean,
    go_file_mode,
    go_join,
    go_split,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="extraction sets owners (needs root)")


# -- Go's path rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("etc/passwd", "/etc/passwd"),
        ("/etc/", "/etc/"),
        ("/etc/.", "/etc/."),
        ("/etc/./", "/etc/./"),  # as Go's filepath.Base, "/etc/./" ends in "."
        ("/etc//x/../y", "/etc/y"),
        (".", "/."),
        ("/", "/"),
        ("/..", "/"),
        ("../../etc", "/etc"),
        ("//x", "/x"),
    ],
)
def test_container_abs_path_keeps_a_trailing_slash_or_dot(path: str, expected: str) -> None:
    assert container_abs_path(path) == expected


def test_go_path_helpers() -> None:
    assert go_clean("") == "."
    assert go_clean("//a//b/") == "/a/b"
    assert go_join("/dest", "/etc/x") == "/dest/etc/x"  # an absolute part does not reset
    assert go_join("/dest", "") == "/dest"
    assert go_base("/a/b/") == "b"
    assert go_base("/") == "/"
    assert go_base("/a/.") == "."
    assert go_split("/a/b") == ("/a/", "b")
    assert go_split("/a/") == ("/a/", "")


def test_go_file_mode_bits() -> None:
    assert go_file_mode(stat.S_IFREG | 0o644) == 0o644
    assert go_file_mode(stat.S_IFDIR | 0o755) == GO_MODE_DIR | 0o755 == 2147484141
    assert go_file_mode(stat.S_IFLNK | 0o777) == GO_MODE_SYMLINK | 0o777 == 134218239
    assert go_file_mode(stat.S_IFCHR | 0o666) == GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE | 0o666
    assert go_file_mode(stat.S_IFBLK | 0o660) == GO_MODE_DEVICE | 0o660
    assert go_file_mode(stat.S_IFIFO | 0o600) == GO_MODE_NAMED_PIPE | 0o600
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | stat.S_ISGID | 0o755) == (
        GO_MODE_SETUID | GO_MODE_SETGID | 0o755
    )
    assert go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == (
        GO_MODE_DIR | GO_MODE_STICKY | 0o777
    )


# -- a container root on disk ----------------------------------------------------------------
@pytest.fixture
def tree() -> Iterator[Path]:
    """``root`` (the container's files), ``vol`` and ``hostfile`` (mount sources) and
    ``host`` (what must never be touched)."""
    base = Path(tempfile.mkdtemp(prefix="berth-fs-"))
    root = base / "root"
    for d in ("etc", "tmp", "data", "a/b"):
        (root / d).mkdir(parents=True)
    (root / "etc/hosts").write_text("image hosts\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.link(root / "etc/passwd", root / "etc/passwd-")
    os.symlink("/etc", root / "link")
    os.symlink("../../etc", root / "a/b/up")  # climbs to / and beyond: clamped at the root
    os.symlink("../../../../../../..", root / "tmp/out")
    os.symlink("/nowhere/file", root / "dangling")
    (base / "vol").mkdir()
    (base / "vol/inside").write_text("volume data\n")
    (base / "hostfile").write_text("bind-mounted file\n")
    (base / "host").mkdir()
    (base / "host/secret").write_text("host secret\n")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def open_fs(base: Path, *, readonly: bool = False, vol_rw: bool = True) -> ContainerFS:
    return ContainerFS(
        str(base / "root"),
        [
            Mount("/data", str(base / "vol"), vol_rw),
            Mount("/etc/hosts", str(base / "hostfile"), True),
            Mount("/mnt/new", str(base / "vol"), True),  # its parent is not in the root
        ],
        readonly_rootfs=readonly,
    )


def tar_of(fs: ContainerFS, path: str) -> list[tarfile.TarInfo]:
    r = fs.resolve(path)
    rfd, wfd = os.pipe()
    chunks: list[bytes] = []

    def read() -> None:
        while data := os.read(rfd, 1 << 16):
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        fs.archive(r, wfd)
    finally:
        os.close(wfd)
        reader.join()
        os.close(rfd)
    data = b"".join(chunks)
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        for m in members:
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                content = f.read().decode("utf-8", "surrogateescape")
                m.pax_headers = {**m.pax_headers, "test.data": content}
        return members


def test_stat_follows_the_parent_not_the_last_component(tree: Path) -> None:
    with open_fs(tree) as fs:
        st = fs.path_stat(fs.resolve("/link"))
        assert st.name == "link"
        assert st.mode == GO_MODE_SYMLINK | 0o777
        assert st.link_target == "/etc"
        st = fs.path_stat(fs.resolve("/link/"))  # a trailing slash asks for the directory
        assert (st.name, st.mode & GO_MODE_DIR, st.link_target) == ("link", GO_MODE_DIR, "")
        assert fs.path_stat(fs.resolve("/link/.")).name == "."
        assert fs.path_stat(fs.resolve("/")).name == "/"
        st = fs.path_stat(fs.resolve("/a/b/up/passwd"))  # ../.. above the root stays at /
        assert (st.name, st.size) == ("passwd", len("root:x:0:0::/root:/bin/sh\n"))
        assert fs.path_stat(fs.resolve("/dangling")).link_target == "/nowhere/file"
        assert fs.resolve("/tmp/out/etc/passwd").entry.path == "/etc/passwd"


def test_stat_errors(tree: Path) -> None:
    with open_fs(tree) as fs:
        with pytest.raises(FileNotFoundError):
            fs.resolve("/missing")
        with pytest.raises(FileNotFoundError):
            fs.resolve("/missing/x")
        with pytest.raises(NotADirectoryError):
            fs.resolve("/etc/passwd/x")
        with pytest.raises(NotADirectoryError):
            fs.resolve("/etc/passwd/")
        os.symlink("loop", tree / "root/loop")
        with pytest.raises(OSError) as e:
            fs.resolve("/loop/x")
        assert e.value.errno == errno.ELOOP


@needs_root  # creating the missing mount point /mnt/new chowns it to root
def test_mount_points_show_their_sources(tree: Path) -> None:
    with open_fs(tree) as fs:
        st = fs.path_stat(fs.resolve("/etc/hosts"))
        assert st.size == len("bind-mounted file\n")
        assert fs.path_stat(fs.resolve("/data/inside")).size == len("volume data\n")
        # Through a symlink into the mount, and a mount whose parent the image lacks.
        assert fs.path_stat(fs.resolve("/link/hosts")).size == len("bind-mounted file\n")
        assert fs.path_stat(fs.resolve("/mnt/new/inside")).name == "inside"
        names = {m.name: m for m in tar_of(fs, "/etc")}
        assert names["etc/hosts"].pax_headers["test.data"] == "bind-mounted file\n"
        assert "data/inside" in {m.name for m in tar_of(fs, "/")} | {
            m.name.lstrip("/") for m in tar_of(fs, "/")
        }


def test_archive_names_follow_the_requested_path(tree: Path) -> None:
    with open_fs(tree) as fs:
        assert [(m.name, m.type) for m in tar_of(fs, "/etc/passwd")] == [
            ("passwd", tarfile.REGTYPE)
        ]
        assert [m.name for m in tar_of(fs, "/link")] == ["link"]
        etc = tar_of(fs, "/link/")  # the directory, named as asked
        assert [m.name for m in etc] == ["link", "link/hosts", "link/passwd", "link/passwd-"]
        assert etc[0].isdir()
        hard = etc[3]
        assert hard.type == tarfile.LNKTYPE and hard.linkname == "link/passwd"
        assert [m.name for m in tar_of(fs, "/etc/.")][:2] == [".", "./hosts"]
        top = [m.name for m in tar_of(fs, "/")]
        # tarfile drops the trailing slash of "/": the root entry reads as "".
        assert top[0] == "" and "/etc/passwd" in top and "/data/inside" in top
        symlinks = {m.name: m.linkname for m in tar_of(fs, "/") if m.issym()}
        assert symlinks["/link"] == "/etc"


def test_archive_never_leaves_the_root(tree: Path) -> None:
    (tree / "root/tmp/host").symlink_to(tree / "host")  # absolute host path: in the container
    with open_fs(tree) as fs:
        with pytest.raises(FileNotFoundError):
            fs.resolve("/tmp/host/secret")  # means <root>/<base>/host/secret
        names = [m.name for m in tar_of(fs, "/tmp/out/")]  # ../../.. clamps to the root
        assert "tmp/out" not in names and "out/etc/passwd" in names
        assert not any("secret" in n for n in names)


def test_archive_of_a_big_file_is_complete(tree: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tree / "root/tmp/big").write_bytes(data)
    with open_fs(tree) as fs:
        (m,) = tar_of(fs, "/tmp/big")
        assert m.size == len(data)
        assert m.pax_headers["test.data"].encode("utf-8", "surrogateescape") == data


# -- extraction ------------------------------------------------------------------------------
def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 1_700_000_000
    info.uid = info.gid = 0
    return info, data


def kind(name: str, type_: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.mode = 0o755
    info.mtime = 1_600_000_000
    return info, None


def hardlink(name: str, target: str, mode: int, mtime: int) -> tuple[tarfile.TarInfo, None]:
    info, _ = kind(name, tarfile.LNKTYPE, target)
    info.mode, info.mtime = mode, mtime  # a link's header repeats its inode's metadata
    return info, None


def extract(fs: ContainerFS, path: str, data: bytes, **kwargs: object) -> None:
    fs.extract(fs.extraction_dir(path), io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


@needs_root
def test_extract_files_dirs_links_and_times(tree: Path) -> None:
    data = make_tar(
        kind("dir", tarfile.DIRTYPE),
        reg("dir/file", b"hello", 0o4755),
        kind("dir/sym", tarfile.SYMTYPE, "file"),
        hardlink("dir/hard", "dir/file", 0o4755, 1_700_000_000),
        reg("implied/deep/file"),
        kind("fifo", tarfile.FIFOTYPE),
    )
    with open_fs(tree) as fs:
        extract(fs, "/tmp", data)
    root = tree / "root/tmp"
    assert (root / "dir/file").read_bytes() == b"hello"
    st = os.stat(root / "dir/file")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_mtime == 1_700_000_000
    assert st.st_nlink == 2 and os.stat(root / "dir/hard").st_ino == st.st_ino
    assert os.readlink(root / "dir/sym") == "file"
    assert os.stat(root / "dir").st_mtime == 1_600_000_000  # set after its entries
    implied = os.stat(root / "implied")
    assert stat.S_IMODE(implied.st_mode) == 0o755 and (implied.st_uid, implied.st_gid) == (0, 0)
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)


@needs_root
def test_extract_over_what_is_there_and_modes_the_umask_would_take(tree: Path) -> None:
    """Entries are created first and what holds the name is looked at only then: each
    kind of entry replaces a file, and owner and mode come out as the tar says even
    where creating alone would not give them (a setgid parent, the umask)."""
    root = tree / "root/tmp"
    (root / "sgid").mkdir()
    os.chown(root / "sgid", 0, 50)
    os.chmod(root / "sgid", 0o2775)
    for name in ("f", "d", "s", "h"):
        (root / name).write_text("old")
    old_umask = os.umask(0o077)
    try:
        with open_fs(tree) as fs:
            extract(
                fs,
                "/tmp",
                make_tar(
                    reg("f", b"new file", 0o666),
                    kind("d", tarfile.DIRTYPE),
                    kind("s", tarfile.SYMTYPE, "f"),
                    hardlink("h", "f", 0o666, 1_700_000_000),
                    reg("sgid/inherits", b"x", 0o600),  # the umask takes nothing here
                    reg("twice", b"first"),
                    reg("twice", b"second", 0o2755),
                ),
                chown=(0, 0),
            )
    finally:
        os.umask(old_umask)
    st = os.stat(root / "f")
    assert (root / "f").read_bytes() == b"new file" and stat.S_IMODE(st.st_mode) == 0o666
    assert os.stat(root / "h").st_ino == st.st_ino
    assert stat.S_ISDIR(os.lstat(root / "d").st_mode)
    assert os.readlink(root / "s") == "f"
    inherits = os.stat(root / "sgid/inherits")
    assert (inherits.st_uid, inherits.st_gid, stat.S_IMODE(inherits.st_mode)) == (0, 0, 0o600)
    assert (root / "twice").read_bytes() == b"second"
    assert stat.S_IMODE(os.stat(root / "twice").st_mode) == 0o2755


@needs_root
def test_extract_follows_symlinks_inside_the_container_only(tree: Path) -> None:
    (tree / "root/tmp/hostlink").symlink_to(tree / "host")  # an absolute host path
    with open_fs(tree) as fs:
        with pytest.raises(FileNotFoundError):  # it means <root><tree>/host, which is not there
            fs.extraction_dir("/tmp/hostlink/")
        # /link -> /etc is <root>/etc; ../../.. from /tmp/out is the container's root.
        extract(fs, "/link", make_tar(reg("new", b"via link")))
        extract(fs, "/tmp/out", make_tar(reg("top", b"clamped")))
    assert (tree / "root/etc/new").read_bytes() == b"via link"
    assert (tree / "root/top").read_bytes() == b"clamped"
    assert (tree / "host/secret").read_text() == "host secret\n"
    assert sorted(os.listdir(tree / "host")) == ["secret"]


@needs_root
def test_links_climbing_to_a_host_path_resolve_in_the_container(tree: Path) -> None:
    """An image may hold ``a/b/esc -> ../../../host/secret``: from ``<base>/root/a/b`` on the
    host that is ``<base>/host/secret``; in the container it is ``/host/secret``."""
    root = tree / "root"
    os.symlink("../../../host/secret", root / "a/b/esc")
    os.symlink("../../../host", root / "a/b/escdir")
    os.symlink("../../../host/vol", root / "a/b/escmount")
    (root / "host").mkdir()
    (root / "host/secret").write_text("container secret\n")
    mounts = [Mount("/a/b/escmount", str(tree / "vol"), True)]
    with ContainerFS(str(root), mounts) as fs:
        st = fs.path_stat(fs.resolve("/a/b/esc"))
        assert st.link_target == "/host/secret"  # what ``docker cp -L`` asks for next
        (m,) = tar_of(fs, "/a/b/esc")
        assert (m.name, m.issym(), m.linkname) == ("esc", True, "../../../host/secret")
        (m,) = tar_of(fs, st.link_target)
        assert m.pax_headers["test.data"] == "container secret\n"
        assert fs.resolve("/a/b/escdir/secret").entry.path == "/host/secret"
        extract(fs, "/a/b/escdir", make_tar(reg("new", b"through the link")))
        # The mount's destination resolves in the root too, and is made there.
        assert fs.path_stat(fs.resolve("/a/b/escmount/inside")).size == len("volume data\n")
        assert fs.path_stat(fs.resolve("/host/vol/inside")).size == len("volume data\n")
    assert (root / "host/new").read_bytes() == b"through the link"
    assert (root / "host/vol").is_dir()
    assert sorted(os.listdir(tree / "host")) == ["secret"]
    assert (tree / "host/secret").read_text() == "host secret\n"


@needs_root
@pytest.mark.parametrize(
    "members",
    [
        [reg("/abs/evil", b"absolute names land below the destination")],
        [kind("a", tarfile.SYMTYPE, "/"), reg("a/tmp/through", b"inside the root")],
        [kind("b", tarfile.SYMTYPE, "/etc"), reg("b/../x", b"lexically x")],
    ],
)
def test_hostile_names_stay_in_the_container(
    tree: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    (tree / "root/tmp/dst").mkdir()
    with open_fs(tree) as fs:
        extract(fs, "/tmp/dst", make_tar(*members))
    written = [p for p in (tree / "root").rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(p.is_relative_to(tree / "root") for p in written)
    assert sorted(os.listdir(tree / "host")) == ["secret"]
    assert (tree / "host/secret").read_text() == "host secret\n"
    assert not (tree / "abs").exists() and not Path("/abs/evil").exists()


@needs_root
@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([reg("../evil")], "is outside of"),
        ([reg("x/../../evil")], "is outside of"),
        ([kind("esc", tarfile.SYMTYPE, "../../..")], "invalid symlink"),
        ([kind("esc", tarfile.SYMTYPE, "sub/../../x")], "invalid symlink"),
        ([kind("h", tarfile.LNKTYPE, "../../etc/passwd")], "invalid hardlink"),
        ([kind("h", tarfile.LNKTYPE, "/missing")], "invalid hardlink"),
        ([kind("dev", b"V")], "unhandled tar header type"),
    ],
)
def test_hostile_tars_are_refused(
    tree: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    (tree / "root/tmp/dst").mkdir()
    with open_fs(tree) as fs, pytest.raises(errdefs.InvalidParameter) as e:
        extract(fs, "/tmp/dst", make_tar(*members))
    assert message in str(e.value)
    assert not (tree / "root/tmp/evil").exists() and not (tree / "evil").exists()
    assert sorted(os.listdir(tree / "host")) == ["secret"]


@needs_root
def test_extract_through_a_preexisting_escape_link_is_clamped(tree: Path) -> None:
    # A container process may plant ../.. links: they resolve at the container's root.
    with open_fs(tree) as fs:
        extract(fs, "/tmp", make_tar(reg("out/etc/planted", b"in the container")))
    assert (tree / "root/etc/planted").read_bytes() == b"in the container"


@needs_root
def test_no_overwrite_dir_non_dir(tree: Path) -> None:
    with open_fs(tree) as fs:
        with pytest.raises(errdefs.InvalidParameter, match="cannot overwrite directory"):
            extract(fs, "/", make_tar(reg("tmp")), no_overwrite_dir_non_dir=True)
        with pytest.raises(errdefs.InvalidParameter, match="cannot overwrite non-directory"):
            extract(
                fs, "/etc", make_tar(kind("passwd", tarfile.DIRTYPE)), no_overwrite_dir_non_dir=True
            )
        # Without the flag the file replaces the directory, as dockerd does.
        (tree / "root/tmp/d").mkdir()
        (tree / "root/tmp/d/x").write_text("x")
        extract(fs, "/tmp", make_tar(reg("d", b"now a file")))
    assert (tree / "root/tmp/d").read_bytes() == b"now a file"


@needs_root
def test_read_only_root_and_volumes_refuse_writes(tree: Path) -> None:
    with open_fs(tree, readonly=True) as fs:
        with pytest.raises(errdefs.InvalidParameter, match="container rootfs is marked read-only"):
            fs.check_writable(fs.extraction_dir("/tmp").mount)
        with pytest.raises(errdefs.InvalidParameter, match="container rootfs is marked read-only"):
            extract(fs, "/data", make_tar(kind("link", tarfile.SYMTYPE, "/"), reg("link/tmp/x")))
        extract(fs, "/data", make_tar(reg("ok", b"volumes stay writable")))
    assert (tree / "vol/ok").read_bytes() == b"volumes stay writable"
    with (
        open_fs(tree, vol_rw=False) as fs,
        pytest.raises(errdefs.InvalidParameter, match="mounted volume is marked read-only"),
    ):
        extract(fs, "/", make_tar(reg("data/x")))
    assert not (tree / "vol/x").exists()


@needs_root
def test_mount_points_are_not_replaced(tree: Path) -> None:
    with open_fs(tree) as fs, pytest.raises(errdefs.InvalidParameter, match="mount point"):
        extract(fs, "/etc", make_tar(reg("hosts", b"replaced")))
    assert (tree / "hostfile").read_text() == "bind-mounted file\n"
    with open_fs(tree) as fs:
        extract(fs, "/data", make_tar(reg("new", b"into the volume")))
    assert (tree / "vol/new").read_bytes() == b"into the volume"
    (tree / "hostfile").unlink()  # a bind's source removed on the host: nothing made there
    with open_fs(tree) as fs, pytest.raises(errdefs.InvalidParameter, match="source"):
        extract(fs, "/etc", make_tar(kind("hosts", tarfile.SYMTYPE, "/etc/passwd")))
    assert not (tree / "hostfile").exists()


@needs_root
def test_extract_owner_compressed_empty_and_truncated(tree: Path) -> None:
    info, data = reg("owned", b"x")
    info.uid, info.gid = 1234, 4321
    with open_fs(tree) as fs:
        extract(fs, "/tmp", gzip.compress(make_tar((info, data))))
        assert os.stat(tree / "root/tmp/owned")[stat.ST_UID : stat.ST_GID + 1] == (1234, 4321)
        extract(fs, "/tmp", make_tar(reg("chowned")), chown=(1000, 1000))
        st = os.stat(tree / "root/tmp/chowned")
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        extract(fs, "/tmp", b"")
        with pytest.raises(errdefs.InvalidParameter, match="invalid tar archive"):
            extract(fs, "/tmp", make_tar(reg("big", b"y" * 4096))[:1200])
        with pytest.raises(errdefs.InvalidParameter, match="invalid tar archive"):
            extract(fs, "/tmp", b"not a tar at all")


def test_extraction_dir_errors(tree: Path) -> None:
    with open_fs(tree) as fs:
        with pytest.raises(FileNotFoundError):
            fs.extraction_dir("/missing")
        with pytest.raises(NotADirectoryError):
            fs.extraction_dir("/etc/passwd")
        assert fs.extraction_dir("/link").path == "/etc"  # the last symlink is followed
