"""Atomic file writes: readers see the old content or the new, never a half."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write *data* to *path* through a temp file, fsync and rename."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_dir(target: str | os.PathLike[str], files: dict[str, bytes]) -> None:
    """Create directory *target* holding *files*, all at once.

    The files are written into a sibling temp directory that is renamed into
    place, so a crash leaves either no directory or a complete one.  Stale
    temp directories start with ``.tmp-`` and are swept by their owners.
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-" + target.name))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep_temp(directory: str | os.PathLike[str]) -> None:
    """Remove leftovers of interrupted :func:`write_file` / :func:`write_dir` calls."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in entries:
        if name.startswith(".tmp-"):
            p = os.path.join(directory, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
