"""berth.runtime.seccomp: Docker's default profile, custom profiles, --security-opt."""

from __future__ import annotations

import ctypes
import errno
import json
import platform
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.daemon.validate import validate_host_config
from berth.runtime import _seccomp_convert as seccomp_convert
from berth.runtime import caps as capsmod
from berth.runtime import seccomp as sc
from berth.runtime import spec as specmod
from berth.runtime.spec import ResolvedUser, SpecOptions, build_spec
from berth.types.container import Config, HostConfig

DEFAULT_CAPS = list(capsmod.DEFAULT_CAPS)
AVAILABLE = [c for c in capsmod.KNOWN_CAPS if c != "CAP_SYS_RESOURCE"]
X86 = {"arch": "amd64", "kernel": (6, 18)}
NATIVE_ARCH = sc.native_arch  # the real one; tests below pin the host to amd64

# Allowed only with CAP_SYS_ADMIN in the default profile.
SYS_ADMIN_CALLS = ("mount", "umount2", "unshare", "setns", "sethostname", "fsopen", "bpf")


def default_for(caps: list[str], **kw: Any) -> dict[str, Any]:
    kw = {**X86, **kw}
    out = sc.build_seccomp(sc.default_profile(), caps, **kw)
    assert out is not None
    return out


def unconditional(seccomp: dict[str, Any]) -> set[str]:
    """Syscalls that an ALLOW rule without argument conditions lets through."""
    return {
        name
        for rule in seccomp.get("syscalls", [])
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for name in rule["names"]
    }


def _arg_matches(arg: dict[str, Any], actual: int) -> bool:
    op, value = arg["op"], arg["value"]
    if op == "SCMP_CMP_MASKED_EQ":
        return actual & value == arg.get("valueTwo", 0)
    return {
        "SCMP_CMP_EQ": actual == value,
        "SCMP_CMP_NE": actual != value,
        "SCMP_CMP_LT": actual < value,
        "SCMP_CMP_LE": actual <= value,
        "SCMP_CMP_GT": actual > value,
        "SCMP_CMP_GE": actual >= value,
    }[op]


def verdict(seccomp: dict[str, Any], name: str, *args: int) -> tuple[str, int | None]:
    """(action, errno) the filter gives ``name(args...)``; allow rules win (as in libseccomp)."""
    matching = [
        rule
        for rule in seccomp.get("syscalls", [])
        if name in rule["names"]
        and all(_arg_matches(a, args[a["index"]]) for a in rule.get("args", []))
    ]
    for rule in matching:
        if rule["action"] == "SCMP_ACT_ALLOW":
            return "SCMP_ACT_ALLOW", None
    if matching:
        return matching[0]["action"], matching[0].get("errnoRet")
    return seccomp["defaultAction"], seccomp.get("defaultErrnoRet")


def allowed(seccomp: dict[str, Any], name: str, *args: int) -> bool:
    return verdict(seccomp, name, *args)[0] == "SCMP_ACT_ALLOW"


# -- the default profile ------------------------------------------------------------------


def test_default_profile_shape() -> None:
    out = default_for(DEFAULT_CAPS)
    assert list(out) == ["defaultAction", "defaultErrnoRet", "architectures", "syscalls"]
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert out["defaultErrnoRet"] == 1  # EPERM
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    first = out["syscalls"][0]
    assert first["action"] == "SCMP_ACT_ALLOW"
    assert set(first["names"]).isdisjoint({"clone", "clone3", "socket", *SYS_ADMIN_CALLS})
    assert {"read", "write", "execve", "openat", "statx", "rseq"} <= set(first["names"])
    for rule in out["syscalls"]:
        # conditions are resolved, not passed on: the runtime-spec has no such fields
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
        assert rule["names"]


