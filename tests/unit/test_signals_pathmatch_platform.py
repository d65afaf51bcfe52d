"""berth.utils.signals, berth.utils.pathmatch and berth.utils.platform."""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest

from berth import errdefs
from berth.utils import platform as platform_mod
from berth.utils.pathmatch import path_match
from berth.utils.platform import Platform, host_platform, parse_platform
from berth.utils.signals import SIGNALS, parse_signal

# -- signals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("9", 9),
        ("15", 15),
        ("KILL", 9),
        ("SIGKILL", 9),
        ("sigkill", 9),
        ("term", 15),
        ("SIGTERM", 15),
        ("HUP", 1),
        ("SIGUSR1", 10),
        ("usr2", 12),
        ("SIGCHLD", 17),
        ("CLD", 17),
        ("WINCH", 28),
        ("RTMIN", 34),
        ("RTMIN+1", 35),
        ("SIGRTMIN+15", 49),
        ("RTMAX-1", 63),
        ("RTMAX-15", 49),
        ("RTMAX", 64),
        ("64", 64),
    ],
)
def test_parse_signal(raw: str, expected: int) -> None:
    assert parse_signal(raw) == expected


@pytest.mark.parametrize("raw", ["0", "", "SIG", "NOPE", "SIGNOPE", "RTMIN+16", "KILL9"])
def test_parse_signal_invalid(raw: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        parse_signal(raw)
    assert str(exc.value) == f"invalid signal: {raw}"


def test_signal_table_is_linux() -> None:
    assert SIGNALS["TERM"] == 15
    assert SIGNALS["STOP"] == 19
    assert SIGNALS["IOT"] == SIGNALS["ABRT"] == 6
    assert SIGNALS["POLL"] == SIGNALS["IO"] == 29
    assert len([k for k in SIGNALS if k.startswith("RTM")]) == 32


# -- pathmatch (Go path.Match) ------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("*", "abc", True),
        ("*", "", True),
        ("*", "a/b", False),
        ("a*", "a/b", False),
        ("a*/b", "abc/b", True),
        ("a*/b", "a/c/b", False),
        ("*/*", "a/b", True),
        ("busybox*", "busybox", True),
        ("busybox*", "busybox:latest", True),
        ("library/*", "library/busybox", True),
        ("*box", "busybox", True),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
        ("a*b?c*x", "abxbbxdbxebxczzx", True),
        ("a*b?c*x", "abxbbxdbxebxczzy", False),
        ("?", "a", True),
        ("?", "", False),
        ("?", "/", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[abc]", "b", True),
        ("[abc]", "d", False),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[^a-c]", "d", True),
        ("[^a-c]", "b", False),
        ("a[^b]c", "axc", True),
        ("a[^b]c", "abc", False),
        ("[a-cx-z]", "y", True),
        ("[a-cx-z]", "m", False),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a\\?b", "a?b", True),
        ("a\\?b", "axb", False),
        ("[\\]a]", "]", True),
        ("[\\-]", "-", True),
        ("[x\\-]", "-", True),
        ("[x\\-]", "x", True),
        ("[x\\-]", "z", False),
        ("a.b", "a.b", True),
        ("a.b", "axb", False),
        ("a+b", "a+b", True),
        ("a+b", "aab", False),
        ("(a)", "(a)", True),
        ("[z-a]", "b", False),  # a reversed range matches nothing in Go
        ("[^z-a]", "b", True),
        ("ĉ*", "ĉat", True),
        ("a\nb", "a\nb", True),
    ],
)
def test_path_match(pattern: str, name: str, expected: bool) -> None:
    assert path_match(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[", "[a", "[^", "a\\", "[a-", "[\\"])
def test_path_match_bad_pattern(pattern: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="syntax error in pattern"):
        path_match(pattern, "a")


# -- platform ---------------------------------------------------------------------


class _Uname(NamedTuple):
    sysname: str
    nodename: str
    release: str
    version: str
    machine: str


def _fake_machine(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    fake = _Uname("Linux", "host", "6.1", "#1", machine)
    monkeypatch.setattr(platform_mod.os, "uname", lambda: fake)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64", "")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("i686", Platform("linux", "386", "")),
        ("ppc64le", Platform("linux", "ppc64le", "")),
        ("mips64", Platform("linux", "mips64", "")),
    ],
)
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, expected: Platform) -> None:
    _fake_machine(monkeypatch, machine)
    assert host_platform() == expected


def test_host_platform_is_real_machine_by_default() -> None:
    p = host_platform()
    assert p.os == "linux"
    assert p.architecture
    if os.uname().machine == "x86_64":
        assert p == Platform("linux", "amd64", "")


def test_platform_str() -> None:
    assert str(Platform("linux", "amd64")) == "linux/amd64"
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("linux", Platform("linux", "amd64", "")),
        ("linux/amd64", Platform("linux", "amd64", "")),
        ("LINUX/AMD64", Platform("linux", "amd64", "")),
        (" linux/x86_64 ", Platform("linux", "amd64", "")),
        ("linux/arm64", Platform("linux", "arm64", "")),
        ("linux/aarch64", Platform("linux", "arm64", "")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("windows/amd64", Platform("windows", "amd64", "")),
        ("linux/riscv64", Platform("linux", "riscv64", "")),
    ],
)
def test_parse_platform_on_amd64_host(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: Platform
) -> None:
    _fake_machine(monkeypatch, "x86_64")
    assert parse_platform(value) == expected


def test_parse_platform_on_arm64_host_keeps_host_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_machine(monkeypatch, "aarch64")
    assert parse_platform("linux") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/arm64") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/amd64") == Platform("linux", "amd64", "")


@pytest.mark.parametrize("value", ["", "/", "linux/", "/amd64", "linux//v7", "a/b/c/d"])
def test_parse_platform_invalid(value: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        parse_platform(value)
    assert str(exc.value) == f"invalid platform {value!r}: expected os[/arch[/variant]]"
