"""``docker import``: one tarball becomes a one-layer image."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import msgspec

from berth import __version__, errdefs
from berth.image.changes import apply_changes
from berth.image.reference import repo_tag_reference
from berth.types.container import Config
from berth.types.image import ImportOptions
from berth.types.wire import to_wire
from berth.utils.platform import host_platform, parse_platform
from berth.utils.timefmt import format_rfc3339_nano, now_ns

if TYPE_CHECKING:
    from berth.image.service import ImageService


def prepare(options: ImportOptions) -> tuple[Any, Config, Any]:
    """Validate everything that does not need the body, so errors come before reading it."""
    ref = repo_tag_reference(options.repo, options.tag)
    plat = parse_platform(options.platform) if options.platform else host_platform()
    if plat.os != "linux":
        raise errdefs.InvalidParameter(f"cannot import a {plat.os} image on linux")
    config = apply_changes(Config(), options.changes)
    return ref, config, plat


def import_image(svc: ImageService, stream: IO[bytes], options: ImportOptions) -> str:
    ref, config, plat = prepare(options)
    layer = svc.layers.register(stream, None)
    try:
        created = format_rfc3339_nano(now_ns())
        doc: dict[str, Any] = {"architecture": plat.architecture}
        doc["comment"] = options.message
        doc["config"] = to_wire(config)
        doc["container_config"] = msgspec.to_builtins(Config())
        doc["created"] = created
        doc["docker_version"] = f"berth-{__version__}"
        doc["history"] = [{"created": created, "comment": options.message}]
        doc["os"] = plat.os
        doc["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id]}
        if plat.variant:
            doc["variant"] = plat.variant
        img = svc.images.create(msgspec.json.encode(doc))
    finally:
        svc.layers.release(layer)
    if ref is not None:
        svc.tag_image(img.id, ref)
    return img.id
