"""The one in-root resolver (``berth.utils.symlink``, re-exported by ``berth.archive``).

Hostile trees: links that climb above the root, absolute links to host paths,
loops.  Whatever the tree holds, the result stays under the root.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from berth import errdefs
from berth.archive import (
    MAX_SYMLINKS,
    ContainerFS,
    InvalidLayer,
    Link,
    follow_in_root,
    resolve_in_root,
)
from berth.archive._unpack import secure_join
from berth.utils.gostr import go_clean


def test_secure_join(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real" / "deep").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../..", root / "real" / "up")
    os.symlink("deep", root / "real" / "rel")
    os.symlink("nothere", root / "dangling")
    os.symlink("loop", root / "loop")
    r = str(root)
    assert secure_join(r, "") == r
    assert secure_join(r, "a/b") == f"{r}/a/b"
    assert secure_join(r, "abs/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "abs") == f"{r}/etc"
    assert secure_join(r, "real/up/x") == f"{r}/x"
    assert secure_join(r, "real/up/../../abs") == f"{r}/etc"
    assert secure_join(r, "real/rel/f") == f"{r}/real/deep/f"
    assert secure_join(r, "dangling") == f"{r}/nothere"
    assert secure_join(r, "../../x") == f"{r}/x"
    with pytest.raises(InvalidLayer, match="too many levels of symbolic links"):
        secure_join(r, "loop/x")


def test_resolve_in_root_is_the_same_walk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../../..", root / "up")
    os.symlink(str(tmp_path), root / "host")  # an absolute host path means the container's
    os.symlink("loop", root / "loop")
    r = str(root)
    assert resolve_in_root(r, "abs/x") == f"{r}/etc/x"
    assert resolve_in_root(r, "up/etc") == f"{r}/etc"
    assert resolve_in_root(r, "/../../up/../abs") == f"{r}/etc"
    assert resolve_in_root(r, "host/root") == f"{r}{tmp_path}/root"
    with pytest.raises(errdefs.InvalidParameter, match="too many levels of symbolic links"):
        resolve_in_root(r, "loop")


def test_resolve_in_root_reports_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        resolve_in_root(str(tmp_path), "f/x")


def _tree(links: dict[str, str]) -> Callable[[list[str], str], str | Link]:
    """A step over an in-memory tree: names in *links* are symlinks, the rest directories."""

    def step(stack: list[str], part: str) -> str | Link:
        path = "/".join([*stack[1:], part])
        return Link(links[path]) if path in links else part

    return step


def test_follow_in_root_clamps_restarts_and_caps() -> None:
    step = _tree({"a": "../../b", "b/c": "/d", "x": "x", "chain": "y0"})
    assert follow_in_root("a/c/e", "", step) == ["", "d", "e"]
    assert follow_in_root("../../..", "", step) == [""]
    assert follow_in_root("./a/./", "", step) == ["", "b"]
    with pytest.raises(OSError) as e:
        follow_in_root("x", "", step)
    assert e.value.errno == errno.ELOOP


def test_follow_in_root_allows_max_symlinks_and_no_more() -> None:
    chain = {f"l{i}": f"l{i + 1}" for i in range(MAX_SYMLINKS)}
    assert follow_in_root("l0", "", _tree(chain)) == ["", f"l{MAX_SYMLINKS}"]
    chain[f"l{MAX_SYMLINKS}"] = "end"
    with pytest.raises(OSError):
        follow_in_root("l0", "", _tree(chain))


def _mkdir_all(root: Path, path: str) -> str:
    """As start makes a working directory: the path cleaned as Go does, then made."""
    with ContainerFS(str(root)) as fs:
        return fs.open_dir(go_clean(path), create=True, check=False).path


def test_open_dir_creating_follows_links_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root\n")
    os.symlink("/missing", root / "d")
    os.symlink("../../../../" + str(tmp_path / "host").lstrip("/"), root / "e")
    os.symlink("etc/passwd", root / "f")
    os.chmod(root / "etc", 0o700)
    uid, gid = 0, 0  # the container's root, as moby's SetupWorkingDirectory makes them
    old = os.umask(0o077)
    try:
        assert _mkdir_all(root, "/d/work") == "/missing/work"
        assert _mkdir_all(root, "e/a/../b") == f"{tmp_path}/host/b"
        assert _mkdir_all(root, "/etc") == "/etc"
    finally:
        os.umask(old)
    for made in ("missing", "missing/work", f"{tmp_path}/host/b".lstrip("/")):
        st = os.lstat(root / made)
        assert (oct(st.st_mode), st.st_uid, st.st_gid) == (oct(0o40755), uid, gid)
    assert not (root / tmp_path.relative_to("/") / "host" / "a").exists()  # `..` is lexical
    assert not (tmp_path / "host").exists()
    assert os.lstat(root / "etc").st_mode & 0o777 == 0o700  # an existing one is left alone
    for path in ("/etc/passwd", "/f", "/etc/passwd/x"):
        with pytest.raises(NotADirectoryError):
            _mkdir_all(root, path)


def test_open_dir_creating_never_follows_a_link_out_of_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link swapped in for a directory just made is followed inside the root, never out."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    real_mkdir = os.mkdir

    def racing_mkdir(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(name, mode, dir_fd=dir_fd)
        if name == "a":  # replaced by a link to the host once made
            os.rmdir(root / "a")
            os.symlink(str(outside), root / "a")

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    made = _mkdir_all(root, "/a/b")
    assert made == f"{outside}/b"  # the link's target, taken inside the root
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "b").is_dir()
