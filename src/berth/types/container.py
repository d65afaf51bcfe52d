"""Container models of the Engine API (``api/types/container`` in moby).

Fields use snake_case in Python and the Engine's spelling on the wire
(``rename="pascal"`` plus explicit names where Go's initialisms differ).
Collections and pointers are Optional because Go clients send ``null`` for
them; scalars default to Go's zero values.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from msgspec import field

from berth.types.wire import Empty

PortSet = dict[str, Empty]


class HealthConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    __omitempty__: ClassVar[frozenset[str]] = frozenset(
        {"Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"}
    )


class Config(msgspec.Struct, rename="pascal"):
    """What the container runs; the image's config is merged into it at create."""

    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: PortSet | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool = False
    image: str = ""
    volumes: dict[str, Empty] | None = None
    working_dir: str = ""
    entrypoint: list[str] | None = None
    network_disabled: bool = False
    mac_address: str = ""
    on_build: list[str] | None = None
    labels: dict[str, str] | None = None
    stop_signal: str = ""
    stop_timeout: int | None = None
    shell: list[str] | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset(
        {
            "ExposedPorts",
            "Healthcheck",
            "ArgsEscaped",
            "NetworkDisabled",
            "MacAddress",
            "StopSignal",
            "StopTimeout",
            "Shell",
        }
    )


class LogConfig(msgspec.Struct, rename="pascal"):
    type: str = ""
    config: dict[str, str] | None = None


class RestartPolicy(msgspec.Struct, rename="pascal"):
    name: str = ""
    maximum_retry_count: int = 0


class PortBinding(msgspec.Struct):
    HostIp: str = ""
    HostPort: str = ""


class WeightDevice(msgspec.Struct, rename="pascal"):
    path: str = ""
    weight: int = 0


class ThrottleDevice(msgspec.Struct, rename="pascal"):
    path: str = ""
    rate: int = 0


class DeviceMapping(msgspec.Struct, rename="pascal"):
    path_on_host: str = ""
    path_in_container: str = ""
    cgroup_permissions: str = ""


class DeviceRequest(msgspec.Struct, rename="pascal"):
    driver: str = ""
    count: int = 0
    device_i_ds: list[str] | None = field(default=None, name="DeviceIDs")
    capabilities: list[list[str]] | None = None
    options: dict[str, str] | None = None


class Ulimit(msgspec.Struct, rename="pascal"):
    name: str = ""
    hard: int = 0
    soft: int = 0


class BindOptions(msgspec.Struct, rename="pascal", omit_defaults=True):
    propagation: str = ""
    non_recursive: bool = False
    create_mountpoint: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False


class VolumeDriverConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    name: str = ""
    options: dict[str, str] | None = None


class VolumeOptions(msgspec.Struct, rename="pascal", omit_defaults=True):
    no_copy: bool = False
    labels: dict[str, str] | None = None
    subpath: str = ""
    driver_config: VolumeDriverConfig | None = None


class ImageOptions(msgspec.Struct, rename="pascal", omit_defaults=True):
    subpath: str = ""


class TmpfsOptions(msgspec.Struct, rename="pascal", omit_defaults=True):
    size_bytes: int = 0
    mode: int = 0
    options: list[list[str]] | None = None


class Mount(msgspec.Struct, rename="pascal", omit_defaults=True):
    """One entry of ``HostConfig.Mounts`` (``--mount``)."""

    type: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_options: BindOptions | None = None
    volume_options: VolumeOptions | None = None
    image_options: ImageOptions | None = None
    tmpfs_options: TmpfsOptions | None = None