def test_default_profile_architectures_follow_the_host() -> None:
    arm = default_for(DEFAULT_CAPS, arch="arm64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arm_fadvise64_64" in unconditional(arm)
    assert "arch_prctl" not in unconditional(arm)
    x86 = default_for(DEFAULT_CAPS)
    assert {"arch_prctl", "modify_ldt"} <= unconditional(x86)
    assert "arm_fadvise64_64" not in unconditional(x86)
    assert "riscv_flush_icache" not in unconditional(x86)
    assert "architectures" not in default_for(DEFAULT_CAPS, arch="sparc64")


def test_native_arch_names() -> None:
    assert NATIVE_ARCH("x86_64") == "amd64"
    assert NATIVE_ARCH("aarch64") == "arm64"
    assert NATIVE_ARCH("s390x") == "s390x"
    assert NATIVE_ARCH("loongarch64") == "loong64"


def test_blocked_without_capabilities() -> None:
    out = default_for(DEFAULT_CAPS)
    allowed_calls = unconditional(out)
    for name in (*SYS_ADMIN_CALLS, "reboot", "init_module", "acct", "settimeofday", "syslog"):
        assert name not in allowed_calls, name
        assert verdict(out, name, 0, 0) == ("SCMP_ACT_ERRNO", 1)
    # never allowed, whatever the capabilities
    everything = unconditional(default_for(AVAILABLE))
    for name in ("keyctl", "add_key", "request_key", "kexec_load", "io_uring_setup", "swapon"):
        assert name not in everything, name
    assert "chroot" in allowed_calls  # CAP_SYS_CHROOT is a default capability


def test_cap_sys_admin_allows_the_admin_syscalls() -> None:
    without = default_for(DEFAULT_CAPS)
    with_admin = default_for([*DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    for name in SYS_ADMIN_CALLS:
        assert not allowed(without, name, 0, 0), name
        assert allowed(with_admin, name, 0, 0), name
    assert {"clone", "clone3"} <= unconditional(with_admin)


def test_clone_without_cap_sys_admin_cannot_make_namespaces() -> None:
    out = default_for(DEFAULT_CAPS)
    sigchld = 17
    assert allowed(out, "clone", sigchld, 0)
    assert allowed(out, "clone", 0x3D0F00, 0)  # what glibc uses for threads
    for flag in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000):
        assert not allowed(out, "clone", sigchld | flag, 0), hex(flag)
    # clone3 hides its flags in a struct: ENOSYS makes libcs fall back to clone
    assert verdict(out, "clone3", 0) == ("SCMP_ACT_ERRNO", 38)
    clone_rules = [r for r in out["syscalls"] if r["names"] == ["clone"]]
    assert clone_rules == [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
        }
    ]


def test_clone_on_s390_checks_the_second_argument() -> None:
    out = default_for(DEFAULT_CAPS, arch="s390x")
    clone_rules = [r for r in out["syscalls"] if r["names"] == ["clone"]]
    assert [r["args"][0]["index"] for r in clone_rules] == [1]


@pytest.mark.parametrize(
    ("cap", "names"),
    [
        ("CAP_SYS_PTRACE", ("kcmp", "pidfd_getfd", "process_madvise")),
        ("CAP_SYS_BOOT", ("reboot",)),
        ("CAP_SYS_MODULE", ("init_module", "finit_module", "delete_module")),
        ("CAP_SYS_TIME", ("settimeofday", "clock_settime")),
        ("CAP_SYS_NICE", ("mbind", "set_mempolicy_home_node")),
        ("CAP_SYSLOG", ("syslog",)),
        ("CAP_BPF", ("bpf",)),
        ("CAP_PERFMON", ("perf_event_open",)),
        ("CAP_DAC_READ_SEARCH", ("open_by_handle_at",)),
        ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
    ],
)
def test_capability_gated_rules(cap: str, names: tuple[str, ...]) -> None:
    without = unconditional(default_for(DEFAULT_CAPS))
    with_cap = unconditional(default_for([*DEFAULT_CAPS, cap]))
    for name in names:
        assert name not in without, name
        assert name in with_cap, name


def test_min_kernel_rule() -> None:
    assert "ptrace" in unconditional(default_for(DEFAULT_CAPS, kernel=(4, 8)))
    assert "ptrace" not in unconditional(default_for(DEFAULT_CAPS, kernel=(4, 7)))
    assert "ptrace" in unconditional(default_for([*DEFAULT_CAPS, "CAP_SYS_PTRACE"], kernel=(3, 10)))


def test_socket_domains() -> None:
    out = default_for(DEFAULT_CAPS)
    for domain in (0, 1, 2, 10, 12, 16, 17, 37, 39, 41, 44, 45, 1000):
        assert allowed(out, "socket", domain, 1, 0), domain
    for domain in (38, 40):  # AF_ALG, AF_VSOCK: what moby's current profile denies
        assert verdict(out, "socket", domain, 1, 0) == ("SCMP_ACT_ERRNO", 1), domain
    assert "socket" not in unconditional(out)
    assert "socketpair" in unconditional(out)


@pytest.mark.parametrize(
    ("denied", "expected"),
    [
        ([38, 40], [(38, "SCMP_CMP_LT"), (39, "SCMP_CMP_EQ"), (40, "SCMP_CMP_GT")]),
        ([40], [(40, "SCMP_CMP_LT"), (40, "SCMP_CMP_GT")]),
        ([40, 38, 41], [(38, "SCMP_CMP_LT"), (39, "SCMP_CMP_EQ"), (41, "SCMP_CMP_GT")]),
        ([5, 8], [(5, "SCMP_CMP_LT"), (6, "SCMP_CMP_EQ"), (7, "SCMP_CMP_EQ"), (8, "SCMP_CMP_GT")]),
    ],
)
def test_socket_rules_allow_the_ranges_between_denied_domains(
    denied: list[int], expected: list[tuple[int, str]]
) -> None:
    rules = sc.socket_rules(denied)
    assert [(r["args"][0]["value"], r["args"][0]["op"]) for r in rules] == expected
    assert all(r["names"] == ["socket"] and r["args"][0]["index"] == 0 for r in rules)


def test_socket_rules_refuse_a_gap_they_cannot_express() -> None:
    with pytest.raises(ValueError, match=r"11\.\.19"):
        sc.socket_rules([10, 20])


def test_personality_values() -> None:
    out = default_for(DEFAULT_CAPS)
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert allowed(out, "personality", persona)
    assert not allowed(out, "personality", 0x0400000)  # READ_IMPLIES_EXEC


def test_default_document_is_a_valid_docker_profile() -> None:
    doc = sc.default_profile_document()
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    assert doc["archMap"][0] == {
        "architecture": "SCMP_ARCH_X86_64",
        "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    }
    assert sc.parse_profile(json.dumps(doc)) == sc.default_profile()
    names = [n for rule in doc["syscalls"][:1] for n in rule["names"]]
    assert len(names) == len(set(names))


# -- build_spec -----------------------------------------------------------------------------


def spec_for(**hc: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"network_mode": "bridge", "ipc_mode": "private", "shm_size": 1 << 26}
    values.update(hc)
    opts = SpecOptions(
        container_id="c" * 64,
        rootfs="/rootfs",
        config=Config(hostname="h", cmd=["sh"]),
        host_config=HostConfig(**values),
        mounts=[],
        user=ResolvedUser(uid=0, gid=0),
        host_rlimits={},
        available_caps=list(AVAILABLE),
    )
    return build_spec(opts)


@pytest.fixture(autouse=True)
def _host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specmod, "_sysctl_exists", lambda name: True)
    monkeypatch.setattr(seccomp_convert, "native_arch", lambda machine=None: "amd64")


def test_spec_gets_the_default_profile() -> None:
    spec = spec_for()
    want = sc.build_seccomp(sc.default_profile(), DEFAULT_CAPS)
    assert want is not None
    if not sc.kernel_runs_x32():
        want["architectures"].remove("SCMP_ARCH_X32")
    assert spec["linux"]["seccomp"] == want
    assert "mount" not in unconditional(spec["linux"]["seccomp"])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 is an x86-64 ABI")
def test_x32_is_filtered_only_where_the_kernel_runs_it() -> None:
    runs = sc.spec_seccomp(None, False, DEFAULT_CAPS, supported=True, x32=True)
    off = sc.spec_seccomp(None, False, DEFAULT_CAPS, supported=True, x32=False)
    assert runs is not None and off is not None
    assert runs["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert off["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert {k: v for k, v in runs.items() if k != "architectures"} == {
        k: v for k, v in off.items() if k != "architectures"
    }
    # A custom profile is used as written.
    custom = json.dumps(
        {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]}
    )
    got = sc.spec_seccomp([f"seccomp={custom}"], False, DEFAULT_CAPS, supported=True, x32=False)
    assert got is not None and got["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]


def test_the_x32_probe_agrees_with_the_kernel() -> None:
    # The probe runs the x32 getpid in a child; here the same call, in this process
    # (the suite runs as root without a seccomp filter of its own).
    if platform.machine() != "x86_64":
        assert sc.kernel_runs_x32() is False
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(0x40000000 | 39))
    assert sc.kernel_runs_x32() is (ret >= 0 or ctypes.get_errno() != errno.ENOSYS)


def test_spec_profile_follows_the_final_capabilities() -> None:
    spec = spec_for(cap_add=["SYS_ADMIN"])
    assert {"mount", "umount2", "unshare"} <= unconditional(spec["linux"]["seccomp"])
    spec = spec_for(cap_drop=["ALL"])
    assert spec["process"]["capabilities"] == {}
    assert "chroot" not in unconditional(spec["linux"]["seccomp"])
    spec = spec_for(cap_drop=["SYS_CHROOT"])
    assert "chroot" not in unconditional(spec["linux"]["seccomp"])


@pytest.mark.parametrize(
    "hc",
    [
        {"privileged": True},
        {"security_opt": ["seccomp=unconfined"]},
        {"security_opt": ["seccomp:unconfined"]},
        {"privileged": True, "security_opt": ["seccomp=unconfined"]},
        {"security_opt": ['seccomp={"syscalls": []}']},  # no defaultAction, no syscalls
    ],
)
def test_no_seccomp(hc: dict[str, Any]) -> None:
    assert "seccomp" not in spec_for(**hc)["linux"]


def test_builtin_is_the_default_profile() -> None:
    assert (
        spec_for(security_opt=["seccomp=builtin"])["linux"]["seccomp"]
        == (spec_for()["linux"]["seccomp"])
    )
    # explicit with --privileged: the profile, evaluated with every capability
    priv = spec_for(privileged=True, security_opt=["seccomp=builtin"])["linux"]["seccomp"]
    assert "mount" in unconditional(priv)


CUSTOM = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": None},
    ],
    "syscalls": [
        {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "comment": "no dirs"},
        {
            "names": ["chmod", "fchmodat"],
            "action": "SCMP_ACT_ERRNO",
            "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_FOWNER"]},
        },
        {"names": ["sync"], "action": "SCMP_ACT_KILL", "includes": {"arches": ["arm64"]}},
        {
            "names": ["setns"],
            "action": "SCMP_ACT_ERRNO",
            "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"], "minKernel": "5.0"},
        },
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["reboot"], "action": "SCMP_ACT_LOG", "excludes": {"minKernel": "99.0"}},
    ],
}


