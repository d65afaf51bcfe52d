"""Checks of Config and HostConfig at create, with dockerd's messages.

``verify_container_settings`` runs before anything is reserved or written,
so a refused request leaves no trace.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import posixpath
import re

from berth import errdefs
from berth.logger import attrs as log_attrs
from berth.logger import local as local_driver
from berth.runtime.seccomp import validate_security_opts
from berth.types.container import (
    Config,
    HealthConfig,
    HostConfig,
    NetworkingConfig,
    RestartPolicy,
)
from berth.utils.gostr import go_parse_bool
from berth.utils.signals import parse_signal
from berth.volume.mounts import validate_mount

MINIMUM_DURATION = 1_000_000  # 1ms
MIN_MEMORY = 6 * 1024 * 1024
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
LOG_DRIVERS = ("json-file", "none", "local")
JSON_FILE_OPTS = {
    "max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag",
    "mode", "max-buffer-size",
}  # fmt: skip


def invalid(msg: str) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(msg)


def validate_container_config(config: Config) -> None:
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise invalid(
                f"the working directory '{config.working_dir}' is invalid, it needs to be an "
                "absolute path"
            )
        config.working_dir = posixpath.normpath(config.working_dir)
    if config.stop_signal:
        parse_signal(config.stop_signal)
    for env in config.env or []:
        if env.partition("=")[0] == "":
            raise invalid(f"invalid environment variable: {env}")
    validate_healthcheck(config.healthcheck)


def validate_healthcheck(hc: HealthConfig | None) -> None:
    if hc is None:
        return
    for field_name, value in (
        ("Interval", hc.interval),
        ("Timeout", hc.timeout),
        ("StartPeriod", hc.start_period),
        ("StartInterval", hc.start_interval),
    ):
        if value != 0 and value < MINIMUM_DURATION:
            raise invalid(f"{field_name} in Healthcheck cannot be less than 1ms")
    if hc.retries < 0:
        raise invalid("Retries in Healthcheck cannot be negative")


def validate_restart_policy(policy: RestartPolicy) -> None:
    name, count = policy.name, policy.maximum_retry_count
    if name in ("always", "unless-stopped", "no"):
        if count > 0:
            raise invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            )
        if count < 0:
            raise invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure' "
                "and cannot be negative"
            )
    elif name == "on-failure":
        if count < 0:
            raise invalid("invalid restart policy: maximum retry count cannot be negative")
    elif name == "":
        return
    else:
        raise invalid(
            f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'"
        )


def _port_number(raw: str) -> None:
    if raw == "":
        return
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(raw) from None
    if not 0 <= value <= 65535 or not raw.isdigit():
        raise ValueError(raw)


def split_proto_port(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _port_range(raw: str) -> None:
    if raw == "":
        return
    start, sep, end = raw.partition("-")
    _port_number(start)
    if sep:
        _port_number(end)
        if int(end) < int(start):
            raise ValueError(raw)


def validate_port_bindings(host_config: HostConfig) -> None:
    for key, bindings in (host_config.port_bindings or {}).items():
        _, port = split_proto_port(key)
        try:
            _port_number(port)
        except ValueError:
            raise invalid(f'invalid port specification: "{port}"') from None
        for b in bindings or []:
            _, host_port = split_proto_port(b.HostPort)
            try:
                _port_range(host_port)
            except ValueError:
                raise invalid(f'invalid port specification: "{b.HostPort}"') from None
            if b.HostIp:
                try:
                    ipaddress.ip_address(b.HostIp.strip("[]"))
                except ValueError:
                    raise invalid(f"invalid host IP address: {b.HostIp}") from None


def validate_exposed_ports(config: Config) -> None:
    for key in config.exposed_ports or {}:
        proto, port = split_proto_port(key)
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise invalid(f"invalid proto: {proto} in exposed port {key!r}")
        try:
            _port_range(port)
        except ValueError:
            raise invalid(f'invalid port specification: "{key}"') from None


def validate_extra_host(value: str) -> None:
    # moby's ValidateExtraHost: "host=ip" first, then "host:ip" split at the
    # first colon (so "h:::1" is IPv6, and "h=[::1]" is not cut inside the address).
    name, sep, ip = value.partition("=")
    if not sep:
        name, sep, ip = value.partition(":")
    if not sep or not name or ":" in name:
        raise invalid(f'bad format for add-host: "{value}"')
    if ip != "host-gateway":
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise invalid(f'invalid IP address in add-host: "{ip}"') from None


def validate_host_config(hc: HostConfig) -> None:
    if hc.auto_remove and hc.restart_policy.name not in ("", "no"):
        raise invalid("can't create 'AutoRemove' container with restart policy")
    for m in hc.mounts or []:
        validate_mount(m)
    for h in hc.extra_hosts or []:
        validate_extra_host(h)
    validate_port_bindings(hc)
    validate_restart_policy(hc.restart_policy)
    if hc.isolation not in ("", "default"):
        raise invalid(f"invalid isolation '{hc.isolation}' on linux")
    for key in hc.annotations or {}:
        if key == "":
            raise invalid(
                "invalid Annotations: the empty string is not permitted as an annotation key"
            )
    for field_name, caps in (("CapAdd", hc.cap_add), ("CapDrop", hc.cap_drop)):
        for cap in caps or []:
            normalized = cap.upper()
            if (
                normalized != "ALL"
                and not normalized.removeprefix("CAP_").replace("_", "").isalnum()
            ):
                raise invalid(f"invalid {field_name}: unknown capability: {cap!r}")
    validate_security_opts(hc.security_opt)  # moby parses them after the checks above


def not_yet(what: str, why: str = "") -> errdefs.NotImplementedFeature:
    """A documented Engine feature that berth refuses rather than accept and ignore."""
    return errdefs.NotImplementedFeature(
        f"{what} is not supported by berth yet" + (f": {why}" if why else "")
    )


def _is_container_mode(mode: str) -> bool:
    return mode.startswith("container:")


def refuse_unsupported(config: Config, hc: HostConfig, net: NetworkingConfig | None) -> None:
    """Refuse, before anything is reserved, what berth would accept and then not do.

    Only non-default values are refused: what the docker CLI sends on every ``docker run``
    (empty lists, NetworkMode "default", ConsoleSize [0, 0]) always passes.
    """
    _refuse_networking(hc, net)
    _refuse_storage(hc)
    if hc.userns_mode not in ("", "host"):
        raise not_yet(f"user namespace mode {hc.userns_mode!r} (--userns)")
    if hc.cgroup:
        raise not_yet(f"HostConfig.Cgroup {hc.cgroup!r} (joining another container's cgroup)")


def _refuse_networking(hc: HostConfig, net: NetworkingConfig | None) -> None:
    mode = hc.network_mode
    if _is_container_mode(mode) and (hc.port_bindings or hc.publish_all_ports):
        raise invalid("conflicting options: port publishing and the container type network mode")
    for name, ep in ((net.endpoints_config or {}) if net else {}).items():
        if ep is None:
            continue
        if ep.mac_address and (mode == "host" or _is_container_mode(mode)):
            raise invalid("conflicting options: mac-address and the network mode")
        if ep.driver_opts:
            raise not_yet(f"network driver options (--network {name},driver-opt=...)")
        if ep.gw_priority:
            raise not_yet(f"gateway priority (--network {name},gw-priority=...)")


def _refuse_storage(hc: HostConfig) -> None:
    if hc.volume_driver not in ("", "local"):
        raise _no_volume_driver(hc.volume_driver)
    if hc.storage_opt:
        raise not_yet("--storage-opt (HostConfig.StorageOpt)")
    for m in hc.mounts or []:
        if m.type == "image":
            raise not_yet(f'mount type "image" (at {m.target})')
        vo = m.volume_options
        if vo is None:
            continue
        dc = vo.driver_config
        if dc is not None and dc.name not in ("", "local"):
            raise _no_volume_driver(dc.name)
        if vo.subpath:
            raise not_yet(f"volume subpath (volume-subpath) of the mount at {m.target}")


def _no_volume_driver(name: str) -> errdefs.NotImplementedFeature:
    return errdefs.NotImplementedFeature(
        f'volume driver "{name}" not found: berth has only the "local" volume driver'
    )


def validate_resources(hc: HostConfig, ncpu: int) -> list[str]:
    """Resource limits; returns warnings."""
    warnings: list[str] = []
    if hc.memory_swappiness == -1:
        hc.memory_swappiness = None
    if hc.memory != 0 and hc.memory < MIN_MEMORY:
        raise invalid("Minimum memory limit allowed is 6MB")
    if hc.memory > 0 and hc.memory_swap > 0 and hc.memory_swap < hc.memory:
        raise invalid("Minimum memoryswap limit should be larger than memory limit, see usage")
    if hc.memory == 0 and hc.memory_swap > 0:
        raise invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if hc.memory_swappiness is not None and not 0 <= hc.memory_swappiness <= 100:
        raise invalid(
            f"Invalid value: {hc.memory_swappiness}, valid memory swappiness range is 0-100"
        )
    if 0 < hc.memory_reservation < MIN_MEMORY:
        raise invalid("Minimum memory reservation allowed is 6MB")
    if hc.memory > 0 and hc.memory_reservation > 0 and hc.memory < hc.memory_reservation:
        raise invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    if hc.oom_kill_disable and hc.memory == 0:
        warnings.append(
            "OOM killer is disabled for the container, but no memory limit is set, this can "
            "result in the system running out of resources."
        )
    if hc.nano_cpus > 0 and hc.cpu_period > 0:
        raise invalid("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if hc.nano_cpus > 0 and hc.cpu_quota > 0:
        raise invalid("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if hc.nano_cpus < 0 or hc.nano_cpus > ncpu * 1_000_000_000:
        raise invalid(
            f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if hc.cpu_period != 0 and not 1000 <= hc.cpu_period <= 1_000_000:
        raise invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < hc.cpu_quota < 1000:
        raise invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if hc.cpu_percent > 0:
        warnings.append("linux does not support CPU percent. Percent discarded.")
        hc.cpu_percent = 0
    if hc.kernel_memory_tcp:
        # Never written to the spec: said and dropped, as dockerd does where it is unsupported.
        warnings.append(
            "Your kernel does not support kernel memory TCP limit capabilities or the cgroup is "
            "not mounted. Limitation discarded."
        )
        hc.kernel_memory_tcp = 0
    if hc.cpuset_cpus:
        _check_cpuset(hc.cpuset_cpus, "cpus", "CPUs", "/sys/devices/system/cpu/online")
    if hc.cpuset_mems:
        _check_cpuset(hc.cpuset_mems, "mems", "memory nodes", "/sys/devices/system/node/online")
    if hc.blkio_weight > 0 and not 10 <= hc.blkio_weight <= 1000:
        raise invalid("Range of blkio weight is from 10 to 1000")
    if hc.io_maximum_bandwidth or hc.io_maximum_i_ops:
        raise invalid(
            "Invalid QoS settings: linux does not support Maximum IO Bandwidth or Maximum IO IOps"
        )
    if hc.shm_size < 0:
        raise invalid("SHM size can not be less than 0")
    if not -1000 <= hc.oom_score_adj <= 1000:
        raise invalid(f"Invalid value {hc.oom_score_adj}, range for oom score adj is [-1000, 1000]")
    if hc.pids_limit is not None and hc.pids_limit <= 0:
        hc.pids_limit = None
    for mode, name in ((hc.ipc_mode, "IPC"), (hc.pid_mode, "PID"), (hc.uts_mode, "UTS")):
        if mode and not _valid_ns_mode(mode, name):
            raise invalid(f"invalid {name} mode: {mode}")
    if hc.cgroupns_mode not in ("", "host", "private"):
        raise invalid(f"invalid cgroup namespace mode: {hc.cgroupns_mode}")
    if hc.network_mode == "host" and hc.port_bindings:
        warnings.append("Published ports are discarded when using host network mode")
    for u in hc.ulimits or []:
        if u.soft > u.hard and u.hard >= 0:
            raise invalid(
                f"ulimit soft limit must be less than or equal to hard limit: {u.soft} > {u.hard}"
            )
    return warnings


def _valid_ns_mode(mode: str, name: str) -> bool:
    if name == "IPC":
        return mode in ("private", "shareable", "host", "none") or (
            mode.startswith("container:") and len(mode) > len("container:")
        )
    if name == "PID":
        return mode == "host" or (mode.startswith("container:") and len(mode) > len("container:"))
    return mode == "host"


def _online(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _parse_set(value: str) -> set[int]:
    out: set[int] = set()
    for part in value.split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a = int(lo)
        b = int(hi) if sep else a
        if b < a:
            raise ValueError(value)
        out.update(range(a, b + 1))
    return out


def _check_cpuset(value: str, kind: str, what: str, online: str) -> None:
    """moby's wording: the host's own list as the kernel writes it ("0-1")."""
    try:
        wanted = _parse_set(value)
    except ValueError:
        raise invalid(f"Invalid value {value} for cpuset {kind}") from None
    have = _online(online)
    try:
        available = _parse_set(have)
    except ValueError:
        return
    if available and not wanted <= available:
        raise invalid(f"Requested {what} are not available - requested {value}, available: {have}")


def validate_log_config(hc: HostConfig, default_driver: str, default_opts: dict[str, str]) -> None:
    lc = hc.log_config
    if not lc.type:
        lc.type = default_driver
    if lc.config is None:
        lc.config = {}
    if lc.type == default_driver:
        for k, v in default_opts.items():
            lc.config.setdefault(k, v)
    if lc.type not in LOG_DRIVERS:
        raise invalid(f"logger: no log driver named '{lc.type}' is registered")
    mode = lc.config.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise invalid(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in lc.config and mode != "non-blocking":
        raise invalid("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
    if lc.type == "json-file":
        for key in lc.config:
            if key not in JSON_FILE_OPTS:
                raise invalid(f"unknown log opt '{key}' for json-file log driver")
        problem = log_attrs.check_options(lc.config)
        if problem is not None:
            raise invalid(problem)
        json_log_options(lc.config)
    elif lc.type == "local":
        for key in lc.config:
            if key not in LOCAL_OPTS:
                raise invalid(f"unknown log opt '{key}' for log driver local")
        local_log_options(lc.config)


def json_log_options(opts: dict[str, str]) -> tuple[int, int, bool]:
    """(max size or -1, max files, compress) of the json-file driver; refuses bad values."""
    raw_size = opts.get("max-size", "-1")
    _size_opt(raw_size)
    max_size = -1 if raw_size in ("", "-1") else parse_size(raw_size)
    try:
        max_file = int(opts.get("max-file", "1") or "1")
    except ValueError:
        raise invalid(f"invalid max-file: {opts['max-file']!r}") from None
    if max_file < 1:
        raise invalid("max-file cannot be less than 1")
    compress = _compress_opt(opts["compress"]) if "compress" in opts else False
    return max_size, max_file, compress


def _compress_opt(value: str) -> bool:
    parsed = go_parse_bool(value)
    if parsed is None:
        raise invalid(f"invalid boolean value for compress: {value!r}")
    return parsed


#: moby's local driver options (the common attribute options are not kept by berth's local
#: driver, so they are refused rather than accepted and ignored).
LOCAL_OPTS = {"max-file", "max-size", "compress", "mode", "max-buffer-size"}


def local_log_options(opts: dict[str, str]) -> tuple[int, int, bool]:
    """(max size, max files, compress) of the local driver, defaults as moby's (20 MiB, 5,
    compressed); refuses what moby's ``newConfig`` refuses."""
    max_size = local_driver.DEFAULT_MAX_SIZE
    max_file = local_driver.DEFAULT_MAX_FILE
    compress = local_driver.DEFAULT_COMPRESS
    if "max-size" in opts:
        try:
            max_size = from_human_size(opts["max-size"])
        except ValueError:
            raise invalid(f"invalid value for max-size: {opts['max-size']}") from None
        if max_size == 0:
            raise invalid("max-size must be a positive number")
    if "max-file" in opts:
        try:
            max_file = int(opts["max-file"])
        except ValueError:
            raise invalid(f"invalid value for max-file: {opts['max-file']}") from None
        if max_file < 0:
            raise invalid("max-file must not be negative")
    if "compress" in opts:
        compress = _compress_opt(opts["compress"])
    if compress and max_file <= 1:
        raise invalid("compression cannot be enabled when max file count is 1")
    return max_size, max(max_file, 1), compress


