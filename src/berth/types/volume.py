"""Volume models of the Engine API (``api/types/volume`` in moby, API 1.51).

Fields use snake_case in Python and the Engine's spelling on the wire
(``rename="pascal"``), in the order of moby's generated structs, which is the
order dockerd's JSON has.  Structs listing ``__omitempty__`` must be encoded
with :func:`berth.types.wire.encode` to drop those keys when empty, as Go does.

Nulls, as dockerd's volume service (``volumeToAPIType``) sends them for local
volumes: ``Labels`` and ``Options`` are the maps the volume was created with,
``null`` when none was given (the docker CLI sends none when there are no
``--label``/``-o``: its request fields are ``omitempty``), ``{}`` when a client
sent an empty map; an anonymous volume has at least the label
``com.docker.volume.anonymous``.  ``Status`` (the local driver has none),
``UsageData`` (only ``GET /system/df``) and ``ClusterVolume`` (swarm only) are
left out when empty.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from msgspec import field

#: The label dockerd puts on a volume created without a name.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


class VolumeUsageData(msgspec.Struct, rename="pascal"):
    """A volume's disk usage as ``GET /system/df`` shows it; -1 for "not available"."""

    ref_count: int = -1
    size: int = -1


class Volume(msgspec.Struct, rename="pascal"):
    """A volume as ``GET /volumes``, ``GET /volumes/{name}`` and ``POST /volumes/create``
    answer it.

    ``CreatedAt`` is RFC 3339 to the second in the daemon's time zone
    (``2025-03-04T05:06:07Z``, ``...+01:00``), as Go's ``time.RFC3339``; dockerd
    always sends it for local volumes.  ``Scope`` is ``local`` for the local driver.
    """

    cluster_volume: dict[str, Any] | None = None
    created_at: str = ""
    driver: str = "local"
    labels: dict[str, str] | None = None
    mountpoint: str = ""
    name: str = ""
    options: dict[str, str] | None = None
    scope: str = "local"
    status: dict[str, Any] | None = None
    usage_data: VolumeUsageData | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset(
        {"ClusterVolume", "CreatedAt", "Status", "UsageData"}
    )


class VolumeCreateRequest(msgspec.Struct, rename="pascal"):
    """Body of ``POST /volumes/create`` (moby's ``volume.CreateOptions``).

    Every member may be absent or ``null``: an empty name makes an anonymous
    volume (the service picks a random 64-hex name and adds the anonymous
    label), an empty driver the default one.  ``ClusterVolumeSpec`` only
    matters for its presence: from API 1.42 it asks for a swarm cluster
    volume, which berth (never a swarm manager) refuses as dockerd does; the
    router drops it for older clients, whose dockerd ignored it.
    """

    name: str = ""
    driver: str = ""
    driver_opts: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    cluster_volume_spec: dict[str, Any] | None = None


class VolumeListResponse(msgspec.Struct, rename="pascal"):
    """``GET /volumes``: ``Volumes`` is always a list (``[]`` when none match);
    ``Warnings`` is ``null`` unless a driver failed to list its volumes."""

    volumes: list[Volume] = field(default_factory=list)
    warnings: list[str] | None = None


class VolumePruneReport(msgspec.Struct, rename="pascal"):
    """``POST /volumes/prune``: ``VolumesDeleted`` is ``[]`` when nothing was
    removed (dockerd makes the slice before looping), ``SpaceReclaimed`` in bytes."""

    volumes_deleted: list[str] = field(default_factory=list)
    space_reclaimed: int = 0
