"""berth.volume.plan: the one list of mounts a container gets, read by the spec and docker cp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.runtime.spec import ResolvedUser, SpecOptions, build_spec
from berth.types.container import BindOptions, Config, HostConfig, Mount, MountPoint, TmpfsOptions
from berth.volume.plan import (
    ContainerMount,
    MountPlan,
    NetworkFiles,
    container_mounts,
)


def host_config(**kw: Any) -> HostConfig:
    values: dict[str, Any] = {"network_mode": "bridge", "ipc_mode": "private"}
    values.update(kw)
    return HostConfig(**values)


def bind(source: str, dest: str, rw: bool = True, propagation: str = "rprivate") -> MountPoint:
    return MountPoint(type="bind", source=source, destination=dest, rw=rw, propagation=propagation)


def volume(name: str, dest: str, rw: bool = True) -> MountPoint:
    source = f"/var/lib/berth/volumes/{name}/_data"
    return MountPoint(type="volume", name=name, source=source, destination=dest, rw=rw)


@pytest.fixture
def files(tmp_path: Path) -> NetworkFiles:
    for name in ("hostname", "hosts", "resolv.conf"):
        (tmp_path / name).write_text(name)
    return NetworkFiles(
        str(tmp_path / "hostname"), str(tmp_path / "hosts"), str(tmp_path / "resolv.conf")
    )


def plan(
    points: list[MountPoint] | None = None,
    hc: HostConfig | None = None,
    files: NetworkFiles | None = None,
    shm_path: str = "",
) -> MountPlan:
    return container_mounts(points or [], hc or host_config(), files or NetworkFiles(), shm_path)


def where(p: MountPlan) -> list[tuple[str, str]]:
    return [(m.destination, m.origin) for m in p.mounts]


def at(p: MountPlan, dest: str) -> ContainerMount:
    found = [m for m in p.mounts if m.destination == dest]
    assert len(found) == 1, found
    return found[0]


def test_no_mounts() -> None:
    assert plan().mounts == ()
    assert plan().files() == []


def test_parents_first_and_within_a_depth_user_network_ipc_tmpfs(files: NetworkFiles) -> None:
    hc = host_config(ipc_mode="host", tmpfs={"/run": "", "/tmp/x": "size=1m"})
    points = [bind("/s/3", "/a/b/c"), bind("/s/1", "/z"), volume("v", "/etc/x"), bind("/s", "/a")]
    assert where(plan(points, hc, files)) == [
        ("/z", "user"),
        ("/a", "user"),
        ("/run", "tmpfs"),
        ("/etc/x", "user"),
        ("/etc/resolv.conf", "network"),
        ("/etc/hostname", "network"),
        ("/etc/hosts", "network"),
        ("/dev/shm", "ipc"),
        ("/tmp/x", "tmpfs"),
        ("/a/b/c", "user"),
    ]


def test_user_mounts_are_binds_with_their_mount_point() -> None:
    vol = volume("data", "/data/", rw=False)
    m = at(plan([vol, bind("/srv", "//srv", propagation="rslave")]), "/data")
    assert (m.type, m.source, m.writable, m.propagation) == (
        "bind",
        "/var/lib/berth/volumes/data/_data",
        False,
        "",
    )
    assert m.point is vol
    assert at(plan([bind("/srv", "//srv", propagation="rslave")]), "/srv").propagation == "rslave"


def test_bind_options_come_from_the_mount_spec() -> None:
    hc = host_config(
        mounts=[
            Mount(
                type="bind", source="/a", target="/a/", bind_options=BindOptions(non_recursive=True)
            ),
            Mount(
                type="bind",
                source="/b",
                target="/b",
                read_only=True,
                bind_options=BindOptions(
                    read_only_non_recursive=True, read_only_force_recursive=True
                ),
            ),
        ]
    )
    p = plan([bind("/a", "/a"), bind("/b", "/b", rw=False), bind("/c", "/c")], hc)
    assert at(p, "/a").non_recursive and not at(p, "/a").ro_non_recursive
    assert at(p, "/b").ro_non_recursive and at(p, "/b").ro_force_recursive
    c = at(p, "/c")
    assert not (c.non_recursive or c.ro_non_recursive or c.ro_force_recursive)


def test_network_files_in_every_network_mode(files: NetworkFiles) -> None:
    for mode in ("bridge", "host", "none", "mynet"):
        p = plan(hc=host_config(network_mode=mode), files=files)
        assert p.mounts == (
            ContainerMount(
                "/etc/resolv.conf", files.resolv_conf, "bind", "network", True, "rprivate"
            ),
            ContainerMount("/etc/hostname", files.hostname, "bind", "network", True, "rprivate"),
            ContainerMount("/etc/hosts", files.hosts, "bind", "network", True, "rprivate"),
        )


def test_network_files_skipped_when_unset_or_missing(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    p = plan(files=NetworkFiles(hostname="", hosts=str(hosts), resolv_conf=str(tmp_path / "no")))
    assert where(p) == [("/etc/hosts", "network")]


def test_network_files_read_only_with_a_read_only_rootfs(files: NetworkFiles) -> None:
    p = plan([bind("/srv", "/srv")], host_config(readonly_rootfs=True), files)
    assert [m.writable for m in p.mounts] == [True, False, False, False]


def test_a_user_mount_over_a_network_file_replaces_it(files: NetworkFiles) -> None:
    mine = bind(files.hostname, "/etc/hosts/", rw=False, propagation="rshared")
    p = plan([mine], host_config(readonly_rootfs=False), files)
    m = at(p, "/etc/hosts")
    assert (m.source, m.origin, m.writable, m.propagation) == (
        files.hostname,
        "network",
        False,
        "rprivate",
    )
    assert m.point is mine
    assert [d for d, _ in where(p)] == ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]


def test_a_user_mount_over_a_network_file_with_a_missing_source_drops_both(
    files: NetworkFiles,
) -> None:
    p = plan([volume("v", "/etc/hosts")], files=files)
    assert "/etc/hosts" not in p.destinations


def test_tmpfs_wins_over_a_bind_at_its_destination() -> None:
    p = plan([bind("/srv", "/data/")], host_config(tmpfs={"/data": "size=1m"}))
    assert p.mounts == (ContainerMount("/data", "tmpfs", "tmpfs", "tmpfs", data="size=1m"),)


def test_mount_type_tmpfs_takes_its_options_from_the_mount_spec() -> None:
    spec = Mount(
        type="tmpfs",
        target="/cache",
        read_only=True,
        tmpfs_options=TmpfsOptions(size_bytes=3 << 20, mode=0o700, options=[["exec"]]),
    )
    mp = MountPoint(type="tmpfs", destination="/cache", rw=False)
    m = at(plan([mp], host_config(mounts=[spec])), "/cache")
    assert (m.type, m.source, m.origin, m.data) == (
        "tmpfs",
        "tmpfs",
        "tmpfs",
        "ro,mode=700,size=3m,exec",
    )
    # without its --mount (an old record), the mount point's RW decides
    assert at(plan([mp]), "/cache").data == "ro"


@pytest.mark.parametrize(
    ("ipc", "shm_path", "source"),
    [
        ("host", "", "/dev/shm"),
        ("shareable", "/run/berth/c/shm", "/run/berth/c/shm"),
        ("container:abc", "/run/berth/c/shm", "/run/berth/c/shm"),
        ("shareable", "", None),
        ("private", "/run/berth/c/shm", None),
        ("none", "", None),
        ("", "", None),
    ],
)
def test_ipc_shm(ipc: str, shm_path: str, source: str | None) -> None:
    p = plan(hc=host_config(ipc_mode=ipc), shm_path=shm_path)
    if source is None:
        assert p.mounts == ()
    else:
        assert p.mounts == (ContainerMount("/dev/shm", source, "bind", "ipc", True, "rprivate"),)


def test_a_user_mount_or_tmpfs_at_dev_shm_wins_over_ipc() -> None:
    p = plan([bind("/mine", "/dev/shm")], host_config(ipc_mode="host"))
    assert where(p) == [("/dev/shm", "user")]
    p = plan(hc=host_config(ipc_mode="host", tmpfs={"/dev/shm": ""}))
    assert where(p) == [("/dev/shm", "tmpfs")]


def test_files_are_what_the_host_sees(files: NetworkFiles) -> None:
    hc = host_config(ipc_mode="host", tmpfs={"/run": ""})
    p = plan([bind("/srv", "/srv"), volume("v", "/v/w")], hc, files)
    assert [(m.destination, m.origin) for m in p.files()] == [
        ("/srv", "user"),
        ("/v/w", "user"),
        ("/etc/resolv.conf", "network"),
        ("/etc/hostname", "network"),
        ("/etc/hosts", "network"),
    ]


def test_unsupported_type_and_missing_source() -> None:
    with pytest.raises(errdefs.NotImplementedFeature):
        plan([MountPoint(type="image", source="busybox", destination="/img")])
    with pytest.raises(errdefs.InvalidParameter, match="mount at /x has no source"):
        plan([MountPoint(type="bind", destination="/x")])


def test_the_spec_mounts_the_plan_over_the_kernel_filesystems(files: NetworkFiles) -> None:
    hc = host_config(ipc_mode="host", tmpfs={"/run": ""}, shm_size=64 << 20, cgroupns_mode="host")
    points = [bind("/srv", "/srv"), volume("v", "/v/w", rw=False)]
    spec = build_spec(
        SpecOptions(
            container_id="c" * 64,
            rootfs="/rootfs",
            config=Config(hostname="h", cmd=["sh"]),
            host_config=hc,
            mounts=points,
            user=ResolvedUser(uid=0, gid=0, additional_gids=()),
            hostname_path=files.hostname,
            hosts_path=files.hosts,
            resolv_conf_path=files.resolv_conf,
            available_caps=[],
            host_rlimits={},
        )
    )
    kernel = ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue"]
    planned = [(m.destination, m.source) for m in plan(points, hc, files).mounts]
    assert [m["destination"] for m in spec["mounts"][: len(kernel)]] == kernel
    assert [(m["destination"], m["source"]) for m in spec["mounts"][len(kernel) :]] == planned
    assert ("/dev/shm", "/dev/shm") in planned  # the IPC bind replaced the default shm
