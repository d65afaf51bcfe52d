"""Layer store over a graph driver, with moby's on-disk metadata.

Read-only layers live in ``layerdb/sha256/<chain>/{diff,size,cache-id,parent,
tar-split.json.gz}`` and their contents in the driver directory named by
``cache-id``; the tar-split record lets :meth:`LayerStore.tar_stream` give
back the very tar that was registered (push and save need its DiffID).  A
container's RW layer is ``layerdb/mounts/<container>/{mount-id,init-id,parent}``
over the driver directories ``<mount-id>-init`` (the init layer) and
``<mount-id>``.  Every metadata directory appears by one rename, so a crash
leaves either nothing or a whole record; driver directories that no record
names are swept at start-up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

from berth import errdefs
from berth.archive import (
    TarSplitRecorder,
    apply_layer,
    assemble_tar_split,
    pack_layer_diff,
    tar_split_size,
)
from berth.graphdriver.base import Driver
from berth.layer.chain import chain_id as make_chain_id
from berth.utils.atomic import sweep_temp, write_dir

log = logging.getLogger(__name__)

#: moby's name for the record of a layer's tar (see berth.archive._tarsplit)
TAR_SPLIT = "tar-split.json.gz"
#: berth's: in place of a record, why the layer's tar cannot be rebuilt
TAR_SPLIT_REFUSED = "tar-split.unreproducible"

#: ``init(path, lowers)``: populate a new init layer at *path*; *lowers* are the
#: image's layer directories, top first (empty when the driver copies parents).
InitFunc = Callable[[Path, list[Path]], None]


@dataclass(eq=False)
class ROLayer:
    chain_id: str
    diff_id: str
    cache_id: str
    size: int
    parent: ROLayer | None
    references: int = 0

    def total_size(self) -> int:
        size = 0
        layer: ROLayer | None = self
        while layer is not None:
            size += layer.size
            layer = layer.parent
        return size

    def diff_ids(self) -> list[str]:
        out: list[str] = []
        layer: ROLayer | None = self
        while layer is not None:
            out.append(layer.diff_id)
            layer = layer.parent
        out.reverse()
        return out


@dataclass(eq=False)
class RWLayer:
    name: str
    mount_id: str
    init_id: str
    parent: ROLayer | None
    _mounts: int = field(default=0)
    _metadata: dict[str, str] | None = field(default=None)
    #: bumped by every mount and unmount: whatever writes the layer through the daemon
    #: (the container's processes, ``docker cp``, a start) holds it mounted meanwhile
    _generation: int = field(default=0)
    #: (generation, bytes) of the last size measured while nothing held it mounted
    _size: tuple[int, int] | None = field(default=None)


class LayerStore:
    def __init__(self, root: Path, driver: Driver) -> None:
        self.root = root
        self.driver = driver
        self._layers: dict[str, ROLayer] = {}
        self._mounts: dict[str, RWLayer] = {}
        #: each layer's tar length once asked (layers never change)
        self._tar_sizes: dict[str, int] = {}
        self._lock = threading.RLock()
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "mounts").mkdir(parents=True, exist_ok=True)
        self._load()

    # -- loading -------------------------------------------------------------
    def _read(self, path: Path) -> str:
        return path.read_text().strip()

    def _load(self) -> None:
        sweep_temp(self.root / "sha256")
        sweep_temp(self.root / "mounts")
        raw: dict[str, tuple[str, str, int, str]] = {}
        for entry in os.scandir(self.root / "sha256"):
            if not entry.is_dir():
                continue
            d = Path(entry.path)
            try:
                diff = self._read(d / "diff")
                cache = self._read(d / "cache-id")
                size = int(self._read(d / "size"))
                parent_ref = self._read(d / "parent") if (d / "parent").exists() else ""
            except (OSError, ValueError) as e:
                log.warning("dropping unreadable layer record %s: %s", d.name, e)
                shutil.rmtree(d, ignore_errors=True)
                continue
            raw["sha256:" + entry.name] = (diff, cache, size, parent_ref)

        def build(cid: str, seen: tuple[str, ...] = ()) -> ROLayer | None:
            if cid in self._layers:
                return self._layers[cid]
            rec = raw.get(cid)
            if rec is None or cid in seen:
                return None
            diff, cache, size, parent_id = rec
            parent = build(parent_id, (*seen, cid)) if parent_id else None
            if parent_id and parent is None:
                log.warning("dropping layer %s: its parent %s is missing", cid, parent_id)
                return None
            if not self.driver.exists(cache):
                log.warning("dropping layer %s: driver directory %s is missing", cid, cache)
                return None
            layer = ROLayer(cid, diff, cache, size, parent)
            if parent is not None:
                parent.references += 1
            self._layers[cid] = layer
            return layer

        for cid in raw:
            build(cid)
        for cid in set(raw) - set(self._layers):
            shutil.rmtree(self._meta_dir(cid), ignore_errors=True)

        for entry in os.scandir(self.root / "mounts"):
            d = Path(entry.path)
            try:
                mount_id = self._read(d / "mount-id")
                init_id = self._read(d / "init-id") if (d / "init-id").exists() else ""
                parent_id = self._read(d / "parent") if (d / "parent").exists() else ""
            except OSError as e:
                log.warning("dropping unreadable mount record %s: %s", d.name, e)
                shutil.rmtree(d, ignore_errors=True)
                continue
            image_layer = self._layers.get(parent_id) if parent_id else None
            if parent_id and image_layer is None:
                log.warning(
                    "dropping RW layer of %s: image layer %s is missing", entry.name, parent_id
                )
                self._remove_rw_dirs(mount_id, init_id)
                shutil.rmtree(d, ignore_errors=True)
                continue
            if image_layer is not None:
                image_layer.references += 1
            self._mounts[entry.name] = RWLayer(entry.name, mount_id, init_id, image_layer)

    def sweep_orphans(self) -> None:
        """Delete driver directories that no layer or RW record names."""
        with self._lock:
            wanted = {layer.cache_id for layer in self._layers.values()}
            for rw in self._mounts.values():
                wanted.add(rw.mount_id)
                if rw.init_id:
                    wanted.add(rw.init_id)
            for ident in self.driver.list_ids():
                if ident not in wanted:
                    log.info("removing orphaned layer directory %s", ident)
                    self.driver.remove(ident)

    def release_unreferenced(self) -> None:
        """Drop layers nothing holds: left behind by an interrupted load or import."""
        with self._lock:
            for layer in list(self._layers.values()):
                if layer.references == 0 and layer.chain_id in self._layers:
                    self._delete_chain(layer)

    # -- read-only layers ----------------------------------------------------
    def _meta_dir(self, cid: str) -> Path:
        return self.root / "sha256" / cid.removeprefix("sha256:")

    def get(self, cid: str) -> ROLayer:
        """Return layer *cid* with a reference held for the caller."""
        with self._lock:
            layer = self._layers.get(cid)
            if layer is None:
                raise errdefs.NotFound(f"layer does not exist: {cid}")
            layer.references += 1
            return layer

    def lookup(self, cid: str) -> ROLayer | None:
        with self._lock:
            return self._layers.get(cid)

    def layers(self) -> list[ROLayer]:
        with self._lock:
            return list(self._layers.values())

    def register(
        self, stream: IO[bytes], parent: ROLayer | None, expected_diff_id: str | None = None
    ) -> ROLayer:
        """Apply the layer tar *stream* on *parent*; the caller holds one reference.

        A stream whose DiffID differs from *expected_diff_id* is refused and
        leaves nothing behind.
        """
        cache_id = secrets.token_hex(32)
        parent_cache = parent.cache_id if parent else None
        self.driver.create(cache_id, parent_cache)
        # The record is written while the layer is applied, into the directory that
        # becomes the layer's metadata (a crash leaves a .tmp- the next start sweeps).
        staging = Path(tempfile.mkdtemp(dir=self.root / "sha256", prefix=".tmp-register-"))
        try:
            target = self.driver.apply_target(cache_id)
            with open(staging / TAR_SPLIT, "wb") as split:
                recorder = TarSplitRecorder(split)
                diff_id, size = apply_layer(
                    stream, str(target), self.driver.whiteout_format, recorder
                )
            if expected_diff_id is not None and diff_id != expected_diff_id:
                raise errdefs.InvalidParameter(
                    f"layer content does not match its digest: expected {expected_diff_id}, "
                    f"got {diff_id}"
                )
            files = {
                "diff": diff_id.encode(),
                "size": str(size).encode(),
                "cache-id": cache_id.encode(),
            }
            if parent is not None:
                files["parent"] = parent.chain_id.encode()
            if recorder.unreproducible is not None:
                log.warning(
                    "layer %s cannot be pushed or saved: %s", diff_id, recorder.unreproducible
                )
                os.unlink(staging / TAR_SPLIT)
                files[TAR_SPLIT_REFUSED] = recorder.unreproducible.encode()
            _write_files(staging, files)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            self.driver.remove(cache_id)
            raise
        cid = make_chain_id(parent.chain_id if parent else None, diff_id)
        with self._lock:
            existing = self._layers.get(cid)
            if existing is not None:
                # Registered by another pull meanwhile: that one keeps its own record.
                existing.references += 1
                shutil.rmtree(staging, ignore_errors=True)
                self.driver.remove(cache_id)
                return existing
            try:
                os.replace(staging, self._meta_dir(cid))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                self.driver.remove(cache_id)
                raise
            layer = ROLayer(cid, diff_id, cache_id, size, parent, references=1)
            if parent is not None:
                parent.references += 1
            self._layers[cid] = layer
            return layer

    def tar_stream(self, layer: ROLayer, out: BinaryIO) -> None:
        """Write *layer*'s uncompressed tar to *out*, byte for byte the one registered.

        The stream is checked against the DiffID as it is written; a mismatch
        raises :class:`errdefs.System` at the end, so *out* should be a temp
        file (or a stream its reader can be told to drop).  The caller holds a
        reference to *layer*.
        """
        root = str(self.driver.apply_target(layer.cache_id))
        with self._tar_errors(layer, "writing"):
            split = self._open_record(layer)
            if split is not None:
                with split:
                    digest, _ = assemble_tar_split(split, root, out)
            else:
                digest, _ = pack_layer_diff(root, out)
                if digest != layer.diff_id:
                    raise self._no_record(layer)
        if digest != layer.diff_id:
            raise errdefs.System(
                f"layer {layer.diff_id}: the reassembled tar has digest {digest}: the layer's "
                "files changed since it was registered"
            )

    @staticmethod
    @contextlib.contextmanager
    def _tar_errors(layer: ROLayer, doing: str) -> Iterator[None]:
        """System errors that name *layer*; a host error while *doing* its tar."""
        try:
            yield
        except errdefs.System as e:
            if layer.diff_id in str(e):
                raise
            raise errdefs.System(f"layer {layer.diff_id}: {e}") from e
        except OSError as e:
            raise errdefs.System(f"{doing} the tar of layer {layer.diff_id}: {e}") from e

    def tar_size(self, layer: ROLayer) -> int:
        """The length of the tar :meth:`tar_stream` writes, known before it is written
        (``docker save`` writes a tar header first), and so a check that it can be.

        With a tar-split record, the sum of its segments and of its files' recorded
        sizes: exactly what the stream is assembled from, without reading the files.
        A layer without one is packed once into nothing, which also checks that it
        still comes out as its DiffID.  The caller holds a reference to *layer*.
        """
        with self._lock:
            known = self._tar_sizes.get(layer.chain_id)
        if known is not None:
            return known
        with self._tar_errors(layer, "reading"):
            split = self._open_record(layer)
            if split is not None:
                with split:
                    size = tar_split_size(split)
            else:
                root = str(self.driver.apply_target(layer.cache_id))
                digest, size = pack_layer_diff(root, cast(BinaryIO, _Discard()))
                if digest != layer.diff_id:
                    raise self._no_record(layer)
        with self._lock:
            self._tar_sizes[layer.chain_id] = size
        return size

    def _open_record(self, layer: ROLayer) -> IO[bytes] | None:
        """The layer's tar-split record, or None when its overlay diff directory is to be
        packed instead; raises when the tar cannot be reproduced at all."""
        meta = self._meta_dir(layer.chain_id)
        try:
            return open(meta / TAR_SPLIT, "rb")
        except FileNotFoundError:
            pass
        refused = meta / TAR_SPLIT_REFUSED
        if refused.exists():
            raise errdefs.System(
                f"layer {layer.diff_id} cannot be reproduced as the tar it came from: "
                f"{self._read(refused)}; push and save need that tar, so build the "
                "layer from a tar that writes each file once"
            )
        if self.driver.whiteout_format != "overlay":
            raise self._no_record(layer)
        return None

    @staticmethod
    def _no_record(layer: ROLayer) -> errdefs.System:
        return errdefs.System(
            f"layer {layer.diff_id} has no tar-split data (it was registered before berth "
            "kept it), so its tar cannot be reproduced: pull or load the image again"
        )

    def release(self, layer: ROLayer) -> list[ROLayer]:
        """Drop one reference; return the layers that were deleted, top first."""
        with self._lock:
            layer.references -= 1
            if layer.references > 0:
                return []
            return self._delete_chain(layer)

    def _delete_chain(self, layer: ROLayer) -> list[ROLayer]:
        removed: list[ROLayer] = []
        current: ROLayer | None = layer
        while current is not None and current.references <= 0:
            self._layers.pop(current.chain_id, None)
            self._tar_sizes.pop(current.chain_id, None)
            # Metadata first: a crash after it leaves only an orphaned driver
            # directory, which the start-up sweep removes.
            shutil.rmtree(self._meta_dir(current.chain_id), ignore_errors=True)
            self.driver.remove(current.cache_id)
            removed.append(current)
            parent = current.parent
            if parent is not None:
                parent.references -= 1
            current = parent
        return removed

    # -- RW layers -----------------------------------------------------------
    def create_rw_layer(
        self, name: str, parent_chain: str | None, init: InitFunc | None = None
    ) -> RWLayer:
        """Create the init layer and the RW layer of container *name*."""
        with self._lock:
            if name in self._mounts:
                raise errdefs.Conflict(f"a RW layer for {name} already exists")
            parent = self._layers.get(parent_chain) if parent_chain else None
            if parent_chain and parent is None:
                raise errdefs.NotFound(f"layer does not exist: {parent_chain}")
            if parent is not None:
                parent.references += 1
        mount_id = secrets.token_hex(32)
        init_id = mount_id + "-init" if init is not None else ""
        created: list[str] = []
        try:
            below = parent.cache_id if parent else None
            if init is not None:
                self.driver.create(init_id, below)
                created.append(init_id)
                init(self.driver.apply_target(init_id), self.driver.lower_dirs(init_id))
                below = init_id
            self.driver.create(mount_id, below)
            created.append(mount_id)
            files = {"mount-id": mount_id.encode()}
            if init_id:
                files["init-id"] = init_id.encode()
            if parent is not None:
                files["parent"] = parent.chain_id.encode()
            write_dir(self.root / "mounts" / name, files)
        except BaseException:
            for ident in reversed(created):
                self.driver.remove(ident)
            if parent is not None:
                with self._lock:
                    parent.references -= 1
            raise
        rw = RWLayer(name, mount_id, init_id, parent)
        with self._lock:
            self._mounts[name] = rw
        return rw

    def get_rw_layer(self, name: str) -> RWLayer:
        with self._lock:
            rw = self._mounts.get(name)
        if rw is None:
            raise errdefs.NotFound(f"RW layer for container {name} does not exist")
        return rw

    def rw_layer_names(self) -> list[str]:
        with self._lock:
            return list(self._mounts)

    def mount(self, rw: RWLayer) -> Path:
        with self._lock:
            rw._generation += 1  # before a writer can reach it: see rw_size
        path = self.driver.get(rw.mount_id)
        with self._lock:
            rw._mounts += 1
        return path

    def unmount(self, rw: RWLayer) -> None:
        if rw._mounts > 0:
            with self._lock:
                rw._mounts -= 1
                rw._generation += 1  # its writer is done: see rw_size
            self.driver.put(rw.mount_id)

    def release_rw_layer(self, rw: RWLayer) -> list[ROLayer]:
        """Delete the RW layer (and its init layer); release its image layer."""
        with self._lock:
            if self._mounts.get(rw.name) is not rw:
                return []
            del self._mounts[rw.name]
            # The record goes first so a crash cannot leave a record without data.
            self.driver.reaper.discard(self.root / "mounts" / rw.name)
            self._remove_rw_dirs(rw.mount_id, rw.init_id)
            if rw.parent is not None:
                rw.parent.references -= 1
                if rw.parent.references <= 0:
                    return self._delete_chain(rw.parent)
            return []

    def _remove_rw_dirs(self, mount_id: str, init_id: str) -> None:
        self.driver.remove(mount_id)
        if init_id:
            self.driver.remove(init_id)

    def rw_metadata(self, rw: RWLayer) -> dict[str, str]:
        """The driver's paths for the layer; they never change, so they are computed once."""
        if rw._metadata is None:
            rw._metadata = self.driver.metadata(rw.mount_id)
        return dict(rw._metadata)

    def rw_size(self, rw: RWLayer) -> int:
        """Bytes in the RW layer (dockerd's ``rwlayer.Size``: the driver's diff size over
        the init layer), measured again only when the layer may have changed.

        Everything that writes it through the daemon holds it mounted: a running
        container from start to exit, ``docker cp`` for the copy, a start that fails.
        A size measured while nothing held it mounted, and with no mount or unmount
        since (the generation both bump), is still its size; a mounted layer is
        measured every time, as dockerd always does.
        """
        with self._lock:
            generation, idle, cached = rw._generation, rw._mounts == 0, rw._size
        if idle and cached is not None and cached[0] == generation:
            return cached[1]
        below = rw.init_id or (rw.parent.cache_id if rw.parent else None)
        size = self.driver.diff_size(rw.mount_id, below)
        if idle:
            with self._lock:
                if rw._generation == generation:  # not mounted meanwhile
                    rw._size = (generation, size)
        return size


class _Discard(io.RawIOBase):
    """A sink that takes everything: packing only to learn a tar's length and digest."""

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return len(b)


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write and fsync *files* in *directory*, which is then renamed into place."""
    for name, data in files.items():
        with open(directory / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    for name in os.listdir(directory):
        if name not in files:  # the record, written by the recorder
            fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
