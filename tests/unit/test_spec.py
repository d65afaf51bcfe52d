"""berth.runtime.spec: the OCI runtime spec dockerd would generate, and user resolution."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.runtime import caps as capsmod
from berth.runtime import devices as devmod
from berth.runtime import spec as specmod
from berth.runtime import userdb
from berth.runtime.spec import (
    ResolvedUser,
    SpecOptions,
    build_spec,
    container_env,
    convert_tmpfs_options,
    merge_tmpfs_options,
    privileged_capabilities,
    replace_or_append_env,
    resolve_user,
)
from berth.types.container import (
    BindOptions,
    Config,
    DeviceMapping,
    DeviceRequest,
    HostConfig,
    Mount,
    MountPoint,
    ThrottleDevice,
    TmpfsOptions,
    Ulimit,
    WeightDevice,
)

CID = "4f9c2e7a1b3d5c6e8f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e"
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
# What this host's daemon holds: everything but CAP_SYS_RESOURCE (CapEff 000001fffeffffff).
AVAILABLE = [c for c in capsmod.KNOWN_CAPS if c != "CAP_SYS_RESOURCE"]
MASKED = ["/proc/asound", "/proc/kcore"]
READONLY = ["/proc/bus", "/proc/sys"]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
]
DEFAULT_MOUNTS: list[dict[str, Any]] = [
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
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
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
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
    },
]


@pytest.fixture(autouse=True)
def _sysctls_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specmod, "_sysctl_exists", lambda name: True)


def host_config(**kw: Any) -> HostConfig:
    """A HostConfig as the daemon stores it after create (defaults filled in)."""
    values: dict[str, Any] = {
        "network_mode": "bridge",
        "ipc_mode": "private",
        "cgroupns_mode": "host",
        "shm_size": 64 << 20,
        "oom_kill_disable": False,
        "masked_paths": list(MASKED),
        "readonly_paths": list(READONLY),
    }
    values.update(kw)
    return HostConfig(**values)


def options(
    *,
    config: Config | None = None,
    hc: HostConfig | None = None,
    mounts: list[MountPoint] | None = None,
    user: ResolvedUser | None = None,
    **kw: Any,
) -> SpecOptions:
    kw.setdefault("host_rlimits", {"RLIMIT_NOFILE": (1024, 20000), "RLIMIT_CORE": (0, -1)})
    kw.setdefault("available_caps", list(AVAILABLE))
    return SpecOptions(
        container_id=CID,
        rootfs="/var/lib/berth/overlay2/abc/merged",
        config=config or Config(hostname="4f9c2e7a1b3d", cmd=["sh"]),
        host_config=hc or host_config(),
        mounts=mounts or [],
        user=user or ResolvedUser(uid=0, gid=0, additional_gids=(0, 10)),
        **kw,
    )


def spec_of(**kw: Any) -> dict[str, Any]:
    return build_spec(options(**kw))


def mount_at(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, found
    return found[0]


def destinations(spec: dict[str, Any]) -> list[str]:
    return [m["destination"] for m in spec["mounts"]]


def ns_list(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["linux"]["namespaces"])


# -- the whole spec ----------------------------------------------------------------------


def test_default_container_spec_is_exactly_dockerds() -> None:
    spec = spec_of()
    seccomp = spec["linux"].pop("seccomp")  # the profile itself: tests/unit/test_seccomp.py
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec == {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0, "additionalGids": [0, 10]},
            "args": ["sh"],
            "env": [PATH_ENV, "HOSTNAME=4f9c2e7a1b3d"],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "oomScoreAdj": 0,
        },
        "root": {"path": "/var/lib/berth/overlay2/abc/merged"},
        "hostname": "4f9c2e7a1b3d",
        "mounts": DEFAULT_MOUNTS,
        "linux": {
            "sysctl": {
                "net.ipv4.ping_group_range": "0 2147483647",
                "net.ipv4.ip_unprivileged_port_start": "0",
            },
            "resources": {"devices": DEFAULT_RULES, "memory": {"disableOOMKiller": False}},
            "cgroupsPath": f"/berth/{CID}",
            "namespaces": [
                {"type": "mount"},
                {"type": "network"},
                {"type": "uts"},
                {"type": "pid"},
                {"type": "ipc"},
            ],
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    }


def test_key_order_follows_the_runtime_spec() -> None:
    spec = spec_of(
        config=Config(hostname="h", cmd=["sh"], tty=True),
        hc=host_config(annotations={"a": "b"}, ulimits=[Ulimit(name="core", soft=1, hard=1)]),
    )
    assert list(spec) == [
        "ociVersion",
        "process",
        "root",
        "hostname",
        "mounts",
        "annotations",
        "linux",
    ]
    assert list(spec["process"]) == [
        "terminal",
        "user",
        "args",
        "env",
        "cwd",
        "capabilities",
        "rlimits",
        "oomScoreAdj",
    ]
    assert list(spec["linux"]) == [
        "sysctl",
        "resources",
        "cgroupsPath",
        "namespaces",
        "seccomp",
        "maskedPaths",
        "readonlyPaths",
    ]
    assert spec["annotations"] == {"a": "b"}


# -- process: args, env, cwd, terminal -----------------------------------------------------


def test_args_are_entrypoint_then_cmd() -> None:
    cfg = Config(entrypoint=["/bin/ep", "-x"], cmd=["a", "b"])
    assert spec_of(config=cfg)["process"]["args"] == ["/bin/ep", "-x", "a", "b"]
    assert spec_of(config=Config(cmd=["echo", "hi"]))["process"]["args"] == ["echo", "hi"]
    assert spec_of(config=Config(entrypoint=["/ep"]))["process"]["args"] == ["/ep"]


def test_no_command_is_invalid() -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"^no command specified$"):
        spec_of(config=Config())


def test_env_defaults_come_first_and_are_overridden_in_place() -> None:
    cfg = Config(
        hostname="web",
        env=["FOO=1", "PATH=/opt/bin", "BAR=x=y", "HOSTNAME=other"],
        cmd=["sh"],
    )
    assert container_env(cfg) == ["PATH=/opt/bin", "HOSTNAME=other", "FOO=1", "BAR=x=y"]
    assert spec_of(config=cfg)["process"]["env"] == container_env(cfg)


def test_env_term_only_with_a_tty_and_overridable() -> None:
    assert container_env(Config(hostname="h", tty=True)) == [PATH_ENV, "HOSTNAME=h", "TERM=xterm"]
    assert container_env(Config(hostname="h", tty=True, env=["TERM=vt100"])) == [
        PATH_ENV,
        "HOSTNAME=h",
        "TERM=vt100",
    ]
    assert container_env(Config(hostname="h")) == [PATH_ENV, "HOSTNAME=h"]


def test_env_bare_name_unsets_a_default_and_is_dropped_otherwise() -> None:
    assert container_env(Config(hostname="h", env=["HOSTNAME", "NOPE", "A=1"])) == [
        PATH_ENV,
        "A=1",
    ]


def test_replace_or_append_env_keeps_later_duplicates_of_new_keys() -> None:
    # moby does not index appended keys, so a repeated new key stays twice.
    assert replace_or_append_env(["A=1"], ["B=1", "B=2", "A=3"]) == ["A=3", "B=1", "B=2"]
    assert replace_or_append_env(["A=1", "C=2"], ["A", "A=4"]) == ["A=4", "C=2"]


def test_cwd_defaults_to_root() -> None:
    assert spec_of()["process"]["cwd"] == "/"
    assert spec_of(config=Config(cmd=["sh"], working_dir="/app"))["process"]["cwd"] == "/app"


def test_terminal_and_console_size() -> None:
    proc = spec_of(config=Config(cmd=["sh"], tty=True), hc=host_config(console_size=[24, 80]))[
        "process"
    ]
    assert proc["terminal"] is True
    assert proc["consoleSize"] == {"height": 24, "width": 80}
    proc = spec_of(config=Config(cmd=["sh"], tty=True))["process"]
    assert "consoleSize" not in proc
    proc = spec_of(hc=host_config(console_size=[24, 80]))["process"]
    assert "terminal" not in proc
    assert "consoleSize" not in proc


def test_user_comes_from_the_resolved_user() -> None:
    user = ResolvedUser(uid=1000, gid=1000, additional_gids=(1000, 27, 100))
    assert spec_of(user=user)["process"]["user"] == {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [1000, 27, 100],
    }
    assert spec_of(user=ResolvedUser(uid=5, gid=6))["process"]["user"] == {"uid": 5, "gid": 6}


def test_oom_score_adj_is_always_set() -> None:
    assert spec_of(hc=host_config(oom_score_adj=-500))["process"]["oomScoreAdj"] == -500


def test_annotations_only_when_given() -> None:
    assert "annotations" not in spec_of(hc=host_config(annotations={}))


# -- --init ------------------------------------------------------------------------------


INIT_MOUNT = {
    "destination": "/sbin/docker-init",
    "type": "bind",
    "source": "/usr/bin/tini-static",
    "options": ["bind", "ro"],
}


def test_init_wraps_the_command_and_binds_the_binary_after_the_defaults() -> None:
    spec = spec_of(
        config=Config(entrypoint=["/ep"], cmd=["x"]),
        hc=host_config(init=True),
        init_path="/usr/bin/tini-static",
    )
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "/ep", "x"]
    assert spec["mounts"] == [*DEFAULT_MOUNTS, INIT_MOUNT]


@pytest.mark.parametrize(
    ("init", "init_path", "pid_mode"),
    [
        (False, "/usr/bin/tini-static", ""),
        (None, "/usr/bin/tini-static", ""),
        (True, "", ""),
        (True, "/usr/bin/tini-static", "host"),
        (True, "/usr/bin/tini-static", "container:abc"),
    ],
)
def test_no_init_without_flag_binary_or_private_pid_namespace(
    init: bool | None, init_path: str, pid_mode: str
) -> None:
    spec = spec_of(
        hc=host_config(init=init, pid_mode=pid_mode),
        init_path=init_path,
        pid_ns_path="/proc/9/ns/pid",
    )
    assert spec["process"]["args"] == ["sh"]
    assert "/sbin/docker-init" not in destinations(spec)


def test_user_mount_over_the_init_path_wins() -> None:
    mp = MountPoint(
        type="bind", source="/my/init", destination="/sbin/docker-init", propagation="rprivate"
    )
    spec = spec_of(hc=host_config(init=True), init_path="/usr/bin/tini-static", mounts=[mp])
    assert mount_at(spec, "/sbin/docker-init") == {
        "destination": "/sbin/docker-init",
        "type": "bind",
        "source": "/my/init",
        "options": ["rbind", "rprivate"],
    }


# -- capabilities --------------------------------------------------------------------------


def caps_of(**hc: Any) -> Any:
    return spec_of(hc=host_config(**hc))["process"]["capabilities"]


def test_cap_add_and_drop_with_or_without_prefix_in_any_case() -> None:
    caps = caps_of(cap_add=["sys_admin", "CAP_NET_ADMIN"], cap_drop=["mknod", "CAP_NET_RAW"])
    expected = [c for c in DEFAULT_CAPS if c not in ("CAP_MKNOD", "CAP_NET_RAW")] + [
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
    ]
    assert caps == {"bounding": expected, "effective": expected, "permitted": expected}
    assert "inheritable" not in caps
    assert "ambient" not in caps


def test_cap_add_of_a_default_capability_is_not_duplicated() -> None:
    assert caps_of(cap_add=["CHOWN"])["bounding"] == DEFAULT_CAPS


def test_cap_add_all_gives_every_available_capability_minus_drops() -> None:
    caps = caps_of(cap_add=["ALL"], cap_drop=["SYS_ADMIN"])
    assert caps["effective"] == [c for c in AVAILABLE if c != "CAP_SYS_ADMIN"]


def test_cap_drop_all_keeps_only_the_adds() -> None:
    assert caps_of(cap_drop=["all"], cap_add=["chown"])["permitted"] == ["CAP_CHOWN"]
    assert caps_of(cap_drop=["ALL"]) == {}


def test_unknown_capability_is_invalid() -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        caps_of(cap_add=["FOO"])
    assert str(e.value) == 'unknown capability: "CAP_FOO"'


def test_capability_the_daemon_lacks_is_invalid() -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        caps_of(cap_add=["SYS_RESOURCE"])
    assert str(e.value) == (
        "capability not supported by your kernel or not available in the current environment: "
        '"CAP_SYS_RESOURCE"'
    )


def test_privileged_gets_every_capability_the_daemon_holds() -> None:
    caps = caps_of(privileged=True, cap_drop=["ALL"])
    assert caps == {"bounding": AVAILABLE, "effective": AVAILABLE, "permitted": AVAILABLE}
    assert len(AVAILABLE) == 40


def test_caps_from_bitmap_and_current_caps(tmp_path: Path) -> None:
    assert capsmod.caps_from_bitmap(0x1FFFEFFFFFF) == AVAILABLE
    assert capsmod.caps_from_bitmap(0x1FFFEFFFFFF, last_cap=37) == AVAILABLE[:37]
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n")
    last = tmp_path / "cap_last_cap"
    last.write_text("40\n")
    assert capsmod.current_caps(str(status), str(last)) == sorted(
        DEFAULT_CAPS, key=capsmod.KNOWN_CAPS.index
    )
    assert capsmod.current_caps(str(tmp_path / "missing"), str(last)) == list(capsmod.KNOWN_CAPS)


def test_privileged_capabilities_is_a_fresh_list_of_known_names() -> None:
    first = privileged_capabilities()
    first.append("X")
    second = privileged_capabilities()
    assert "X" not in second
    assert set(second) <= set(capsmod.KNOWN_CAPS)


# -- security options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "nnp"),
    [
        (["no-new-privileges"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges=1"], True),
        (["no-new-privileges", "no-new-privileges=false"], False),
        (["label=disable", "seccomp=unconfined", "apparmor=x", "disable"], False),
        (None, False),
    ],
)
def test_no_new_privileges(opts: list[str] | None, nnp: bool) -> None:
    proc = spec_of(hc=host_config(security_opt=opts))["process"]
    if nnp:
        assert proc["noNewPrivileges"] is True
    else:
        assert "noNewPrivileges" not in proc


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("bogus", 'invalid --security-opt 1: "bogus"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ],
)
def test_bad_security_opt(opt: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=host_config(security_opt=[opt]))
    assert str(e.value) == message


# -- rlimits -----------------------------------------------------------------------------


def test_rlimits_are_named_and_clamped_to_the_host_hard_limit() -> None:
    hc = host_config(
        ulimits=[
            Ulimit(name="nofile", soft=1048576, hard=1048576),
            Ulimit(name="nproc", soft=100, hard=200),
            Ulimit(name="core", soft=-1, hard=-1),
            Ulimit(name="memlock", soft=-1, hard=-1),
        ]
    )
    rlimits = spec_of(
        hc=hc,
        host_rlimits={
            "RLIMIT_NOFILE": (1024, 20000),
            "RLIMIT_NPROC": (50, 150),
            "RLIMIT_CORE": (0, -1),
        },
    )["process"]["rlimits"]
    assert rlimits == [
        {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
        {"type": "RLIMIT_NPROC", "hard": 150, "soft": 100},
        {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1},
        {"type": "RLIMIT_MEMLOCK", "hard": 2**64 - 1, "soft": 2**64 - 1},
    ]


def test_rlimits_clamp_to_this_process_limits_by_default() -> None:
    hc = host_config(ulimits=[Ulimit(name="nofile", soft=10**9, hard=10**9)])
    rlimits = spec_of(hc=hc, host_rlimits=None)["process"]["rlimits"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 10**9 if hard == resource.RLIM_INFINITY else min(10**9, hard)
    assert rlimits == [{"type": "RLIMIT_NOFILE", "hard": expected, "soft": expected}]


def test_no_ulimits_no_rlimits_key() -> None:
    assert "rlimits" not in spec_of()["process"]


# -- root, hostname, domainname ------------------------------------------------------------


def test_readonly_rootfs() -> None:
    spec = spec_of(hc=host_config(readonly_rootfs=True))
    assert spec["root"] == {"path": "/var/lib/berth/overlay2/abc/merged", "readonly": True}


def test_uts_host_drops_hostname_and_uts_namespace() -> None:
    spec = spec_of(hc=host_config(uts_mode="host"))
    assert "hostname" not in spec
    assert {"type": "uts"} not in ns_list(spec)


def test_network_host_keeps_its_own_uts_namespace_like_dockerd() -> None:
    spec = spec_of(
        config=Config(hostname="myhost", cmd=["sh"]), hc=host_config(network_mode="host")
    )
    assert spec["hostname"] == "myhost"
    assert ns_list(spec) == [{"type": "mount"}, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"}]


def test_domainname_is_the_kernel_sysctl() -> None:
    spec = spec_of(config=Config(hostname="h", domainname="example.org", cmd=["sh"]))
    assert spec["linux"]["sysctl"] == {
        "kernel.domainname": "example.org",
        "net.ipv4.ping_group_range": "0 2147483647",
        "net.ipv4.ip_unprivileged_port_start": "0",
    }
    assert "domainname" not in spec


# -- sysctls -------------------------------------------------------------------------------


def test_user_sysctls_override_the_defaults() -> None:
    hc = host_config(
        sysctls={"net.ipv4.ip_unprivileged_port_start": "1024", "net.core.somaxconn": "1"}
    )
    assert spec_of(hc=hc)["linux"]["sysctl"] == {
        "net.ipv4.ping_group_range": "0 2147483647",
        "net.ipv4.ip_unprivileged_port_start": "1024",
        "net.core.somaxconn": "1",
    }


@pytest.mark.parametrize("mode", ["host", "container:abc"])
def test_no_network_sysctls_without_a_private_network_namespace(mode: str) -> None:
    spec = spec_of(hc=host_config(network_mode=mode), netns_path="/proc/7/ns/net")
    assert "sysctl" not in spec["linux"]


def test_network_sysctls_only_when_the_kernel_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specmod, "_sysctl_exists", lambda name: name.endswith("port_start"))
    assert spec_of()["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0"}


# -- namespaces ----------------------------------------------------------------------------


def test_bridge_joins_the_daemons_network_namespace() -> None:
    spec = spec_of(netns_path="/run/berth/netns/abc")
    assert ns_list(spec)[1] == {"type": "network", "path": "/run/berth/netns/abc"}


def test_network_none_is_a_fresh_namespace() -> None:
    assert ns_list(spec_of(hc=host_config(network_mode="none")))[1] == {"type": "network"}


def test_network_container_needs_the_path() -> None:
    spec = spec_of(hc=host_config(network_mode="container:abc"), netns_path="/proc/42/ns/net")
    assert ns_list(spec)[1] == {"type": "network", "path": "/proc/42/ns/net"}
    with pytest.raises(errdefs.InvalidParameter):
        spec_of(hc=host_config(network_mode="container:abc"))


def test_network_disabled_keeps_a_fresh_network_namespace() -> None:
    spec = spec_of(
        config=Config(cmd=["sh"], network_disabled=True),
        hc=host_config(network_mode="host"),
        netns_path="/run/x",
    )
    assert ns_list(spec)[1] == {"type": "network"}


def test_ipc_and_pid_modes() -> None:
    spec = spec_of(
        hc=host_config(ipc_mode="container:aaa", pid_mode="container:bbb"),
        ipc_ns_path="/proc/5/ns/ipc",
        pid_ns_path="/proc/6/ns/pid",
    )
    assert ns_list(spec) == [
        {"type": "mount"},
        {"type": "network"},
        {"type": "uts"},
        {"type": "pid", "path": "/proc/6/ns/pid"},
        {"type": "ipc", "path": "/proc/5/ns/ipc"},
    ]
    spec = spec_of(hc=host_config(ipc_mode="host", pid_mode="host"))
    assert ns_list(spec) == [{"type": "mount"}, {"type": "network"}, {"type": "uts"}]
    for ipc in ("", "none", "shareable", "private"):
        assert ns_list(spec_of(hc=host_config(ipc_mode=ipc)))[4] == {"type": "ipc"}


def test_namespace_paths_required_for_container_modes() -> None:
    with pytest.raises(errdefs.InvalidParameter):
        spec_of(hc=host_config(ipc_mode="container:aaa"))
    with pytest.raises(errdefs.InvalidParameter):
        spec_of(hc=host_config(pid_mode="container:aaa"))


def test_cgroup_namespace_only_when_private_and_never_a_user_namespace() -> None:
    spec = spec_of(hc=host_config(cgroupns_mode="private"))
    assert ns_list(spec)[-1] == {"type": "cgroup"}
    for mode in ("host", ""):
        types = [n["type"] for n in ns_list(spec_of(hc=host_config(cgroupns_mode=mode)))]
        assert "cgroup" not in types
        assert "user" not in types


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ipc_mode", "bogus", "invalid IPC mode: bogus"),
        ("pid_mode", "container:", "invalid PID mode: container:"),
        ("pid_mode", "private", "invalid PID mode: private"),
        ("uts_mode", "private", "invalid UTS mode: private"),
        ("cgroupns_mode", "shared", "invalid cgroup namespace mode: shared"),
    ],
)
def test_invalid_namespace_modes(field: str, value: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=host_config(**{field: value}))
    assert str(e.value) == message


# -- masked and read-only paths ------------------------------------------------------------


def test_privileged_has_no_masked_or_readonly_paths_unless_given() -> None:
    linux = spec_of(hc=host_config(privileged=True, masked_paths=None, readonly_paths=None))[
        "linux"
    ]
    assert "maskedPaths" not in linux
    assert "readonlyPaths" not in linux
    linux = spec_of(hc=host_config(privileged=True, masked_paths=["/x"], readonly_paths=[]))[
        "linux"
    ]
    assert linux["maskedPaths"] == ["/x"]
    assert "readonlyPaths" not in linux


def test_missing_masked_paths_fall_back_to_dockers_defaults() -> None:
    linux = spec_of(hc=host_config(masked_paths=None, readonly_paths=None))["linux"]
    assert linux["maskedPaths"][:12] == list(specmod.DEFAULT_MASKED_PATHS)
    assert all(p.endswith("/thermal_throttle") for p in linux["maskedPaths"][12:])
    assert linux["readonlyPaths"] == [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]


# -- mounts --------------------------------------------------------------------------------


def bind(src: str, dst: str, *, rw: bool = True, propagation: str = "rprivate") -> MountPoint:
    return MountPoint(type="bind", source=src, destination=dst, rw=rw, propagation=propagation)


def test_binds_and_volumes() -> None:
    mounts = [
        bind("/srv/data", "/data"),
        bind("/srv/conf", "/conf", rw=False, propagation="private"),
        MountPoint(
            type="volume", name="v", source="/var/lib/berth/volumes/v/_data", destination="/v"
        ),
        MountPoint(
            type="volume",
            name="w",
            source="/var/lib/berth/volumes/w/_data",
            destination="/w",
            rw=False,
        ),
    ]
    spec = spec_of(mounts=mounts, recursive_readonly=False)
    assert spec["mounts"][len(DEFAULT_MOUNTS) :] == [
        {
            "destination": "/data",
            "type": "bind",
            "source": "/srv/data",
            "options": ["rbind", "rprivate"],
        },
        {
            "destination": "/conf",
            "type": "bind",
            "source": "/srv/conf",
            "options": ["rbind", "ro", "private"],
        },
        {
            "destination": "/v",
            "type": "bind",
            "source": "/var/lib/berth/volumes/v/_data",
            "options": ["rbind"],
        },
        {
            "destination": "/w",
            "type": "bind",
            "source": "/var/lib/berth/volumes/w/_data",
            "options": ["rbind", "ro"],
        },
    ]


@pytest.fixture
def fake_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mountinfo where / is private, /shared is shared and /slave a slave."""
    for d in ("shared/a", "slave/b", "private/c"):
        (tmp_path / d).mkdir(parents=True)
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
        f"2 1 0:5 / {tmp_path}/shared rw shared:7 - tmpfs tmpfs rw\n"
        f"3 1 0:6 / {tmp_path}/slave rw master:7 - tmpfs tmpfs rw\n"
    )
    monkeypatch.setattr(specmod, "MOUNTINFO", str(info))
    return tmp_path