def test_custom_profile_conversion() -> None:
    spec = spec_for(security_opt=["seccomp=" + json.dumps(CUSTOM)])
    assert spec["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            # chmod: excluded, the container has CAP_FOWNER; sync: arm64 only;
            # setns: needs CAP_SYS_ADMIN and CAP_NET_ADMIN
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["reboot"], "action": "SCMP_ACT_LOG"},
        ],
    }


def test_custom_profile_conditions_use_capabilities_arch_and_kernel() -> None:
    profile = sc.parse_profile(json.dumps(CUSTOM))
    admin = [*DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    out = sc.build_seccomp(profile, admin, arch="arm64", kernel=(4, 19))
    assert out is not None
    assert out["architectures"] == ["SCMP_ARCH_AARCH64"]
    names = [r["names"][0] for r in out["syscalls"]]
    assert names == ["mkdir", "sync", "personality", "reboot"]  # chmod: FOWNER; setns: 5.0
    out = sc.build_seccomp(profile, admin, arch="amd64", kernel=(5, 0))
    assert out is not None
    assert [r["names"][0] for r in out["syscalls"]] == ["mkdir", "setns", "personality", "reboot"]
    # includes needs every listed capability; excludes drops on any one of them
    out = sc.build_seccomp(profile, ["CAP_SYS_ADMIN"], arch="amd64", kernel=(5, 0))
    assert out is not None
    assert [r["names"][0] for r in out["syscalls"]] == ["mkdir", "personality", "reboot"]
    out = sc.build_seccomp(profile, [], arch="amd64", kernel=(5, 0))
    assert out is not None
    assert [r["names"][0] for r in out["syscalls"]] == ["mkdir", "chmod", "personality", "reboot"]
    # excludes.minKernel: dropped once the kernel reaches it
    out = sc.build_seccomp(profile, [], arch="amd64", kernel=(99, 0))
    assert out is not None
    assert [r["names"][0] for r in out["syscalls"]] == ["mkdir", "chmod", "personality"]


def test_custom_profile_with_privileged_is_applied() -> None:
    body = json.dumps(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}],
        }
    )
    spec = spec_for(privileged=True, security_opt=["seccomp=" + body])
    assert spec["linux"]["seccomp"]["syscalls"] == [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}
    ]


