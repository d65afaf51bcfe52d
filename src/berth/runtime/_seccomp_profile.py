"""Docker's default seccomp profile, as data in Docker's own profile format.

The facts are moby/profiles' ``seccomp/default_linux.go`` (``default.json`` is
generated from it); the data is berth's own.  Apart from the code, so that following
a moby update of the profile touches this module only.
"""

from __future__ import annotations

import errno
import functools
import itertools
from collections.abc import Iterable
from typing import Any

from berth.runtime._seccomp_decode import Profile, parse_profile

ACT_ALLOW = "SCMP_ACT_ALLOW"
ACT_ERRNO = "SCMP_ACT_ERRNO"


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


@functools.cache
def default_profile() -> Profile:
    """The built-in profile, decoded once."""
    return parse_profile(default_profile_document())
