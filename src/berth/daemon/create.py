"""``create_container``: the seed's create flow, step by step.

1. verify the user's Config/HostConfig (nothing reserved yet);
2. resolve the image (404 ``No such image`` lets the CLI pull);
3. adapt host settings (daemon defaults);
4. merge the image's config into the user's;
5. a fresh ID and a reserved name;
6. the container directory, the init layer and the RW layer;
7. mount points and network settings recorded;
8. ``config.v2.json`` + ``hostconfig.json`` written, the ViewDB updated.

Any failure after step 5 undoes what was done, so a refused create leaves
no name, no layer and no directory behind; a crash leaves a directory
without ``config.v2.json``, which the next start removes.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import msgspec

from berth import errdefs
from berth.container.container import Container, Record
from berth.daemon import initlayer, names
from berth.daemon import network as _network
from berth.daemon import volumes as _volumes
from berth.daemon.validate import (
    discard_unsupported_resources,
    refuse_unsupported,
    sys_info,
    validate_container_config,
    validate_exposed_ports,
    validate_host_config,
    validate_log_config,
    validate_resources,
)
from berth.runtime.spec import DEFAULT_READONLY_PATHS, default_masked_paths
from berth.types.container import (
    Config,
    CreateResponse,
    HealthConfig,
    HostConfig,
    MountPoint,
    NetworkingConfig,
)
from berth.utils.platform import Platform, host_platform, parse_platform
from berth.utils.stringid import generate_id
from berth.utils.timefmt import format_rfc3339_nano, now_ns
from berth.volume.mounts import mount_point, parse_bind

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon
    from berth.image.store import Image


def merge(user: Config, image: Config) -> None:
    """Fill what the user left unset from the image's config (moby ``merge``)."""
    if not user.user:
        user.user = image.user
    if not user.exposed_ports:
        user.exposed_ports = (
            dict(image.exposed_ports) if image.exposed_ports else image.exposed_ports
        )
    elif image.exposed_ports:
        for port, empty in image.exposed_ports.items():
            user.exposed_ports.setdefault(port, empty)
    if not user.env:
        user.env = list(image.env) if image.env is not None else None
    else:
        keys = {e.partition("=")[0] for e in user.env}
        for env in image.env or []:
            key = env.partition("=")[0]
            if key not in keys:
                user.env.append(env)
                keys.add(key)
    if user.labels is None:
        user.labels = {}
    for key, value in (image.labels or {}).items():
        user.labels.setdefault(key, value)
    if not user.entrypoint:
        if not user.cmd:
            user.cmd = list(image.cmd) if image.cmd is not None else None
        if user.entrypoint is None:
            user.entrypoint = list(image.entrypoint) if image.entrypoint is not None else None
    if image.healthcheck is not None:
        if user.healthcheck is None:
            user.healthcheck = msgspec.structs.replace(image.healthcheck)
        else:
            _merge_health(user.healthcheck, image.healthcheck)
    if not user.working_dir:
        user.working_dir = image.working_dir
    if not user.volumes:
        user.volumes = dict(image.volumes) if image.volumes else image.volumes
    else:
        for k, v in (image.volumes or {}).items():
            user.volumes[k] = v
    if not user.stop_signal:
        user.stop_signal = image.stop_signal


def _merge_health(user: HealthConfig, image: HealthConfig) -> None:
    if not user.test:
        user.test = image.test
    if user.interval == 0:
        user.interval = image.interval
    if user.timeout == 0:
        user.timeout = image.timeout
    if user.start_period == 0:
        user.start_period = image.start_period
    if user.start_interval == 0:
        user.start_interval = image.start_interval
    if user.retries == 0:
        user.retries = image.retries


def entrypoint_and_args(config: Config) -> tuple[str, list[str]]:
    if config.entrypoint:
        return config.entrypoint[0], [*config.entrypoint[1:], *(config.cmd or [])]
    cmd = config.cmd or []
    return (cmd[0], cmd[1:]) if cmd else ("", [])


def adapt_host_config(d: Daemon, hc: HostConfig) -> None:
    """Daemon defaults filled into the stored HostConfig (``adaptContainerSettings``)."""
    opts = d.options
    if hc.memory > 0 and hc.memory_swap == 0:
        hc.memory_swap = 2 * hc.memory
    if hc.shm_size == 0:
        hc.shm_size = opts.default_shm_size
    if not hc.ipc_mode:
        hc.ipc_mode = opts.default_ipc_mode
    if not hc.cgroupns_mode:
        if hc.privileged and d.cgroup_version == "1":
            hc.cgroupns_mode = "host"
        else:
            hc.cgroupns_mode = opts.default_cgroupns_mode or (
                "private" if d.cgroup_version == "2" else "host"
            )
    if hc.oom_kill_disable is None:
        hc.oom_kill_disable = False
    if not hc.runtime:
        hc.runtime = opts.default_runtime
    elif hc.runtime not in d.runtimes():
        raise errdefs.InvalidParameter(f"unknown or invalid runtime name: {hc.runtime}")
    if hc.network_mode in ("", "default"):
        hc.network_mode = "bridge"
    for attr in ("pid_mode", "ipc_mode", "network_mode"):
        mode = getattr(hc, attr)
        if mode.startswith("container:"):
            target = d.view.snapshot().find(mode[len("container:") :])
            setattr(hc, attr, "container:" + target.id)