_HUMAN_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def from_human_size(value: str) -> int:
    """go-units ``FromHumanSize`` (decimal units: ``20m`` → 20000000), as the local driver
    parses max-size."""
    m = _HUMAN_SIZE.match(value)
    if m is None:
        raise ValueError(value)
    mult = 1000 ** (" kmgtp".index(m.group(2).lower()) if m.group(2) else 0)
    return int(float(m.group(1)) * mult)


def _size_opt(value: str | None) -> None:
    if value is None or value == "-1":
        return
    try:
        parse_size(value)
    except ValueError:
        raise invalid(f"invalid max-size: {value!r}") from None


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
}


def parse_size(value: str) -> int:
    """go-units ``RAMInBytes``: ``10m`` → 10485760."""
    v = value.strip().lower()
    num = v.rstrip("bkmgtpi")
    unit = v[len(num) :]
    if len(unit) == 3 and unit[0] in "kmgtp" and unit.endswith("ib"):
        unit = unit[0]  # "KiB": go-units takes the "ib" spelling too
    if unit in ("t", "tb"):
        mult = 1024**4
    elif unit in ("p", "pb"):
        mult = 1024**5
    elif unit in _UNITS:
        mult = _UNITS[unit]
    else:
        raise ValueError(value)
    n = float(num)
    if n < 0 or not math.isfinite(n):
        raise ValueError(value)
    return int(n * mult)