def test_shared_and_slave_binds_set_rootfs_propagation(fake_mountinfo: Path) -> None:
    base = fake_mountinfo
    spec = spec_of(mounts=[bind(f"{base}/slave/b", "/b", propagation="rslave")])
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    spec = spec_of(
        mounts=[
            bind(f"{base}/slave/b", "/b", propagation="slave"),
            bind(f"{base}/shared/a", "/a", propagation="rshared"),
        ]
    )
    assert spec["linux"]["rootfsPropagation"] == "shared"
    assert mount_at(spec, "/a")["options"] == ["rbind", "rshared"]
    spec = spec_of(mounts=[bind(f"{base}/shared/a", "/a", propagation="slave")])
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    assert "rootfsPropagation" not in spec_of(mounts=[bind(f"{base}/private/c", "/c")])["linux"]


def test_shared_bind_needs_a_shared_source(fake_mountinfo: Path) -> None:
    src = f"{fake_mountinfo}/slave/b"
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(mounts=[bind(src, "/b", propagation="shared")])
    assert (
        str(e.value)
        == f"path {src} is mounted on {fake_mountinfo}/slave but it is not a shared mount"
    )
    src = f"{fake_mountinfo}/private/c"
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(mounts=[bind(src, "/c", propagation="rslave")])
    assert str(e.value) == f"path {src} is mounted on / but it is not a shared or slave mount"


