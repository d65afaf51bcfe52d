"""The Daemon: owns the stores and implements the Backend the API calls.

Operations live in sibling modules, one per family (``create``, ``delete``,
``list``...); this class holds the state they share and the start-up
restore that makes a crashed daemon's leftovers disappear.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import IO, Any

from berth import errdefs
from berth.container.container import (
    CONFIG_FILE,
    Container,
    decode_host_config,
    decode_record,
)
from berth.container.view import Snapshot, ViewDB
from berth.daemon import create as _create
from berth.daemon import delete as _delete
from berth.daemon import info as _info
from berth.daemon import inspect as _inspect
from berth.daemon import list as _list
from berth.daemon import prune as _prune
from berth.daemon import rename as _rename
from berth.daemon.options import DaemonOptions
from berth.graphdriver import new_driver
from berth.image.service import ImageService
from berth.types.container import (
    Config,
    CreateResponse,
    HostConfig,
    NetworkingConfig,
    PruneReport,
    Summary,
)
from berth.types.filters import Filters
from berth.types.image import DeleteItem, HistoryItem
from berth.types.image import Summary as ImageSummary
from berth.utils.atomic import write_file
from berth.utils.timefmt import format_rfc3339_nano, now_ns

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        root = options.data_root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o710)
        self.repository = root / "containers"
        self.repository.mkdir(mode=0o710, exist_ok=True)
        self.tmp_dir = root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(mode=0o700)
        self.engine_id = self._engine_id(root)
        self.cgroup_version = _info.cgroup_version()
        self.driver = new_driver(options.storage_driver, root)
        self.images = ImageService(root, self.driver)
        self.view = ViewDB()
        self.containers: dict[str, Container] = {}
        self._lock = threading.Lock()
        self._restore()

    # -- start-up --------------------------------------------------------------
    @staticmethod
    def _engine_id(root: Path) -> str:
        path = root / "engine-id"
        try:
            value = path.read_text().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = str(uuid.uuid4())
        write_file(path, value.encode(), 0o600)
        return value

    def _restore(self) -> None:
        layers = self.images.layers
        rw_names = set(layers.rw_layer_names())
        for entry in os.scandir(self.repository):
            if not entry.is_dir():
                continue
            root = Path(entry.path)
            if not (root / CONFIG_FILE).exists():
                log.info("removing half-created container %s", entry.name)
                self.images.release_rw_layer(entry.name)
                shutil.rmtree(root, ignore_errors=True)
                continue
            try:
                container = Container.from_disk(root)
            except Exception as e:
                log.error("cannot load container %s: %s", entry.name, e)
                continue
            if container.id != entry.name or container.id not in rw_names:
                log.error("container %s has no RW layer; removing it", entry.name)
                self.images.release_rw_layer(entry.name)
                shutil.rmtree(root, ignore_errors=True)
                continue
            if container.state.removal_in_progress:
                _delete.cleanup(self, container)
                continue
            self._restore_state(container)
            try:
                self.view.reserve_name(container.name, container.id)
            except errdefs.Conflict:
                log.error(
                    "container %s: name %s is taken; it is not loaded", container.id, container.name
                )
                continue
            self.containers[container.id] = container
            self.checkpoint(container, write=False)
        for name in set(layers.rw_layer_names()) - set(self.containers):
            log.info("releasing RW layer of unknown container %s", name)
            self.images.release_rw_layer(name)
        layers.release_unreferenced()
        layers.sweep_orphans()
        self.images.drop_dangling_references()

    def _restore_state(self, container: Container) -> None:
        """Containers that were running when berth went away have stopped (no runtime yet)."""
        st = container.state
        if st.running or st.paused or st.restarting:
            st.running = st.paused = st.restarting = False
            st.pid = 0
            st.exit_code = 255
            st.finished_at = format_rfc3339_nano(now_ns())
            container.to_disk(host_config=False)

    def shutdown(self) -> None:
        self.driver.cleanup()

    # -- container bookkeeping -----------------------------------------------
    def checkpoint(
        self, container: Container, *, host_config: bool = True, write: bool = True
    ) -> None:
        """Persist *container* (unless not *write*) and publish an immutable copy.

        The copy is decoded from the JSON just written, as moby's ``CheckpointTo``
        does, so readers never share an object with writers.  Without
        *host_config* the unchanged HostConfig of the previous snapshot is reused.
        """
        if write:
            raw, hc_raw = container.to_disk(host_config=host_config)
        else:
            raw, hc_raw = container.encode()
        previous = self.view.snapshot().get(container.id)
        if hc_raw is None and previous is not None:
            hc = previous.host_config
        else:
            hc = decode_host_config(hc_raw if hc_raw is not None else container.encode()[1])
        self.view.save(Snapshot.of(decode_record(raw), hc))

    def register(self, container: Container) -> None:
        with self._lock:
            self.containers[container.id] = container

    def unregister(self, container: Container) -> None:
        with self._lock:
            self.containers.pop(container.id, None)
        self.view.delete(container.id)

    def get_container(self, ref: str) -> Container:
        snap = self.view.snapshot().find(ref)
        container = self.containers.get(snap.id)
        if container is None:
            raise errdefs.NotFound(f"No such container: {ref}")
        return container

    def kill_for_removal(self, container: Container) -> None:
        raise errdefs.NotImplementedFeature(
            "berth cannot stop running containers yet; the runtime is not attached"
        )

    def containers_using(self, image_id: str) -> list[tuple[str, bool]]:
        snaps = sorted(self.view.snapshot().all(), key=lambda s: s.created_ns)
        return [(s.id, s.record.state.running) for s in snaps if s.record.image == image_id]

    def exec_ids(self, container_id: str) -> list[str] | None:
        return None

    def graph_driver_data(self, container_id: str) -> dict[str, str] | None:
        try:
            rw = self.images.layers.get_rw_layer(container_id)
        except errdefs.NotFound:
            return None
        data = self.images.layers.rw_metadata(rw)
        if data:
            data = {"ID": container_id, **data}
        return data or None

    def container_sizes(self, container_id: str) -> tuple[int, int]:
        try:
            rw = self.images.layers.get_rw_layer(container_id)
        except errdefs.NotFound:
            return 0, 0
        size_rw = self.images.layers.rw_size(rw)
        below = rw.parent.total_size() if rw.parent else 0
        return size_rw, size_rw + below

    def state_counts(self) -> dict[str, int]:
        counts = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for snap in self.view.snapshot():
            st = snap.record.state
            counts["total"] += 1
            if st.paused:
                counts["paused"] += 1
            elif st.running:
                counts["running"] += 1
            else:
                counts["stopped"] += 1
        return counts

    def runtimes(self) -> dict[str, str]:
        return {"runc": "runc"}

    def task_count(self) -> int:
        return threading.active_count()

    # -- Backend: containers -------------------------------------------------
    def create_container(
        self,
        name: str,
        config: Config,
        host_config: HostConfig,
        networking: NetworkingConfig | None,
        platform: str,
    ) -> CreateResponse:
        return _create.create_container(self, name, config, host_config, networking, platform)

    def list_containers(
        self,
        all_containers: bool,
        limit: int,
        size: bool,
        filters: Filters,
        version: tuple[int, int],
    ) -> list[Summary]:
        return _list.list_containers(self, all_containers, limit, size, filters, version)

    def inspect_container(self, ref: str, size: bool, version: tuple[int, int]) -> dict[str, Any]:
        return _inspect.inspect_container(self, ref, size, version)

    def rename_container(self, old: str, new: str) -> None:
        _rename.rename_container(self, old, new)

    def remove_container(self, ref: str, force: bool, remove_volumes: bool, link: bool) -> None:
        _delete.remove_container(self, ref, force, remove_volumes, link)

    def prune_containers(self, filters: Filters) -> PruneReport:
        return _prune.prune_containers(self, filters)

    # -- Backend: images -----------------------------------------------------
    def list_images(
        self, filters: Filters, all_images: bool, shared_size: bool, version: tuple[int, int]
    ) -> list[ImageSummary]:
        counts: dict[str, int] = {}
        for snap in self.view.snapshot():
            counts[snap.record.image] = counts.get(snap.record.image, 0) + 1
        return self.images.list_images(filters, all_images, shared_size, version, counts)

    def inspect_image(self, ref: str, version: tuple[int, int]) -> dict[str, Any]:
        return self.images.inspect(ref, version)

    def image_history(self, ref: str) -> list[HistoryItem]:
        return self.images.history(ref)

    def tag_image(self, ref: str, repo: str, tag: str) -> None:
        self.images.tag(ref, repo, tag)

    def delete_image(self, ref: str, force: bool, prune: bool) -> list[DeleteItem]:
        return self.images.delete(ref, force, prune, self.containers_using)

    def import_image(
        self,
        stream: IO[bytes],
        repo: str,
        tag: str,
        message: str,
        changes: list[str],
        platform: str,
    ) -> str:
        return self.images.import_image(stream, repo, tag, message, changes, platform)

    def check_import(self, repo: str, tag: str, changes: list[str], platform: str) -> None:
        from berth.image.importer import prepare

        prepare(repo, tag, changes, platform)

    def load_images(self, path: Path) -> list[str]:
        return self.images.load(path)

    # -- Backend: system -------------------------------------------------------
    def system_info(self, version: tuple[int, int]) -> dict[str, Any]:
        return _info.system_info(self, version)

    def system_version(self) -> dict[str, Any]:
        return _info.system_version()
