"""``docker ps``: the container list, read from one ViewDB snapshot.

No container lock is taken: the snapshot is a consistent picture of every
container at its last checkpoint.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from berth import errdefs
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


def _find_by_id_or_name(view: View, value: str) -> Snapshot:
    snap = view.get(value)
    if snap is None:
        ident = None
        try:
            ident = view.get_by_prefix(value)
        except errdefs.InvalidParameter:
            ident = None
        if ident is None:
            ident = view.get_id(value)
        snap = view.get(ident) if ident else None
    if snap is None:
        raise errdefs.NotFound(f"No such container: {value}")
    return snap


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


def list_containers(
    d: Daemon,
    all_containers: bool,
    limit: int,
    size: bool,
    filters: Filters,
    version: tuple[int, int],
) -> list[Summary]:
    filters.validate(PS_FILTERS)
    view = d.view.snapshot()
    exited: set[int] = set()
    for v in filters.get("exited"):
        try:
            exited.add(int(v))
        except ValueError:
            raise errdefs.InvalidParameter(f'strconv.Atoi: parsing "{v}": invalid syntax') from None
    for v in filters.get("status"):
        if v not in STATUSES:
            raise errdefs.InvalidParameter(f"invalid filter 'status={v}'")
        all_containers = True
    for v in filters.get("health"):
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
    before = [_find_by_id_or_name(view, v) for v in filters.get("before")]
    since = [_find_by_id_or_name(view, v) for v in filters.get("since")]
    ancestors: set[str] | None = None
    if filters.contains("ancestor"):
        ancestors = set()
        for v in filters.get("ancestor"):
            try:
                img = d.images.get_image(v)
            except errdefs.BerthError:
                continue
            stack = [img.id]
            while stack:
                ident = stack.pop()
                if ident in ancestors:
                    continue
                ancestors.add(ident)
                child = d.images.images.get(ident)
                if child is not None:
                    stack.extend(child.children)
    publish = _port_set(filters, "publish")
    expose = _port_set(filters, "expose")
    name_patterns = _compile(filters.get("name"))
    id_patterns = _compile(filters.get("id"))
    names_by_id = view.get_all_names()

    snaps = sorted(view.all(), key=lambda s: s.created_ns, reverse=True)
    if before:
        pivot = before[0]
        snaps = [s for s in snaps if s.created_ns < pivot.created_ns and s.id != pivot.id]
    if since:
        pivot = since[0]
        snaps = [s for s in snaps if s.created_ns > pivot.created_ns and s.id != pivot.id]

    now = now_ns()
    out: list[Summary] = []
    for snap in snaps:
        rec = snap.record
        st = rec.state
        if not st.running and not all_containers and limit <= 0:
            continue
        if name_patterns and not _match_any(name_patterns, names_by_id.get(rec.id, [rec.name])):
            continue
        if id_patterns and not _match_any(id_patterns, [rec.id]):
            continue
        if is_task is not None and rec.managed != is_task:
            continue
        labels = rec.config.labels or {}
        if not filters.match_kv_list("label", labels):
            continue
        if filters.contains("isolation") and not filters.exact_match(
            "isolation", snap.host_config.isolation or "default"
        ):
            continue
        if limit > 0 and len(out) == limit:
            break
        if exited and (st.running or st.exit_code not in exited or snap.started_ns <= 0):
            continue
        if not filters.exact_match("status", st.status()):
            continue
        if not filters.exact_match("health", health_status(st)):
            continue
        if filters.contains("volume"):
            wanted = set(filters.get("volume"))
            if not any(
                m.destination in wanted or (m.name and m.name in wanted) or m.source in wanted
                for m in rec.mount_points.values()
            ):
                continue
        if ancestors is not None and rec.image not in ancestors:
            continue
        if filters.contains("network"):
            nets = rec.network_settings.networks
            wanted_nets = filters.get("network")
            if not any(
                n in nets or any(ep.network_id.startswith(n) and n for ep in nets.values())
                for n in wanted_nets
            ):
                continue
        ports = summary_ports(snap)
        if publish and not any((p.PublicPort, p.Type) in publish for p in ports):
            continue
        if expose and not any((p.PrivatePort, p.Type) in expose for p in ports):
            continue
        out.append(_summary(d, snap, ports, names_by_id.get(rec.id, [rec.name]), size, now))
    return out


def _summary(
    d: Daemon, snap: Snapshot, ports: list[Port], names: list[str], size: bool, now: int
) -> Summary:
    rec = snap.record
    image = rec.config.image
    if image and image != rec.image:
        try:
            if d.images.get_image(image).id != rec.image:
                image = rec.image
        except errdefs.BerthError:
            image = rec.image
    summary = Summary(
        id=rec.id,
        names=sorted(names),
        image=image or rec.image,
        image_id=rec.image,
        command=command_string(rec.path, rec.args),
        created=snap.created_ns // 1_000_000_000,
        ports=ports,
        labels=rec.config.labels or {},
        state=rec.state.status(),
        status=rec.state.describe(now),
        host_config=SummaryHostConfig(
            network_mode=snap.host_config.network_mode,
            annotations=snap.host_config.annotations,
        ),
        network_settings=SummaryNetworkSettings(
            networks={k: _reduced_endpoint(v) for k, v in rec.network_settings.networks.items()}
        ),
        mounts=mount_points(snap),
    )
    if size:
        rw, root_fs = d.container_sizes(rec.id)
        summary.size_rw = rw
        summary.size_root_fs = root_fs
    return summary


def _compile(values: list[str]) -> list[tuple[str, re.Pattern[str] | None]]:
    out: list[tuple[str, re.Pattern[str] | None]] = []
    for v in values:
        try:
            out.append((v, re.compile(v)))
        except re.error:
            out.append((v, None))
    return out


def _match_any(patterns: list[tuple[str, re.Pattern[str] | None]], sources: list[str]) -> bool:
    for source in sources:
        for raw, rx in patterns:
            if raw == source or raw == source.lstrip("/"):
                return True
            if rx is not None and (rx.search(source) or rx.search(source.lstrip("/"))):
                return True
    return False