def test_user_mounts_sorted_parents_first_keeping_order_within_a_depth() -> None:
    mounts = [bind("/s/3", "/a/b/c"), bind("/s/1", "/z"), bind("/s/2", "/a/b"), bind("/s/0", "/a")]
    spec = spec_of(mounts=mounts)
    assert destinations(spec)[len(DEFAULT_MOUNTS) :] == ["/z", "/a", "/a/b", "/a/b/c"]


def test_user_mount_replaces_the_default_at_the_same_destination() -> None:
    spec = spec_of(mounts=[bind("/host/shm", "/dev/shm"), bind("/host/proc", "/proc//")])
    assert destinations(spec) == [
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/proc",
        "/dev/shm",
    ]
    assert mount_at(spec, "/dev/shm")["source"] == "/host/shm"


def test_user_dev_mount_removes_every_default_under_dev() -> None:
    spec = spec_of(mounts=[bind("/dev", "/dev")])
    assert destinations(spec) == ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]


def test_shm_size_and_ipc_none() -> None:
    assert mount_at(spec_of(hc=host_config(shm_size=1 << 20)), "/dev/shm")["options"] == [
        "nosuid",
        "noexec",
        "nodev",
        "mode=1777",
        "size=1048576",
    ]
    assert "/dev/shm" not in destinations(spec_of(hc=host_config(ipc_mode="none")))


