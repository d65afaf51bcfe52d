"""The container side of ``docker build`` (moby's ``builder/dockerfile/containerbackend.go``
and the daemon's ``CommitBuildStep`` / ``ContainerCreateWorkdir``).

The builder (:mod:`berth.builder`) cannot import the daemon; the Daemon hands it this
object.  A step's container goes through the daemon's normal paths: create (with its
``create`` event), attach, start, wait, remove (``destroy``), so that ``docker events``
shows what dockerd shows for a build.  Its output is taken from the container's stream
hub, as ``docker attach`` takes it, and given to the builder chunk by chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from berth import errdefs
from berth.archive import PIPE_SIZE, WriterPipe
from berth.container.stream import Subscription
from berth.daemon import commit as _commit
from berth.daemon import delete as _delete
from berth.daemon import start as _start
from berth.image.commit import CommitConfig
from berth.types.container import Config, HostConfig

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how often a running step looks at its cancel flag (seconds)
_POLL = 0.2
#: how long the output of a step that exited may take to drain (seconds)
_DRAIN = 10.0

_config_decoder = msgspec.json.Decoder(Config)
_config_encoder = msgspec.json.Encoder()


def _copy(config: Config) -> Config:
    return _config_decoder.decode(_config_encoder.encode(config))


class BuildSteps:
    """What the builder asks of containers; blocking, called from the build's thread."""

    def __init__(self, d: Daemon) -> None:
        self._d = d

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        loop = self._d.loop
        if loop is None:
            raise errdefs.Unavailable("the daemon is not serving yet")
        return asyncio.run_coroutine_threadsafe(make(), loop)

    def create(self, config: Config, host_config: HostConfig) -> tuple[str, list[str], Config]:
        """A step's container (moby's ``ContainerCreateIgnoreImagesArgsEscaped``): its
        ID, the create's warnings and its config as created (hostname, merged labels)."""
        resp = self._d.create_container("", config, host_config, None, "")
        container = self._d.get_container(resp.Id)
        return resp.Id, list(resp.Warnings or []), _copy(container.record.config)

    def make_workdir(self, container_id: str) -> None:
        """moby's ``ContainerCreateWorkdir``: the working directory made in the
        container's RW layer (owned by root) so that WORKDIR commits it."""
        d = self._d
        container = d.get_container(container_id)
        layers = d.images.layers
        rw = layers.get_rw_layer(container_id)
        rootfs = layers.mount(rw)
        try:
            _start.setup_working_dir(rootfs, container.record.config.working_dir)
        finally:
            layers.unmount(rw)

    def run(
        self,
        container_id: str,
        output: Callable[[str, bytes], None],
        cancel: threading.Event,
    ) -> int:
        """Attach, start and wait for the step's container (moby's
        ``containerManager.Run``); its exit code.  *output* gets each chunk of stdout and
        stderr, in order, in a worker thread (it may wait for a slow client).  A set
        *cancel* (the client went away) kills and removes the container and raises
        Unavailable."""
        d = self._d
        info = d.attach_info(container_id)  # the attach event, as the builder attaches

        async def subscribe() -> Subscription:
            return info.streams.subscribe(frozenset({"stdout", "stderr"}))

        sub = self._on_loop(subscribe).result()

        async def pump() -> None:
            # *output* may wait for a slow client: off the loop, one chunk at a time, so
            # that the container's output waits too (the hub's queue is bounded)
            loop = asyncio.get_running_loop()
            try:
                while (item := await sub.get()) is not None:
                    await loop.run_in_executor(None, output, *item)
            finally:
                info.streams.unsubscribe(sub)

        async def register() -> asyncio.Future[tuple[int, str | None]]:
            return d.wait_container(container_id, "next-exit")

        # Registered before the start, so that a step that exits at once is not missed.
        exit_future = self._on_loop(register).result()

        async def waiter() -> tuple[int, str | None]:
            return await exit_future

        pumping = self._on_loop(pump)
        exited = self._on_loop(waiter)
        try:
            d.start_container(container_id)
        except BaseException:
            exited.cancel()
            pumping.cancel()
            raise
        while True:
            try:
                code, _ = exited.result(_POLL)
                break
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    self._cancel(container_id, exited, pumping)
                    raise errdefs.Unavailable("Build cancelled") from None
        try:
            pumping.result(_DRAIN)
        except concurrent.futures.TimeoutError:
            pumping.cancel()
        return code

    def _cancel(
        self,
        container_id: str,
        exited: concurrent.futures.Future[tuple[int, str | None]],
        pumping: concurrent.futures.Future[None],
    ) -> None:
        log.debug("build cancelled, killing and removing container %s", container_id[:12])
        try:
            self.remove(container_id)
        except errdefs.BerthError as e:
            log.warning("removing the cancelled build step %s: %s", container_id[:12], e)
        exited.cancel()
        pumping.cancel()

    def remove(self, container_id: str) -> None:
        """moby's ``removeContainer``: forced, with its anonymous volumes."""
        _delete.remove_container(self._d, container_id, True, True, False)

    def commit(
        self, container_id: str, config: Config, container_config: Config, author: str
    ) -> str:
        """moby's ``CommitBuildStep``: the container's changes as a layer on its image and
        a child image with *config* and *container_config*; no commit event, no pause."""
        d = self._d
        container = d.get_container(container_id)
        rw = _commit._rw_layer(d, container)
        changes = _commit._changes(d, container, rw)
        commit = CommitConfig(
            container_id=container.id,
            container_os=container.record.os,
            parent_image_id=container.record.image,
            config=_copy(config),
            container_config=_copy(container_config),
            author=author,
        )
        if not changes:
            return d.images.commit_image(None, commit)
        layers = d.images.layers
        tar = WriterPipe(
            lambda fd: _commit._write_tar(layers, rw, changes, fd, container.id),
            "reading the container's changes",
        )
        with io.BufferedReader(tar, PIPE_SIZE) as stream:
            return d.images.commit_image(stream, commit)
