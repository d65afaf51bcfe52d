"""Graph drivers: where layer contents live on disk and how they are stacked."""

from __future__ import annotations

from pathlib import Path

from berth import errdefs
from berth.graphdriver import overlay2, vfs
from berth.graphdriver.base import Driver
from berth.utils.reaper import Reaper

DRIVERS = ("overlay2", "vfs")


def new_driver(name: str, data_root: Path, reaper: Reaper | None = None) -> Driver:
    """Open the driver *name* under *data_root*; "" picks overlay2 when the kernel has it.
    Removed layers go to *reaper* (by default: deleted in place)."""
    if reaper is None:
        reaper = Reaper(data_root / "trash")
    if name == "":
        if overlay2.supported(data_root):
            return overlay2.Overlay2(data_root / "overlay2", reaper)
        name = "vfs"
    if name == "overlay2":
        if not overlay2.supported(data_root):
            raise errdefs.System(
                f"overlay2 is not supported on {data_root}: the kernel lacks overlayfs or the "
                "backing filesystem cannot hold an upper directory; use --storage-driver vfs"
            )
        return overlay2.Overlay2(data_root / "overlay2", reaper)
    if name == "vfs":
        return vfs.Vfs(data_root / "vfs", reaper)
    raise errdefs.InvalidParameter(
        f"unknown storage driver {name!r}: choose one of {', '.join(DRIVERS)}"
    )


__all__ = ["DRIVERS", "Driver", "new_driver"]
