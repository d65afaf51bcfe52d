"""``docker inspect`` of a container, built from its ViewDB snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from berth.daemon.list import mount_points
from berth.types.container import (
    GraphDriverData,
    InspectResponse,
    StateJSON,
)
from berth.types.wire import to_wire

if TYPE_CHECKING:
    from berth.container.view import Snapshot
    from berth.daemon.daemon import Daemon


def inspect_container(d: Daemon, ref: str, size: bool) -> dict[str, Any]:
    """``GET /containers/{id}/json`` in the current API's shape; callers must not mutate it.

    Without sizes it depends only on the snapshot and the exec IDs, so it is
    built once per checkpoint (``docker inspect`` of many containers, compose
    and testcontainers polling); the router adapts it for older API versions.
    """
    snap = d.view.snapshot().find(ref)
    if size:
        return _with_sizes(build(d, snap, size))
    key = ("inspect", tuple(d.exec_ids(snap.id) or ()))
    wire: dict[str, Any] | None = snap.memo.get(key)
    if wire is None:
        wire = to_wire(build(d, snap, size))
        snap.memo.clear()  # one entry: the exec IDs changed
        snap.memo[key] = wire
    return wire


def build(d: Daemon, snap: Snapshot, size: bool) -> InspectResponse:
    rec = snap.record
    st = rec.state
    state = StateJSON(
        status=st.status(),
        running=st.running,
        paused=st.paused,
        restarting=st.restarting,
        oom_killed=st.oom_killed,
        dead=st.dead,
        pid=st.pid,
        exit_code=st.exit_code,
        error=st.error,
        started_at=st.started_at,
        finished_at=st.finished_at,
        health=st.health,
    )
    net = rec.network_settings
    settings = msgspec.structs.replace(net)
    default = net.networks.get("bridge")
    if default is not None:
        settings.endpoint_id = default.endpoint_id
        settings.gateway = default.gateway
        settings.global_ipv6_address = default.global_ipv6_address
        settings.global_ipv6_prefix_len = default.global_ipv6_prefix_len
        settings.ip_address = default.ip_address
        settings.ip_prefix_len = default.ip_prefix_len
        settings.ipv6_gateway = default.ipv6_gateway
        settings.mac_address = default.mac_address
    resp = InspectResponse(
        id=rec.id,
        created=rec.created,
        path=rec.path,
        args=rec.args,
        state=state,
        image=rec.image,
        resolv_conf_path=rec.resolv_conf_path,
        hostname_path=rec.hostname_path,
        hosts_path=rec.hosts_path,
        log_path=rec.log_path,
        name=rec.name,
        restart_count=rec.restart_count,
        driver=rec.driver,
        platform=rec.os,
        mount_label=rec.mount_label,
        process_label=rec.process_label,
        app_armor_profile=rec.app_armor_profile,
        exec_i_ds=d.exec_ids(rec.id),
        host_config=snap.host_config,
        graph_driver=GraphDriverData(data=d.graph_driver_data(rec.id), name=rec.driver),
        mounts=mount_points(snap),
        config=rec.config,
        network_settings=settings,
    )
    if size:
        resp.size_rw, resp.size_root_fs = d.container_sizes(rec.id)
    return resp


def _with_sizes(resp: InspectResponse) -> dict[str, Any]:
    """The answer of ``inspect -s``: dockerd's ``SizeRw``/``SizeRootFs`` are pointers,
    shown when asked for even when 0 (``docker ps -s``'s are omitted when 0)."""
    wire: dict[str, Any] = to_wire(resp)
    out: dict[str, Any] = {}
    for key, value in wire.items():
        out[key] = value
        if key == "GraphDriver":
            out["SizeRw"], out["SizeRootFs"] = resp.size_rw, resp.size_root_fs
    return out
