"""``start_container``: from a created container to a running process.

Mount the RW layer, write the network files, prepare mounts, resolve the
user in the container's own /etc/passwd, build the OCI spec, open the stdio
FIFOs, then create and start the task.  Any failure undoes every step, and
errors from the OCI runtime are translated as dockerd does (a missing
command is the user's 400 with exit code 127).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from berth import errdefs
from berth.archive import ContainerFS
from berth.container.stream import ProcessIO
from berth.daemon import health as _health
from berth.daemon import logs as _logs
from berth.daemon import network as _network
from berth.daemon import volumes as _volumes
from berth.daemon.netfiles import write_network_files
from berth.runtime.spec import SpecOptions, build_spec, resolve_user
from berth.types.container import Config, MountPoint
from berth.utils.gostr import go_clean

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.daemon.daemon import Daemon

log = logging.getLogger(__name__)

EXIT_CMD_NOT_FOUND = 127
EXIT_EACCES = 126
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init")


def init_binary() -> str:
    for path in INIT_BINARIES:
        if os.path.exists(path):
            return path
    raise errdefs.System("no init binary found: install Debian's tini (make install does)")


def translate_start_error(container: Container, err: errdefs.BerthError) -> errdefs.BerthError:
    """dockerd's ``translateContainerdStartErr``: the runtime's words, the right class, and
    the exit code the container then shows (127 for a missing command, 126 for EACCES)."""
    text = str(err)
    low = text.lower()
    cmd = container.record.path.lower()
    if (
        cmd
        and cmd in low
        and ("executable file not found" in low or "no such file or directory" in low)
    ):
        container.set_start_failed(text, EXIT_CMD_NOT_FOUND)
        return errdefs.InvalidParameter(text)
    if "permission denied" in low:
        container.set_start_failed(text, EXIT_EACCES)
        return errdefs.InvalidParameter(text)
    if "not a directory" in low:
        container.set_start_failed(text, EXIT_CMD_NOT_FOUND)
        return errdefs.InvalidParameter(
            text + ": Are you trying to mount a directory onto a file (or vice-versa)? Check "
            "if the specified host path exists and is the expected type"
        )
    return errdefs.System(text)


def _prepare_mounts(d: Daemon, container: Container) -> list[MountPoint]:
    """Host sides of binds, created when missing (as dockerd does for -v); volumes are
    mounted for the container before (``volumes.mount_all``)."""
    out = []
    for mp in container.record.mount_points.values():
        if mp.type == "bind" and not os.path.exists(mp.source):
            created_by_mount = any(
                m.bind_options and m.bind_options.create_mountpoint
                for m in container.host_config.mounts or []
                if m.target == mp.destination
            )
            from_binds = any(
                b.split(":")[0] == mp.source for b in container.host_config.binds or []
            )
            if not (from_binds or created_by_mount):
                raise errdefs.InvalidParameter(
                    f'invalid mount config for type "bind": bind source path does not '
                    f"exist: {mp.source}"
                )
            os.makedirs(mp.source, 0o755, exist_ok=True)
        out.append(mp)
    return out


def setup_working_dir(rootfs: Path, working_dir: str) -> None:
    """moby's ``SetupWorkingDirectory``: make the working directory in the container's root
    (0755, owned by its root) before the runtime starts, following links as the kernel would
    there; runc's own mkdir fails on a link to a missing directory (``mkdir /d: file exists``).
    """
    if not working_dir:
        return
    wd = go_clean(working_dir)
    try:
        with ContainerFS(str(rootfs)) as fs:
            fs.open_dir(wd, create=True, check=False)
    except NotADirectoryError:
        raise errdefs.System(f"Cannot mkdir: {wd} is not a directory") from None
    except OSError as e:  # the host path stays out of the message
        raise errdefs.System(f"Cannot mkdir: {wd}: {e.strerror}") from None


def _host_rlimits() -> dict[str, tuple[int, int]]:
    out = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            out[name] = resource.getrlimit(getattr(resource, name))
    return out


def container_spec(d: Daemon, container: Container, rootfs: Path) -> dict[str, Any]:
    """The OCI spec of *container* over *rootfs*, writing its network files."""
    rec = container.record
    hc = container.host_config
    if hc.network_mode.startswith("container:"):
        # The files of the container whose network it joins, as dockerd shares them.
        other = d.get_container(hc.network_mode[len("container:") :]).record
        rec.hostname_path, rec.hosts_path, rec.resolv_conf_path = (
            other.hostname_path,
            other.hosts_path,
            other.resolv_conf_path,
        )
    else:
        own_ip, host_gateway, resolver = _network.file_inputs(d, container)
        rec.hostname_path, rec.hosts_path, rec.resolv_conf_path = write_network_files(
            container.root,
            rec.config.hostname,
            hc,
            own_ip,
            host_gateway,
            resolver,
            d.options.network.dns,
            rec.config.domainname,
            _network.link_hosts(d, container),
        )
    opts = SpecOptions(
        container_id=container.id,
        rootfs=str(rootfs),
        config=_with_link_env(rec.config, _network.link_env(d, container)),
        host_config=hc,
        mounts=_prepare_mounts(d, container),
        user=resolve_user(rootfs, rec.config.user, hc.group_add),
        hostname_path=rec.hostname_path,
        hosts_path=rec.hosts_path,
        resolv_conf_path=rec.resolv_conf_path,
        cgroup_parent=d.cgroup_parent,
        init_path=init_binary() if hc.init else "",
        netns_path=d.network_namespace(container),
        ipc_ns_path=d.namespace_path(hc.ipc_mode, "ipc"),
        pid_ns_path=d.namespace_path(hc.pid_mode, "pid"),
        host_rlimits=_host_rlimits(),
        shim_group=shim_group(d.options.shim_group, rec.config.labels or {}),
    )
    return build_spec(opts)


COMPOSE_PROJECT_LABEL = "com.docker.compose.project"


def shim_group(mode: str, labels: dict[str, str]) -> str:
    """The shim group of a container under ``--shim-group`` *mode*; "" for its own shim.
    Prefixed, so that a group's socket is never that of a container ID's shim."""
    if mode == "all":
        return "berth-all"
    project = labels.get(COMPOSE_PROJECT_LABEL, "")
    if mode == "project" and project:
        return f"berth-project-{project}"
    return ""


def _with_link_env(config: Config, extra: list[str]) -> Config:
    """The container's own variables win over those its links bring."""
    if not extra:
        return config
    own = {v.partition("=")[0] for v in config.env or []}
    env = [v for v in extra if v.partition("=")[0] not in own] + list(config.env or [])
    return msgspec.structs.replace(config, env=env)


