"""``docker ps``: the container list, read from one ViewDB snapshot.

No container lock is taken: the snapshot is a consistent picture of every
container at its last checkpoint.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from berth import errdefs
from berth.container.container import Record as ContainerRecord
from berth.container.state import State
from berth.container.view import Snapshot, View
from berth.types.container import (
    EndpointIPAMConfig,
    EndpointSettings,
    MountPoint,
    Port,
    Summary,
    SummaryHostConfig,
    SummaryNetworkSettings,
)
from berth.types.filters import Filters
from berth.utils.timefmt import now_ns

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon

PS_FILTERS = (
    "ancestor", "before", "exited", "id", "isolation", "label", "name", "status", "health",
    "since", "volume", "network", "is-task", "publish", "expose",
)  # fmt: skip
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")
_Patterns = tuple[tuple[str, re.Pattern[str] | None], ...]


def _port_set(filters: Filters, key: str) -> set[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    for value in filters.get(key):
        if ":" in value:
            raise errdefs.InvalidParameter(f"filter for '{key}' should not contain ':': {value}")
        port, _, proto = value.partition("/")
        proto = proto or "tcp"
        lo, sep, hi = port.partition("-")
        try:
            start = int(lo)
            end = int(hi) if sep else start
        except ValueError:
            raise errdefs.InvalidParameter(
                f"error while looking up for {key} {value}: invalid port {port!r}"
            ) from None
        out.update((p, proto) for p in range(start, end + 1))
    return out


def health_status(state: State) -> str:
    if state.health is None or not state.health.status:
        return "none"
    return state.health.status


def command_string(path: str, args: list[str]) -> str:
    if not args:
        return path
    return path + " " + " ".join(f"'{a}'" if " " in a else a for a in args)


def summary_ports(snap: Snapshot) -> list[Port]:
    ports: list[Port] = []
    for key, bindings in snap.record.network_settings.ports.items():
        num, _, proto = key.partition("/")
        try:
            private = int(num)
        except ValueError:
            continue
        if not bindings:
            ports.append(Port(PrivatePort=private, Type=proto or "tcp"))
            continue
        for b in bindings:
            try:
                public = int(b.HostPort) if b.HostPort else 0
            except ValueError:
                continue
            ports.append(
                Port(PrivatePort=private, Type=proto or "tcp", IP=b.HostIp, PublicPort=public)
            )
    return ports


def mount_points(snap: Snapshot) -> list[MountPoint]:
    return list(snap.record.mount_points.values())


def _reduced_endpoint(ep: EndpointSettings) -> EndpointSettings:
    ipam = None
    if ep.ipam_config and (ep.ipam_config.i_pv4_address or ep.ipam_config.i_pv6_address):
        ipam = EndpointIPAMConfig(
            i_pv4_address=ep.ipam_config.i_pv4_address, i_pv6_address=ep.ipam_config.i_pv6_address
        )
    return EndpointSettings(
        ipam_config=ipam,
        network_id=ep.network_id,
        endpoint_id=ep.endpoint_id,
        gateway=ep.gateway,
        ip_address=ep.ip_address,
        ip_prefix_len=ep.ip_prefix_len,
        ipv6_gateway=ep.ipv6_gateway,
        global_ipv6_address=ep.global_ipv6_address,
        global_ipv6_prefix_len=ep.global_ipv6_prefix_len,
        mac_address=ep.mac_address,
    )


class Action(enum.Enum):
    """What the include check says of one container (moby's ``iterationAction``)."""

    INCLUDE = enum.auto()
    EXCLUDE = enum.auto()
    STOP = enum.auto()


@dataclass(frozen=True, slots=True)
class FilterContext:
    """Everything the filters need, validated and resolved once per request.

    moby's ``listContext``: values are parsed, containers and images looked up
    here, so the check run for each container only compares. An empty set means
    the filter is absent (it matches everything); ``None`` where a filter given
    with no values matches nothing, as in moby.
    """

    filters: Filters
    all: bool
    limit: int
    names_by_id: Mapping[str, list[str]]
    before: Snapshot | None = None
    since: Snapshot | None = None
    exited: frozenset[int] = frozenset()
    statuses: frozenset[str] = frozenset()
    health: frozenset[str] = frozenset()
    is_task: bool | None = None
    isolation: frozenset[str] = frozenset()
    ancestors: frozenset[str] | None = None
    volumes: frozenset[str] | None = None
    networks: tuple[str, ...] | None = None
    publish: frozenset[tuple[int, str]] = frozenset()
    expose: frozenset[tuple[int, str]] = frozenset()
    name_patterns: _Patterns = ()
    id_patterns: _Patterns = ()

    def names(self, rec: ContainerRecord) -> list[str]:
        return self.names_by_id.get(rec.id, [rec.name])


def fold_filters(
    d: Daemon, view: View, all_containers: bool, limit: int, filters: Filters
) -> FilterContext:
    """moby's ``foldFilter``: bad filter values fail here, before any container is read."""
    filters.validate(PS_FILTERS)
    exited: set[int] = set()
    for v in filters.get("exited"):
        try:
            exited.add(int(v))
        except ValueError:
            raise errdefs.InvalidParameter(f'strconv.Atoi: parsing "{v}": invalid syntax') from None
    statuses = filters.get("status")
    for v in statuses:
        if v not in STATUSES:
            raise errdefs.InvalidParameter(f"invalid filter 'status={v}'")
        all_containers = True
    health = filters.get("health")
    for v in health:
        if v not in HEALTH:
            raise errdefs.InvalidParameter(f"Unrecognised filter value for health: {v}")
    is_task: bool | None = None
    if filters.contains("is-task"):
        values = filters.get("is-task")
        if values == ["true"]:
            is_task = True
        elif values == ["false"]:
            is_task = False
        else:
            raise errdefs.InvalidParameter(f"invalid filter 'is-task=[{' '.join(values)}]'")
    # moby's GetContainer: full ID, then name, then ID prefix
    before = [view.find(v) for v in filters.get("before")]
    since = [view.find(v) for v in filters.get("since")]
    ancestors = _ancestors(d, filters.get("ancestor")) if filters.contains("ancestor") else None
    return FilterContext(
        filters=filters,
        all=all_containers,
        limit=limit,
        names_by_id=view.get_all_names(),
        before=before[0] if before else None,
        since=since[0] if since else None,
        exited=frozenset(exited),
        statuses=frozenset(statuses),
        health=frozenset(health),
        is_task=is_task,
        isolation=frozenset(filters.get("isolation")),
        ancestors=ancestors,
        volumes=frozenset(filters.get("volume")) if filters.contains("volume") else None,
        networks=tuple(filters.get("network")) if filters.contains("network") else None,
        publish=frozenset(_port_set(filters, "publish")),
        expose=frozenset(_port_set(filters, "expose")),
        name_patterns=_compile(filters.get("name")),
        id_patterns=_compile(filters.get("id")),
    )


def include(ctx: FilterContext, snap: Snapshot, listed: int) -> Action:
    """moby's ``includeContainerInList``, for containers in newest-first order.

    *listed* is how many containers are in the answer so far: the limit counts
    only those that pass the filters before it.
    """
    rec = snap.record
    st = rec.state
    if ctx.before is not None and snap.created_ns >= ctx.before.created_ns:
        return Action.EXCLUDE
    if ctx.since is not None and snap.created_ns <= ctx.since.created_ns:
        return Action.STOP  # newest first: no container after this one is newer either
    if not st.running and not ctx.all and ctx.limit <= 0:
        return Action.EXCLUDE
    if ctx.name_patterns and not _match_any(ctx.name_patterns, ctx.names(rec)):
        return Action.EXCLUDE
    if ctx.id_patterns and not _match_any(ctx.id_patterns, [rec.id]):
        return Action.EXCLUDE
    if ctx.is_task is not None and rec.managed != ctx.is_task:
        return Action.EXCLUDE
    if not ctx.filters.match_kv_list("label", rec.config.labels or {}):
        return Action.EXCLUDE
    if ctx.isolation and (snap.host_config.isolation or "default") not in ctx.isolation:
        return Action.EXCLUDE
    if ctx.limit > 0 and listed == ctx.limit:
        return Action.STOP
    if ctx.exited and (st.running or st.exit_code not in ctx.exited or snap.started_ns <= 0):
        return Action.EXCLUDE
    if ctx.statuses and st.status() not in ctx.statuses:
        return Action.EXCLUDE
    if ctx.health and health_status(st) not in ctx.health:
        return Action.EXCLUDE
    if ctx.volumes is not None and not _uses_volume(rec, ctx.volumes):
        return Action.EXCLUDE
    if ctx.ancestors is not None and rec.image not in ctx.ancestors:
        return Action.EXCLUDE
    if ctx.networks is not None and not _on_network(rec, ctx.networks):
        return Action.EXCLUDE
    if ctx.publish or ctx.expose:
        ports = summary_ports(snap)
        if ctx.publish and not any((p.PublicPort, p.Type) in ctx.publish for p in ports):
            return Action.EXCLUDE
        if ctx.expose and not any((p.PrivatePort, p.Type) in ctx.expose for p in ports):
            return Action.EXCLUDE
    return Action.INCLUDE


def list_containers(
    d: Daemon, all_containers: bool, limit: int, size: bool, filters: Filters
) -> list[Summary]:
    view = d.view.snapshot()
    ctx = fold_filters(d, view, all_containers, limit, filters)
    now = now_ns()
    out: list[Summary] = []
    shown: dict[tuple[str, str], str] = {}  # (Config.Image, image ID) -> what Image shows
    for snap in sorted(view.all(), key=_created_ns, reverse=True):
        action = include(ctx, snap, len(out))
        if action is Action.EXCLUDE:
            continue
        if action is Action.STOP:
            break
        image = _shown_image(d, snap.record, shown)
        summary = _summary(snap, image, ctx.names(snap.record), now)
        if size:
            summary.size_rw, summary.size_root_fs = d.container_sizes(snap.record.id)
        out.append(summary)
    return out


def _shown_image(d: Daemon, rec: ContainerRecord, shown: dict[tuple[str, str], str]) -> str:
    """The reference the container was made from while it still names that image, else
    the image's ID (as dockerd shows it); resolved once per reference in a listing."""
    image = rec.config.image
    if not image or image == rec.image:
        return image or rec.image
    key = (image, rec.image)
    found = shown.get(key)
    if found is None:
        try:
            found = image if d.images.get_image(image).id == rec.image else rec.image
        except errdefs.BerthError:
            found = rec.image
        shown[key] = found
    return found


def _created_ns(snap: Snapshot) -> int:
    return snap.created_ns


def _ancestors(d: Daemon, refs: list[str]) -> frozenset[str]:
    """The IDs of the named images and of every image built on them."""
    found: set[str] = set()
    for v in refs:
        try:
            img = d.images.get_image(v)
        except errdefs.BerthError:
            continue
        stack = [img.id]
        while stack:
            ident = stack.pop()
            if ident in found:
                continue
            found.add(ident)
            child = d.images.images.get(ident)
            if child is not None:
                stack.extend(child.children)
    return frozenset(found)


def _uses_volume(rec: ContainerRecord, wanted: frozenset[str]) -> bool:
    return any(
        m.destination in wanted or (m.name and m.name in wanted) or m.source in wanted
        for m in rec.mount_points.values()
    )


def _on_network(rec: ContainerRecord, wanted: tuple[str, ...]) -> bool:
    nets = rec.network_settings.networks
    return any(
        n in nets or any(ep.network_id.startswith(n) and n for ep in nets.values()) for n in wanted
    )


#: the key of a snapshot's row of ``docker ps``, without what may change while the
#: snapshot stands (names, the image's reference, the status text)
_ROW = "summary"


def _summary(snap: Snapshot, image: str, names: list[str], now: int) -> Summary:
    rec = snap.record
    row: Summary | None = snap.memo.get(_ROW)
    if row is None:
        row = Summary(
            id=rec.id,
            image_id=rec.image,
            command=command_string(rec.path, rec.args),
            created=snap.created_ns // 1_000_000_000,
            ports=summary_ports(snap),
            labels=rec.config.labels or {},
            state=rec.state.status(),
            host_config=SummaryHostConfig(
                network_mode=snap.host_config.network_mode,
                annotations=snap.host_config.annotations,
            ),
            network_settings=SummaryNetworkSettings(
                networks={k: _reduced_endpoint(v) for k, v in rec.network_settings.networks.items()}
            ),
            mounts=mount_points(snap),
        )
        snap.memo[_ROW] = row  # never mutated: each listing has a copy of its own
    return msgspec.structs.replace(
        row, names=sorted(names), image=image, status=rec.state.describe(now)
    )


def _compile(values: list[str]) -> _Patterns:
    out: list[tuple[str, re.Pattern[str] | None]] = []
    for v in values:
        try:
            out.append((v, re.compile(v)))
        except re.error:
            out.append((v, None))
    return tuple(out)


def _match_any(patterns: _Patterns, sources: list[str]) -> bool:
    for source in sources:
        for raw, rx in patterns:
            if raw == source or raw == source.lstrip("/"):
                return True
            if rx is not None and (rx.search(source) or rx.search(source.lstrip("/"))):
                return True
    return False