def test_ipc_host_binds_the_hosts_shm() -> None:
    spec = spec_of(hc=host_config(ipc_mode="host"))
    assert spec["mounts"][-1] == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/dev/shm",
        "options": ["rbind", "rprivate"],
    }
    assert destinations(spec).count("/dev/shm") == 1


def test_shareable_ipc_binds_the_containers_shm_dir() -> None:
    spec = spec_of(hc=host_config(ipc_mode="shareable"), shm_path="/run/berth/c/shm")
    assert spec["mounts"][-1] == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/run/berth/c/shm",
        "options": ["rbind", "rprivate"],
    }
    # Without a prepared directory the default tmpfs stays.
    assert mount_at(spec_of(hc=host_config(ipc_mode="shareable")), "/dev/shm")["source"] == "shm"


def test_user_shm_mount_wins_over_ipc_mounts() -> None:
    spec = spec_of(hc=host_config(ipc_mode="host"), mounts=[bind("/mine", "/dev/shm")])
    assert mount_at(spec, "/dev/shm")["source"] == "/mine"


def test_tmpfs_defaults_and_merged_options() -> None:
    hc = host_config(tmpfs={"/run": "", "/tmp": "rw,exec,size=64m,mode=1777,size=1g"})
    spec = spec_of(hc=hc)
    assert spec["mounts"][len(DEFAULT_MOUNTS) :] == [
        {
            "destination": "/run",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["noexec", "nosuid", "nodev", "rprivate"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "rprivate", "rw", "exec", "mode=1777", "size=1g"],
        },
    ]