def start_container(d: Daemon, ref: str) -> None:
    container = d.get_container(ref)
    with container.lock:
        st = container.state
        if st.running:
            if st.paused:
                raise errdefs.Conflict("cannot start a paused container, try unpause instead")
            raise errdefs.NotModified("container already started")
        if st.removal_in_progress or st.dead:
            raise errdefs.Conflict("container is marked for removal and cannot be started")
        try:
            start_locked(d, container)
            return
        except errdefs.BerthError:
            if not container.host_config.auto_remove:
                raise
            error = sys.exc_info()[1]
    # As dockerd does, a --rm container that cannot start is removed: the CLI
    # waits for that removal before it reports the error.
    d.auto_remove(container)
    assert error is not None
    raise error


def start_locked(d: Daemon, container: Container) -> None:
    """Start *container*, whose lock the caller holds and whose state it checked.

    Public for the restart policy (``monitor``), which starts a container again
    under the lock it took to see that the container is still to be restarted.
    """
    cid = container.id
    rec = container.record
    layers = d.images.layers
    rw = layers.get_rw_layer(cid)
    rootfs = layers.mount(rw)
    io: ProcessIO | None = None
    logger = None
    created = False
    networked = volumes_mounted = False
    try:
        setup_working_dir(rootfs, rec.config.working_dir)
        volumes_mounted = True
        _volumes.mount_all(d, container, rootfs)
        networked = True
        _network.connect_at_start(d, container)
        spec = container_spec(d, container, rootfs)
        logger = d.open_logger(container)
        io = ProcessIO(
            d.fifo_dir(cid),
            "init",
            stdin=rec.config.open_stdin,
            tty=rec.config.tty,
            hub=container.streams,
            close_io=lambda: d.runtime.close_stdin(cid),
            sink=logger.sink if logger is not None else None,
        )
        io.open()
        try:
            d.runtime.create(cid, spec, io.stdio)
        except errdefs.BerthError as e:
            raise translate_start_error(container, e) from None
        created = True
        assert d.loop is not None
        io.start(d.loop)
        container.io = io
        container.logger = logger
        try:
            pid = d.runtime.start(cid)
        except errdefs.BerthError as e:
            raise translate_start_error(container, e) from None
        io.connected()
    except BaseException as e:
        if created:
            try:
                d.runtime.delete(cid)
            except errdefs.BerthError as de:
                log.warning("cleaning up failed start of %s: %s", cid[:12], de)
        if io is not None:
            io.close()
        container.io = None
        if logger is not None:  # opened here, whether or not it was handed over yet
            logger.close()
        container.logger = None
        layers.unmount(rw)
        if networked:
            _network.release(d, container, _network.clear_runtime(container))
        if volumes_mounted:
            _volumes.unmount_all(d, container)
        if isinstance(e, errdefs.BerthError):
            container.set_start_failed(str(e))
            d.checkpoint(container, host_config=False)
        raise
    container.set_running(pid)
    rec.has_been_started_before = True
    rec.has_been_manually_stopped = False
    container.rootfs = rootfs
    container.spec_process = spec["process"]
    rec.log_path = _logs.exposed_log_path(container, d.log_path(container))
    _health.init_monitor(d, container)
    d.checkpoint(container, host_config=False)
    d.emit_container(container, "start")


def remove_runtime_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