def test_custom_profile_go_json_rules() -> None:
    # keys match case-insensitively, unknown keys are ignored, null means unset,
    # and a plain "architectures" list is passed through
    body = (
        '{"DEFAULTACTION": "SCMP_ACT_ERRNO", "defaultErrnoRet": null, "whatever": [1],'
        ' "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],'
        ' "Syscalls": [{"Names": ["read"], "ACTION": "SCMP_ACT_ALLOW", "args": null}]}'
    )
    assert sc.build_seccomp(sc.parse_profile(body), [], **X86) == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "Decoding seccomp profile failed: "),
        ("/etc/profile.json", "Decoding seccomp profile failed: "),
        ("[]", "Decoding seccomp profile failed: json: cannot unmarshal array into Go value"),
        (
            '{"defaultAction": 1}',
            "Decoding seccomp profile failed: json: cannot unmarshal number 1",
        ),
        ('{"syscalls": {}}', "Decoding seccomp profile failed: json: cannot unmarshal object"),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": -1}',
            "Decoding seccomp profile failed: json: cannot unmarshal number -1",
        ),
        (
            '{"syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1.5}]}',
            "Decoding seccomp profile failed: json: cannot unmarshal number 1.5",
        ),
        (
            '{"syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",'
            ' "includes": {"minKernel": "4"}}]}',
            'Decoding seccomp profile failed: invalid kernel version: "4", expected',
        ),
        (
            '{"syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",'
            ' "includes": {"minKernel": "0.0"}}]}',
            "version cannot be 0.0",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],'
            ' "archMap": [{"architecture": "SCMP_ARCH_X86"}]}',
            "both 'architectures' and 'archMap' are specified in the seccomp profile",
        ),
        (
            '{"syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}',
            "both 'name' and 'names' are specified in the seccomp profile",
        ),
        ('{"defaultAction": "SCMP_ACT_MAYBE"}', 'defaultAction "SCMP_ACT_MAYBE" is not a valid'),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"]}]}',
            'syscalls[0]: action "" is not a valid seccomp action',
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"],'
            ' "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "LT"}]}]}',
            'syscalls[0]: op "LT" is not a valid seccomp operator',
        ),
        ('{"defaultAction": NaN}', "Decoding seccomp profile failed: "),
    ],
)
def test_bad_custom_profiles(body: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        sc.parse_profile(body)
    assert message in str(e.value)
    # the same at start (build_spec) and at create (validate_security_opts)
    with pytest.raises(errdefs.InvalidParameter) as e:
        spec_for(security_opt=["seccomp=" + body])
    assert message in str(e.value)
    with pytest.raises(errdefs.InvalidParameter) as e:
        sc.validate_security_opts(["seccomp=" + body])
    assert message in str(e.value)


def test_without_kernel_seccomp() -> None:
    assert sc.spec_seccomp(None, False, DEFAULT_CAPS, supported=False) is None
    assert sc.spec_seccomp(["seccomp=builtin"], False, DEFAULT_CAPS, supported=False) is None
    with pytest.raises(errdefs.InvalidParameter, match="seccomp is not enabled in your kernel"):
        sc.spec_seccomp(['seccomp={"defaultAction": "SCMP_ACT_LOG"}'], False, [], supported=False)


# -- --security-opt -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("foo", 'invalid --security-opt 1: "foo"'),
        ("seccomp", 'invalid --security-opt 1: "seccomp"'),
        ("apparmor", 'invalid --security-opt 1: "apparmor"'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        ("writable-cgroups=2", 'invalid --security-opt 2: "writable-cgroups=2"'),
        ("seccomp=nonsense", "Decoding seccomp profile failed: "),
    ],
)
def test_validate_security_opts_refuses(opt: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as e:
        sc.validate_security_opts(["no-new-privileges", opt])
    assert message in str(e.value)
    with pytest.raises(errdefs.InvalidParameter) as e:
        validate_host_config(HostConfig(security_opt=[opt]))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "opts",
    [
        None,
        [],
        ["no-new-privileges", "no-new-privileges=false", "no-new-privileges:true"],
        ["seccomp=unconfined", "seccomp=builtin", "seccomp=", "seccomp:unconfined"],
        ["apparmor=unconfined", "apparmor:docker-default", "label=disable", "disable"],
        ["label=type:svirt_apache_t", "label:level:s0:c100,c200", "writable-cgroups"],
        ['seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}'],
    ],
)
def test_validate_security_opts_accepts(opts: list[str] | None) -> None:
    sc.validate_security_opts(opts)
    validate_host_config(HostConfig(security_opt=opts))


