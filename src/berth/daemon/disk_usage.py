"""``docker system df`` (moby's ``daemon/disk_usage.go``) and the sizes of a container
that ``docker ps -s`` and ``docker inspect -s`` show.

Sizes are measured only when asked.  A container's RW layer is measured again only
when it may have changed (:meth:`berth.layer.store.LayerStore.rw_size`), so a second
``docker system df`` or ``ps -s`` walks only the layers of running containers and of
those written to since; image layers have the sizes recorded when they were registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon import list as _list
from berth.types.filters import Filters
from berth.types.system import DiskUsage

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon


def container_sizes(d: Daemon, container_id: str) -> tuple[int, int]:
    """``(SizeRw, SizeRootFs)`` as dockerd's ``GetContainerLayerSize``: the bytes of the
    RW layer (overlay2: its upper directory; vfs: what differs from the init layer),
    and that plus the image's size; SizeRootFs is 0 when the image has no layers."""
    layers = d.images.layers
    try:
        rw = layers.get_rw_layer(container_id)
    except errdefs.NotFound:
        return 0, 0
    size_rw = layers.rw_size(rw)
    if rw.parent is None:
        return size_rw, 0
    return size_rw, size_rw + rw.parent.total_size()


def system_disk_usage(
    d: Daemon, containers: bool, images: bool, volumes: bool, build_cache: bool
) -> DiskUsage:
    """``GET /system/df``: what each kind asked for uses.

    The containers are ``docker ps -a -s``'s list; the images ``docker images``'s
    (no untagged parents) with ``SharedSize`` (layers other images also stand on) and
    ``Containers`` (how many use each); the volumes the local ones without driver
    options, with ``UsageData``.  The CLI works the reclaimable figures out from these.
    berth has no build cache: asked for, it is an empty list.
    """
    du = DiskUsage()
    if containers:
        du.Containers = _list.list_containers(d, True, -1, True, Filters())
    if images:
        du.Images = d.images.list_images(Filters(), False, True)
        du.LayersSize = d.images.layers_size()
    if volumes:
        du.Volumes = d.volumes.local_volumes_size()
    if build_cache:
        du.BuildCache = []
    return du
