"""The build context's unpacker: what moby's chrootarchive would make, and nothing outside
the context's directory whatever the tar says."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from berth import errdefs
from berth.builder.untar import unpack_tar


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
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def test_files_dirs_links_and_attributes(root: Path) -> None:
    long = "d/" + "n" * 150 + "/f"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        for child in list(root.iterdir()):
            shutil.rmtree(child)
        unpack_tar(
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
            str(root),
        )
        st = os.stat(root / "d/f")
        assert (root / "d/f").read_bytes() == b"data"
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (
            0o600, 1000, 1001, 1_600_000_000,
        )  # fmt: skip
        assert stat.S_IMODE(os.stat(root / "d/x").st_mode) == 0o4755
        assert stat.S_IMODE(os.stat(root / "d").st_mode) == 0o750
        assert (root / long).read_bytes() == b"long"
        assert os.readlink(root / "d/link") == "f"
        assert os.stat(root / "d/hard").st_ino == st.st_ino
        assert stat.S_IMODE(os.stat(root / "no/parent").st_mode) == 0o755
        assert (root / "abs/path").read_bytes() == b"a"


def test_nothing_lands_outside(root: Path, tmp_path: Path) -> None:
    # a link to / (or up and out) is followed inside the root, as in dockerd's chroot
    unpack_tar(
        _tar(
            [
                _special("up", tarfile.SYMTYPE, "/"),
                _file("up/escaped", b"1"),
                _special("far", tarfile.SYMTYPE, "../../../../.."),
                _file("far/escaped2", b"2"),
            ]
        ),
        str(root),
    )
    assert (root / "escaped").read_bytes() == b"1"
    assert (root / "escaped2").read_bytes() == b"2"
    assert not (tmp_path / "escaped").exists() and not Path("/escaped2").exists()
    for bad in (
        [_file("../outside", b"x")],
        [_file("a/../../outside", b"x")],
        [_special("h", tarfile.LNKTYPE, "../../etc/passwd")],
    ):
        with pytest.raises(
            errdefs.InvalidParameter, match=r"outside of the context|leaves the context"
        ):
            unpack_tar(_tar(bad), str(root))
    assert not (tmp_path / "outside").exists()
    # a hard link names a file of the context, never the host's
    with pytest.raises(errdefs.InvalidParameter, match="no such file"):
        unpack_tar(_tar([_special("h", tarfile.LNKTYPE, "/etc/passwd")]), str(root))


def test_entries_replace_what_is_there(root: Path) -> None:
    unpack_tar(
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
            ]
        ),
        str(root),
    )
    assert (root / "a").read_bytes() == b"now a file"
    assert (root / "b/in").read_bytes() == b"2"
    assert not (root / "c").is_symlink() and (root / "c/in").read_bytes() == b"3"


def test_a_cut_or_bad_stream(root: Path) -> None:
    whole = _tar([_file("f", b"x" * 5000)]).getvalue()
    with pytest.raises(errdefs.InvalidParameter, match="unexpected end of data"):
        unpack_tar(io.BytesIO(whole[:1500]), str(root))
    with pytest.raises(errdefs.InvalidParameter, match="invalid tar archive"):
        unpack_tar(io.BytesIO(b"garbage" * 100), str(root))
    unpack_tar(io.BytesIO(b""), str(root))  # an empty stream is an empty context