def _volumes_from(d: Daemon, hc: HostConfig) -> dict[str, MountPoint]:
    """moby's ``--volumes-from id[:ro|rw]``: the other container's mount points, read-only
    with ``ro``, read-write with ``rw``, else as it has them; binds and ``--mount`` given
    with the container override them at the same destination."""
    points: dict[str, MountPoint] = {}
    for spec in hc.volumes_from or []:
        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise errdefs.InvalidParameter(f"invalid mode: {mode}")
        source = d.get_container(ref)
        for mp in source.record.mount_points.values():
            copy = msgspec.structs.replace(mp)
            if mode:
                copy.rw = mp.rw and mode == "rw"
            points[copy.destination] = copy
    return points


def _register_mount_points(d: Daemon, config: Config, hc: HostConfig) -> dict[str, MountPoint]:
    root = str(d.options.data_root)
    points: dict[str, MountPoint] = _volumes_from(d, hc)
    binds: set[str] = set()
    for raw in hc.binds or []:
        mp = parse_bind(raw, root, hc.volume_driver)
        if mp.destination in binds or mp.destination in (hc.tmpfs or {}):
            raise errdefs.InvalidParameter(f"Duplicate mount point: {mp.destination}")
        binds.add(mp.destination)
        points[mp.destination] = mp
    for m in hc.mounts or []:
        mp = mount_point(m, root)
        if mp.destination in binds:
            raise errdefs.InvalidParameter(f"Duplicate mount point: {m.target}")
        binds.add(mp.destination)
        points[mp.destination] = mp
    for dest in config.volumes or {}:
        # An image's VOLUME may be relative (``VOLUME data`` in a Dockerfile): dockerd
        # takes it as it comes and the mount lands under the root, as /data.
        clean = os.path.normpath(dest if dest.startswith("/") else "/" + dest)
        if clean in points or clean in (hc.tmpfs or {}):
            continue
        anon = parse_bind(clean, root, hc.volume_driver)
        anon.mode = ""
        points[clean] = anon
    return points


def _check_platform(ref: str, img: Image, wanted: Platform) -> None:
    """``?platform=`` names the image wanted: one of another platform is not it (moby's
    ``GetImage`` with a platform; the 404 makes the CLI pull the platform asked for)."""
    c = img.config
    actual = Platform(c.os or "linux", c.architecture or wanted.architecture, c.variant or "")
    if (actual.os, actual.architecture) != (wanted.os, wanted.architecture) or (
        actual.variant and wanted.variant and actual.variant != wanted.variant
    ):
        raise errdefs.NotFound(
            f"image with reference {ref} was found but does not match the specified "
            f"platform: wanted {wanted}, actual: {actual}"
        )


def create_container(
    d: Daemon,
    name: str,
    config: Config,
    hc: HostConfig,
    net: NetworkingConfig | None,
    platform: str,
) -> CreateResponse:
    warnings: list[str] = []
    if hc.restart_policy.name == "":
        hc.restart_policy.name = "no"
    validate_container_config(config)
    validate_exposed_ports(config)
    validate_host_config(hc)
    refuse_unsupported(config, hc, net)
    warnings.extend(discard_unsupported_resources(hc, sys_info()))
    warnings.extend(validate_resources(hc, os.cpu_count() or 1))

    wanted = parse_platform(platform) if platform else None
    img: Image | None = None
    if config.image:
        img = d.images.get_image(config.image)
        if wanted is not None:
            _check_platform(config.image, img, wanted)
        host = host_platform()
        arch = img.config.architecture
        if (
            not platform
            and arch
            and (img.config.os or "linux", arch) != (host.os, host.architecture)
        ):
            warnings.append(
                f"The requested image's platform ({img.config.os or 'linux'}/{arch}) does not "
                f"match the detected host platform ({host}) and no specific platform was "
                "requested"
            )
    for net_name, ep in ((net.endpoints_config or {}) if net else {}).items():
        if ep is None:
            raise errdefs.InvalidParameter(
                f"invalid config for network {net_name}: EndpointsConfig is nil"
            )
    adapt_host_config(d, hc)

    if img is not None and img.config.config is not None:
        merge(config, img.config.config)
    elif config.labels is None:
        config.labels = {}
    if config.entrypoint == [""]:
        config.entrypoint = None
    if not config.entrypoint and not config.cmd:
        raise errdefs.InvalidParameter("no command specified")
    validate_log_config(hc, d.options.log_driver, d.options.log_opts)
    if hc.masked_paths is None and not hc.privileged:
        hc.masked_paths = default_masked_paths()
    if hc.readonly_paths is None and not hc.privileged:
        hc.readonly_paths = list(DEFAULT_READONLY_PATHS)
    mount_points = _register_mount_points(d, config, hc)
    made_volumes = _volumes.register(d, hc, mount_points)
    network_settings = _network.network_settings(d, hc, net, config)

    ident = generate_id()
    reserved = names.reserve_name(d.view, ident, name)
    root = d.repository / ident
    made_root = False
    try:
        _network.check_links(d, hc, reserved)
        if not config.hostname:
            config.hostname = os.uname().nodename if hc.network_mode == "host" else ident[:12]
        path, args = entrypoint_and_args(config)
        record = Record(
            id=ident,
            created=format_rfc3339_nano(now_ns()),
            path=path,
            args=args,
            config=config,
            image=img.id if img else "",
            name=reserved,
            driver=d.driver.name,
            network_settings=network_settings,
            mount_points=mount_points,
        )
        container = Container(root, record, hc)
        os.mkdir(root, 0o710)
        made_root = True
        d.images.create_rw_layer(ident, img, initlayer.setup)
        d.checkpoint(container)
        d.register(container)
        d.images.container_listed(ident)
    except BaseException:
        d.view.release_name(reserved)
        d.images.release_rw_layer(ident)
        _volumes.forget(d, made_volumes)
        if made_root:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return CreateResponse(Id=ident, Warnings=warnings)