class HostConfig(msgspec.Struct, rename="pascal"):
    """Host-specific settings; the Resources fields are inlined as in Go."""

    binds: list[str] | None = None
    container_id_file: str = field(default="", name="ContainerIDFile")
    log_config: LogConfig = msgspec.field(default_factory=LogConfig)
    network_mode: str = ""
    port_bindings: dict[str, list[PortBinding] | None] | None = None
    restart_policy: RestartPolicy = msgspec.field(default_factory=RestartPolicy)
    auto_remove: bool = False
    volume_driver: str = ""
    volumes_from: list[str] | None = None
    console_size: list[int] = msgspec.field(default_factory=lambda: [0, 0])
    annotations: dict[str, str] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroupns_mode: str = ""
    dns: list[str] | None = None
    dns_options: list[str] | None = None
    dns_search: list[str] | None = None
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    ipc_mode: str = ""
    cgroup: str = ""
    links: list[str] | None = None
    oom_score_adj: int = 0
    pid_mode: str = ""
    privileged: bool = False
    publish_all_ports: bool = False
    readonly_rootfs: bool = False
    security_opt: list[str] | None = None
    storage_opt: dict[str, str] | None = None
    tmpfs: dict[str, str] | None = None
    uts_mode: str = field(default="", name="UTSMode")
    userns_mode: str = ""
    shm_size: int = 0
    sysctls: dict[str, str] | None = None
    runtime: str = ""
    isolation: str = ""
    # Resources
    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = 0
    cgroup_parent: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[WeightDevice] | None = None
    blkio_device_read_bps: list[ThrottleDevice] | None = None
    blkio_device_write_bps: list[ThrottleDevice] | None = None
    blkio_device_read_i_ops: list[ThrottleDevice] | None = field(
        default=None, name="BlkioDeviceReadIOps"
    )
    blkio_device_write_i_ops: list[ThrottleDevice] | None = field(
        default=None, name="BlkioDeviceWriteIOps"
    )
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_realtime_period: int = 0
    cpu_realtime_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: list[DeviceMapping] | None = None
    device_cgroup_rules: list[str] | None = None
    device_requests: list[DeviceRequest] | None = None
    kernel_memory: int = 0
    kernel_memory_tcp: int = field(default=0, name="KernelMemoryTCP")
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None
    cpu_count: int = 0
    cpu_percent: int = 0
    io_maximum_i_ops: int = field(default=0, name="IOMaximumIOps")
    io_maximum_bandwidth: int = field(default=0, name="IOMaximumBandwidth")
    # end of Resources
    mounts: list[Mount] | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    init: bool | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset(
        {
            "Annotations",
            "StorageOpt",
            "Tmpfs",
            "Sysctls",
            "Runtime",
            "KernelMemory",
            "KernelMemoryTCP",
            "Mounts",
            "Init",
        }
    )


class EndpointIPAMConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    i_pv4_address: str = field(default="", name="IPv4Address")
    i_pv6_address: str = field(default="", name="IPv6Address")
    link_local_i_ps: list[str] | None = field(default=None, name="LinkLocalIPs")


class EndpointSettings(msgspec.Struct, rename="pascal"):
    ipam_config: EndpointIPAMConfig | None = field(default=None, name="IPAMConfig")
    links: list[str] | None = None
    aliases: list[str] | None = None
    mac_address: str = ""
    driver_opts: dict[str, str] | None = None
    gw_priority: int = 0
    network_id: str = field(default="", name="NetworkID")
    endpoint_id: str = field(default="", name="EndpointID")
    gateway: str = ""
    ip_address: str = field(default="", name="IPAddress")
    ip_prefix_len: int = field(default=0, name="IPPrefixLen")
    ipv6_gateway: str = field(default="", name="IPv6Gateway")
    global_ipv6_address: str = field(default="", name="GlobalIPv6Address")
    global_ipv6_prefix_len: int = field(default=0, name="GlobalIPv6PrefixLen")
    dns_names: list[str] | None = field(default=None, name="DNSNames")


class NetworkingConfig(msgspec.Struct, rename="pascal"):
    endpoints_config: dict[str, EndpointSettings | None] | None = None


