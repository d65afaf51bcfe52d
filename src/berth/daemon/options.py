"""What the daemon is told at start (built by :mod:`berth.config` from flags and daemon.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from berth.network.options import NetworkOptions


@dataclass
class DaemonOptions:
    data_root: Path = Path("/var/lib/berth")
    exec_root: Path = Path("/run/berth")
    storage_driver: str = ""
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    default_shm_size: int = 64 * 1024 * 1024
    default_ipc_mode: str = "private"
    default_cgroupns_mode: str = ""
    default_runtime: str = "runc"
    labels: list[str] = field(default_factory=list)
    debug: bool = False
    live_restore: bool = False
    hosts: list[str] = field(default_factory=list)
    #: socket of a containerd to use instead of starting one
    containerd: str = ""
    containerd_namespace: str = "berth"
    #: cgroupfs parent of containers without a HostConfig.CgroupParent of their own
    cgroup_parent: str = "/berth"
    network: NetworkOptions = field(default_factory=NetworkOptions)
