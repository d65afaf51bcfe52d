"""The classic builder's cache (moby's ``image/cache`` and ``builder/dockerfile/imageprobe.go``).

There is no store of its own: the cache is the image store.  Every step commits an image
whose parent is the image the step started from and whose ``container_config`` is the
step's config (its ``Cmd`` the ``#(nop)`` comment of a metadata step, the COPY's content
hash, or a RUN's command line), so a step is cached when the current image has a child,
built on this daemon, whose ``container_config`` equals the step's (the newest such child
wins).  Images persist with their parent links, so the cache survives a restart.

``cachefrom`` (moby's ``ImageCache``) makes the named images' history the candidates too:
a step matches the next history entry of a source whose earlier history is the current
image's, and the image for it is recreated (``restoreCachedImage``) when the source's
chain is not on this daemon.  A miss busts the cache for the rest of the stage, as
moby's prober does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from berth import __version__
from berth.image.store import Image, ImageStore
from berth.types.container import Config
from berth.types.image import History
from berth.types.wire import to_wire
from berth.utils.platform import Platform
from berth.utils.timefmt import parse_rfc3339

log = logging.getLogger(__name__)


class ImageCache(Protocol):
    def get_cache(self, parent_id: str, config: Config, platform: Platform) -> str:
        """The ID of the image that caches the step *config* on *parent_id*, or ""."""


def compare(a: Config | None, b: Config | None) -> bool:
    """moby's ``compare``: equal but for the container's own fields (Image, Hostname,
    Domainname, MacAddress)."""
    if a is None or b is None:
        return False
    if (
        (a.env or []) != (b.env or [])
        or (a.cmd or []) != (b.cmd or [])
        or (a.entrypoint or []) != (b.entrypoint or [])
        or (a.shell or []) != (b.shell or [])
        or (a.on_build or []) != (b.on_build or [])
        or set(a.exposed_ports or {}) != set(b.exposed_ports or {})
        or set(a.volumes or {}) != set(b.volumes or {})
        or (a.labels or {}) != (b.labels or {})
    ):
        return False
    if (
        a.attach_stdin != b.attach_stdin
        or a.attach_stdout != b.attach_stdout
        or a.attach_stderr != b.attach_stderr
        or a.network_disabled != b.network_disabled
        or a.tty != b.tty
        or a.open_stdin != b.open_stdin
        or a.stdin_once != b.stdin_once
        or a.args_escaped != b.args_escaped
        or a.user != b.user
        or a.working_dir != b.working_dir
        or a.stop_signal != b.stop_signal
        or a.stop_timeout != b.stop_timeout
    ):
        return False
    ha, hb = a.healthcheck, b.healthcheck
    if (ha is None) != (hb is None):
        return False
    if ha is not None and hb is not None:
        return (
            ha.interval == hb.interval
            and ha.start_interval == hb.start_interval
            and ha.start_period == hb.start_period
            and ha.timeout == hb.timeout
            and ha.retries == hb.retries
            and (ha.test or []) == (hb.test or [])
        )
    return True


def _platform_matches(img: Image, platform: Platform) -> bool:
    """moby's ``comparePlatform`` (``platforms.Only``): the OS and architecture agree, and
    the variant when both name one."""
    c = img.config
    if (c.os or "linux") != platform.os:
        return False
    if c.architecture and c.architecture != platform.architecture:
        return False
    return not (c.variant and platform.variant and c.variant != platform.variant)


def _created(img: Image) -> int | None:
    try:
        return parse_rfc3339(img.config.created) if img.config.created else None
    except ValueError:
        return None


class LocalImageCache:
    """moby's ``LocalImageCache``: the children of the current image."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def get_cache(self, parent_id: str, config: Config, platform: Platform) -> str:
        if parent_id:
            parent = self.store.get(parent_id)
            siblings = sorted(parent.children) if parent is not None else []
            candidates = [img for i in siblings if (img := self.store.get(i)) is not None]
        else:
            # FROM scratch: the images without a parent whose last step was this one
            want = config.cmd or []
            candidates = [
                img
                for img in self.store.all()
                if not img.parent
                and img.config.container_config is not None
                and (img.config.container_config.cmd or []) == want
            ]
        match: Image | None = None
        match_created = 0
        for img in candidates:
            if not self.store.is_built_locally(img.id):
                continue
            if not compare(img.config.container_config, config):
                continue
            if not _platform_matches(img, platform):
                continue
            created = _created(img)
            if created is None:
                continue
            if match is None or match_created < created:
                match, match_created = img, created
        return match.id if match is not None else ""


