"""The OCI runtime spec (``config.json``) of a container, built as dockerd 28 builds it.

The facts come from moby's ``daemon/oci_linux.go`` (``createSpec`` and its
``With*`` options), ``oci/defaults.go`` and ``oci/caps``; the result is a
dict of JSON-ready builtins in the runtime-spec's spelling, with Go's
``omitempty`` honoured (a key that dockerd leaves out is left out here).

Where berth differs from dockerd, on purpose:

* the network namespace is set up by the daemon, so bridge-mode containers
  join ``netns_path`` instead of getting a ``libnetwork-setkey`` prestart
  hook; ``--network host`` simply has no network namespace;
* rlimits are clamped to the host's hard limits (runc cannot raise them
  without ``CAP_SYS_RESOURCE``, which berthd may lack);
* resources carry only the values that are set;
* no AppArmor profile yet.  ``linux.seccomp`` is Docker's default seccomp
  profile (or the one ``--security-opt seccomp=`` gives), evaluated against
  the final bounding capability set: see :mod:`berth.runtime.seccomp`.
"""

from __future__ import annotations

import functools
import os
import posixpath
import resource
from dataclasses import dataclass
from typing import Any

from berth import errdefs
from berth.runtime import caps as _caps
from berth.runtime import devices as _devices
from berth.runtime import seccomp as _seccomp
from berth.runtime.userdb import ResolvedUser, resolve_user
from berth.types.container import Config, HostConfig, MountPoint
from berth.utils.gostr import go_clean
from berth.utils.gostr import go_quote as _go_quote
from berth.utils.mountinfo import unescape as unescape_mountinfo
from berth.volume.plan import (
    DEFAULT_PROPAGATION,
    ContainerMount,
    NetworkFiles,
    container_mounts,
    convert_tmpfs_options,
)

__all__ = [
    "DEFAULT_PATH_ENV",
    "INIT_PATH_IN_CONTAINER",
    "OCI_VERSION",
    "ResolvedUser",
    "SpecOptions",
    "build_spec",
    "container_env",
    "convert_tmpfs_options",
    "merge_tmpfs_options",
    "privileged_capabilities",
    "replace_or_append_env",
    "resolve_user",
]

OCI_VERSION = "1.0.2-dev"  # what the installed runc (1.1.5) implements
#: containerd's runc v2 shim serves every container whose spec names the same group from
#: one process (its ``Start`` finds the group's socket already listening)
SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
MOUNTINFO = "/proc/self/mountinfo"
# Where the seccomp profile goes: spec["linux"]["seccomp"] (see berth.runtime.seccomp).
SECCOMP_HOOK = "seccomp"

DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_PROPAGATIONS = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})
# Default mounts that stay writable on a read-only rootfs.
_RO_ROOTFS_EXEMPT = frozenset({"/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"})
_U64 = 1 << 64


@dataclass
class SpecOptions:
    container_id: str
    rootfs: str  # host path of the mounted root filesystem
    config: Config  # merged container config
    host_config: HostConfig
    mounts: list[MountPoint]  # binds, volumes and --mount tmpfs; Source is the host path
    # (the mount plan, berth.volume.plan, is made of these, the files below and shm_path)
    user: ResolvedUser
    hostname_path: str = ""  # host files bind-mounted at /etc/hostname, /etc/hosts,
    hosts_path: str = ""  # /etc/resolv.conf (skipped if "" or missing)
    resolv_conf_path: str = ""
    cgroup_parent: str = "/berth"  # cgroupfs; HostConfig.CgroupParent wins
    init_path: str = ""  # host path of the init binary when HostConfig.Init is true
    netns_path: str = ""  # network namespace to join (bridge, container:); "" = a new one
    ipc_ns_path: str = ""  # for IpcMode container:<id> (/proc/<pid>/ns/ipc)
    pid_ns_path: str = ""  # for PidMode container:<id>
    host_rlimits: dict[str, tuple[int, int]] | None = None  # "RLIMIT_NOFILE" -> (soft, hard)
    # Added beyond the first contract:
    shm_path: str = ""  # host dir bind-mounted at /dev/shm for IpcMode shareable/container:
    available_caps: list[str] | None = None  # None = the daemon's effective set
    recursive_readonly: bool = False  # runtime+kernel support "rro" (dockerd >= 25 uses it)
    shim_group: str = ""  # containers with the same group share one runc v2 shim process


# -- small parsers -----------------------------------------------------------------------