def test_parse_security_opts_last_one_wins() -> None:
    parsed = sc.parse_security_opts(
        ["seccomp=unconfined", "seccomp=builtin", "apparmor=a", "apparmor:b", "label=x", "disable"]
    )
    assert parsed.seccomp_profile == "builtin"
    assert parsed.apparmor_profile == "b"
    assert parsed.label_opts == ["x", "disable"]
    assert parsed.no_new_privileges is False
    assert parsed.writable_cgroups is None
    # a JSON profile after "=" keeps its own "=" and ":" characters
    parsed = sc.parse_security_opts(['seccomp={"comment": "a=b:c"}'])
    assert parsed.seccomp_profile == '{"comment": "a=b:c"}'


# -- docker info and host facts -------------------------------------------------------------


def test_security_options_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "seccomp_supported", lambda: True)
    assert sc.security_options_info() == ["name=seccomp,profile=builtin"]
    monkeypatch.setattr(sc, "seccomp_supported", lambda: False)
    assert sc.security_options_info() == []


def test_seccomp_supported_reads_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n")
    assert sc.seccomp_supported(str(status)) is True
    status2 = tmp_path / "status2"
    status2.write_text("Name:\tx\n")
    assert sc.seccomp_supported(str(status2)) is False
    assert sc.seccomp_supported(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    ("release", "version"),
    [("6.18.44-fc-v669", (6, 18)), ("3.12-1-amd64", (3, 12)), ("4.8", (4, 8))],
)
def test_kernel_release(release: str, version: tuple[int, int]) -> None:
    assert sc.parse_kernel_release(release) == version


def test_bad_kernel_release() -> None:
    with pytest.raises(errdefs.System):
        sc.parse_kernel_release("weird")