class SourcesImageCache:
    """moby's ``ImageCache``: the local cache within the ``cachefrom`` images' chains,
    then those images' histories."""

    def __init__(self, store: ImageStore, sources: list[Image]) -> None:
        self.store = store
        self.local = LocalImageCache(store)
        self.sources = list(sources)

    def _is_parent(self, ident: str, parent_id: str) -> bool:
        seen: set[str] = set()
        img = self.store.get(ident)
        while img is not None and img.parent and img.parent not in seen:
            if img.parent == parent_id:
                return True
            seen.add(img.parent)
            img = self.store.get(img.parent)
        return False

    def get_cache(self, parent_id: str, config: Config, platform: Platform) -> str:
        found = self.local.get_cache(parent_id, config, platform)
        if found and any(self._is_parent(s.id, found) for s in self.sources):
            return found
        parent: Image | None = None
        history_len = 0
        if parent_id:
            parent = self.store.get(parent_id)
            if parent is None:
                return ""
            history_len = len(parent.config.history)
        for target in self.sources:
            if not _valid_parent(target, parent):
                continue
            if history_len >= len(target.config.history):
                continue
            if " ".join(config.cmd or []) != target.config.history[history_len].created_by:
                continue
            if len(target.config.history) - 1 == history_len:
                if parent is not None:
                    self.store.set_parent(target.id, parent.id)
                return target.id
            ident = self._restore(parent, target, config)
            self.sources = [target]  # moby: never jump to another source afterwards
            return ident
        return ""

    def _restore(self, parent: Image | None, target: Image, config: Config) -> str:
        """moby's ``restoreCachedImage``: the image of one step of *target* on *parent*."""
        index = len(parent.config.history) if parent is not None else 0
        history = list(parent.config.history) if parent is not None else []
        history.append(target.config.history[index])
        diff_ids = list(parent.config.rootfs.diff_ids) if parent is not None else []
        layer = _layer_for_history(target, index)
        if layer:
            diff_ids.append(layer)
        doc: dict[str, Any] = {
            "architecture": target.config.architecture,
            "config": to_wire(config),
            "created": history[-1].created,
            "docker_version": f"berth-{__version__}",
            "history": [msgspec.to_builtins(h) for h in history],
            "os": target.config.os or "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if target.config.author:
            doc["author"] = target.config.author
        if target.config.os_version:
            doc["os.version"] = target.config.os_version
        img = self.store.create(msgspec.json.encode(dict(sorted(doc.items()))))
        if parent is not None:
            self.store.set_parent(img.id, parent.id)
        return img.id


def _layer_for_history(img: Image, index: int) -> str:
    layer = 0
    for i, h in enumerate(img.config.history):
        if i == index:
            if h.empty_layer:
                return ""
            break
        if not h.empty_layer:
            layer += 1
    diff_ids = img.config.rootfs.diff_ids
    return diff_ids[layer] if layer < len(diff_ids) else ""


def _history_key(h: History) -> Any:
    return msgspec.to_builtins(h)


def _valid_parent(img: Image, parent: Image | None) -> bool:
    """moby's ``isValidParent``: *parent*'s history and layers begin *img*'s."""
    history = img.config.history
    if not history:
        return False
    if parent is None:
        return True
    ph, pd = parent.config.history, parent.config.rootfs.diff_ids
    if not ph and not pd:
        return True
    if len(ph) >= len(history) or len(pd) > len(img.config.rootfs.diff_ids):
        return False
    if any(_history_key(h) != _history_key(history[i]) for i, h in enumerate(ph)):
        return False
    return all(d == img.config.rootfs.diff_ids[i] for i, d in enumerate(pd))


class ImageProber:
    """moby's ``imageProber``: a cache per stage (``reset``), busted by the first miss;
    with ``nocache`` nothing is ever found."""

    def __init__(self, make_cache: Callable[[], ImageCache], no_cache: bool) -> None:
        self._make = make_cache
        self._no_cache = no_cache
        self._cache: ImageCache | None = None
        self._busted = False

    def reset(self) -> None:
        if not self._no_cache:
            self._cache = self._make()
        self._busted = False

    def probe(self, parent_id: str, config: Config, platform: Platform) -> str:
        if self._no_cache or self._busted:
            return ""
        if self._cache is None:
            self._cache = self._make()
        found = self._cache.get_cache(parent_id, config, platform)
        if not found:
            log.debug("[BUILDER] cache miss: %s", config.cmd)
            self._busted = True
        return found
