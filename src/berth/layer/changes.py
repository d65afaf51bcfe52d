"""A container's RW layer as ``docker diff`` lists it and as ``docker commit`` packs it.

Both compare the RW layer with the layer right below it, the init layer, as dockerd does:
what berthd put there for every container (``/etc/hosts``, ``/.dockerenv``, mount points
of ``/proc`` and ``/dev``...) is then below the line and never shows.  Which directories
hold what depends on the driver: overlay2 keeps the container's writes alone in the RW
layer's ``diff`` directory, over the init layer's and the image's; vfs keeps whole copies,
so the RW layer's tree is compared with the init layer's.  Nothing is mounted.
"""

from __future__ import annotations

from berth.archive import Change, dir_changes, export_changes, overlay_changes
from berth.layer.store import LayerStore, RWLayer


def rw_changes(layers: LayerStore, rw: RWLayer) -> list[Change]:
    """What the container changed over its image (and init layer), in ``docker diff``'s
    order."""
    driver = layers.driver
    own = str(driver.apply_target(rw.mount_id))
    if driver.whiteout_format == "overlay":
        return overlay_changes(own, [str(p) for p in driver.lower_dirs(rw.mount_id)])
    below = rw.init_id or (rw.parent.cache_id if rw.parent is not None else "")
    return dir_changes(own, str(driver.apply_target(below)) if below else None)


def export_rw_changes(layers: LayerStore, rw: RWLayer, changes: list[Change], out: int) -> None:
    """Write the layer tar of *changes* (from :func:`rw_changes` on *rw*) to descriptor
    *out*, read from the RW layer's own directory."""
    export_changes(str(layers.driver.apply_target(rw.mount_id)), changes, out)
