"""``update_container``: a container's resources and restart policy changed in place
(moby's ``daemon/update.go`` and ``Container.UpdateContainer``).

The request is checked as dockerd checks it (its limits in range, and dropped with a
warning where this kernel has no cgroup file for them), merged into the container's
HostConfig under its lock and persisted; a running (or paused) task then gets the
request's limits at once through the runtime.  Should the runtime refuse them, the
HostConfig is put back as it was, as dockerd does.  A stopped or restarting container
gets them at its next start, from the HostConfig.  The restart manager reads the policy
from the HostConfig at each exit, so a new policy holds from the next exit on.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import msgspec

from berth import errdefs
from berth.container.container import decode_host_config
from berth.daemon.validate import (
    SysInfo,
    discard_unsupported_resources,
    sys_info,
    validate_host_config,
    validate_resources,
)
from berth.runtime.spec import _resources as spec_resources
from berth.types.container import HostConfig

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: The Resources an update changes, each only when the request sets it (non-zero); the
#: other fields of the request (devices, ulimits, swappiness...) are ignored, as dockerd
#: ignores them.
UPDATED_FIELDS = (
    "blkio_weight",
    "cpu_shares",
    "nano_cpus",
    "cpu_period",
    "cpu_quota",
    "cpuset_cpus",
    "cpuset_mems",
    "memory",
    "memory_swap",
    "memory_reservation",
    "kernel_memory",
    "cpu_realtime_period",
    "cpu_realtime_runtime",
)


def verify_update(update: HostConfig, ncpu: int, info: SysInfo) -> list[str]:
    """moby's ``verifyContainerSettings`` with ``update`` set, on the request (a HostConfig
    with only Resources and RestartPolicy): InvalidParameter with dockerd's words, or the
    warnings; *update* is adjusted in place (discarded limits zeroed)."""
    validate_host_config(update)
    unlimited_pids = update.pids_limit is not None and update.pids_limit <= 0
    warnings = discard_unsupported_resources(update, info)
    # An update may set the swap limit alone: the memory limit it goes with is the
    # container's (the one check that differs from a create).
    swap = update.memory_swap
    if update.memory == 0 and swap > 0:
        update.memory_swap = 0
    warnings.extend(validate_resources(update, ncpu))
    update.memory_swap = swap
    if unlimited_pids and update.pids_limit is None:
        update.pids_limit = 0  # "unlimited", kept as dockerd keeps it
    return warnings


def merge(current: HostConfig, update: HostConfig) -> HostConfig:
    """The container's HostConfig with *update* applied (moby's ``UpdateContainer``);
    *current* is left as it is.  Conflict with dockerd's words when the request and
    what the container has cannot go together."""
    if update.nano_cpus > 0 and current.cpu_period > 0:
        raise _conflict("Nano CPUs cannot be updated as CPU Period has already been set")
    if update.nano_cpus > 0 and current.cpu_quota > 0:
        raise _conflict("Nano CPUs cannot be updated as CPU Quota has already been set")
    if update.cpu_period > 0 and current.nano_cpus > 0:
        raise _conflict("CPU Period cannot be updated as NanoCPUs has already been set")
    if update.cpu_quota > 0 and current.nano_cpus > 0:
        raise _conflict("CPU Quota cannot be updated as NanoCPUs has already been set")
    if update.memory != 0 and update.memory > current.memory_swap and update.memory_swap == 0:
        raise errdefs.Conflict(
            "Memory limit should be smaller than already set memoryswap limit, update the "
            "memoryswap at the same time"
        )
    if update.restart_policy.name and current.auto_remove and update.restart_policy.name != "no":
        raise errdefs.Conflict(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
        )
    merged = decode_host_config(msgspec.json.encode(current))  # a copy that shares nothing
    for name in UPDATED_FIELDS:
        value = getattr(update, name)
        if value:
            setattr(merged, name, value)
    if update.pids_limit is not None:
        merged.pids_limit = update.pids_limit
    if update.restart_policy.name:
        merged.restart_policy = msgspec.structs.replace(update.restart_policy)
    return merged


def _conflict(what: str) -> errdefs.Conflict:
    return errdefs.Conflict(f"Conflicting options: {what}")


def live_resources(update: HostConfig) -> dict[str, Any]:
    """What the runtime gets for a running task: the OCI ``linux.resources`` of the
    request's own limits, built as the spec builds them (moby's ``toContainerdResources``:
    what is not set is left as the cgroup has it), with "unlimited" PIDs as runc wants it."""
    wanted = HostConfig(**{name: getattr(update, name) for name in UPDATED_FIELDS})
    if update.pids_limit is not None and update.pids_limit > 0:
        wanted.pids_limit = update.pids_limit
    res = spec_resources(wanted, [])
    del res["devices"]
    if update.pids_limit is not None and update.pids_limit <= 0:
        res["pids"] = {"limit": -1}
    return res


def update_container(d: Daemon, ref: str, update: HostConfig) -> list[str]:
    """Apply *update* (only Resources and RestartPolicy set) to *ref*; the warnings."""
    warnings = verify_update(update, os.cpu_count() or 1, sys_info())
    container = d.get_container(ref)
    resources = live_resources(update)
    cid = container.id
    with container.lock:
        st = container.state
        if st.removal_in_progress or st.dead:
            raise errdefs.System(
                f"Cannot update container {cid}: container is marked for removal and cannot "
                'be "update"'
            )
        backup = container.host_config
        try:
            container.host_config = merge(backup, update)
        except errdefs.Conflict as e:
            raise errdefs.Conflict(f"Cannot update container {cid}: {e}") from None
        try:
            d.checkpoint(container)
        except (OSError, errdefs.BerthError) as e:
            container.host_config = backup
            _restore(d, container)
            raise errdefs.System(f"Cannot update container {cid}: {e}") from None
        try:
            if st.running and not st.restarting and resources:
                try:
                    d.runtime.update(cid, resources)
                except errdefs.BerthError as e:
                    container.host_config = backup
                    _restore(d, container)
                    raise errdefs.System(f"Cannot update container {cid}: {e}") from None
        finally:
            d.emit_container(container, "update")
    return warnings


def _restore(d: Daemon, container: Container) -> None:
    try:
        d.checkpoint(container)
    except (OSError, errdefs.BerthError) as e:
        log.error("restoring the host config of %s: %s", container.id[:12], e)
