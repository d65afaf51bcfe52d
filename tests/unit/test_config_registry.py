"""berthd's registry settings: dockerd's flags and daemon.json keys, its checks and messages,
and what the registry client built from them reports to ``docker info``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from berth.config import ConfigError, load
from berth.daemon.daemon import registry_client
from berth.daemon.options import RegistryOptions


def _load(tmp_path: Path, *argv: str, file: dict[str, Any] | None = None) -> RegistryOptions:
    cfg_file = tmp_path / "daemon.json"
    cfg_file.write_text(json.dumps(file or {}))
    cfg, _ = load(["--config-file", str(cfg_file), *argv])
    return cfg.options.registry


def _refused(tmp_path: Path, *argv: str, file: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, *argv, file=file)
    return str(exc.value)


def test_defaults_are_dockerds(tmp_path: Path) -> None:
    reg = _load(tmp_path)
    assert reg == RegistryOptions(
        insecure_registries=[],
        mirrors=[],
        certs_dir=Path("/etc/docker/certs.d"),
        max_concurrent_downloads=3,
        max_concurrent_uploads=5,
        max_download_attempts=5,
    )
    client = registry_client(reg)
    try:
        assert client.service_config() == {
            "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True}
            },
            "Mirrors": [],
        }
        assert (client.max_concurrent_downloads, client.max_concurrent_uploads) == (3, 5)
    finally:
        client.close()


def test_flags_are_normalised_as_dockerd(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="berthd"):
        reg = _load(
            tmp_path,
            "--registry-mirror", "http://127.0.0.1:5000",
            "--registry-mirror", "http://127.0.0.1:5000/",  # the same mirror: once
            "--registry-mirror", "https://mirror.example/path/",
            "--insecure-registry", "102.10.8.1/24",  # a CIDR, kept as its network
            "--insecure-registry", "http://reg.example:5000",  # scheme dropped, with a warning
            "--insecure-registry", "reg.example:5000",
            "--insecure-registry", "index.docker.io",
            "--insecure-registry", "[fd00::1]:5000",
            "--registry-certs-dir", "rel/certs",
            "--max-concurrent-downloads", "7",
            "--max-concurrent-uploads", "2",
            "--max-download-attempts", "9",
        )  # fmt: skip
    assert reg.mirrors == ["http://127.0.0.1:5000/", "https://mirror.example/path/"]
    assert reg.insecure_registries == [
        "102.10.8.0/24",
        "reg.example:5000",
        "docker.io",
        "[fd00::1]:5000",
    ]
    assert reg.certs_dir == Path("rel/certs").absolute()
    assert (reg.max_concurrent_downloads, reg.max_concurrent_uploads) == (7, 2)
    assert reg.max_download_attempts == 9
    assert (
        "insecure registry http://reg.example:5000 should not contain 'http://' and 'http://' "
        "has been removed from the insecure registry config" in caplog.text
    )


def test_daemon_json_keys(tmp_path: Path) -> None:
    reg = _load(
        tmp_path,
        file={
            "registry-mirrors": ["https://mirror.example"],
            "insecure-registries": ["10.20.0.0/16", "reg.example:5000"],
            "registry-certs-dir": "/srv/certs.d",
            "max-concurrent-downloads": 1,
            "max-concurrent-uploads": 10,
            "max-download-attempts": 2,
        },
    )
    assert reg.mirrors == ["https://mirror.example/"]
    assert reg.insecure_registries == ["10.20.0.0/16", "reg.example:5000"]
    assert reg.certs_dir == Path("/srv/certs.d")
    assert (reg.max_concurrent_downloads, reg.max_concurrent_uploads) == (1, 10)
    assert reg.max_download_attempts == 2


@pytest.mark.parametrize(
    ("key", "flag", "file_value", "flag_value"),
    [
        ("insecure-registries", "--insecure-registry", ["a.example:1"], "b.example:1"),
        ("registry-mirrors", "--registry-mirror", ["http://a.example"], "http://b.example"),
        ("registry-certs-dir", "--registry-certs-dir", "/a", "/b"),
        ("max-concurrent-downloads", "--max-concurrent-downloads", 2, "4"),
        ("max-concurrent-uploads", "--max-concurrent-uploads", 2, "4"),
        ("max-download-attempts", "--max-download-attempts", 2, "4"),
    ],
)
def test_flag_and_key_together_are_refused(
    tmp_path: Path, key: str, flag: str, file_value: Any, flag_value: str
) -> None:
    msg = _refused(tmp_path, flag, flag_value, file={key: file_value})
    assert msg == (
        "the following directives are specified both as a flag and in the configuration "
        f"file: {key}"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # dockerd's ValidateMirror, word for word
        (
            ["--registry-mirror", "mirror-1.example.com:5000"],
            'invalid mirror: no scheme specified for "mirror-1.example.com:5000": '
            "must use either 'https://' or 'http://'",
        ),
        (
            ["--registry-mirror", "ftp://mirror-1.example.com"],
            'invalid mirror: unsupported scheme "ftp" in "ftp://mirror-1.example.com": '
            "must use either 'https://' or 'http://'",
        ),
        (
            ["--registry-mirror", "http://mirror-1.example.com/v1/?q=foo"],
            'invalid mirror: query or fragment at end of the URI "http://mirror-1.example.com/v1/?q=foo"',
        ),
        (
            ["--registry-mirror", "http://mirror-1.example.com/#frag"],
            'invalid mirror: query or fragment at end of the URI "http://mirror-1.example.com/#frag"',
        ),
        (
            ["--registry-mirror", "https://user:secret@mirror.example"],
            'invalid mirror: username/password not allowed in URI "https://user:xxxxx@mirror.example"',
        ),
        (["--registry-mirror", "http://[::1"], 'invalid mirror: "http://[::1" is not a valid URI'),
        (["--registry-mirror", "http://"], 'invalid mirror: no host in "http://"'),
        # dockerd's loadInsecureRegistries
        (
            ["--insecure-registry", "[fe80::]/64"],
            'insecure registry [fe80::]/64 is not valid: invalid host "[fe80::]/64"',
        ),
        (
            ["--insecure-registry", "ftp://reg.example"],
            "insecure registry ftp://reg.example should not contain '://'",
        ),
        (
            ["--insecure-registry=-reg.example"],
            "invalid index name (-reg.example). Cannot begin or end with a hyphen",
        ),
        (
            ["--insecure-registry", "reg_1.example:5000"],
            'insecure registry reg_1.example:5000 is not valid: invalid host "reg_1.example"',
        ),
        (
            ["--insecure-registry", "reg.example:99999"],
            'insecure registry reg.example:99999 is not valid: invalid port "99999"',
        ),
        # dockerd's Validate for negative counts; berth also needs at least one
        (["--max-concurrent-downloads", "-1"], "invalid max concurrent downloads: -1"),
        (["--max-concurrent-uploads=-3"], "invalid max concurrent uploads: -3"),
        (["--max-download-attempts=-1"], "invalid max download attempts: -1"),
        (["--max-concurrent-downloads", "0"], "invalid max concurrent downloads: 0: must be at"),
        (["--max-concurrent-uploads", "0"], "invalid max concurrent uploads: 0: must be at"),
        (["--max-download-attempts", "0"], "invalid max download attempts: 0: must be at"),
    ],
)
def test_bad_values_stop_the_daemon(tmp_path: Path, args: list[str], expected: str) -> None:
    assert _refused(tmp_path, *args).startswith(expected)


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ({"registry-mirrors": "http://a.example"}, "invalid value for 'registry-mirrors'"),
        ({"registry-mirrors": [5]}, "invalid value for 'registry-mirrors'"),
        ({"insecure-registries": [None]}, "invalid value for 'insecure-registries'"),
        ({"max-concurrent-downloads": "3"}, "invalid value for 'max-concurrent-downloads'"),
        ({"max-concurrent-uploads": True}, "invalid value for 'max-concurrent-uploads'"),
        ({"max-download-attempts": -2}, "invalid max download attempts: -2"),
        ({"registry-mirrors": ["example.com"]}, "invalid mirror: no scheme specified"),
    ],
)
def test_bad_daemon_json_values(tmp_path: Path, file: dict[str, Any], expected: str) -> None:
    assert expected in _refused(tmp_path, file=file)


def test_info_shows_what_the_client_was_built_with(tmp_path: Path) -> None:
    reg = _load(
        tmp_path,
        "--registry-mirror", "http://127.0.0.1:5000/",
        "--insecure-registry", "reg.example:5000",
        "--insecure-registry", "198.18.4.0/24",
        "--insecure-registry", "127.0.0.0/8",  # loopback's, not listed twice
        "--insecure-registry", "a.example",
        "--insecure-registry", "198.18.9.9:5000",
    )  # fmt: skip
    client = registry_client(reg)
    try:
        mirror = "http://127.0.0.1:5000/"
        assert client.service_config() == {
            # dockerd's order: the configured CIDRs, then loopback's
            "InsecureRegistryCIDRs": ["198.18.4.0/24", "127.0.0.0/8", "::1/128"],
            "IndexConfigs": {
                "198.18.9.9:5000": {
                    "Name": "198.18.9.9:5000", "Mirrors": [], "Secure": False, "Official": False,
                },
                "a.example": {"Name": "a.example", "Mirrors": [], "Secure": False, "Official": False},
                "docker.io": {"Name": "docker.io", "Mirrors": [mirror], "Secure": True, "Official": True},
                "reg.example:5000": {
                    "Name": "reg.example:5000", "Mirrors": [], "Secure": False, "Official": False,
                },
            },
            "Mirrors": [mirror],
        }  # fmt: skip
        # and that is how the client treats them (IP literals only: nothing is resolved)
        assert client.is_insecure("reg.example:5000")
        assert client.is_insecure("198.18.9.9:5000")
        assert not client.is_insecure("198.18.9.9:5001")  # a name is host and port
        assert client.is_insecure("198.18.4.77:443")
        assert not client.is_insecure("198.18.5.1:443")
        assert not client.is_insecure("docker.io")
        hub = client.endpoints("docker.io")
        assert [ep.base for ep in hub] == ["http://127.0.0.1:5000", "https://registry-1.docker.io"]
        assert [ep.base for ep in client.endpoints("docker.io", pull=False)] == [
            "https://registry-1.docker.io"
        ]
    finally:
        client.close()
