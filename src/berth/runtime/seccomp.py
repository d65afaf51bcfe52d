"""Docker's default seccomp profile, custom profiles, and ``--security-opt`` parsing.

The facts come from moby: the profile is moby/profiles ``seccomp/default_linux.go``
(``default.json`` is generated from it; it used to live in moby's own
``profiles/seccomp``), the conversion is ``seccomp_linux.go`` (``setupSeccomp``),
and when it applies is ``daemon/seccomp_linux.go`` (``WithSeccomp``) plus
``parseSecurityOpt`` in ``daemon/daemon_unix.go``.  The data and code here are
berth's own.

A profile in Docker's format is an OCI ``linux.seccomp`` whose ``syscalls``
carry conditions: ``includes`` / ``excludes`` on the container's capabilities
(its *bounding* set), on the host architecture and on a minimum kernel
version, plus an ``archMap`` that names sub-architectures.  Converting a
profile for one container keeps the rules whose conditions hold and drops the
conditions, exactly as moby does:

* ``excludes``: the rule is dropped if the host arch is listed, if *any*
  listed capability is in the bounding set, or if the kernel is at least
  ``minKernel``;
* ``includes``: the rule is dropped unless the host arch is listed, *all*
  listed capabilities are in the bounding set and the kernel is at least
  ``minKernel``;
* ``archMap``: only the entry for the host architecture is kept, as the
  architecture followed by its sub-architectures.

When it applies (``spec_seccomp``): ``seccomp=unconfined`` → none; a
privileged container gets none unless a profile is given explicitly (moby
then loads it even for a privileged container); ``seccomp=builtin`` or
nothing → the default profile; ``seccomp=<json>`` → that profile (the CLI
reads the file and sends its content).

Where berth differs from dockerd, on purpose:

* a malformed custom profile is refused at create (``validate_security_opts``)
  as well as at start, as ``InvalidParameter`` with moby's decoding message;
  dockerd accepts it at create and fails the start.  Unknown ``action`` /
  ``op`` values are refused here instead of failing inside runc;
* ``seccomp=builtin`` on a privileged container applies the default profile
  (dockerd would try to decode the word ``builtin`` as JSON and fail);
* no ``--seccomp-profile`` daemon option yet: the built-in profile is the
  daemon default.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from berth import errdefs
from berth.utils.gostr import go_quote as _go_quote

__all__ = [
    "DENIED_SOCKET_DOMAINS",
    "PROFILE_DEFAULT",
    "PROFILE_UNCONFINED",
    "Profile",
    "SecurityOptions",
    "build_seccomp",
    "default_profile",
    "default_profile_document",
    "native_arch",
    "parse_kernel_release",
    "parse_profile",
    "parse_security_opts",
    "seccomp_supported",
    "security_options_info",
    "socket_rules",
    "spec_seccomp",
    "validate_security_opts",
]

PROFILE_UNCONFINED = "unconfined"
PROFILE_DEFAULT = "builtin"  # what the CLI sends for --security-opt seccomp=builtin

ACT_ALLOW = "SCMP_ACT_ALLOW"
ACT_ERRNO = "SCMP_ACT_ERRNO"
ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)

# uname -m → the libseccomp-style arch name that "arches" filters use (moby's goToNative).
_MACHINE_TO_NATIVE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc": "ppc",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "s390": "s390",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "mipsel": "mipsle",
    "loongarch64": "loong64",
}
# native name → OCI/libseccomp architecture (moby's nativeToSeccomp).
_NATIVE_TO_SECCOMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}


# -- the default profile, in Docker's profile format ------------------------------------

# Allowed for everyone (the first rule of the default profile), in the profile's order.
_ALLOWED_TEXT = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod
fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
"""
_ALLOWED: tuple[str, ...] = tuple(_ALLOWED_TEXT.split())

# socket(2) domains the default profile denies, as moby's does since CVE-2026-31431
# ("Copy Fail"): AF_ALG (38), the kernel crypto API, and AF_VSOCK (40), host/guest
# sockets that are not namespaced.  socketcall(2) hides its arguments from seccomp, so
# this binds only the direct socket(2) syscall (moby leaves socketcall to AppArmor).
DENIED_SOCKET_DOMAINS: tuple[int, ...] = (38, 40)

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
# CLONE_NEWPID | CLONE_NEWNET: clone(2) without CAP_SYS_ADMIN may not ask for namespaces.
CLONE_NAMESPACE_FLAGS = 0x7E020000
# personality(2): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