class CreateRequest(Config, rename="pascal"):
    """Body of ``POST /containers/create``: a Config with the other two beside it."""

    host_config: HostConfig | None = None
    networking_config: NetworkingConfig | None = None

    def config(self) -> Config:
        fields = {f: getattr(self, f) for f in Config.__struct_fields__}
        return Config(**fields)


class CreateResponse(msgspec.Struct):
    Id: str
    Warnings: list[str]


class Health(msgspec.Struct, rename="pascal"):
    status: str = ""
    failing_streak: int = 0
    log: list[HealthcheckResult] | None = None


class HealthcheckResult(msgspec.Struct, rename="pascal"):
    start: str = ""
    end: str = ""
    exit_code: int = 0
    output: str = ""


class StateJSON(msgspec.Struct, rename="pascal"):
    status: str = ""
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = field(default=False, name="OOMKilled")
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    health: Health | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"Health"})


class GraphDriverData(msgspec.Struct, rename="pascal"):
    data: dict[str, str] | None = None
    name: str = ""


class MountPoint(msgspec.Struct, rename="pascal"):
    """A mount as inspect and ps show it; also what a container records at create."""

    type: str = ""
    name: str = ""
    source: str = ""
    destination: str = ""
    driver: str = ""
    mode: str = ""
    rw: bool = field(default=True, name="RW")  # mounts are writable unless made read-only
    propagation: str = ""

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"Type", "Name", "Driver"})


class NetworkSettings(msgspec.Struct, rename="pascal"):
    bridge: str = ""
    sandbox_id: str = field(default="", name="SandboxID")
    sandbox_key: str = ""
    ports: dict[str, list[PortBinding] | None] = msgspec.field(default_factory=dict)
    hairpin_mode: bool = False
    link_local_ipv6_address: str = field(default="", name="LinkLocalIPv6Address")
    link_local_ipv6_prefix_len: int = field(default=0, name="LinkLocalIPv6PrefixLen")
    secondary_ip_addresses: list[Any] | None = field(default=None, name="SecondaryIPAddresses")
    secondary_ipv6_addresses: list[Any] | None = field(default=None, name="SecondaryIPv6Addresses")
    endpoint_id: str = field(default="", name="EndpointID")
    gateway: str = ""
    global_ipv6_address: str = field(default="", name="GlobalIPv6Address")
    global_ipv6_prefix_len: int = field(default=0, name="GlobalIPv6PrefixLen")
    ip_address: str = field(default="", name="IPAddress")
    ip_prefix_len: int = field(default=0, name="IPPrefixLen")
    ipv6_gateway: str = field(default="", name="IPv6Gateway")
    mac_address: str = ""
    networks: dict[str, EndpointSettings] = msgspec.field(default_factory=dict)


class InspectResponse(msgspec.Struct, rename="pascal"):
    """``GET /containers/{id}/json``."""

    id: str = field(default="", name="Id")
    created: str = ""
    path: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    state: StateJSON | None = None
    image: str = ""
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    log_path: str = ""
    name: str = ""
    restart_count: int = 0
    driver: str = ""
    platform: str = ""
    mount_label: str = ""
    process_label: str = ""
    app_armor_profile: str = field(default="", name="AppArmorProfile")
    exec_i_ds: list[str] | None = field(default=None, name="ExecIDs")
    host_config: HostConfig | None = None
    graph_driver: GraphDriverData = msgspec.field(default_factory=GraphDriverData)
    size_rw: int | None = None
    size_root_fs: int | None = None
    mounts: list[MountPoint] = msgspec.field(default_factory=list)
    config: Config | None = None
    network_settings: NetworkSettings | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"SizeRw", "SizeRootFs"})


class Port(msgspec.Struct):
    """One published or exposed port in ``docker ps``."""

    PrivatePort: int
    Type: str
    IP: str = ""
    PublicPort: int = 0

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"IP", "PublicPort"})


class SummaryHostConfig(msgspec.Struct, rename="pascal"):
    network_mode: str = ""
    annotations: dict[str, str] | None = None

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"Annotations"})