def test_tmpfs_wins_over_a_bind_at_the_same_destination() -> None:
    spec = spec_of(hc=host_config(tmpfs={"/data": ""}), mounts=[bind("/srv", "/data")])
    assert mount_at(spec, "/data")["type"] == "tmpfs"


def test_mount_type_tmpfs_uses_its_options() -> None:
    hc = host_config(
        mounts=[
            Mount(
                type="tmpfs",
                target="/cache",
                read_only=True,
                tmpfs_options=TmpfsOptions(size_bytes=3 << 20, mode=0o700, options=[["exec"]]),
            )
        ]
    )
    mp = MountPoint(type="tmpfs", destination="/cache", rw=False)
    assert mount_at(spec_of(hc=hc, mounts=[mp]), "/cache") == {
        "destination": "/cache",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "rprivate", "ro", "mode=700", "size=3m", "exec"],
    }


def test_convert_tmpfs_options_size_suffixes() -> None:
    assert convert_tmpfs_options(TmpfsOptions(size_bytes=2 << 30), False) == "size=2g"
    assert convert_tmpfs_options(TmpfsOptions(size_bytes=1536 << 10), False) == "size=1536k"
    assert convert_tmpfs_options(TmpfsOptions(size_bytes=1000), True) == "ro,size=1000"
    assert convert_tmpfs_options(None, False) == ""


def test_merge_tmpfs_options() -> None:
    assert merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", "exec", "shared"]) == [
        "nosuid",
        "nodev",
        "exec",
        "shared",
    ]
    assert merge_tmpfs_options(["defaults", "ro", "uid=1", "rw", "uid=2"]) == ["rw", "uid=2"]
    with pytest.raises(errdefs.InvalidParameter) as e:
        merge_tmpfs_options(["noexec", "bogus"])
    assert str(e.value) == 'Invalid tmpfs option ["bogus"]'
    with pytest.raises(errdefs.InvalidParameter) as e:
        merge_tmpfs_options(["color=red"])
    assert str(e.value) == 'Invalid tmpfs option ["color" "red"]'


@pytest.fixture
def net_files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name in ("resolv.conf", "hostname", "hosts"):
        (tmp_path / name).write_text(name)
        paths[name] = str(tmp_path / name)
    return paths


def net_kw(files: dict[str, str]) -> dict[str, str]:
    return {
        "resolv_conf_path": files["resolv.conf"],
        "hostname_path": files["hostname"],
        "hosts_path": files["hosts"],
    }


def test_network_files_after_user_mounts_of_the_same_depth(net_files: dict[str, str]) -> None:
    spec = spec_of(mounts=[bind("/srv/e", "/etc/x"), bind("/srv/d", "/d")], **net_kw(net_files))
    assert spec["mounts"][len(DEFAULT_MOUNTS) :] == [
        {"destination": "/d", "type": "bind", "source": "/srv/d", "options": ["rbind", "rprivate"]},
        {
            "destination": "/etc/x",
            "type": "bind",
            "source": "/srv/e",
            "options": ["rbind", "rprivate"],
        },
        {
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": net_files["resolv.conf"],
            "options": ["rbind", "rprivate"],
        },
        {
            "destination": "/etc/hostname",
            "type": "bind",
            "source": net_files["hostname"],
            "options": ["rbind", "rprivate"],
        },
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": net_files["hosts"],
            "options": ["rbind", "rprivate"],
        },
    ]


def test_network_files_skipped_when_unset_or_missing(tmp_path: Path) -> None:
    spec = spec_of(resolv_conf_path=str(tmp_path / "nope"), hosts_path="")
    assert destinations(spec) == [m["destination"] for m in DEFAULT_MOUNTS]


def test_user_mount_over_a_network_file_replaces_its_source(net_files: dict[str, str]) -> None:
    mine = bind(net_files["hostname"], "/etc/hosts", rw=False, propagation="rshared")
    spec = spec_of(mounts=[mine], **net_kw(net_files))
    assert mount_at(spec, "/etc/hosts") == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": net_files["hostname"],
        "options": ["rbind", "ro", "rprivate"],
    }


