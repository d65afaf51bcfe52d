"""The distribution service: the daemon's registry side, beside the image service.

It owns the registry client (endpoints, TLS, credentials, tokens) and the V2 metadata that
links local layers to registry blobs, and runs pushes into and pulls out of the image
service.  The API's image and distribution routers call it directly.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from berth.distribution import pull as _pull
from berth.distribution import push as _push
from berth.distribution.metadata import V2MetadataStore
from berth.distribution.progress import Progress
from berth.distribution.registry import AuthConfig, RegistryClient
from berth.image.reference import Reference
from berth.utils.platform import Platform


class ImageTarget(_pull.PullTarget, _push.PushSource, Protocol):
    """What the distribution service needs of the image service."""


class DistributionService:
    def __init__(self, images: ImageTarget, client: RegistryClient, root: Path) -> None:
        self.images = images
        self.client = client
        #: ``<image-root>/distribution``: which blobs hold which layers
        self.metadata = V2MetadataStore(root)

    def prepare_pull(
        self, ref: Reference, auth: AuthConfig | None, platform: Platform | None
    ) -> _pull.PullPlan:
        """The manifest(s) to pull; what fails here is an HTTP error, before any stream."""
        return _pull.prepare(self.client, ref, auth, platform)

    def pull(
        self,
        plan: _pull.PullPlan,
        progress: Progress,
        cancel: threading.Event | None = None,
    ) -> list[str]:
        """``docker pull``; see :mod:`berth.distribution.pull`.  The image IDs."""
        return _pull.execute(self.images, plan, progress, cancel, self.metadata)

    def push(
        self,
        ref: Reference,
        auth: AuthConfig | None,
        progress: Progress,
        cancel: threading.Event | None = None,
    ) -> None:
        """``docker push``; see :mod:`berth.distribution.push`."""
        _push.push(self.images, self.client, self.metadata, ref, auth, progress, cancel)
