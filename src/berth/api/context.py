"""What handler modules receive: the backends they serve, and a way to run blocking calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from berth.backend import Backend, BuildBackend, ImageBackend, NetworkBackend, VolumeBackend
from berth.utils.workers import WorkerPool

if TYPE_CHECKING:  # loaded at the first pull, push, login or search
    from berth.distribution.service import DistributionService

P = ParamSpec("P")
T = TypeVar("T")
#: A service made at its first use (it returns the same one each time).
Lazy = Callable[[], T]


class Context:
    """The container side (*backend*, the Daemon) and, beside it, each service that
    its routers call directly rather than through the Daemon."""

    def __init__(
        self,
        backend: Backend,
        *,
        images: ImageBackend,
        networks: NetworkBackend | None = None,
        volumes: VolumeBackend | None = None,
        distribution: Lazy[DistributionService] | None = None,
        builds: Lazy[BuildBackend] | None = None,
        workers: int = 32,
    ) -> None:
        self.backend = backend
        self.images = images
        # None until the Daemon hands its network controller over: no network routes.
        self.networks = networks
        # None until the Daemon hands its volume service over: no volume routes.
        self.volumes = volumes
        # None until the Daemon hands its distribution service over: no pull, push, login
        # or search.
        self._distribution = distribution
        # None until the Daemon hands its builder over: no POST /build.
        self._builds = builds
        self._executor = WorkerPool(workers, "berth-api")

    @property
    def distribution(self) -> DistributionService | None:
        return None if self._distribution is None else self._distribution()

    @property
    def builds(self) -> BuildBackend | None:
        return None if self._builds is None else self._builds()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking daemon work (disk, mounts, tar) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
