"""The distribution service: the daemon's registry side, beside the image service.

It owns the registry client (endpoints, TLS, credentials, tokens) and the V2 metadata that
links local layers to registry blobs, and runs pushes into and pulls out of the image
service.  The API's image and distribution routers call it directly.
"""

from __future__ import annotations

import threading
from pathlib import Path

from berth.distribution import push as _push
from berth.distribution.metadata import V2MetadataStore
from berth.distribution.progress import Progress
from berth.distribution.registry import AuthConfig, RegistryClient
from berth.image.reference import Reference


class DistributionService:
    def __init__(self, images: _push.PushSource, client: RegistryClient, root: Path) -> None:
        self.images = images
        self.client = client
        #: ``<image-root>/distribution``: which blobs hold which layers
        self.metadata = V2MetadataStore(root)

    def push(
        self,
        ref: Reference,
        auth: AuthConfig | None,
        progress: Progress,
        cancel: threading.Event | None = None,
    ) -> None:
        """``docker push``; see :mod:`berth.distribution.push`."""
        _push.push(self.images, self.client, self.metadata, ref, auth, progress, cancel)
