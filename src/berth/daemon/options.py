"""What the daemon is told at start (built by :mod:`berth.config` from flags and daemon.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from berth.network.options import NetworkOptions

#: where dockerd looks for per-registry CAs and client certificates (``<host:port>/``)
DEFAULT_CERTS_DIR = Path("/etc/docker/certs.d")

#: ``--shim-group``: one containerd shim per container (dockerd's way), per compose
#: project (containers without one keep their own) or one for all containers
SHIM_GROUPS = ("container", "project", "all")


@dataclass
class RegistryOptions:
    """How the daemon reaches registries (dockerd's registry flags), validated and
    normalised by :mod:`berth.config` as dockerd does: what the registry client is
    built with and what ``docker info`` shows."""

    #: ``--insecure-registry``: ``host[:port]`` names and CIDRs, scheme stripped
    insecure_registries: list[str] = field(default_factory=list)
    #: ``--registry-mirror``: Docker Hub mirrors, ``scheme://host[/path]/``, no duplicates
    mirrors: list[str] = field(default_factory=list)
    certs_dir: Path = DEFAULT_CERTS_DIR
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    #: ``--max-download-attempts``: kept for daemon.json compatibility; pull does not retry yet
    max_download_attempts: int = 5


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
    #: the ``tcp://`` hosts are encrypted, and verify clients' certificates
    tls: bool = False
    tls_verify: bool = False
    #: socket of a containerd to use instead of starting one
    containerd: str = ""
    containerd_namespace: str = "berth"
    #: cgroupfs parent of containers without a HostConfig.CgroupParent of their own
    cgroup_parent: str = "/berth"
    #: ``--shim-group``: which containers one containerd shim serves (see SHIM_GROUPS)
    shim_group: str = "container"
    network: NetworkOptions = field(default_factory=NetworkOptions)
    registry: RegistryOptions = field(default_factory=RegistryOptions)
