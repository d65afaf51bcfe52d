"""berth.builder.copy: the classic builder's COPY and ADD over real directories.

A build context (tarred as the CLI sends it and indexed as berthd reads it) and a
container root are directories under tmp_path; the copy goes
through a real :class:`~berth.archive.ContainerFS` of the root, as the dispatcher's
step container gives it.  ADD's downloads come from an ``http.server`` on 127.0.0.1.
The expected hashes of ``test_cache_keys_are_dockerds`` are what dockerd 20.10's
classic builder printed in ``docker history`` for the same files.
"""

from __future__ import annotations

import bz2
import email.utils
import gzip
import http.server
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import ContainerFS
from berth.builder.contextfs import ContextFS, spool_context
from berth.builder.copy import (
    ADD,
    CHMOD_NEEDS_BUILDKIT,
    COPY,
    CopyPlan,
    CopySource,
    contains_wildcards,
    normalize_dest,
    perform_copy,
    prepare_copy,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="copies set owners (needs root)")

T2020 = 1577934245  # 2020-01-02 03:04:05 UTC


def write(path: Path, data: str | bytes, mode: int = 0o644, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A build context as the CLI's tar unpacks (owned by root, as its tar says)."""
    c = tmp_path / "ctx"
    write(c / "a.txt", "hi\n", mtime=T2020 + 0.678)
    write(c / "b.txt", "b\n")
    write(c / "dir" / "x", "x\n")
    write(c / "dir" / "sub" / "y", "y\n")
    (c / "dir" / "up").symlink_to("../../etc")
    (c / "link").symlink_to("a.txt")
    for d in (c, c / "dir", c / "dir" / "sub"):
        d.chmod(0o755)
    if os.geteuid() == 0:
        for p in [c, *c.rglob("*")]:
            os.lchown(p, 0, 0)
    return c


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A container's root filesystem with users, groups and symlinks of its own."""
    r = tmp_path / "root"
    write(
        r / "etc" / "passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:33::/:/bin/sh\n",
    )
    write(r / "etc" / "group", "root:x:0:\napp:x:1000:\nstaff:x:50:\nweb:x:33:\n")
    (r / "home" / "app").mkdir(parents=True)
    (r / "linketc").symlink_to("/etc")
    return r


_contexts: list[ContextFS] = []


@pytest.fixture(autouse=True)
def _close_contexts() -> Iterator[None]:
    yield
    while _contexts:
        _contexts.pop().close()


def context(path: Path) -> CopySource:
    """The build context *path* as the CLI sends it (a tar, everything owned by root),
    read as berthd reads it: spooled and indexed, never unpacked."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(path)):
            tf.add(path / name, arcname=name, filter=as_root)
    buf.seek(0)
    fs = spool_context(buf, path.parent)
    _contexts.append(fs)
    return CopySource(context=fs)


def copy(
    root: Path,
    cmd: str,
    sources: list[str],
    dest: str,
    source: CopySource,
    *,
    workdir: str = "/",
    chown: str = "",
) -> CopyPlan:
    with (
        prepare_copy(cmd, sources, dest, source, chown=chown) as plan,
        ContainerFS(str(root)) as fs,
    ):
        perform_copy(plan, fs, workdir=workdir)
    return plan


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def refused(
    cmd: str,
    sources: list[str],
    dest: str,
    source: CopySource,
    *,
    chmod: str = "",
    checksum: str = "",
) -> str:
    with pytest.raises(errdefs.InvalidParameter) as e:
        prepare_copy(cmd, sources, dest, source, chmod=chmod, checksum=checksum)
    return str(e.value)


# -- the cache key -----------------------------------------------------------------------------


@needs_root
def test_cache_keys_are_dockerds(ctx: Path) -> None:
    plan = prepare_copy(COPY, ["a.txt"], "/x/", context(ctx))
    assert plan.hash == "file:2cc6f75217b6d0ad0246a0f00e7bb3296d332db51dc16a22ce490430905d8d80"
    assert plan.comment == f"COPY {plan.hash} in /x/ "
    # a symlink given as the source is hashed as what it points to
    assert prepare_copy(COPY, ["link"], "/l/", context(ctx)).hash == plan.hash
    assert (
        prepare_copy(COPY, ["*.txt"], "/t/", context(ctx)).hash
        == "multi:f86781034502c3fd7c8c2c2d6c361d1436078bd0adb061845d8665e351482316"
    )
    assert (
        prepare_copy(COPY, ["dir"], "/d", context(ctx)).hash
        == "dir:a3f67bc64b399d1f8e550b0df8214cad104388a6e54a586b393bfdfccd06096f"
    )
    assert prepare_copy(COPY, ["a.txt"], "/c", context(ctx), chown="app").comment.startswith(
        "COPY --chown=app file:2cc6f752"
    )


def test_a_touch_keeps_the_key_a_content_or_mode_change_does_not(ctx: Path) -> None:

    def keys() -> tuple[str, str]:
        return (
            prepare_copy(COPY, ["a.txt"], "/x", context(ctx)).hash,
            prepare_copy(COPY, ["."], "/x", context(ctx)).hash,
        )

    first = keys()
    os.utime(ctx / "a.txt", (T2020 + 999, T2020 + 999))
    os.utime(ctx / "dir" / "sub", (T2020 + 999, T2020 + 999))
    assert keys() == first
    (ctx / "a.txt").chmod(0o600)
    moded = keys()
    assert moded[0] != first[0] and moded[1] != first[1]
    (ctx / "a.txt").chmod(0o644)
    assert keys() == first
    write(ctx / "a.txt", "ho\n")
    changed = keys()
    assert changed[0] != first[0] and changed[1] != first[1]
    (ctx / "dir" / "sub" / "new").write_text("")
    assert keys()[1] != changed[1]


def test_a_directory_key_covers_its_names_and_modes(ctx: Path) -> None:
    before = prepare_copy(COPY, ["dir"], "/d", context(ctx)).hash
    assert before.startswith("dir:")
    (ctx / "dir" / "sub").chmod(0o700)
    assert prepare_copy(COPY, ["dir"], "/d", context(ctx)).hash != before
    (ctx / "dir" / "sub").chmod(0o755)
    assert prepare_copy(COPY, ["dir"], "/d", context(ctx)).hash == before
    (ctx / "dir" / "x").rename(ctx / "dir" / "z")
    assert prepare_copy(COPY, ["dir"], "/d", context(ctx)).hash != before


# -- sources: wildcards, errors, symlinks ----------------------------------------------------


def test_wildcards_match_as_filepath_match(ctx: Path) -> None:
    write(ctx / "dir" / "q.txt", "q")
    write(ctx / "*lit", "literal star")

    def paths(pattern: str) -> list[str]:
        return [i.path for i in prepare_copy(COPY, [pattern], "/w/", context(ctx)).items]

    assert paths("*.txt") == ["a.txt", "b.txt"]  # * never crosses a /
    # a dangling link that matches fails the COPY, as in moby (it stats every match)
    assert "stat dir/up: file does not exist" in refused(COPY, ["dir/*"], "/w/", context(ctx))
    (ctx / "dir" / "up").unlink()
    assert paths("dir/*") == ["dir/q.txt", "dir/sub", "dir/x"]
    assert paths("**/*.txt") == ["dir/q.txt"]  # ** is two *: one level, as Go's Match
    assert paths("[ab].txt") == ["a.txt", "b.txt"]
    assert paths("?.txt") == ["a.txt", "b.txt"]
    assert paths("/*.txt") == ["a.txt", "b.txt"]
    assert paths("*lit") == ["*lit"]
    # escaped, it is no wildcard, and (as in moby) the name is then taken as written
    assert "stat \\*lit: file does not exist" in refused(COPY, ["\\*lit"], "/w/", context(ctx))
    assert contains_wildcards("a[") and not contains_wildcards("a\\*b")
    assert (
        refused(COPY, ["*.none"], "/w/", context(ctx))
        == "COPY failed: no source files were specified"
    )
    assert (
        refused(COPY, ["../*"], "/w/", context(ctx))
        == "COPY failed: no source files were specified"
    )


def test_outside_the_context_is_refused_with_dockerds_words(ctx: Path) -> None:
    for path, shown in [
        ("../x", "../x"),
        ("/../x", "../x"),
        ("a/../../x", "a/../../x"),
        ("a.txt/x", "a.txt/x"),  # a file on the way: FollowSymlinkInScope fails
    ]:
        assert refused(COPY, [path], "/x", context(ctx)) == (
            f"COPY failed: forbidden path outside the build context: {shown} ()"
        )
    from_image = CopySource(str(ctx), from_image=True)
    assert refused(COPY, ["../x"], "/x", from_image) == (
        "COPY failed: forbidden path outside the build context: ../x ()"
    )


def test_a_missing_source_is_reported_as_dockerd_does(ctx: Path) -> None:
    assert refused(COPY, ["./nope"], "/x", context(ctx)) == (
        "COPY failed: file not found in build context or excluded by .dockerignore: "
        "stat nope: file does not exist"
    )
    assert refused(ADD, ["nope"], "/x", context(ctx)) == (
        "ADD failed: file not found in build context or excluded by .dockerignore: "
        "stat nope: file does not exist"
    )
    assert refused(COPY, ["/nope"], "/x", CopySource(str(ctx), from_image=True)) == (
        "COPY failed: stat nope: file does not exist"
    )
    # a link in the context to an absolute path resolves inside the context
    (ctx / "abs").symlink_to("/etc/hostname")
    assert "stat abs: file does not exist" in refused(COPY, ["abs"], "/x", context(ctx))


def test_several_sources_need_a_directory_destination(ctx: Path) -> None:
    msg = (
        "When using COPY with more than one source file, the destination must be a directory "
        "and end with a /"
    )
    assert refused(COPY, ["a.txt", "b.txt"], "/x", context(ctx)) == msg
    assert refused(COPY, ["*.txt"], ".", context(ctx)) == msg
    assert prepare_copy(COPY, ["a.txt", "b.txt"], "./", context(ctx)).hash.startswith("multi:")


def test_chmod_and_urls_for_copy_are_refused(ctx: Path) -> None:
    assert refused(COPY, ["a.txt"], "/x", context(ctx), chmod="755") == CHMOD_NEEDS_BUILDKIT
    assert refused(ADD, ["a.txt"], "/x", context(ctx), chmod="755") == CHMOD_NEEDS_BUILDKIT
    assert refused(COPY, ["http://127.0.0.1:1/x"], "/x", context(ctx)) == (
        "COPY failed: source can't be a URL for COPY"
    )


# -- the copy --------------------------------------------------------------------------------


@needs_root
def test_files_land_by_the_trailing_slash_rules(ctx: Path, root: Path) -> None:
    copy(root, COPY, ["a.txt"], "/f", context(ctx))
    assert (root / "f").read_text() == "hi\n"
    copy(root, COPY, ["a.txt"], "/d/", context(ctx))
    assert (root / "d" / "a.txt").read_text() == "hi\n"
    copy(root, COPY, ["b.txt"], "/d", context(ctx))  # an existing directory takes it in
    assert (root / "d" / "b.txt").read_text() == "b\n"
    copy(root, COPY, ["a.txt", "b.txt"], "rel/", context(ctx), workdir="/home/app")
    assert sorted(p.name for p in (root / "home" / "app" / "rel").iterdir()) == ["a.txt", "b.txt"]
    copy(root, COPY, ["a.txt"], ".", context(ctx), workdir="/home/app")
    assert (root / "home" / "app" / "a.txt").read_text() == "hi\n"
    st = (root / "d").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and owner(root / "d") == (0, 0)
    assert normalize_dest("/w", "x/") == "/w/x/" and normalize_dest("/w", "/a/../b") == "/a/../b"


@needs_root
def test_a_file_keeps_its_mode_and_second_truncated_mtime(ctx: Path, root: Path) -> None:
    write(ctx / "tool", "#!/bin/sh\n", mode=0o750, mtime=T2020 + 0.9)
    copy(root, COPY, ["tool", "a.txt"], "/bin/", context(ctx))
    st = (root / "bin" / "tool").stat()
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime_ns == T2020 * 10**9 and st.st_atime_ns == T2020 * 10**9
    assert (root / "bin" / "a.txt").stat().st_mtime_ns == T2020 * 10**9


@needs_root
def test_set_id_bits_go_with_the_chown_as_in_dockerd(ctx: Path, root: Path) -> None:
    write(ctx / "suid", "x", mode=0o4755)
    copy(root, COPY, ["suid"], "/s/", context(ctx))
    # moby chowns every copied file after its mode is set; the kernel then drops S_ISUID
    assert stat.S_IMODE((root / "s" / "suid").stat().st_mode) == 0o755


@needs_root
def test_a_directorys_contents_are_copied_not_the_directory(ctx: Path, root: Path) -> None:
    os.link(ctx / "dir" / "x", ctx / "dir" / "sub" / "hard")
    copy(root, COPY, ["dir"], "/d", context(ctx))
    d = root / "d"
    assert sorted(p.name for p in d.iterdir()) == ["sub", "up", "x"]
    assert (d / "sub" / "y").read_text() == "y\n"
    assert os.readlink(d / "up") == "../../etc"  # links inside are copied as links
    assert (d / "x").stat().st_ino == (d / "sub" / "hard").stat().st_ino  # hard links kept
    assert (d / "sub").stat().st_mtime == (ctx / "dir" / "sub").stat().st_mtime // 1


@needs_root
def test_merging_a_directory_takes_the_sources_modes(ctx: Path, root: Path) -> None:
    write(ctx / "over" / "etc" / "extra", "e")
    (ctx / "over" / "etc").chmod(0o700)
    write(root / "etc" / "keep", "k")
    copy(root, COPY, ["over/"], "/", context(ctx))
    assert (root / "etc" / "extra").read_text() == "e"
    assert (root / "etc" / "keep").read_text() == "k"  # merged, not replaced
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o700  # as dockerd does


@needs_root
def test_a_source_symlink_is_followed_and_copied_under_its_name(ctx: Path, root: Path) -> None:
    copy(root, COPY, ["link"], "/l/", context(ctx))
    target = root / "l" / "link"
    assert not target.is_symlink() and target.read_text() == "hi\n"
    (ctx / "dirlink").symlink_to("dir")
    copy(root, COPY, ["dirlink"], "/dl", context(ctx))
    assert (root / "dl" / "x").read_text() == "x\n"


@needs_root
def test_destination_symlinks_resolve_inside_the_root(
    ctx: Path, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (root / "out").symlink_to(str(outside))  # absolute: the container's path, not the host's
    (root / "up").symlink_to("../../../../../../../../host")
    (root / "file").symlink_to("/etc/passwd")
    copy(root, COPY, ["a.txt"], "/out/", context(ctx))
    copy(root, COPY, ["dir"], "/up", context(ctx))
    copy(root, COPY, ["a.txt"], "/linketc/", context(ctx))
    copy(root, COPY, ["b.txt"], "/file", context(ctx))
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "a.txt").read_text() == "hi\n"
    assert (root / "host" / "x").read_text() == "x\n"
    assert (root / "etc" / "a.txt").read_text() == "hi\n"
    assert (root / "etc" / "passwd").read_text() == "b\n"  # the link's target replaced
    assert (root / "file").is_symlink()


@needs_root
def test_a_dangerous_link_in_a_copied_tree_is_not_followed(ctx: Path, root: Path) -> None:
    """A source tree's link is copied as a link; a later entry under the same name in
    another source cannot write through it."""
    (ctx / "evil").mkdir()
    (ctx / "evil" / "d").symlink_to("/")
    write(ctx / "evil2" / "d" / "escaped", "no")
    copy(root, COPY, ["evil/", "evil2/"], "/x/", context(ctx))
    assert (root / "x" / "d").is_dir() and not (root / "x" / "d").is_symlink()
    assert (root / "x" / "d" / "escaped").read_text() == "no"
    assert not (root / "escaped").exists()


@needs_root
def test_chown_by_name_and_number(ctx: Path, root: Path) -> None:
    copy(root, COPY, ["a.txt"], "/c/n1/n2/f", context(ctx), chown="app:staff")
    assert owner(root / "c" / "n1" / "n2" / "f") == (1000, 50)
    assert owner(root / "c") == (1000, 50)  # new parents of a file get the user too
    # the group is looked up by the same word
    copy(root, COPY, ["a.txt"], "/c1", context(ctx), chown="app")
    assert owner(root / "c1") == (1000, 1000)
    copy(root, COPY, ["dir"], "/c2", context(ctx), chown="1000:50")
    assert {owner(p) for p in [root / "c2", *(root / "c2").rglob("*")]} == {(1000, 50)}
    copy(root, COPY, ["dir"], "/home/app", context(ctx), chown="33")
    assert owner(root / "home" / "app") == (0, 0)  # an existing destination keeps its owner
    assert owner(root / "home" / "app" / "x") == (33, 33)


@needs_root
def test_chown_errors_are_moby_s(ctx: Path, root: Path) -> None:
    prefix = "unable to convert uid/gid chown string to host mapping: "
    cases = {
        "nobody": "can't find uid for user nobody: no such user: nobody",
        "app:nogroup": "can't find gid for group nogroup: no such group: nogroup",
        "a:b:c": "invalid chown string format: a:b:c",
    }
    for spec, msg in cases.items():
        with (
            prepare_copy(COPY, ["a.txt"], "/x", context(ctx), chown=spec) as plan,
            ContainerFS(str(root)) as fs,
        ):
            with pytest.raises(errdefs.InvalidParameter) as e:
                perform_copy(plan, fs)
            assert str(e.value) == prefix + msg
    assert not (root / "x").exists()


@needs_root
def test_copy_from_an_image_keeps_owners_unless_chowned(tmp_path: Path, root: Path) -> None:
    image = tmp_path / "image"
    write(image / "srv" / "data", "d")
    os.lchown(image / "srv" / "data", 7, 8)
    src = CopySource(str(image), from_image=True)
    copy(root, COPY, ["/srv/data"], "/keep", src)
    assert owner(root / "keep") == (7, 8)
    copy(root, COPY, ["/srv"], "/keepdir", src)
    assert owner(root / "keepdir" / "data") == (7, 8)
    copy(root, COPY, ["/srv/data"], "/own", src, chown="web")
    assert owner(root / "own") == (33, 33)
    copy(root, ADD, ["srv/data"], "/added", CopySource(str(image)))
    assert owner(root / "added") == (0, 0)


# -- ADD -------------------------------------------------------------------------------------


def make_tar(entries: dict[str, bytes | None], uid: int = 0, gid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = uid, gid, T2020
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tf.addfile(info)
            elif name.endswith("@"):
                info.name, info.type, info.linkname = name[:-1], tarfile.SYMTYPE, data.decode()
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@needs_root
@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("t.tar", lambda b: b),
        ("t.tgz", gzip.compress),
        ("t.tbz", bz2.compress),
        ("t.txz", lzma.compress),
        ("noext", gzip.compress),
    ],
)
def test_add_extracts_local_archives_with_their_owners(
    ctx: Path, root: Path, name: str, pack: object
) -> None:
    assert callable(pack)
    tar = make_tar(
        {"tree/": None, "tree/f": b"f", "tree/sub/g": b"g", "tree/l@": b"../../../x"}, 7, 8
    )
    write(ctx / name, pack(tar))
    copy(root, ADD, [name], "/a", context(ctx), chown="app")
    tree = root / "a" / "tree"
    assert (tree / "f").read_text() == "f" and (tree / "sub" / "g").read_text() == "g"
    assert owner(tree / "f") == (7, 8)  # --chown does not apply to an archive's entries
    assert stat.S_IMODE((tree / "f").stat().st_mode) == 0o640
    assert (tree / "f").stat().st_mtime == T2020
    assert stat.S_IMODE(tree.stat().st_mode) == 0o750 and tree.stat().st_mtime == T2020
    assert owner(tree / "sub") == (0, 0)  # made for an entry whose directory is not in the tar
    assert os.readlink(tree / "l") == "../../../x"  # kept as written
    # COPY never extracts
    copy(root, COPY, [name], "/c/", context(ctx))
    assert (root / "c" / name).read_bytes() == pack(tar)


@needs_root
def test_add_copies_what_is_not_an_archive(ctx: Path, root: Path) -> None:
    write(ctx / "fake.tar.gz", "notatar\n")
    write(ctx / "bad.gz", b"\x1f\x8bgarbage")
    write(ctx / "empty.tar", b"")
    copy(root, ADD, ["fake.tar.gz", "bad.gz", "empty.tar"], "/a4/", context(ctx))
    assert sorted(p.name for p in (root / "a4").iterdir()) == ["bad.gz", "empty.tar", "fake.tar.gz"]


@needs_root
def test_an_archive_cannot_escape_its_destination(ctx: Path, root: Path, tmp_path: Path) -> None:
    tar = make_tar({"../../../../escaped": b"e", "/abs": b"a", "l@": b"/", "l/through": b"t"})
    write(ctx / "evil.tar", tar)
    copy(root, ADD, ["evil.tar"], "/dst/", context(ctx))
    assert (root / "dst" / "escaped").read_text() == "e"  # clamped, as in moby's chroot
    assert (root / "dst" / "abs").read_text() == "a"
    assert not (tmp_path / "escaped").exists() and not (root / "escaped").exists()
    assert not (root / "through").exists() and not Path("/through").exists()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/named/":
            body = b"named body"
            self.send_response(200)
            self.send_header("Content-Disposition", 'attachment; filename="from-header.txt"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    docroot = tmp_path / "www"
    docroot.mkdir()

    def handler(*args: object) -> _Handler:
        return _Handler(*args, directory=str(docroot))  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", docroot
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@needs_root
def test_add_downloads_a_url_with_its_last_modified_time(
    ctx: Path, root: Path, server: tuple[str, Path], tmp_path: Path
) -> None:
    url, docroot = server
    write(docroot / "f.txt", "remote\n", mtime=T2020 + 0.5)
    write(docroot / "t.tgz", gzip.compress(make_tar({"in": b"x"})), mtime=T2020)
    temp = tmp_path / "temp"
    temp.mkdir()
    seen: list[tuple[int, int]] = []
    with prepare_copy(
        ADD,
        [f"{url}/f.txt"],
        "/u1/",
        context(ctx),
        progress=lambda d, t: seen.append((d, t)),
        temp_root=str(temp),
    ) as plan:
        assert not plan.hash.startswith("file:") and len(plan.hash) == 64
        assert len(list(temp.iterdir())) == 1
        with ContainerFS(str(root)) as fs:
            perform_copy(plan, fs)
    assert list(temp.iterdir()) == []  # the download went with the plan
    assert seen[-1] == (7, 7)
    got = root / "u1" / "f.txt"
    assert got.read_text() == "remote\n"
    assert stat.S_IMODE(got.stat().st_mode) == 0o600 and got.stat().st_mtime == T2020
    copy(root, ADD, [f"{url}/f.txt"], "/u2", context(ctx))
    assert (root / "u2").read_text() == "remote\n"
    copy(root, ADD, [f"{url}/t.tgz"], "/u3/", context(ctx))  # a download is never extracted
    assert (root / "u3" / "t.tgz").read_bytes() == (docroot / "t.tgz").read_bytes()
    copy(root, ADD, [f"{url}/named/"], "/u4/", context(ctx))
    assert (root / "u4" / "from-header.txt").read_text() == "named body"


def test_add_url_errors(ctx: Path, server: tuple[str, Path]) -> None:
    url, docroot = server
    write(docroot / "index.html", "index")
    assert refused(ADD, [f"{url}/"], "/x/", context(ctx)) == (
        f"ADD failed: cannot determine filename for source {url}/"
    )
    with pytest.raises(errdefs.NotFound) as e:
        prepare_copy(ADD, [f"{url}/nope"], "/x/", context(ctx))
    assert str(e.value).startswith(f"ADD failed: failed to GET {url}/nope with status 404 ")
    with pytest.raises(errdefs.System) as e2:
        prepare_copy(ADD, ["http://127.0.0.1:1/x"], "/x/", context(ctx))
    assert str(e2.value) == (
        'ADD failed: Get "http://127.0.0.1:1/x": dial tcp 127.0.0.1:1: connect: connection refused'
    )
    with prepare_copy(ADD, [f"{url}/"], "/x", context(ctx)) as plan:
        assert plan.items[0].path == "__unnamed__"


def test_add_checksum_is_checked_against_the_download(ctx: Path, server: tuple[str, Path]) -> None:
    url, docroot = server
    write(docroot / "f", "abc")
    good = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with prepare_copy(ADD, [f"{url}/f"], "/x", context(ctx), checksum=good) as plan:
        assert plan.items[0].path == "f"
    bad = "sha256:" + "0" * 64
    assert "digest mismatch" in refused(ADD, [f"{url}/f"], "/x", context(ctx), checksum=bad)


def test_a_failed_prepare_leaves_no_download(
    ctx: Path, server: tuple[str, Path], tmp_path: Path
) -> None:
    url, docroot = server
    write(docroot / "f", "abc")
    temp = tmp_path / "temp"
    temp.mkdir()
    with pytest.raises(errdefs.InvalidParameter):
        prepare_copy(ADD, [f"{url}/f", "nope"], "/x/", context(ctx), temp_root=str(temp))
    assert list(temp.iterdir()) == []


def test_email_dates_parse_as_go_does() -> None:
    # the Last-Modified form http.server sends, which Go's http.ParseTime reads
    assert email.utils.formatdate(T2020, usegmt=True) == "Thu, 02 Jan 2020 03:04:05 GMT"


@needs_root
def test_a_cancelled_build_stops_the_copy(ctx: Path, root: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errdefs.Unavailable):
        prepare_copy(COPY, ["dir"], "/d", context(ctx), cancel=cancel)
    with (
        prepare_copy(COPY, ["dir"], "/d", context(ctx)) as plan,
        ContainerFS(str(root)) as fs,
        pytest.raises(errdefs.Unavailable),
    ):
        perform_copy(plan, fs, cancel=cancel)
    assert list((root / "d").iterdir()) == []
