"""System models of the Engine API: what ``GET /system/df`` answers (moby's
``system.DiskUsage``, the shape of API 1.51 and before)."""

from __future__ import annotations

from typing import Any

import msgspec

from berth.types.container import Summary as ContainerSummary
from berth.types.image import Summary as ImageSummary
from berth.types.volume import Volume


class DiskUsage(msgspec.Struct):
    """``docker system df``: a kind not asked for (``type=`` from API 1.42) is ``null``,
    as in dockerd, whose fields have no ``omitempty``; ``LayersSize`` is then 0.

    ``LayersSize`` is the bytes of every layer some image uses, each once; the CLI
    takes it as the images' total.  Encode with :func:`berth.types.wire.encode` so
    that the containers' and volumes' omitempty fields go as Go leaves them out.
    """

    LayersSize: int = 0
    Images: list[ImageSummary] | None = None
    Containers: list[ContainerSummary] | None = None
    Volumes: list[Volume] | None = None
    BuildCache: list[dict[str, Any]] | None = None