def security_options(opts: list[str] | None) -> tuple[bool, bool | None]:
    """``(no_new_privileges, writable_cgroups)`` from ``--security-opt`` (moby's rules)."""
    parsed = _seccomp.parse_security_opts(opts)
    return parsed.no_new_privileges, parsed.writable_cgroups


def _is_container(mode: str) -> bool:
    return mode.startswith("container:")


def _check_modes(hc: HostConfig) -> None:
    ipc = hc.ipc_mode
    if ipc not in ("", "none", "private", "host", "shareable") and not _is_container(ipc):
        raise errdefs.InvalidParameter(f"invalid IPC mode: {ipc}")
    pid = hc.pid_mode
    if pid not in ("", "host") and not (_is_container(pid) and len(pid) > len("container:")):
        raise errdefs.InvalidParameter(f"invalid PID mode: {pid}")
    if hc.uts_mode not in ("", "host"):
        raise errdefs.InvalidParameter(f"invalid UTS mode: {hc.uts_mode}")
    if hc.cgroupns_mode not in ("", "private", "host"):
        raise errdefs.InvalidParameter(f"invalid cgroup namespace mode: {hc.cgroupns_mode}")


def _network_private(hc: HostConfig) -> bool:
    return hc.network_mode != "host" and not _is_container(hc.network_mode)


def _pid_private(hc: HostConfig) -> bool:
    return hc.pid_mode != "host" and not _is_container(hc.pid_mode)


def privileged_capabilities() -> list[str]:
    """What a privileged container (or exec) gets: every capability the daemon holds."""
    return list(_daemon_caps())


@functools.cache
def _daemon_caps() -> tuple[str, ...]:
    return tuple(_caps.current_caps())


# -- process -----------------------------------------------------------------------------


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """moby's ReplaceOrAppendEnvValues: ``K=V`` replaces or appends, a bare ``K`` unsets."""
    out: list[str | None] = list(defaults)
    cache = {entry.split("=", 1)[0]: i for i, entry in enumerate(defaults)}
    for value in overrides:
        if "=" not in value:
            if value in cache:
                out[cache[value]] = None
            continue
        key = value.split("=", 1)[0]
        if key in cache:
            out[cache[key]] = value
        else:
            out.append(value)
    return [e for e in out if e is not None]


def container_env(config: Config) -> list[str]:
    """``CreateDaemonEnvironment``: PATH, HOSTNAME, TERM (with a tty), then Config.Env over them."""
    defaults = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={config.hostname}"]
    if config.tty:
        defaults.append("TERM=xterm")
    return replace_or_append_env(defaults, config.env or [])


def _command(config: Config) -> list[str]:
    if config.entrypoint:
        argv = [*config.entrypoint, *(config.cmd or [])]
    else:
        argv = list(config.cmd or [])
    if not argv:
        raise errdefs.InvalidParameter("no command specified")
    return argv


def _host_hard_limit(name: str, host: dict[str, tuple[int, int]] | None) -> int | None:
    if host is not None:
        limits = host.get(name)
    else:
        which = getattr(resource, name, None)
        limits = resource.getrlimit(which) if isinstance(which, int) else None
    if limits is None:
        return None
    hard = limits[1]
    if hard < 0 or hard >= _U64 - 1:  # RLIM_INFINITY
        return None
    return hard


def _rlimits(opts: SpecOptions) -> list[dict[str, Any]]:
    out = []
    for ul in opts.host_config.ulimits or []:
        name = "RLIMIT_" + ul.name.upper()
        soft, hard = ul.soft % _U64, ul.hard % _U64  # Go's uint64(int64): -1 is unlimited
        cap = _host_hard_limit(name, opts.host_rlimits)
        if cap is not None:
            soft, hard = min(soft, cap), min(hard, cap)
        out.append({"type": name, "hard": hard, "soft": soft})
    return out


