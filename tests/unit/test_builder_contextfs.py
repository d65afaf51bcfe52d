"""The build context's index over its spool: what moby's chrootarchive would make of the
tar, and nothing outside the context whatever the tar says."""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from berth import errdefs
from berth.builder.contextfs import ContextEntry, ContextFS, spool_context


def _tar(
    entries: Sequence[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
    fmt: int = tarfile.PAX_FORMAT,
) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(e)
    buf.seek(0)
    return buf


def _file(
    name: str, data: bytes = b"x", mode: int = 0o644, **kw: int
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def _special(name: str, kind: bytes, target: str = "", mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = mode
    return info


@pytest.fixture
def index(tmp_path: Path) -> Iterator[list[ContextFS]]:
    made: list[ContextFS] = []
    yield made
    for fs in made:
        fs.close()


def _spool(made: list[ContextFS], tmp_path: Path, data: io.BytesIO) -> ContextFS:
    fs = spool_context(data, tmp_path)
    made.append(fs)
    return fs


def _at(fs: ContextFS, rel: str) -> ContextEntry:
    return fs.lookup(fs.canonical(rel))


def test_files_dirs_links_and_attributes(index: list[ContextFS], tmp_path: Path) -> None:
    long = "d/" + "n" * 150 + "/f"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        fs = _spool(
            index,
            tmp_path,
            _tar(
                [
                    _special("d", tarfile.DIRTYPE, mode=0o750),
                    _file("d/f", b"data", mode=0o600, uid=1000, gid=1001, mtime=1_600_000_000),
                    _file("d/x", b"exec", mode=0o4755),
                    _file(long, b"long"),
                    _special("d/link", tarfile.SYMTYPE, "f"),
                    _special("d/hard", tarfile.LNKTYPE, "d/f"),
                    _file("no/parent/here", b"p"),
                    _file("/abs/path", b"a"),
                ],
                fmt,
            ),
        )
        f = _at(fs, "d/f")
        assert fs.read(f) == b"data" and fs.read(f, 2) == b"da"
        assert (f.kind, f.mode, f.uid, f.gid, f.mtime_ns) == (
            stat.S_IFREG, 0o600, 1000, 1001, 1_600_000_000 * 10**9,
        )  # fmt: skip
        assert _at(fs, "d/x").mode == 0o4755
        assert _at(fs, "d").mode == 0o750
        assert fs.read(_at(fs, long)) == b"long"
        assert fs.lookup("d/link").link == "f" and _at(fs, "d/link") is f  # followed
        hard = fs.lookup("d/hard")
        assert hard.ino == f.ino and fs.read(hard) == b"data"
        assert (_at(fs, "no/parent").kind, _at(fs, "no/parent").mode) == (stat.S_IFDIR, 0o755)
        assert fs.read(_at(fs, "abs/path")) == b"a"
        assert [rel for rel, _ in fs.walk(".")][:4] == ["abs", "abs/path", "d", "d/f"]
        with fs.open(f) as r:
            assert r.read() == b"data"


def test_nothing_lands_outside(index: list[ContextFS], tmp_path: Path) -> None:
    # a link to / (or up and out) is followed inside the root, as in dockerd's chroot
    fs = _spool(
        index,
        tmp_path,
        _tar(
            [
                _special("up", tarfile.SYMTYPE, "/"),
                _file("up/escaped", b"1"),
                _special("far", tarfile.SYMTYPE, "../../../../.."),
                _file("far/escaped2", b"2"),
            ]
        ),
    )
    assert fs.read(fs.lookup("escaped")) == b"1"
    assert fs.read(fs.lookup("escaped2")) == b"2"
    assert fs.canonical("up/../../../x") == "x"
    for bad in (
        [_file("../outside", b"x")],
        [_file("a/../../outside", b"x")],
        [_special("h", tarfile.LNKTYPE, "../../etc/passwd")],
    ):
        with pytest.raises(
            errdefs.InvalidParameter, match=r"outside of the context|leaves the context"
        ):
            spool_context(_tar(bad), tmp_path)
    # a hard link names a file of the context, never the host's
    with pytest.raises(errdefs.InvalidParameter, match="no such file"):
        spool_context(_tar([_special("h", tarfile.LNKTYPE, "/etc/passwd")]), tmp_path)
    with pytest.raises(errdefs.InvalidParameter, match="is not a directory"):
        spool_context(_tar([_file("f", b""), _file("f/g", b"")]), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the spools are unlinked files


def test_entries_replace_what_is_there(index: list[ContextFS], tmp_path: Path) -> None:
    fs = _spool(
        index,
        tmp_path,
        _tar(
            [
                _file("a/inner", b"1"),
                _file("a", b"now a file"),
                _file("b", b"file"),
                _special("b", tarfile.DIRTYPE),
                _file("b/in", b"2"),
                _special("c", tarfile.SYMTYPE, "/"),
                _special("c", tarfile.DIRTYPE),
                _file("c/in", b"3"),
                _special("d", tarfile.DIRTYPE, mode=0o700),
                _file("d/kept", b"4"),
                _special("d", tarfile.DIRTYPE, mode=0o711),
            ]
        ),
    )
    assert fs.read(fs.lookup("a")) == b"now a file"
    assert fs.read(fs.lookup("b/in")) == b"2"
    assert fs.lookup("c").kind == stat.S_IFDIR and fs.read(fs.lookup("c/in")) == b"3"
    assert fs.lookup("d").mode == 0o711 and fs.read(fs.lookup("d/kept")) == b"4"
    fs.remove("b")
    with pytest.raises(FileNotFoundError):
        fs.lookup("b/in")
    with pytest.raises(NotADirectoryError):
        fs.lookup("a/x")


def test_a_cut_or_bad_stream(index: list[ContextFS], tmp_path: Path) -> None:
    whole = _tar([_file("f", b"x" * 5000)]).getvalue()
    with pytest.raises(errdefs.InvalidParameter, match="unexpected end of data"):
        spool_context(io.BytesIO(whole[:1500]), tmp_path)
    with pytest.raises(errdefs.InvalidParameter, match="invalid tar archive"):
        spool_context(io.BytesIO(b"garbage" * 100), tmp_path)
    fs = _spool(index, tmp_path, io.BytesIO(b""))  # an empty stream is an empty context
    assert list(fs.walk(".")) == []
    # the CLI's -f - tar ends right after its last file's data: that is its end
    cut = whole[: whole.index(b"x" * 5000) + 5000]
    fs = _spool(index, tmp_path, io.BytesIO(cut))
    assert fs.read(fs.lookup("f")) == b"x" * 5000