def test_readonly_rootfs_mounts(net_files: dict[str, str]) -> None:
    hc = host_config(readonly_rootfs=True, tmpfs={"/run": ""}, init=True)
    spec = spec_of(
        hc=hc, mounts=[bind("/srv", "/srv")], init_path="/usr/bin/tini-static", **net_kw(net_files)
    )
    assert spec["mounts"][:7] == DEFAULT_MOUNTS  # /proc, /dev, ... stay writable
    assert mount_at(spec, "/sbin/docker-init")["options"] == ["bind", "ro"]
    assert mount_at(spec, "/srv")["options"] == ["rbind", "rprivate"]  # user mounts untouched
    assert mount_at(spec, "/run")["options"] == ["noexec", "nosuid", "nodev", "rprivate"]
    assert mount_at(spec, "/etc/resolv.conf")["options"] == ["rbind", "ro", "rprivate"]
    assert mount_at(spec, "/etc/hosts")["options"] == ["rbind", "ro", "rprivate"]


def test_privileged_makes_sys_and_cgroups_writable_even_on_a_readonly_rootfs() -> None:
    spec = spec_of(hc=host_config(privileged=True, readonly_rootfs=True))
    assert mount_at(spec, "/sys")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount_at(spec, "/sys/fs/cgroup")["options"] == ["nosuid", "noexec", "nodev"]


def test_writable_cgroups_security_opt() -> None:
    spec = spec_of(hc=host_config(security_opt=["writable-cgroups=true"]))
    assert mount_at(spec, "/sys/fs/cgroup")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount_at(spec, "/sys")["options"] == ["nosuid", "noexec", "nodev", "ro"]
    spec = spec_of(hc=host_config(privileged=True, security_opt=["writable-cgroups=false"]))
    assert mount_at(spec, "/sys/fs/cgroup")["options"] == ["ro", "nosuid", "noexec", "nodev"]


def test_bind_options_from_mount_spec() -> None:
    hc = host_config(
        mounts=[
            Mount(
                type="bind", source="/a", target="/a", bind_options=BindOptions(non_recursive=True)
            ),
            Mount(
                type="bind",
                source="/b",
                target="/b",
                read_only=True,
                bind_options=BindOptions(read_only_non_recursive=True),
            ),
        ]
    )
    mounts = [bind("/a", "/a"), bind("/b", "/b", rw=False), bind("/c", "/c", rw=False)]
    spec = spec_of(hc=hc, mounts=mounts, recursive_readonly=True)
    assert mount_at(spec, "/a")["options"] == ["bind", "rprivate"]
    assert mount_at(spec, "/b")["options"] == ["rbind", "ro", "rprivate"]
    assert mount_at(spec, "/c")["options"] == ["rbind", "rro", "rprivate"]


def test_forced_recursive_readonly_needs_support() -> None:
    hc = host_config(
        mounts=[
            Mount(
                type="bind",
                source="/b",
                target="/b",
                read_only=True,
                bind_options=BindOptions(read_only_force_recursive=True),
            )
        ]
    )
    mounts = [bind("/b", "/b", rw=False)]
    assert mount_at(spec_of(hc=hc, mounts=mounts, recursive_readonly=True), "/b")["options"] == [
        "rbind",
        "rro",
        "rprivate",
    ]
    with pytest.raises(errdefs.InvalidParameter):
        spec_of(hc=hc, mounts=mounts)


def test_unsupported_mount_type() -> None:
    with pytest.raises(errdefs.NotImplementedFeature):
        spec_of(mounts=[MountPoint(type="image", source="busybox", destination="/img")])


# -- devices -------------------------------------------------------------------------------


def mknod(path: Path, kind: int, major: int, minor: int, mode: int = 0o666) -> None:
    try:
        os.mknod(path, kind | mode, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating device nodes needs root")
    os.chmod(path, mode)


def test_device_mapping_adds_node_and_rule(tmp_path: Path) -> None:
    mknod(tmp_path / "null", stat.S_IFCHR, 1, 3, 0o620)
    hc = host_config(
        devices=[
            DeviceMapping(
                path_on_host=str(tmp_path / "null"),
                path_in_container="/dev/n",
                cgroup_permissions="rw",
            )
        ]
    )
    linux = spec_of(hc=hc)["linux"]
    assert linux["devices"] == [
        {
            "path": "/dev/n",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": 0o620,
            "uid": 0,
            "gid": 0,
        }
    ]
    assert linux["resources"]["devices"] == [
        *DEFAULT_RULES,
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
    ]


def test_device_directory_adds_every_node_below(tmp_path: Path) -> None:
    d = tmp_path / "snd"
    (d / "sub").mkdir(parents=True)
    mknod(d / "b", stat.S_IFBLK, 8, 1)
    mknod(d / "sub" / "a", stat.S_IFCHR, 116, 2)
    (d / "regular").write_text("x")
    devs, rules = devmod.devices_from_path(str(d), "/dev/snd", "rwm")
    assert [(x["path"], x["type"], x["major"], x["minor"]) for x in devs] == [
        ("/dev/snd/b", "b", 8, 1),
        ("/dev/snd/sub/a", "c", 116, 2),
    ]
    assert rules == [
        {"allow": True, "type": "b", "major": 8, "minor": 1, "access": "rwm"},
        {"allow": True, "type": "c", "major": 116, "minor": 2, "access": "rwm"},
    ]


def test_missing_device(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=host_config(devices=[DeviceMapping(path_on_host=missing)]))
    assert str(e.value) == (
        f'error gathering device information while adding custom device "{missing}": '
        "no such file or directory"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(errdefs.InvalidParameter, match=r"not a device node$"):
        devmod.devices_from_path(str(tmp_path / "file"), "/dev/f", "rwm")


def test_device_cgroup_rules() -> None:
    hc = host_config(device_cgroup_rules=["c 1:3 rwm", "b *:* r", "a"])
    assert spec_of(hc=hc)["linux"]["resources"]["devices"][len(DEFAULT_RULES) :] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "r"},
        {"allow": True, "type": "a", "major": -1, "minor": -1, "access": "rwm"},
    ]


@pytest.mark.parametrize(
    "rule", ["c 1:3", "x 1:3 rwm", "c 1:3 rwmx", "c 1:3 rwm\n", "c 99999999999999999999:1 r"]
)
def test_bad_device_cgroup_rule(rule: str) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        spec_of(hc=host_config(device_cgroup_rules=[rule]))


