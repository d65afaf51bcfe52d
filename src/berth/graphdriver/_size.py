"""Disk usage of a directory tree, and of what one tree changed over another."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_CAPABILITY = "security.capability"


def dir_size(root: Path) -> int:
    """Bytes of files under *root*, hard links counted once (moby's directory.Size)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def changes_size(new: Path, old: Path) -> int:
    """Bytes of what *new* added or modified over *old*, for drivers whose layers are
    whole copies (moby's ``ChangesDirs`` + ``ChangesSize``): non-directories only,
    hard links once; a name is modified when its type, mode, owner, device, or (not
    for directories) size or mtime, or its file capability differ."""
    total = 0
    seen: set[int] = set()
    stack: list[tuple[str, str | None]] = [(str(new), str(old))]
    while stack:
        new_dir, old_dir = stack.pop()
        try:
            entries = list(os.scandir(new_dir))
        except OSError:
            continue  # removed meanwhile
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            old_path = os.path.join(old_dir, entry.name) if old_dir is not None else None
            old_st = None
            if old_path is not None:
                try:
                    old_st = os.lstat(old_path)
                except OSError:
                    old_st = None
            if stat.S_ISDIR(st.st_mode):
                # Below a name that was no directory before, everything is new.
                same_kind = old_st is not None and stat.S_ISDIR(old_st.st_mode)
                stack.append((entry.path, old_path if same_kind else None))
                continue
            if (
                old_st is not None
                and old_path is not None
                and not _differs(old_st, st)
                and _capability(old_path) == _capability(entry.path)
            ):
                continue
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_size
    return total


def _differs(a: os.stat_result, b: os.stat_result) -> bool:
    """moby's ``statDifferent`` for a non-directory: Go's times compare to the
    nanosecond unless one side has none (a copy that kept only seconds)."""
    if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev, a.st_size) != (
        b.st_mode,
        b.st_uid,
        b.st_gid,
        b.st_rdev,
        b.st_size,
    ):
        return True
    if a.st_mtime_ns == b.st_mtime_ns:
        return False
    sec_a, ns_a = divmod(a.st_mtime_ns, 1_000_000_000)
    sec_b, ns_b = divmod(b.st_mtime_ns, 1_000_000_000)
    return not (sec_a == sec_b and (ns_a == 0 or ns_b == 0))


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None
