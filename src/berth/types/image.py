"""Image models: the image config document (the thing whose sha256 is the
image ID) and the Engine API's list/inspect/history/delete shapes."""

from __future__ import annotations

import msgspec
from msgspec import field

from berth.types.container import Config


class RootFS(msgspec.Struct):
    type: str = "layers"
    diff_ids: list[str] = msgspec.field(default_factory=list)


class History(msgspec.Struct, omit_defaults=True):
    created: str = ""
    author: str = ""
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False


class ImageConfig(msgspec.Struct, omit_defaults=True):
    """The image configuration JSON (Docker image spec v1.2 / OCI image config).

    Decoding ignores fields berth does not use; the bytes on disk are kept
    verbatim because the image ID is their digest.
    """

    architecture: str = ""
    os: str = ""
    variant: str = ""
    os_version: str = field(default="", name="os.version")
    created: str = ""
    author: str = ""
    config: Config | None = None
    container: str = ""
    container_config: Config | None = None
    docker_version: str = ""
    comment: str = ""
    history: list[History] = msgspec.field(default_factory=list)
    rootfs: RootFS = msgspec.field(default_factory=RootFS)
    parent: str = ""


class Metadata(msgspec.Struct):
    LastTagTime: str = ""


class Summary(msgspec.Struct):
    """One row of ``GET /images/json``."""

    Containers: int
    Created: int
    Id: str
    Labels: dict[str, str] | None
    ParentId: str
    RepoDigests: list[str]
    RepoTags: list[str]
    SharedSize: int
    Size: int
    VirtualSize: int | msgspec.UnsetType = msgspec.UNSET


class HistoryItem(msgspec.Struct):
    Id: str
    Created: int
    CreatedBy: str
    Tags: list[str] | None
    Size: int
    Comment: str


class DeleteItem(msgspec.Struct, omit_defaults=True):
    Untagged: str = ""
    Deleted: str = ""


class ImportOptions(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /images/create?fromSrc=``'s query, decoded once by the router and handed
    whole to the check (before the body is read) and to the import (moby's
    ``image.ImportOptions``)."""

    repo: str = ""
    tag: str = ""
    #: the image's comment; the router puts "Imported from <src>" when none is given
    message: str = ""
    #: Dockerfile-like instructions (``CMD``, ``ENV``...) applied to the image's config
    changes: list[str] = msgspec.field(default_factory=list)
    platform: str = ""


class PruneReport(msgspec.Struct):
    """``POST /images/prune``: ``ImagesDeleted`` is ``null`` when nothing went (moby
    appends to a nil slice); ``SpaceReclaimed`` counts only the layers removed."""

    ImagesDeleted: list[DeleteItem] | None
    SpaceReclaimed: int