_ARCH_MAP: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", None),
    ("SCMP_ARCH_LOONGARCH64", None),
)

# (names, caps) of the rules allowed only with one capability, in the profile's order.
_CAP_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("reboot",), "CAP_SYS_BOOT"),
    (("chroot",), "CAP_SYS_CHROOT"),
    (("delete_module", "init_module", "finit_module"), "CAP_SYS_MODULE"),
    (("acct",), "CAP_SYS_PACCT"),
    (
        (
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ),
        "CAP_SYS_PTRACE",
    ),
    (("iopl", "ioperm"), "CAP_SYS_RAWIO"),
    (("settimeofday", "stime", "clock_settime", "clock_settime64"), "CAP_SYS_TIME"),
    (("vhangup",), "CAP_SYS_TTY_CONFIG"),
    (("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), "CAP_SYS_NICE"),
    (("syslog",), "CAP_SYSLOG"),
    (("bpf",), "CAP_BPF"),
    (("perf_event_open",), "CAP_PERFMON"),
)

_SYS_ADMIN_ONLY = (
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
)


def _allow(names: Iterable[str], **extra: Any) -> dict[str, Any]:
    return {"names": list(names), "action": ACT_ALLOW, **extra}


def _arg(index: int, value: int, op: str) -> dict[str, Any]:
    return {"index": index, "value": value, "op": op}


def socket_rules(denied: Iterable[int]) -> list[dict[str, Any]]:
    """socket(2) rules allowing every domain but *denied*.

    Several comparisons of one argument in one rule are AND-ed by libseccomp, and runc
    turns them into OR-ed rules anyway, so each allowed range is a rule of its own:
    ``< first``, ``==`` for each single domain between two denied ones, ``> last``
    (moby's ``< 38``, ``== 39``, ``> 40``).
    """
    ds = sorted(set(denied))
    if not ds:
        return [_allow(["socket"])]
    rules = [_allow(["socket"], args=[_arg(0, ds[0], "SCMP_CMP_LT")])]
    for low, high in itertools.pairwise(ds):
        if high - low - 1 > 8:  # a rule per domain: keep the filter small
            raise ValueError(f"cannot express the allowed socket domains {low + 1}..{high - 1}")
        rules.extend(
            _allow(["socket"], args=[_arg(0, d, "SCMP_CMP_EQ")]) for d in range(low + 1, high)
        )
    rules.append(_allow(["socket"], args=[_arg(0, ds[-1], "SCMP_CMP_GT")]))
    return rules


def default_profile_document() -> dict[str, Any]:
    """Docker's default profile in Docker's JSON format (what ``default.json`` holds)."""
    syscalls: list[dict[str, Any]] = [
        _allow(_ALLOWED),
        _allow(["process_vm_readv", "process_vm_writev", "ptrace"], includes={"minKernel": "4.8"}),
        *socket_rules(DENIED_SOCKET_DOMAINS),
        *(_allow(["personality"], args=[_arg(0, p, "SCMP_CMP_EQ")]) for p in PERSONALITIES),
        _allow(["sync_file_range2", "swapcontext"], includes={"arches": ["ppc64le"]}),
        _allow(
            [
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
            includes={"arches": ["arm", "arm64"]},
        ),
        _allow(["arch_prctl"], includes={"arches": ["amd64", "x32"]}),
        _allow(["modify_ldt"], includes={"arches": ["amd64", "x32", "x86"]}),
        _allow(
            ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
            includes={"arches": ["s390", "s390x"]},
        ),
        _allow(["riscv_flush_icache"], includes={"arches": ["riscv64"]}),
        _allow(["open_by_handle_at"], includes={"caps": ["CAP_DAC_READ_SEARCH"]}),
        _allow(_SYS_ADMIN_ONLY, includes={"caps": ["CAP_SYS_ADMIN"]}),
        _allow(
            ["clone"],
            args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
            excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
        ),
        _allow(
            ["clone"],
            args=[_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
            comment="s390 parameter ordering for clone is different",
            includes={"arches": ["s390", "s390x"]},
            excludes={"caps": ["CAP_SYS_ADMIN"]},
        ),
        # Without CAP_SYS_ADMIN clone3 says ENOSYS, so libcs fall back to clone(2),
        # whose flags the rule above can inspect.
        {
            "names": ["clone3"],
            "action": ACT_ERRNO,
            "errnoRet": errno.ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        *(_allow(names, includes={"caps": [cap]}) for names, cap in _CAP_RULES),
    ]
    return {
        "defaultAction": ACT_ERRNO,
        "defaultErrnoRet": errno.EPERM,
        "archMap": [
            {"architecture": arch, "subArchitectures": list(subs) if subs is not None else None}
            for arch, subs in _ARCH_MAP
        ],
        "syscalls": syscalls,
    }


# -- the parsed form ----------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[tuple[int, int, int, str], ...] = ()  # (index, value, valueTwo, op)
    includes: Filter | None = None
    excludes: Filter | None = None


@dataclass(frozen=True)
class Profile:
    """A seccomp profile in Docker's format, decoded and checked."""

    default_action: str = ""
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] = ()
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: tuple[Rule, ...] = field(default=())


# -- decoding (Go's encoding/json rules: case-insensitive keys, null = unset) --------------


class _DecodeError(Exception):
    pass


def _kind(value: Any, raw: str | None = None) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {raw if raw is not None else json.dumps(value)}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, struct: str, path: str, gotype: str) -> _DecodeError:
    return _DecodeError(
        f"json: cannot unmarshal {_kind(value)} into Go struct field {struct}.{path} "
        f"of type {gotype}"
    )


def _fields(obj: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The object's members by field name; keys match case-insensitively, the last wins."""
    by_fold = {name.lower(): name for name in known}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = by_fold.get(key.lower())
        if name is not None:
            out[name] = value
    return out


def _string(value: Any, struct: str, path: str, gotype: str = "string") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(value, struct, path, gotype)
    return value


def _strings(value: Any, struct: str, path: str, gotype: str = "string") -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _type_error(value, struct, path, f"[]{gotype}")
    return tuple(_string(v, struct, path, gotype) for v in value)


def _uint(value: Any, struct: str, path: str, bits: int = 64, gotype: str = "uint") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or isinstance(value, float)
        or not 0 <= value < 1 << bits
    ):
        raise _type_error(value, struct, path, gotype)
    return int(value)


def _object(value: Any, struct: str, path: str, gotype: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(value, struct, path, gotype)
    return value


def _kernel_version(value: Any, struct: str, path: str) -> tuple[int, int] | None:
    if value is None:
        return None
    shown = json.dumps(value, ensure_ascii=False)
    expected = 'expected "<kernel>.<major>"'
    if not isinstance(value, str):
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}")
    if value == "":
        return None
    parts = value.split(".", 2)
    if len(parts) != 2:
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}")
    out = []
    for part in parts:
        if not part.isdigit() or not part.isascii() or int(part) > 255:
            raise _DecodeError(f"invalid kernel version: {shown}, {expected}: bad number {part!r}")
        out.append(int(part))
    if out == [0, 0]:
        raise _DecodeError(f"invalid kernel version: {shown}, {expected}: version cannot be 0.0")
    return out[0], out[1]


def _filter(value: Any, path: str) -> Filter | None:
    obj = _object(value, "Syscall", path, "seccomp.Filter")
    if obj is None:
        return None
    f = _fields(obj, ("caps", "arches", "minKernel"))
    return Filter(
        caps=_strings(f.get("caps"), "Filter", f"{path}.caps"),
        arches=_strings(f.get("arches"), "Filter", f"{path}.arches"),
        min_kernel=_kernel_version(f.get("minKernel"), "Filter", f"{path}.minKernel"),
    )


def _rule(value: Any) -> Rule:
    obj = _object(value, "Seccomp", "syscalls", "seccomp.Syscall")
    if obj is None:
        obj = {}
    f = _fields(
        obj, ("names", "action", "errnoRet", "args", "name", "comment", "includes", "excludes")
    )
    names = _strings(f.get("names"), "Syscall", "syscalls.names")
    name = _string(f.get("name"), "Syscall", "syscalls.name")
    _string(f.get("comment"), "Syscall", "syscalls.comment")
    errno_ret = f.get("errnoRet")
    args = []
    raw_args = f.get("args")
    if raw_args is not None:
        if not isinstance(raw_args, list):
            raise _type_error(raw_args, "Syscall", "syscalls.args", "[]specs.LinuxSeccompArg")
        for raw in raw_args:
            arg = _object(raw, "Syscall", "syscalls.args", "specs.LinuxSeccompArg") or {}
            a = _fields(arg, ("index", "value", "valueTwo", "op"))
            args.append(
                (
                    _uint(a.get("index", 0), "LinuxSeccompArg", "syscalls.args.index"),
                    _uint(
                        a.get("value", 0), "LinuxSeccompArg", "syscalls.args.value", 64, "uint64"
                    ),
                    _uint(
                        a.get("valueTwo", 0),
                        "LinuxSeccompArg",
                        "syscalls.args.valueTwo",
                        64,
                        "uint64",
                    ),
                    _string(
                        a.get("op"),
                        "LinuxSeccompArg",
                        "syscalls.args.op",
                        "specs.LinuxSeccompOperator",
                    ),
                )
            )
    rule = Rule(
        names=names,
        action=_string(f.get("action"), "Syscall", "syscalls.action", "specs.LinuxSeccompAction"),
        errno_ret=(
            None
            if errno_ret is None
            else _uint(errno_ret, "Syscall", "syscalls.errnoRet", 64, "uint")
        ),
        args=tuple(args),
        includes=_filter(f.get("includes"), "syscalls.includes"),
        excludes=_filter(f.get("excludes"), "syscalls.excludes"),
    )
    if name:
        if names:
            raise errdefs.InvalidParameter(
                "both 'name' and 'names' are specified in the seccomp profile, "
                "use either 'name' or 'names'"
            )
        rule = Rule(
            names=(name,),
            action=rule.action,
            errno_ret=rule.errno_ret,
            args=rule.args,
            includes=rule.includes,
            excludes=rule.excludes,
        )
    return rule


def _decode(doc: Any) -> Profile:
    if not isinstance(doc, dict):
        raise _DecodeError(
            f"json: cannot unmarshal {_kind(doc)} into Go value of type seccomp.Seccomp"
        )
    f = _fields(
        doc,
        (
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "flags",
            "listenerPath",
            "listenerMetadata",
            "archMap",
            "syscalls",
        ),
    )
    errno_ret = f.get("defaultErrnoRet")
    arch_map = []
    raw_map = f.get("archMap")
    if raw_map is not None:
        if not isinstance(raw_map, list):
            raise _type_error(raw_map, "Seccomp", "archMap", "[]seccomp.Architecture")
        for raw in raw_map:
            entry = _object(raw, "Seccomp", "archMap", "seccomp.Architecture") or {}
            a = _fields(entry, ("architecture", "subArchitectures"))
            arch_map.append(
                (
                    _string(
                        a.get("architecture"), "Architecture", "archMap.architecture", "specs.Arch"
                    ),
                    _strings(
                        a.get("subArchitectures"),
                        "Architecture",
                        "archMap.subArchitectures",
                        "specs.Arch",
                    ),
                )
            )
    raw_calls = f.get("syscalls")
    rules: list[Rule] = []
    if raw_calls is not None:
        if not isinstance(raw_calls, list):
            raise _type_error(raw_calls, "Seccomp", "syscalls", "[]*seccomp.Syscall")
        rules = [_rule(raw) for raw in raw_calls]
    return Profile(
        default_action=_string(
            f.get("defaultAction"), "Seccomp", "defaultAction", "specs.LinuxSeccompAction"
        ),
        default_errno_ret=(
            None
            if errno_ret is None
            else _uint(errno_ret, "Seccomp", "defaultErrnoRet", 64, "uint")
        ),
        architectures=_strings(f.get("architectures"), "Seccomp", "architectures", "specs.Arch"),
        arch_map=tuple(arch_map),
        flags=_strings(f.get("flags"), "Seccomp", "flags", "specs.LinuxSeccompFlag"),
        listener_path=_string(f.get("listenerPath"), "Seccomp", "listenerPath"),
        listener_metadata=_string(f.get("listenerMetadata"), "Seccomp", "listenerMetadata"),
        syscalls=tuple(rules),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _check(profile: Profile) -> None:
    """What runc would refuse later, refused now with a message that says where."""
    if profile.architectures and profile.arch_map:
        raise errdefs.InvalidParameter(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    if profile.default_action == "" and not profile.syscalls:
        return  # seccomp disabled
    if profile.default_action not in ACTIONS:
        raise errdefs.InvalidParameter(
            f"invalid seccomp profile: defaultAction {_go_quote(profile.default_action)} "
            "is not a valid seccomp action"
        )
    for i, rule in enumerate(profile.syscalls):
        if rule.action not in ACTIONS:
            raise errdefs.InvalidParameter(
                f"invalid seccomp profile: syscalls[{i}]: action {_go_quote(rule.action)} "
                "is not a valid seccomp action"
            )
        for _, _, _, op in rule.args:
            if op not in OPERATORS:
                raise errdefs.InvalidParameter(
                    f"invalid seccomp profile: syscalls[{i}]: op {_go_quote(op)} "
                    "is not a valid seccomp operator"
                )


def parse_profile(body: str | bytes | dict[str, Any]) -> Profile:
    """Decode a profile in Docker's format (``--security-opt seccomp=<json>``).

    Raises :class:`berth.errdefs.InvalidParameter` with moby's
    ``Decoding seccomp profile failed: ...`` for malformed input.
    """
    try:
        doc = body if isinstance(body, dict) else json.loads(body, parse_constant=_reject_constant)
        profile = _decode(doc)
    except (ValueError, _DecodeError) as e:
        raise errdefs.InvalidParameter(f"Decoding seccomp profile failed: {e}") from None
    _check(profile)
    return profile


@functools.cache
def default_profile() -> Profile:
    """The built-in profile, decoded once."""
    return parse_profile(default_profile_document())


# -- host facts ---------------------------------------------------------------------------


def native_arch(machine: str | None = None) -> str:
    """The host architecture as profile ``arches`` filters name it (``amd64``, ``arm64``)."""
    m = machine if machine is not None else platform.machine()
    return _MACHINE_TO_NATIVE.get(m, m)


def parse_kernel_release(release: str) -> tuple[int, int]:
    """``"6.18.44-fc"`` → ``(6, 18)``; ``"3.12-1-amd64"`` → ``(3, 12)``."""
    match = re.match(r"\s*[+-]?(\d+)\.[+-]?(\d+)", release)
    if match is None:
        raise errdefs.System(f'failed to parse kernel version "{release}"')
    return int(match.group(1)), int(match.group(2))


@functools.cache
def _host_kernel() -> tuple[int, int]:
    return parse_kernel_release(os.uname().release)


_X32_PROBE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "r = libc.syscall(ctypes.c_long(0x40000000 | 39))\n"  # x32 getpid
    "sys.exit(0 if r >= 0 else 1 if ctypes.get_errno() == 38 else 2)\n"  # 38: ENOSYS
)


@functools.cache
def kernel_runs_x32() -> bool:
    """Whether the kernel runs x32-ABI syscalls (most kernels ship with x32 off).

    Probed in a child: under an outer seccomp filter without x32 the probe itself
    would be killed.  Anything but a clean ENOSYS counts as "runs x32".
    """
    if platform.machine() != "x86_64":
        return False
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _X32_PROBE], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return proc.returncode != 1


@functools.cache
def seccomp_supported(status_path: str = "/proc/self/status") -> bool:
    """Whether the kernel has seccomp filters (a ``Seccomp:`` line in /proc/self/status)."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def security_options_info() -> list[str]:
    """``docker info`` SecurityOptions for what berth applies (seccomp only, for now)."""
    return ["name=seccomp,profile=builtin"] if seccomp_supported() else []


# -- conversion ---------------------------------------------------------------------------


def _listed(arch: str, arches: Sequence[str]) -> bool:
    return arch in arches


def build_seccomp(
    profile: Profile,
    capabilities: Iterable[str],
    *,
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The OCI ``linux.seccomp`` for a container whose bounding set is *capabilities*.

    ``None`` when the profile disables seccomp (no defaultAction and no syscalls).
    """
    _check(profile)
    if profile.default_action == "" and not profile.syscalls:
        return None
    native = arch if arch is not None else native_arch()
    caps = frozenset(capabilities)

    def kernel_at_least(version: tuple[int, int]) -> bool:
        return (kernel if kernel is not None else _host_kernel()) >= version

    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        out["defaultErrnoRet"] = profile.default_errno_ret
    architectures = list(profile.architectures)
    seccomp_arch = _NATIVE_TO_SECCOMP.get(native)
    if seccomp_arch is not None:
        for name, subs in profile.arch_map:
            if name == seccomp_arch:
                architectures.append(name)
                architectures.extend(subs)
                break
    if architectures:
        out["architectures"] = architectures
    if profile.flags:
        out["flags"] = list(profile.flags)
    if profile.listener_path:
        out["listenerPath"] = profile.listener_path
    if profile.listener_metadata:
        out["listenerMetadata"] = profile.listener_metadata

    syscalls: list[dict[str, Any]] = []
    for rule in profile.syscalls:
        ex = rule.excludes
        if ex is not None:
            if ex.arches and _listed(native, ex.arches):
                continue
            if any(c in caps for c in ex.caps):
                continue
            if ex.min_kernel is not None and kernel_at_least(ex.min_kernel):
                continue
        inc = rule.includes
        if inc is not None:
            if inc.arches and not _listed(native, inc.arches):
                continue
            if not all(c in caps for c in inc.caps):
                continue
            if inc.min_kernel is not None and not kernel_at_least(inc.min_kernel):
                continue
        call: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno_ret is not None:
            call["errnoRet"] = rule.errno_ret
        if rule.args:
            args = []
            for index, value, value_two, op in rule.args:
                arg: dict[str, Any] = {"index": index, "value": value}
                if value_two:
                    arg["valueTwo"] = value_two
                arg["op"] = op
                args.append(arg)
            call["args"] = args
        syscalls.append(call)
    if syscalls:
        out["syscalls"] = syscalls
    return out


# -- --security-opt -----------------------------------------------------------------------


def _parse_bool(value: str) -> bool | None:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


@dataclass
class SecurityOptions:
    """What ``--security-opt`` asks for (moby's parseSecurityOpt)."""

    no_new_privileges: bool = False
    writable_cgroups: bool | None = None
    seccomp_profile: str = ""  # "", "unconfined", "builtin" or a JSON profile
    apparmor_profile: str = ""
    label_opts: list[str] = field(default_factory=list)


def parse_security_opts(opts: Iterable[str] | None) -> SecurityOptions:
    """Parse ``HostConfig.SecurityOpt`` with moby's rules and messages.

    ``key=value`` (or the deprecated ``key:value``); a later option overrides an
    earlier one.  SELinux labels are not checked: this host has no SELinux, and
    moby checks them only where SELinux is enabled.
    """
    out = SecurityOptions()
    for opt in opts or []:
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "writable-cgroups":
            out.writable_cgroups = True
            continue
        if opt == "disable":
            out.label_opts.append("disable")
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
        else:
            raise errdefs.InvalidParameter(f"invalid --security-opt 1: {_go_quote(opt)}")
        if key == "label":
            out.label_opts.append(value)
        elif key == "apparmor":
            out.apparmor_profile = value
        elif key == "seccomp":
            out.seccomp_profile = value
        elif key in ("no-new-privileges", "writable-cgroups"):
            flag = _parse_bool(value)
            if flag is None:
                raise errdefs.InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
            if key == "no-new-privileges":
                out.no_new_privileges = flag
            else:
                out.writable_cgroups = flag
        else:
            raise errdefs.InvalidParameter(f"invalid --security-opt 2: {_go_quote(opt)}")
    return out


def _is_custom(profile: str) -> bool:
    return profile not in ("", PROFILE_UNCONFINED, PROFILE_DEFAULT)


def validate_security_opts(security_opt: list[str] | None) -> None:
    """Refuse malformed ``--security-opt`` values at create, with moby's messages.

    Checks the option syntax (seccomp, apparmor, label, no-new-privileges,
    writable-cgroups) and decodes a custom seccomp profile; nothing here
    depends on the container's capabilities or the host.
    """
    opts = parse_security_opts(security_opt)
    if _is_custom(opts.seccomp_profile):
        parse_profile(opts.seccomp_profile)


def spec_seccomp(
    security_opt: list[str] | None,
    privileged: bool,
    bounding: Iterable[str],
    *,
    supported: bool | None = None,
    x32: bool | None = None,
) -> dict[str, Any] | None:
    """``linux.seccomp`` for a container, or ``None`` for none (moby's WithSeccomp).

    The default profile leaves out the x32 sub-architecture when the kernel does not
    run x32 syscalls (*x32* overrides the probe); a custom profile is used as given.
    """
    profile = parse_security_opts(security_opt).seccomp_profile
    if profile == PROFILE_UNCONFINED:
        return None
    if privileged and not profile:
        return None
    if not (seccomp_supported() if supported is None else supported):
        if _is_custom(profile):
            raise errdefs.InvalidParameter(
                "seccomp is not enabled in your kernel, cannot run a custom seccomp profile"
            )
        return None
    if _is_custom(profile):
        return build_seccomp(parse_profile(profile), bounding)
    out = build_seccomp(default_profile(), bounding)
    if out is not None and not (kernel_runs_x32() if x32 is None else x32):
        # x32 syscalls fail on this kernel whatever the filter says; without the
        # sub-architecture runc compiles the filter ~6 ms faster (every start and exec).
        out["architectures"] = [a for a in out.get("architectures", ()) if a != "SCMP_ARCH_X32"]
    return out
