"""``docker diff`` and ``docker commit``: the Engine API's shapes."""

from __future__ import annotations

import msgspec

from berth.types.container import Config


class FilesystemChange(msgspec.Struct):
    """One item of ``GET /containers/{id}/changes``; Kind 0 modified, 1 added, 2 deleted."""

    Path: str
    Kind: int


class CommitOptions(msgspec.Struct, kw_only=True):
    """``POST /commit``'s query and body (moby's ``backend.CreateImageConfig``)."""

    container: str
    repo: str = ""
    tag: str = ""
    author: str = ""
    comment: str = ""
    #: pause a running container while its files are read (the router's default: true)
    pause: bool = True
    #: Dockerfile instructions (``ENV A=1``, ``CMD ["sh"]``...) applied to the config
    changes: list[str] = msgspec.field(default_factory=list)
    #: the body: the new image's config, in place of the container's (None: no body)
    config: Config | None = None


class CommitResponse(msgspec.Struct):
    Id: str
