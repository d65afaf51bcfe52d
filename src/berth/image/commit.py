"""The image side of ``docker commit``: a layer on the container's image and a child config.

moby's ``ImageService.CommitImage`` and ``image.NewChildImage``: the layer tar of the
container's changes is registered on the image's top layer (through
:meth:`LayerStore.register`, which keeps its tar-split record, so the image can be pushed
and saved byte for byte), and the new config is the parent's with the layer's DiffID
appended, one more history entry, and the container's configs.  A tar with nothing in it
(the empty tar's DiffID) adds no layer: the history entry says ``empty_layer``.  Either
the image is made with its layer or neither is left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import msgspec

from berth import __version__, errdefs
from berth.layer import ROLayer
from berth.types.container import Config
from berth.types.wire import to_wire
from berth.utils.platform import host_platform
from berth.utils.timefmt import format_rfc3339_nano, now_ns

if TYPE_CHECKING:
    from berth.image.service import ImageService

#: the DiffID of a tar with no entries (moby's ``layer.DigestSHA256EmptyTar``)
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


@dataclass(frozen=True)
class CommitConfig:
    """moby's ``backend.CommitConfig``: what the container side hands over."""

    container_id: str
    container_os: str
    #: the container's image ("" for none)
    parent_image_id: str
    #: the new image's config (the container's, merged with the request's)
    config: Config
    #: the container's own config, recorded as ``container_config``
    container_config: Config
    author: str = ""
    comment: str = ""


def commit_image(svc: ImageService, layer_tar: IO[bytes] | None, c: CommitConfig) -> str:
    """Register *layer_tar* (None: no changes) on the parent image and make the child
    image; its ID."""
    parent = svc.images.get(c.parent_image_id) if c.parent_image_id else None
    if c.parent_image_id and parent is None:
        raise errdefs.NotFound(f"No such image: {c.parent_image_id}")
    parent_doc: dict[str, Any] = {}
    if parent is not None:
        parent_doc = msgspec.json.decode(svc.images.raw_config(parent.id))
    # The container holds its image's layer, but not against a forced removal of both while
    # the tar streams: hold it here too.
    below: ROLayer | None = None
    if parent is not None and parent.layer is not None:
        below = svc.layers.get(parent.layer.chain_id)
    layer: ROLayer | None = None
    try:
        if layer_tar is not None:
            layer = svc.layers.register(layer_tar, below)
            if layer.diff_id == EMPTY_LAYER:
                svc.layers.release(layer)
                layer = None
        raw = child_config(parent_doc, c, layer.diff_id if layer is not None else None)
        img = svc.images.create(raw, parent=parent.id if parent is not None else "")
    finally:
        # The image holds its own reference now (or, having failed, none: the layer goes).
        if layer is not None:
            svc.layers.release(layer)
        if below is not None:
            svc.layers.release(below)
    return img.id


def child_config(parent: dict[str, Any], c: CommitConfig, diff_id: str | None) -> bytes:
    """The config JSON of the child of the image whose config is *parent* (moby's
    ``NewChildImage``, keys sorted as its ``MarshalJSON`` sorts them)."""
    created = format_rfc3339_nano(now_ns())
    rootfs = parent.get("rootfs") or {}
    diff_ids = list(rootfs.get("diff_ids") or [])
    if diff_id is not None:
        diff_ids.append(diff_id)
    entry: dict[str, Any] = {"created": created}
    if c.author:
        entry["author"] = c.author
    created_by = " ".join(c.container_config.cmd or [])
    if created_by:
        entry["created_by"] = created_by
    if c.comment:
        entry["comment"] = c.comment
    if diff_id is None:
        entry["empty_layer"] = True
    doc: dict[str, Any] = {
        "architecture": parent.get("architecture") or host_platform().architecture,
        "config": to_wire(c.config),
        "container_config": to_wire(c.container_config),
        "created": created,
        "docker_version": f"berth-{__version__}",
        "history": [*(parent.get("history") or []), entry],
        "os": c.container_os or "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if c.author:
        doc["author"] = c.author
    if c.container_id:  # moby's V1Image leaves it out when empty (a COPY step's image)
        doc["container"] = c.container_id
    for key in ("variant", "os.version", "os.features"):
        if parent.get(key):
            doc[key] = parent[key]
    return msgspec.json.encode(dict(sorted(doc.items())))