def _process(opts: SpecOptions, nnp: bool) -> dict[str, Any]:
    cfg, hc = opts.config, opts.host_config
    argv = _command(cfg)
    if hc.init and opts.init_path and _pid_private(hc):
        argv = [INIT_PATH_IN_CONTAINER, "--", *argv]
    proc: dict[str, Any] = {}
    if cfg.tty:
        proc["terminal"] = True
        size = hc.console_size
        if len(size) == 2 and (size[0] > 0 or size[1] > 0):
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
    user = opts.user
    proc["user"] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        proc["user"]["additionalGids"] = list(user.additional_gids)
    proc["args"] = argv
    proc["env"] = container_env(cfg)
    proc["cwd"] = cfg.working_dir or "/"
    available = (
        opts.available_caps if opts.available_caps is not None else privileged_capabilities()
    )
    caplist = _caps.tweak_caps(
        _caps.DEFAULT_CAPS, hc.cap_add, hc.cap_drop, hc.privileged, available
    )
    capabilities: dict[str, Any] = {}
    if caplist:
        capabilities = {
            "bounding": list(caplist),
            "effective": list(caplist),
            "permitted": list(caplist),
        }
    proc["capabilities"] = capabilities
    rlimits = _rlimits(opts)
    if rlimits:
        proc["rlimits"] = rlimits
    if nnp:
        proc["noNewPrivileges"] = True
    proc["oomScoreAdj"] = hc.oom_score_adj
    return proc


# -- mounts ------------------------------------------------------------------------------


def _default_mounts() -> list[dict[str, Any]]:
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777"],
        },
    ]