def test_privileged_allows_all_devices_and_adds_the_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = tmp_path / "dev"
    for sub in ("pts", "shm", "input"):
        (dev / sub).mkdir(parents=True)
    mknod(dev / "null", stat.S_IFCHR, 1, 3)
    mknod(dev / "console", stat.S_IFCHR, 5, 1)
    mknod(dev / "pts" / "0", stat.S_IFCHR, 136, 0)
    mknod(dev / "input" / "event0", stat.S_IFCHR, 13, 64, 0o660)
    mknod(dev / "vda", stat.S_IFBLK, 254, 0, 0o660)
    os.mkfifo(dev / "initctl")
    (dev / "stdin").symlink_to("/proc/self/fd/0")
    monkeypatch.setattr(devmod, "DEV_ROOT", str(dev))
    linux = spec_of(
        hc=host_config(
            privileged=True,
            devices=[DeviceMapping(path_on_host=str(dev / "null"), path_in_container="/dev/other")],
            device_cgroup_rules=["c 1:1 r"],
        )
    )["linux"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    # Name order; pts/, shm/, console, FIFOs and symlinks are left out.
    assert [(d["path"], d["type"], d["major"], d["minor"]) for d in linux["devices"]] == [
        ("/dev/input/event0", "c", 13, 64),
        ("/dev/null", "c", 1, 3),
        ("/dev/vda", "b", 254, 0),
        ("/dev/other", "c", 1, 3),
    ]


def test_host_devices_paths_are_under_dev(tmp_path: Path) -> None:
    mknod(tmp_path / "zero", stat.S_IFCHR, 1, 5)
    assert devmod.host_devices(str(tmp_path)) == [
        {
            "path": "/dev/zero",
            "type": "c",
            "major": 1,
            "minor": 5,
            "fileMode": 0o666,
            "uid": 0,
            "gid": 0,
        }
    ]


def test_device_requests_have_no_driver() -> None:
    hc = host_config(
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"], ["nvidia", "compute"]])]
    )
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=hc)
    assert (
        str(e.value)
        == 'could not select device driver "" with capabilities: [[gpu] [nvidia compute]]'
    )


# -- resources -----------------------------------------------------------------------------


def test_memory_resources() -> None:
    hc = host_config(
        memory=64 << 20,
        memory_reservation=32 << 20,
        memory_swap=128 << 20,
        memory_swappiness=10,
        oom_kill_disable=True,
    )
    assert spec_of(hc=hc)["linux"]["resources"]["memory"] == {
        "limit": 64 << 20,
        "reservation": 32 << 20,
        "swap": 128 << 20,
        "swappiness": 10,
        "disableOOMKiller": True,
    }
    hc = host_config(memory=64 << 20, memory_swap=-1, memory_swappiness=-1, oom_kill_disable=None)
    assert spec_of(hc=hc)["linux"]["resources"]["memory"] == {"limit": 64 << 20}
    assert "memory" not in spec_of(hc=host_config(oom_kill_disable=None))["linux"]["resources"]


def test_cpu_resources() -> None:
    res = spec_of(hc=host_config(nano_cpus=1_500_000_000, cpu_shares=512))["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "quota": 150000, "period": 100000}
    hc = host_config(
        cpu_quota=50000,
        cpu_period=200000,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        cpu_realtime_runtime=950000,
        cpu_realtime_period=1000000,
    )
    assert spec_of(hc=hc)["linux"]["resources"]["cpu"] == {
        "quota": 50000,
        "period": 200000,
        "realtimeRuntime": 950000,
        "realtimePeriod": 1000000,
        "cpus": "0-1",
        "mems": "0",
    }
    assert spec_of(hc=host_config(nano_cpus=1))["linux"]["resources"]["cpu"] == {
        "quota": 0,
        "period": 100000,
    }
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=host_config(cpu_shares=-1))
    assert str(e.value) == "invalid CPU shares (-1): value must be a positive integer"


def test_pids_limit_only_when_positive() -> None:
    assert spec_of(hc=host_config(pids_limit=100))["linux"]["resources"]["pids"] == {"limit": 100}
    for limit in (None, 0, -1):
        assert "pids" not in spec_of(hc=host_config(pids_limit=limit))["linux"]["resources"]


def test_block_io(tmp_path: Path) -> None:
    mknod(tmp_path / "sda", stat.S_IFBLK, 8, 0)
    mknod(tmp_path / "vdb", stat.S_IFBLK, 254, 16)
    sda, vdb = str(tmp_path / "sda"), str(tmp_path / "vdb")
    hc = host_config(
        blkio_weight=300,
        blkio_weight_device=[WeightDevice(path=sda, weight=200)],
        blkio_device_read_bps=[ThrottleDevice(path=sda, rate=1048576)],
        blkio_device_write_bps=[ThrottleDevice(path=vdb, rate=2048)],
        blkio_device_read_i_ops=[ThrottleDevice(path=sda, rate=100)],
        blkio_device_write_i_ops=[ThrottleDevice(path=vdb, rate=50)],
    )
    assert spec_of(hc=hc)["linux"]["resources"]["blockIO"] == {
        "weight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": 254, "minor": 16, "rate": 2048}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
        "throttleWriteIOPSDevice": [{"major": 254, "minor": 16, "rate": 50}],
    }
    missing = str(tmp_path / "nope")
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_of(hc=host_config(blkio_device_read_bps=[ThrottleDevice(path=missing, rate=1)]))
    assert str(e.value) == f"stat {missing}: no such file or directory"
    assert "blockIO" not in spec_of()["linux"]["resources"]


# -- cgroups path --------------------------------------------------------------------------


def test_cgroups_path() -> None:
    assert spec_of(cgroup_parent="/custom/")["linux"]["cgroupsPath"] == f"/custom/{CID}"
    spec = spec_of(hc=host_config(cgroup_parent="/mine//sub"), cgroup_parent="/berth")
    assert spec["linux"]["cgroupsPath"] == f"/mine/sub/{CID}"
    assert spec_of(hc=host_config(cgroup_parent="rel"))["linux"]["cgroupsPath"] == f"rel/{CID}"


# -- resolve_user --------------------------------------------------------------------------


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

