"""``docker info`` and ``docker version``: what the host and daemon really are."""

from __future__ import annotations

import functools
import os
import platform
import socket
from typing import TYPE_CHECKING, Any

from berth import API_VERSION, ENGINE_COMPAT_VERSION, MIN_API_VERSION, __version__
from berth.distribution import INDEX_SERVER
from berth.runtime.seccomp import security_options_info
from berth.utils.timefmt import format_rfc3339_nano, now_ns

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon
    from berth.daemon.options import DaemonOptions


@functools.cache
def os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        out[key] = value.strip().strip('"')
            break
        except OSError:
            continue
    return out


@functools.cache
def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _cgroup_has(controller: str, filename: str) -> bool:
    if cgroup_version() == "2":
        try:
            with open("/sys/fs/cgroup/cgroup.controllers") as f:
                return controller in f.read().split()
        except OSError:
            return False
    return os.path.exists(f"/sys/fs/cgroup/{controller}/{filename}")


def _ipv4_forwarding() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _nfd() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def plugins_info() -> dict[str, list[str] | None]:
    """The drivers berth really has, in dockerd's shape (sorted names, no authz plugins).

    Networks: ``host`` and ``null`` (the ``none`` network); there is no bridge driver
    yet, whatever the default NetworkMode says.  Volumes: no volume service yet, so no
    driver, not even ``local``.  Logs: the drivers berth writes (``none`` is no driver).
    """
    return {
        "Volume": [],
        "Network": ["host", "null"],
        "Authorization": None,
        "Log": ["json-file", "local"],
    }


_ATTACK_SURFACE = """
         Access to the remote API is equivalent to root access on the host. Refer
         to the 'Docker daemon attack surface' section in the documentation for
         more information: https://docs.docker.com/go/attack-surface/"""


def _api_warnings(options: DaemonOptions) -> list[str]:
    """dockerd's notices for ``tcp://`` hosts that are not encrypted or do not verify
    clients, worded as dockerd words them (scripts look for them)."""
    out = []
    for host in options.hosts:
        proto, _, addr = host.partition("://")
        if proto != "tcp":
            continue
        if not options.tls:
            what = f"http://{addr} without encryption"
        elif not options.tls_verify:
            what = f"https://{addr} without TLS client verification"
        else:
            continue
        out.append(f"[DEPRECATION NOTICE]: API is accessible on {what}.{_ATTACK_SURFACE}")
    return out


def system_info(d: Daemon) -> dict[str, Any]:
    """The current API's answer, built per call: the router adapts it in place for older clients."""
    counts = d.state_counts()
    rel = os_release()
    swap = _cgroup_has("memory", "memory.memsw.limit_in_bytes")
    warnings: list[str] = []
    if not swap and cgroup_version() == "1":
        warnings.append("WARNING: No swap limit support")
    warnings.extend(_api_warnings(d.options))
    info: dict[str, Any] = {
        "ID": d.engine_id,
        "Containers": counts["total"],
        "ContainersRunning": counts["running"],
        "ContainersPaused": counts["paused"],
        "ContainersStopped": counts["stopped"],
        "Images": len(d.images.images.all()),
        "Driver": d.driver.name,
        "DriverStatus": d.driver.status(),
        "Plugins": plugins_info(),
        "MemoryLimit": _cgroup_has("memory", "memory.limit_in_bytes"),
        "SwapLimit": swap,
        "CpuCfsPeriod": _cgroup_has("cpu", "cpu.cfs_period_us"),
        "CpuCfsQuota": _cgroup_has("cpu", "cpu.cfs_quota_us"),
        "CPUShares": _cgroup_has("cpu", "cpu.shares"),
        "CPUSet": _cgroup_has("cpuset", "cpuset.cpus"),
        "PidsLimit": _cgroup_has("pids", "cgroup.procs"),  # the v1 root has no pids.max
        "IPv4Forwarding": _ipv4_forwarding(),
        "Debug": d.options.debug,
        "NFd": _nfd(),
        "OomKillDisable": cgroup_version() == "1",
        "NGoroutines": d.task_count(),
        "SystemTime": format_rfc3339_nano(now_ns()),
        "LoggingDriver": d.options.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": d.events.subscriber_count(),
        "KernelVersion": platform.release(),
        "OperatingSystem": rel.get("PRETTY_NAME", "Linux"),
        "OSVersion": rel.get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": INDEX_SERVER,
        # what the registry client was built with (--insecure-registry, --registry-mirror)
        "RegistryConfig": d.registry.service_config(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem_total(),
        "GenericResources": None,
        "DockerRootDir": str(d.options.data_root),
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": socket.gethostname(),
        "Labels": list(d.options.labels),
        "ExperimentalBuild": False,
        "ServerVersion": ENGINE_COMPAT_VERSION,
        "Runtimes": {name: {"path": path} for name, path in d.runtimes().items()},
        "DefaultRuntime": d.options.default_runtime,
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": d.options.live_restore,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": security_options_info(),
        "ProductLicense": f"berth {__version__}",
        "CDISpecDirs": [],
        "Warnings": warnings,
    }
    return info


def system_version() -> dict[str, Any]:
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    details = {
        "ApiVersion": API_VERSION,
        "Arch": arch,
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": platform.release(),
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    }
    return {
        "Platform": {"Name": f"berth {__version__}"},
        "Components": [
            {"Name": "Engine", "Version": ENGINE_COMPAT_VERSION, "Details": details},
            {
                "Name": "berth",
                "Version": __version__,
                "Details": {"Python": platform.python_version()},
            },
        ],
        "Version": ENGINE_COMPAT_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": platform.release(),
    }
