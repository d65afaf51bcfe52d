"""berthd's remote-access settings: dockerd's ``--tls*`` flags and daemon.json keys, and
the refusal of plain TCP away from loopback unless the operator opts out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from berth.config import Config, ConfigError, load, loopback
from berth.daemon.info import _api_warnings


@pytest.fixture(autouse=True)
def _no_cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path / "certs"))


def _load(tmp_path: Path, *argv: str, file: dict[str, Any] | None = None) -> Config:
    cfg_file = tmp_path / "daemon.json"
    cfg_file.write_text(json.dumps(file or {}))
    cfg, _ = load(["--config-file", str(cfg_file), *argv])
    return cfg


def test_defaults_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = _load(tmp_path).tls
    assert (tls.enabled, tls.verify, tls.explicit) == (False, False, False)
    assert (tls.ca, tls.cert, tls.key) == tuple(
        tmp_path / "certs" / name for name in ("ca.pem", "cert.pem", "key.pem")
    )
    tls = _load(tmp_path, "--tlsverify", "--tlscert", "/s.pem").tls
    assert (tls.enabled, tls.verify, tls.explicit, tls.cert) == (True, True, True, Path("/s.pem"))
    tls = _load(tmp_path, "--tls").tls
    assert (tls.enabled, tls.verify) == (True, False)
    tls = _load(tmp_path, file={"tlsverify": True, "tlskey": "/k.pem", "hosts": []}).tls
    assert (tls.enabled, tls.verify, tls.key) == (True, True, Path("/k.pem"))
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")  # dockerd's default for --tlsverify
    assert _load(tmp_path).tls.verify
    with pytest.raises(ConfigError, match="both as a flag and in the configuration file: tls"):
        _load(tmp_path, "--tls", file={"tls": True})


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("tcp://127.0.0.1:2375", False),
        ("tcp://localhost:2375", False),
        ("tcp://[::1]:2375", False),
        ("tcp://:2375", False),  # dockerd's default address: 127.0.0.1
        ("tcp://0.0.0.0:2375", True),
        ("tcp://10.1.2.3:2375", True),
        ("tcp://docker.example.test:2375", True),  # a name is not looked up
    ],
)
def test_plain_tcp_away_from_loopback_needs_an_explicit_choice(
    tmp_path: Path, host: str, refused: bool
) -> None:
    if refused:
        with pytest.raises(ConfigError, match=r"without TLS.*--tls=false"):
            _load(tmp_path, "-H", host)
    else:
        _load(tmp_path, "-H", host)
    for opt_out in (["--tls=false"], ["--tlsverify=false"], ["--tlsverify"], ["--tls"]):
        _load(tmp_path, "-H", host, *opt_out)
    _load(tmp_path, file={"hosts": [host], "tls": False})


def test_loopback() -> None:
    assert loopback("127.0.0.2") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("::") and not loopback("example.test")


def test_info_warns_of_what_is_not_verified(tmp_path: Path) -> None:
    hosts = ["unix:///run/b.sock", "tcp://127.0.0.1:2375"]
    opts = _load(tmp_path, *[f"-H{h}" for h in hosts]).options
    (plain,) = _api_warnings(opts)
    assert plain.startswith(
        "[DEPRECATION NOTICE]: API is accessible on http://127.0.0.1:2375 without encryption.\n"
        "         Access to the remote API is equivalent to root access on the host."
    )
    opts = _load(tmp_path, *[f"-H{h}" for h in hosts], "--tls").options
    (unverified,) = _api_warnings(opts)
    assert "https://127.0.0.1:2375 without TLS client verification." in unverified
    assert _api_warnings(_load(tmp_path, *[f"-H{h}" for h in hosts], "--tlsverify").options) == []