@dataclasses.dataclass(frozen=True)
class SysInfo:
    """What the kernel's cgroups can limit (moby's ``sysinfo.SysInfo``, the resource part)."""

    memory_limit: bool = True
    swap_limit: bool = True
    memory_reservation: bool = True
    memory_swappiness: bool = True
    oom_kill_disable: bool = True
    pids_limit: bool = True
    cpu_shares: bool = True
    cpu_cfs: bool = True
    cpuset: bool = True
    blkio_weight: bool = True
    blkio_weight_device: bool = True
    blkio_read_bps_device: bool = True
    blkio_write_bps_device: bool = True
    blkio_read_iops_device: bool = True
    blkio_write_iops_device: bool = True


@functools.cache
def sys_info() -> SysInfo:
    """This host's :class:`SysInfo`, read once as dockerd reads it at start: on cgroup v1
    a limit is there when its controller's file is (``blkio.weight`` is absent where the
    block devices use no CFQ/BFQ scheduler); on v2 when the controller is enabled."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        try:
            with open("/sys/fs/cgroup/cgroup.controllers") as f:
                have = set(f.read().split())
        except OSError:
            have = set()
        mem, cpu, io = "memory" in have, "cpu" in have, "io" in have
        return SysInfo(
            memory_limit=mem,
            swap_limit=mem,
            memory_reservation=mem,
            memory_swappiness=False,
            oom_kill_disable=False,
            pids_limit="pids" in have,
            cpu_shares=cpu,
            cpu_cfs=cpu,
            cpuset="cpuset" in have,
            blkio_weight=io,
            blkio_weight_device=io,
            blkio_read_bps_device=io,
            blkio_write_bps_device=io,
            blkio_read_iops_device=io,
            blkio_write_iops_device=io,
        )

    def has(controller: str, name: str) -> bool:
        return os.path.exists(f"/sys/fs/cgroup/{controller}/{name}")

    return SysInfo(
        memory_limit=has("memory", "cgroup.procs"),  # the controller mounted is enough
        swap_limit=has("memory", "memory.memsw.limit_in_bytes"),
        memory_reservation=has("memory", "memory.soft_limit_in_bytes"),
        memory_swappiness=has("memory", "memory.swappiness"),
        oom_kill_disable=has("memory", "memory.oom_control"),
        pids_limit=has("pids", "cgroup.procs"),  # the root has no pids.max
        cpu_shares=has("cpu", "cpu.shares"),
        cpu_cfs=has("cpu", "cpu.cfs_quota_us"),
        cpuset=has("cpuset", "cgroup.procs"),
        blkio_weight=has("blkio", "blkio.weight"),
        blkio_weight_device=has("blkio", "blkio.weight_device"),
        blkio_read_bps_device=has("blkio", "blkio.throttle.read_bps_device"),
        blkio_write_bps_device=has("blkio", "blkio.throttle.write_bps_device"),
        blkio_read_iops_device=has("blkio", "blkio.throttle.read_iops_device"),
        blkio_write_iops_device=has("blkio", "blkio.throttle.write_iops_device"),
    )


def discard_unsupported_resources(hc: HostConfig, info: SysInfo) -> list[str]:
    """The limits this kernel cannot apply, dropped with dockerd's warnings (the
    sysinfo half of moby's ``verifyPlatformContainerResources``); :func:`validate_resources`
    does the other half.  A memory limit under the minimum is left for it to refuse."""
    warnings: list[str] = []
    if hc.memory >= MIN_MEMORY and not info.memory_limit:
        warnings.append(
            "Your kernel does not support memory limit capabilities or the cgroup is not "
            "mounted. Limitation discarded."
        )
        hc.memory = 0
        hc.memory_swap = -1
    if hc.memory > 0 and hc.memory_swap != -1 and not info.swap_limit:
        warnings.append(
            "Your kernel does not support swap limit capabilities or the cgroup is not "
            "mounted. Memory limited without swap."
        )
        hc.memory_swap = -1
    swappiness = hc.memory_swappiness
    if swappiness is not None and swappiness != -1 and not info.memory_swappiness:
        warnings.append(
            "Your kernel does not support memory swappiness capabilities or the cgroup is not "
            "mounted. Memory swappiness discarded."
        )
        hc.memory_swappiness = None
    if hc.memory_reservation > 0 and not info.memory_reservation:
        warnings.append(
            "Your kernel does not support memory soft limit capabilities or the cgroup is not "
            "mounted. Limitation discarded."
        )
        hc.memory_reservation = 0
    if hc.oom_kill_disable is not None and not info.oom_kill_disable:
        if hc.oom_kill_disable:
            warnings.append(
                "Your kernel does not support OomKillDisable. OomKillDisable discarded."
            )
        hc.oom_kill_disable = None
    if hc.pids_limit is not None and not info.pids_limit:
        if hc.pids_limit > 0:
            warnings.append(
                "Your kernel does not support PIDs limit capabilities or the cgroup is not "
                "mounted. PIDs limit discarded."
            )
        hc.pids_limit = None
    if hc.nano_cpus > 0 and hc.cpu_period <= 0 and hc.cpu_quota <= 0 and not info.cpu_cfs:
        raise invalid(
            "NanoCPUs can not be set, as your kernel does not support CPU CFS scheduler or the "
            "cgroup is not mounted"
        )
    if hc.cpu_shares > 0 and not info.cpu_shares:
        warnings.append(
            "Your kernel does not support CPU shares or the cgroup is not mounted. "
            "Shares discarded."
        )
        hc.cpu_shares = 0
    if (hc.cpu_period != 0 or hc.cpu_quota != 0) and not info.cpu_cfs:
        warnings.append(
            "Your kernel does not support CPU CFS scheduler. CPU period/quota discarded."
        )
        hc.cpu_period = hc.cpu_quota = 0
    if (hc.cpuset_cpus or hc.cpuset_mems) and not info.cpuset:
        warnings.append(
            "Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded."
        )
        hc.cpuset_cpus = hc.cpuset_mems = ""
    if hc.blkio_weight > 0 and not info.blkio_weight:
        warnings.append(
            "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
            "Weight discarded."
        )
        hc.blkio_weight = 0
    if hc.blkio_weight_device and not info.blkio_weight_device:
        warnings.append(
            "Your kernel does not support Block I/O weight_device or the cgroup is not "
            "mounted. Weight-device discarded."
        )
        hc.blkio_weight_device = []
    for attr, supported, what, limit in (
        ("blkio_device_read_bps", info.blkio_read_bps_device, "BPS Block I/O read limit",
         "Block I/O BPS read limit"),
        ("blkio_device_write_bps", info.blkio_write_bps_device, "BPS Block I/O write limit",
         "Block I/O BPS write limit"),
        ("blkio_device_read_i_ops", info.blkio_read_iops_device, "IOPS Block read limit",
         "Block I/O IOPS read limit"),
        ("blkio_device_write_i_ops", info.blkio_write_iops_device, "IOPS Block write limit",
         "Block I/O IOPS write limit"),
    ):  # fmt: skip
        if getattr(hc, attr) and not supported:
            warnings.append(
                f"Your kernel does not support {what} or the cgroup is not mounted. "
                f"{limit} discarded."
            )
            setattr(hc, attr, [])
    return warnings
