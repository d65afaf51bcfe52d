"""The vfs graph driver: every layer is a full copy of its parent.

Slow and space-hungry, but it works on any filesystem, which makes it the
fallback where overlayfs cannot be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from berth import errdefs
from berth.graphdriver._size import changes_size, dir_size
from berth.utils.reaper import Reaper


class Vfs:
    name = "vfs"
    whiteout_format = "delete"

    def __init__(self, home: Path, reaper: Reaper) -> None:
        self.home = home
        self.reaper = reaper
        (home / "dir").mkdir(parents=True, exist_ok=True)

    def _dir(self, ident: str) -> Path:
        return self.home / "dir" / ident

    def exists(self, ident: str) -> bool:
        return self._dir(ident).is_dir()

    def list_ids(self) -> list[str]:
        return [e.name for e in os.scandir(self.home / "dir") if e.is_dir()]

    def create(self, ident: str, parent: str | None) -> None:
        d = self._dir(ident)
        d.mkdir(mode=0o755)
        if parent is None:
            return
        # GNU cp keeps owners, modes, times, xattrs, devices and hard links.
        proc = subprocess.run(
            ["cp", "-a", "--reflink=auto", f"{self._dir(parent)}/.", str(d)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            shutil.rmtree(d, ignore_errors=True)
            raise errdefs.System(f"vfs: copying layer {parent}: {proc.stderr.strip()}")

    def remove(self, ident: str) -> None:
        self.reaper.discard(self._dir(ident))

    def apply_target(self, ident: str) -> Path:
        return self._dir(ident)

    def lower_dirs(self, ident: str) -> list[Path]:
        return []

    def get(self, ident: str) -> Path:
        return self._dir(ident)

    def put(self, ident: str) -> None:
        return None

    def metadata(self, ident: str) -> dict[str, str]:
        return {}

    def status(self) -> list[list[str]]:
        return []

    def diff_size(self, ident: str, parent: str | None = None) -> int:
        """A vfs layer is a whole copy: its changes are what differs from *parent*
        (moby's naive ``DiffSize``)."""
        if parent is None:
            return dir_size(self._dir(ident))
        return changes_size(self._dir(ident), self._dir(parent))

    def cleanup(self) -> None:
        return None

    def unmount_all(self, except_ids: set[str]) -> None:
        return None