# moby/sys/mount flags: options naming the same kernel flag collide; all propagation
# (and bind) options share one key.
_TMPFS_FLAG_KEYS: dict[str, str] = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid",
    "dev": "nodev", "nodev": "nodev", "exec": "noexec", "noexec": "noexec",
    "sync": "sync", "async": "sync", "dirsync": "dirsync", "remount": "remount",
    "mand": "mand", "nomand": "mand", "atime": "noatime", "noatime": "noatime",
    "diratime": "nodiratime", "nodiratime": "nodiratime",
    "relatime": "relatime", "norelatime": "relatime",
    "strictatime": "strictatime", "nostrictatime": "strictatime",
    "bind": "propagation", "rbind": "propagation", "unbindable": "propagation",
    "runbindable": "propagation", "private": "propagation", "rprivate": "propagation",
    "shared": "propagation", "rshared": "propagation", "slave": "propagation",
    "rslave": "propagation",
}  # fmt: skip
_TMPFS_DATA_KEYS = frozenset({"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby's MergeTmpfsOptions: the last of colliding options wins, order otherwise kept."""
    seen_flags: set[str] = set()
    seen_data: set[str] = set()
    out: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = _TMPFS_FLAG_KEYS.get(option)
        if key is not None:
            if key not in seen_flags:
                out.insert(0, option)
                seen_flags.add(key)
            continue
        parts = option.split("=", 1)
        if len(parts) != 2 or parts[0] not in _TMPFS_DATA_KEYS:
            shown = " ".join(_go_quote(p) for p in parts)
            raise errdefs.InvalidParameter(f"Invalid tmpfs option [{shown}]")
        if parts[0] not in seen_data:
            out.insert(0, option)
            seen_data.add(parts[0])
    return out


def _bind_options(m: ContainerMount, recursive_readonly: bool) -> list[str]:
    options = ["bind" if m.non_recursive else "rbind"]
    if not m.writable:
        if m.ro_non_recursive and m.ro_force_recursive:
            raise errdefs.InvalidParameter(
                "mount options conflict: ReadOnlyNonRecursive && ReadOnlyForceRecursive"
            )
        if m.ro_force_recursive and not recursive_readonly:
            raise errdefs.InvalidParameter(
                f"recursive read-only mount of {m.destination} is not supported here"
            )
        rro = recursive_readonly and not m.ro_non_recursive
        options.append("rro" if rro else "ro")
    if m.propagation in _PROPAGATIONS:
        options.append(m.propagation)
    return options


def _source_mount(source: str) -> tuple[str, str]:
    """The mount point holding *source* and its optional fields (``shared:N master:M``)."""
    if not os.path.exists(source):
        raise errdefs.InvalidParameter(f"lstat {source}: no such file or directory")
    path = os.path.realpath(source)
    best, best_optional = "", ""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise errdefs.System(f"reading {MOUNTINFO}: {e.strerror}") from None
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        mountpoint = unescape_mountinfo(fields[4])
        parent = mountpoint in ("/", path) or path.startswith(mountpoint + "/")
        if parent and len(mountpoint) > len(best):
            best = mountpoint
            best_optional = " ".join(fields[6 : fields.index("-", 6)])
    if not best:
        raise errdefs.InvalidParameter(f"Can't find mount point of {source}")
    return best, best_optional


def _has_mountinfo_option(optional: str, *prefixes: str) -> bool:
    return any(opt.startswith(prefixes) for opt in optional.split(" "))


def _rootfs_propagation(m: ContainerMount, current: str) -> str:
    """Check that a shared/slave bind's source propagates; the rootfs propagation it needs."""
    if m.propagation in ("shared", "rshared"):
        mountpoint, optional = _source_mount(m.source)
        if not _has_mountinfo_option(optional, "shared:"):
            raise errdefs.InvalidParameter(
                f"path {m.source} is mounted on {mountpoint} but it is not a shared mount"
            )
        if current not in ("shared", "rshared"):
            return "shared"
    elif m.propagation in ("slave", "rslave"):
        mountpoint, optional = _source_mount(m.source)
        if not _has_mountinfo_option(optional, "shared:", "master:"):
            raise errdefs.InvalidParameter(
                f"path {m.source} is mounted on {mountpoint} but it is not a shared or slave mount"
            )
        if current not in ("shared", "rshared", "slave", "rslave"):
            return "rslave"
    return current


def _clear_readonly(mount: dict[str, Any]) -> None:
    mount["options"] = [o for o in mount["options"] if o != "ro"]


def _mounts(opts: SpecOptions, writable_cgroups: bool | None) -> tuple[list[dict[str, Any]], str]:
    """The container's mount plan over the kernel filesystems, in dockerd's order, and the
    rootfs propagation its binds need ("" = default)."""
    hc = opts.host_config
    files = NetworkFiles(opts.hostname_path, opts.hosts_path, opts.resolv_conf_path)
    plan = container_mounts(opts.mounts, hc, files, opts.shm_path)
    user_dests = plan.destinations

    defaults = _default_mounts()
    if hc.init and opts.init_path and _pid_private(hc):
        defaults.append(
            {
                "destination": INIT_PATH_IN_CONTAINER,
                "type": "bind",
                "source": opts.init_path,
                "options": ["bind", "ro"],
            }
        )
    mount_dev = "/dev" in user_dests
    out: list[dict[str, Any]] = []
    for m in defaults:
        dest = m["destination"]
        if dest in user_dests or (mount_dev and dest.startswith("/dev/")):
            continue
        if dest == "/dev/shm":
            if hc.ipc_mode == "none":
                continue
            m["options"].append(f"size={hc.shm_size}")
        out.append(m)

    propagation = ""
    for um in plan.mounts:
        if um.type == "tmpfs":
            options = ["noexec", "nosuid", "nodev", DEFAULT_PROPAGATION]
            if um.data:
                options.extend(um.data.split(","))
            out.append(
                {
                    "destination": um.destination,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": merge_tmpfs_options(options),
                }
            )
            continue
        propagation = _rootfs_propagation(um, propagation)
        out.append(
            {
                "destination": um.destination,
                "type": "bind",
                "source": um.source,
                "options": _bind_options(um, opts.recursive_readonly),
            }
        )

    if hc.readonly_rootfs:
        for m in out:
            dest = m["destination"]
            if dest in _RO_ROOTFS_EXEMPT or dest in user_dests:
                continue
            if "ro" not in m["options"]:
                m["options"].append("ro")
    if hc.privileged:
        for m in out:
            if m["destination"] == "/sys":
                _clear_readonly(m)
    cgroups_rw = hc.privileged if writable_cgroups is None else writable_cgroups
    if cgroups_rw:
        for m in out:
            if m["type"] == "cgroup":
                _clear_readonly(m)
    return out, propagation


# -- linux -------------------------------------------------------------------------------


def _sysctl_exists(name: str) -> bool:
    return os.path.exists("/proc/sys/" + name.replace(".", "/"))


def _sysctls(cfg: Config, hc: HostConfig) -> dict[str, str]:
    sysctl: dict[str, str] = {}
    if cfg.domainname:
        # No OCI field in dockerd's eyes: the sysctl does what setdomainname(2) does.
        sysctl["kernel.domainname"] = cfg.domainname
    if _network_private(hc):
        if _sysctl_exists("net.ipv4.ping_group_range"):
            sysctl["net.ipv4.ping_group_range"] = "0 2147483647"  # ping without CAP_NET_RAW
        if _sysctl_exists("net.ipv4.ip_unprivileged_port_start"):
            sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"  # any port without a cap
    sysctl.update(hc.sysctls or {})
    return sysctl


def _namespaces(opts: SpecOptions) -> list[dict[str, Any]]:
    cfg, hc = opts.config, opts.host_config
    spaces: list[dict[str, Any]] = [
        {"type": "mount"},
        {"type": "network"},
        {"type": "uts"},
        {"type": "pid"},
        {"type": "ipc"},
    ]

    def set_ns(kind: str, path: str = "") -> None:
        entry: dict[str, Any] = {"type": kind}
        if path:
            entry["path"] = path
        for i, ns in enumerate(spaces):
            if ns["type"] == kind:
                spaces[i] = entry
                return
        spaces.append(entry)

    def remove_ns(kind: str) -> None:
        spaces[:] = [ns for ns in spaces if ns["type"] != kind]

    def need_path(path: str, what: str, mode: str) -> str:
        if not path:
            raise errdefs.InvalidParameter(
                f"invalid {what} mode: {mode}: the container's namespace is not available"
            )
        return path

    if not cfg.network_disabled:
        mode = hc.network_mode
        if mode == "host":
            remove_ns("network")
        elif _is_container(mode):
            set_ns("network", need_path(opts.netns_path, "network", mode))
        else:
            set_ns("network", opts.netns_path)

    ipc = hc.ipc_mode
    if _is_container(ipc):
        set_ns("ipc", need_path(opts.ipc_ns_path, "IPC", ipc))
    elif ipc == "host":
        remove_ns("ipc")
    else:
        set_ns("ipc")

    pid = hc.pid_mode
    if _is_container(pid):
        set_ns("pid", need_path(opts.pid_ns_path, "PID", pid))
    elif pid == "host":
        remove_ns("pid")
    else:
        set_ns("pid")

    if hc.uts_mode == "host":
        remove_ns("uts")
    if hc.cgroupns_mode == "private":
        set_ns("cgroup")
    return spaces


def _stat_rdev(path: str) -> tuple[int, int]:
    try:
        rdev = os.stat(path).st_rdev
    except OSError as e:
        raise errdefs.InvalidParameter(
            f"stat {path}: {os.strerror(e.errno or 0).lower()}"
        ) from None
    return os.major(rdev), os.minor(rdev)


def _linux_devices(hc: HostConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    devs: list[dict[str, Any]] = []
    if hc.privileged:
        devs.extend(_devices.host_devices())
        for dm in hc.devices or []:
            target = dm.path_in_container or dm.path_on_host
            if dm.path_on_host == target:
                continue  # already there through /dev
            found, _ = _devices.devices_from_path(dm.path_on_host, target, "rwm")
            devs.extend(found)
        rules: list[dict[str, Any]] = [{"allow": True, "access": "rwm"}]
    else:
        rules = _devices.default_device_rules()
        for dm in hc.devices or []:
            target = dm.path_in_container or dm.path_on_host
            found, allowed = _devices.devices_from_path(
                dm.path_on_host, target, dm.cgroup_permissions or "rwm"
            )
            devs.extend(found)
            rules.extend(allowed)
        rules.extend(_devices.rules_from_cgroup_rules(hc.device_cgroup_rules))
    for req in hc.device_requests or []:
        wanted = " ".join("[" + " ".join(c) + "]" for c in req.capabilities or [])
        raise errdefs.InvalidParameter(
            f'could not select device driver "{req.driver}" with capabilities: [{wanted}]'
        )
    return devs, rules


def _resources(hc: HostConfig, device_rules: list[dict[str, Any]]) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": device_rules}

    memory: dict[str, Any] = {}
    if hc.memory > 0:
        memory["limit"] = hc.memory
    if hc.memory_reservation > 0:
        memory["reservation"] = hc.memory_reservation
    if hc.memory_swap > 0:  # -1 (unlimited) is the cgroup's default: left out, as dockerd does
        memory["swap"] = hc.memory_swap
    if hc.memory_swappiness is not None and hc.memory_swappiness >= 0:
        memory["swappiness"] = hc.memory_swappiness
    if hc.oom_kill_disable is not None:
        memory["disableOOMKiller"] = hc.oom_kill_disable
    if memory:
        res["memory"] = memory

    cpu: dict[str, Any] = {}
    if hc.cpu_shares < 0:
        raise errdefs.InvalidParameter(
            f"invalid CPU shares ({hc.cpu_shares}): value must be a positive integer"
        )
    if hc.cpu_shares > 0:
        cpu["shares"] = hc.cpu_shares
    if hc.nano_cpus > 0:
        period = 100_000  # 100ms in µs
        cpu["quota"] = hc.nano_cpus * period // 1_000_000_000
        cpu["period"] = period
    if hc.cpu_quota != 0:
        cpu["quota"] = hc.cpu_quota
    if hc.cpu_period != 0:
        cpu["period"] = hc.cpu_period
    if hc.cpu_realtime_runtime != 0:
        cpu["realtimeRuntime"] = hc.cpu_realtime_runtime
    if hc.cpu_realtime_period != 0:
        cpu["realtimePeriod"] = hc.cpu_realtime_period
    if hc.cpuset_cpus:
        cpu["cpus"] = hc.cpuset_cpus
    if hc.cpuset_mems:
        cpu["mems"] = hc.cpuset_mems
    if cpu:
        res["cpu"] = cpu

    if hc.pids_limit is not None and hc.pids_limit > 0:
        res["pids"] = {"limit": hc.pids_limit}

    blkio: dict[str, Any] = {}
    if hc.blkio_weight > 0:
        blkio["weight"] = hc.blkio_weight
    weights = []
    for wd in hc.blkio_weight_device or []:
        major, minor = _stat_rdev(wd.path)
        weights.append({"major": major, "minor": minor, "weight": wd.weight})
    if weights:
        blkio["weightDevice"] = weights
    for key, devices in (
        ("throttleReadBpsDevice", hc.blkio_device_read_bps),
        ("throttleWriteBpsDevice", hc.blkio_device_write_bps),
        ("throttleReadIOPSDevice", hc.blkio_device_read_i_ops),
        ("throttleWriteIOPSDevice", hc.blkio_device_write_i_ops),
    ):
        throttles = []
        for td in devices or []:
            major, minor = _stat_rdev(td.path)
            throttles.append({"major": major, "minor": minor, "rate": td.rate})
        if throttles:
            blkio[key] = throttles
    if blkio:
        res["blockIO"] = blkio
    return res


def _cgroups_path(opts: SpecOptions) -> str:
    parent = opts.host_config.cgroup_parent or opts.cgroup_parent
    if not parent:
        return opts.container_id
    return go_clean(posixpath.join(parent, opts.container_id))


def default_masked_paths() -> list[str]:
    """Docker's masked paths, with the thermal-throttle files this host has."""
    paths = list(DEFAULT_MASKED_PATHS)
    cpu = 0
    while os.path.exists(f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"):
        paths.append(f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle")
        cpu += 1
    return paths


def _masked_paths(hc: HostConfig) -> list[str]:
    if hc.masked_paths is not None:
        return list(hc.masked_paths)
    return [] if hc.privileged else default_masked_paths()


def _readonly_paths(hc: HostConfig) -> list[str]:
    if hc.readonly_paths is not None:
        return list(hc.readonly_paths)
    return [] if hc.privileged else list(DEFAULT_READONLY_PATHS)


# -- the spec ----------------------------------------------------------------------------


def build_spec(opts: SpecOptions) -> dict[str, Any]:
    """The OCI runtime spec (config.json content) as JSON-ready builtins."""
    cfg, hc = opts.config, opts.host_config
    _check_modes(hc)
    nnp, writable_cgroups = security_options(hc.security_opt)

    process = _process(opts, nnp)
    mounts, rootfs_propagation = _mounts(opts, writable_cgroups)
    devices, device_rules = _linux_devices(hc)

    linux: dict[str, Any] = {}
    sysctl = _sysctls(cfg, hc)
    if sysctl:
        linux["sysctl"] = sysctl
    linux["resources"] = _resources(hc, device_rules)
    linux["cgroupsPath"] = _cgroups_path(opts)
    linux["namespaces"] = _namespaces(opts)
    if devices:
        linux["devices"] = devices
    seccomp = _seccomp.spec_seccomp(
        hc.security_opt, hc.privileged, process["capabilities"].get("bounding", ())
    )
    if seccomp is not None:
        linux[SECCOMP_HOOK] = seccomp
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation
    masked = _masked_paths(hc)
    if masked:
        linux["maskedPaths"] = masked
    readonly = _readonly_paths(hc)
    if readonly:
        linux["readonlyPaths"] = readonly

    root: dict[str, Any] = {"path": opts.rootfs}
    if hc.readonly_rootfs:
        root["readonly"] = True
    spec: dict[str, Any] = {"ociVersion": OCI_VERSION, "process": process, "root": root}
    if cfg.hostname and hc.uts_mode != "host":
        spec["hostname"] = cfg.hostname
    spec["mounts"] = mounts
    annotations = dict(hc.annotations or {})
    if opts.shim_group:
        annotations.setdefault(SHIM_GROUP_ANNOTATION, opts.shim_group)
    if annotations:
        spec["annotations"] = annotations
    spec["linux"] = linux
    return spec