bob:x:1000:1000:Bob:/home/bob:/bin/sh
svc:x:1001:100::/srv:/bin/false
bob:x:2000:2000:second bob:/nowhere:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root,bob
users:x:100:svc
bob:x:1000:
docker:x:999:bob,svc
"""


def make_rootfs(base: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    root = base / "rootfs"
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return root


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", ResolvedUser(0, 0, (0, 10), "/root")),
        ("root", ResolvedUser(0, 0, (0, 10), "/root")),
        ("bob", ResolvedUser(1000, 1000, (1000, 10, 999), "/home/bob")),
        ("1000", ResolvedUser(1000, 1000, (1000, 10, 999), "/home/bob")),
        ("+1000", ResolvedUser(1000, 1000, (1000, 10, 999), "/home/bob")),
        ("svc", ResolvedUser(1001, 100, (100, 100, 999), "/srv")),
        ("4242", ResolvedUser(4242, 0, (0,), "/")),
        ("bob:docker", ResolvedUser(1000, 999, (999,), "/home/bob")),
        ("bob:12345", ResolvedUser(1000, 12345, (12345,), "/home/bob")),
        ("4242:4343", ResolvedUser(4242, 4343, (4343,), "/")),
        ("1:wheel", ResolvedUser(1, 10, (10,), "/usr/sbin")),
        ("daemon:0", ResolvedUser(1, 0, (0,), "/usr/sbin")),
        ("bob:docker:extra", ResolvedUser(1000, 999, (999,), "/home/bob")),
    ],
)
def test_resolve_user(tmp_path: Path, user: str, expected: ResolvedUser) -> None:
    assert resolve_user(make_rootfs(tmp_path), user) == expected


def test_group_add_names_and_numbers(tmp_path: Path) -> None:
    got = resolve_user(make_rootfs(tmp_path), "bob", ["users", "5000", "wheel", "10"])
    assert got == ResolvedUser(1000, 1000, (1000, 10, 999, 100, 5000, 10), "/home/bob")
    got = resolve_user(make_rootfs(tmp_path / "b"), "", ["daemon"])
    assert got.additional_gids == (0, 10, 1)


@pytest.mark.parametrize(
    ("user", "group_add", "message"),
    [
        ("alice", None, "unable to find user alice: no matching entries in passwd file"),
        ("bob:nogroup", None, "unable to find group nogroup: no matching entries in group file"),
        ("bob", ["nogroup"], "Unable to find group nogroup: no matching entries in group file"),
        ("2147483648", None, "uids and gids must be in range 0-2147483647"),
        ("-1", None, "uids and gids must be in range 0-2147483647"),
        ("0:-5", None, "uids and gids must be in range 0-2147483647"),
        ("", ["-5"], "uids and gids must be in range 0-2147483647"),
    ],
)
def test_resolve_user_errors(
    tmp_path: Path, user: str, group_add: list[str] | None, message: str
) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        resolve_user(make_rootfs(tmp_path), user, group_add)
    assert str(e.value) == message


def test_missing_files_are_fine_for_numeric_ids(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, passwd=None, group=None)
    assert resolve_user(root, "") == ResolvedUser(0, 0, (0,), "/")
    assert resolve_user(root, "1000:1000", ["5"]) == ResolvedUser(1000, 1000, (1000, 5), "/")
    with pytest.raises(errdefs.InvalidParameter, match=r"^unable to find user bob: "):
        resolve_user(root, "bob")
    with pytest.raises(errdefs.InvalidParameter, match=r"^unable to find group staff: "):
        resolve_user(root, "0:staff")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(empty, "7:8") == ResolvedUser(7, 8, (8,), "/")


def test_lenient_lines_and_first_match(tmp_path: Path) -> None:
    passwd = "  \n# comment line\nodd:x:notanumber:also\nbob:x:1000:1000::/home/bob:/bin/sh\r\n"
    root = make_rootfs(tmp_path, passwd=passwd, group="staff:x:50:bob\n")
    # "# comment line" parses as a user named so, with uid 0: the first uid-0 entry wins for "".
    assert resolve_user(root, "") == ResolvedUser(0, 0, (0,), "/")
    assert resolve_user(root, "odd") == ResolvedUser(0, 0, (0,), "/")
    assert resolve_user(root, "bob") == ResolvedUser(1000, 1000, (1000, 50), "/home/bob")


def test_absolute_symlink_to_a_file_outside_is_not_followed_out(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "passwd").write_text("mallory:x:666:666::/:/bin/sh\n")
    root = make_rootfs(tmp_path, passwd=None)
    (root / "etc" / "passwd").symlink_to(outside / "passwd")
    with pytest.raises(errdefs.InvalidParameter) as e:
        resolve_user(root, "mallory")
    assert str(e.value) == "unable to find user mallory: no matching entries in passwd file"


def test_relative_symlink_escape_and_symlinked_etc_stay_inside(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "passwd").write_text("mallory:x:666:666::/:/bin/sh\n")
    root = make_rootfs(tmp_path, passwd=None)
    (root / "etc" / "passwd").symlink_to("../../../../../../host-etc/passwd")
    with pytest.raises(errdefs.InvalidParameter):
        resolve_user(root, "mallory")

    root2 = tmp_path / "rootfs2"
    root2.mkdir()
    (root2 / "etc").symlink_to(outside)  # /etc -> <outside>: resolved inside root2
    with pytest.raises(errdefs.InvalidParameter):
        resolve_user(root2, "mallory")


def test_symlinks_inside_the_rootfs_are_followed(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, passwd=None, group=None)
    (root / "data").mkdir()
    (root / "data" / "passwd").write_text("carol:x:77:88::/c:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/data/passwd")
    (root / "etc" / "group").symlink_to("../data/group")
    (root / "data" / "group").write_text("g:x:5:carol\n")
    assert resolve_user(root, "carol") == ResolvedUser(77, 88, (88, 5), "/c")


def test_non_regular_files_count_as_missing(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, passwd=None, group=None)
    (root / "etc" / "passwd").mkdir()
    os.mkfifo(root / "etc" / "group")
    assert resolve_user(root, "3:4") == ResolvedUser(3, 4, (4,), "/")
    with pytest.raises(errdefs.InvalidParameter, match=r"^unable to find user x: "):
        resolve_user(root, "x")


def test_oversized_passwd_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userdb, "MAX_DB_SIZE", 64)
    root = make_rootfs(tmp_path, passwd="bob:x:1:1::/:/bin/sh\n" * 10)
    with pytest.raises(errdefs.InvalidParameter) as e:
        resolve_user(root, "bob")
    assert str(e.value) == "/etc/passwd in the container is larger than 64 bytes"
    ok = make_rootfs(tmp_path / "ok", passwd="bob:x:1:1::/:/bin/sh\n" * 3, group="g:x:5:bob\n")
    assert resolve_user(ok, "bob") == ResolvedUser(1, 1, (1, 5), "/")


def test_symlink_loop_is_invalid(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, passwd=None)
    (root / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(errdefs.InvalidParameter, match="too many levels of symbolic links"):
        resolve_user(root, "")
