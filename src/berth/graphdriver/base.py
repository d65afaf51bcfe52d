"""The graph driver contract, shaped like moby's ``graphdriver.Driver``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from berth.utils.reaper import Reaper


class Driver(Protocol):
    """Stores layer directories by ID and mounts stacks of them.

    IDs are opaque (cache-ids and mount-ids of the layer store).  A layer is
    created empty on top of *parent*; its changes are written by
    :meth:`apply_target` users (see :mod:`berth.archive`) before it is
    used as a parent.
    """

    name: str
    home: Path
    #: where removed directories go (layers, and their records in the layer store)
    reaper: Reaper

    def create(self, ident: str, parent: str | None) -> None:
        """Create layer *ident* on *parent*; for the RW layer of a container too."""

    def remove(self, ident: str) -> None:
        """Delete layer *ident* and everything in it (unmounting it first)."""

    def exists(self, ident: str) -> bool: ...

    def apply_target(self, ident: str) -> Path:
        """Directory into which a layer tar of *ident* is extracted."""

    @property
    def whiteout_format(self) -> str:
        """ "overlay" (char-device whiteouts, opaque xattr) or "delete" (apply by removing)."""

    def lower_dirs(self, ident: str) -> list[Path]:
        """The directories below *ident*, top first (empty when the driver copies parents)."""

    def get(self, ident: str) -> Path:
        """Mount *ident* with its parents and return the root; reference-counted."""

    def put(self, ident: str) -> None:
        """Release one :meth:`get`; unmount on the last."""

    def metadata(self, ident: str) -> dict[str, str]:
        """``GraphDriver.Data`` for inspect."""

    def status(self) -> list[list[str]]:
        """``DriverStatus`` for ``docker info``."""

    def list_ids(self) -> list[str]:
        """Every layer directory present, for sweeping orphans."""

    def cleanup(self) -> None:
        """Unmount whatever this driver mounted; called at shutdown."""

    def unmount_all(self, except_ids: set[str]) -> None:
        """Unmount every layer mount except those of *except_ids*."""

    def diff_size(self, ident: str, parent: str | None = None) -> int:
        """Bytes used by the changes of *ident* alone (over *parent*, its layer below, for
        a driver whose layers are whole copies)."""