class SummaryNetworkSettings(msgspec.Struct, rename="pascal"):
    networks: dict[str, EndpointSettings] = msgspec.field(default_factory=dict)


class Summary(msgspec.Struct, rename="pascal"):
    """One row of ``GET /containers/json``."""

    id: str = field(default="", name="Id")
    names: list[str] = msgspec.field(default_factory=list)
    image: str = ""
    image_id: str = field(default="", name="ImageID")
    command: str = ""
    created: int = 0
    ports: list[Port] = msgspec.field(default_factory=list)
    size_rw: int | None = None
    size_root_fs: int | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    state: str = ""
    status: str = ""
    host_config: SummaryHostConfig = msgspec.field(default_factory=SummaryHostConfig)
    network_settings: SummaryNetworkSettings | None = None
    mounts: list[MountPoint] = msgspec.field(default_factory=list)

    __omitempty__: ClassVar[frozenset[str]] = frozenset({"SizeRw", "SizeRootFs"})


class PruneReport(msgspec.Struct):
    ContainersDeleted: list[str] | None
    SpaceReclaimed: int


class ExecOptions(msgspec.Struct, rename="pascal"):
    """Body of ``POST /containers/{id}/exec``."""

    user: str = ""
    privileged: bool = False
    tty: bool = False
    console_size: list[int] | None = None
    attach_stdin: bool = False
    attach_stderr: bool = False
    attach_stdout: bool = False
    detach: bool = False
    detach_keys: str = ""
    env: list[str] | None = None
    working_dir: str = ""
    cmd: list[str] | None = None


class ExecStartConfig(msgspec.Struct, rename="pascal"):
    """Body of ``POST /exec/{id}/start``."""

    detach: bool = False
    tty: bool = False
    console_size: list[int] | None = None


class PathStat(msgspec.Struct):
    """``X-Docker-Container-Path-Stat`` of the archive routes (moby's ``container.PathStat``).

    ``mode`` is Go's ``os.FileMode`` (type bits high: directory 1<<31, symlink
    1<<27...), not a Unix ``st_mode``: the CLI tests it with ``IsDir()``.
    """

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str = field(name="linkTarget")


class UpdateConfig(msgspec.Struct, rename="pascal"):
    """Body of ``POST /containers/{id}/update`` (moby's ``container.UpdateConfig``): the
    Resources of a HostConfig, spelt as there, and its RestartPolicy."""

    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = 0
    cgroup_parent: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[WeightDevice] | None = None
    blkio_device_read_bps: list[ThrottleDevice] | None = None
    blkio_device_write_bps: list[ThrottleDevice] | None = None
    blkio_device_read_i_ops: list[ThrottleDevice] | None = field(
        default=None, name="BlkioDeviceReadIOps"
    )
    blkio_device_write_i_ops: list[ThrottleDevice] | None = field(
        default=None, name="BlkioDeviceWriteIOps"
    )
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_realtime_period: int = 0
    cpu_realtime_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: list[DeviceMapping] | None = None
    device_cgroup_rules: list[str] | None = None
    device_requests: list[DeviceRequest] | None = None
    kernel_memory: int = 0
    kernel_memory_tcp: int = field(default=0, name="KernelMemoryTCP")
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None
    cpu_count: int = 0
    cpu_percent: int = 0
    io_maximum_i_ops: int = field(default=0, name="IOMaximumIOps")
    io_maximum_bandwidth: int = field(default=0, name="IOMaximumBandwidth")
    restart_policy: RestartPolicy = msgspec.field(default_factory=RestartPolicy)

    def host_config(self) -> HostConfig:
        """A HostConfig with only these fields set, as moby's router builds one."""
        return HostConfig(**msgspec.structs.asdict(self))


class UpdateResponse(msgspec.Struct):
    """Answer of ``POST /containers/{id}/update``: Go's nil slice (``null``) when there
    is nothing to say."""

    Warnings: list[str] | None = None
