"""Remote access over TCP: TLS with client verification as dockerd's ``--tlsverify``,
encryption alone with ``--tls``, and the refusal of plain TCP away from loopback.

The CA and every certificate come from trustme; every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from berth.testing import DOCKER, Berthd, running_berthd
from tests.e2e.registries import free_port


def _cert_dir(path: Path, ca: trustme.CA, cert: trustme.LeafCert | None) -> Path:
    """A directory as the CLI reads it from ``DOCKER_CERT_PATH``."""
    path.mkdir()
    ca.cert_pem.write_to_path(str(path / "ca.pem"))
    if cert is not None:
        cert.private_key_pem.write_to_path(str(path / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(path / "cert.pem"))
    return path


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cert_dir(tmp_path_factory.mktemp("tls") / "server", ca, ca.issue_cert("127.0.0.1"))


def _tls_args(port: int, files: Path, *flags: str) -> list[str]:
    return [
        "-H",
        f"tcp://127.0.0.1:{port}",
        *flags,
        "--tlscacert",
        str(files / "ca.pem"),
        "--tlscert",
        str(files / "cert.pem"),
        "--tlskey",
        str(files / "key.pem"),
    ]


def _docker(
    port: int, cert_path: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(cert_path),
        "DOCKER_CONFIG": str(cert_path / "config"),
    }
    return subprocess.run(
        [DOCKER, *args],
        env=env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def verified(server_files: Path) -> Iterator[tuple[Berthd, int]]:
    port = free_port()
    with running_berthd(_tls_args(port, server_files, "--tlsverify")) as d:
        yield d, port


def _ping(port: int, ctx: ssl.SSLContext) -> bytes:
    """``GET /_ping`` through *ctx*: the answer, empty when the daemon refused the client
    (in the handshake, or with TLS 1.3 right after it)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
            return s.recv(4096)
    except (ssl.SSLError, ConnectionError):
        return b""


def test_the_cli_with_a_certificate_the_ca_signed_works(
    verified: tuple[Berthd, int], ca: trustme.CA, tmp_path: Path, busybox_tar: Path
) -> None:
    _, port = verified
    client = _cert_dir(tmp_path / "client", ca, ca.issue_cert("client@example.test"))
    p = _docker(port, client, "version", "--format", "{{.Server.Os}}")
    assert (p.returncode, p.stdout) == (0, "linux\n"), p.stderr
    # a streamed upload, then a hijacked attach with stdin (its end is TLS close_notify)
    p = _docker(port, client, "import", str(busybox_tar), "tls-busybox:1")
    assert p.returncode == 0, p.stderr
    p = _docker(port, client, "run", "--rm", "-i", "tls-busybox:1", "cat", stdin="over tls\n")
    assert (p.returncode, p.stdout) == (0, "over tls\n"), p.stderr
    info = _docker(port, client, "info", "--format", "{{json .Warnings}}").stdout
    assert "API is accessible" not in info  # verified TLS: nothing to warn of


def test_docker_py_over_tls(
    verified: tuple[Berthd, int], ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker  # type: ignore[import-untyped]

    # requests prefers these to the CA docker-py hands it
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, port = verified
    files = _cert_dir(tmp_path / "py", ca, ca.issue_cert("py-client"))
    tls = docker.tls.TLSConfig(
        client_cert=(str(files / "cert.pem"), str(files / "key.pem")),
        ca_cert=str(files / "ca.pem"),
        verify=True,
    )
    client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls, version="1.43")
    try:
        assert client.ping()
        image = client.images.list()[0]
        out = client.containers.run(image.id, ["echo", "docker-py"], remove=True)
        assert out == b"docker-py\n"
    finally:
        client.close()


def test_a_client_without_a_good_certificate_fails_the_handshake(
    verified: tuple[Berthd, int], ca: trustme.CA, server_files: Path, tmp_path: Path
) -> None:
    _, port = verified
    anonymous = ssl.create_default_context(cafile=str(server_files / "ca.pem"))
    assert _ping(port, anonymous) == b""
    stranger = trustme.CA()  # a certificate, but from a CA the daemon does not trust
    foreign = ssl.create_default_context(cafile=str(server_files / "ca.pem"))
    stranger.issue_cert("client").configure_cert(foreign)
    assert _ping(port, foreign) == b""
    signed = ssl.create_default_context(cafile=str(server_files / "ca.pem"))
    ca.issue_cert("client").configure_cert(signed)
    assert _ping(port, signed).startswith(b"HTTP/1.1 200")
    p = _docker(port, _cert_dir(tmp_path / "nocert", ca, None), "version")
    assert p.returncode != 0
    # plain HTTP on the TLS port gets no answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: berth\r\n\r\n")
        assert not s.recv(4096).startswith(b"HTTP/1.1 200")


def test_tls_alone_encrypts_without_asking_for_a_certificate(
    server_files: Path, ca: trustme.CA
) -> None:
    port = free_port()
    with running_berthd(_tls_args(port, server_files, "--tls")) as d:
        anonymous = ssl.create_default_context(cafile=str(server_files / "ca.pem"))
        assert _ping(port, anonymous).startswith(b"HTTP/1.1 200")
        warnings = d.docker("info", "--format", "{{json .Warnings}}").stdout
        assert f"https://127.0.0.1:{port} without TLS client verification" in warnings


def _start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """berthd with *args* that must stop before it serves anything."""
    (tmp_path / "daemon.json").write_text("{}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "berth.cli",
            "--data-root",
            str(tmp_path / "data"),
            "--exec-root",
            str(tmp_path / "exec"),
            "--pidfile",
            str(tmp_path / "pid"),
            "--config-file",
            str(tmp_path / "daemon.json"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plain_tcp_away_from_loopback_and_bad_certificates_stop_the_start(
    tmp_path: Path,
) -> None:
    p = _start(tmp_path, "-H", "tcp://0.0.0.0:2375")
    assert p.returncode == 1
    assert "refusing to serve the API on tcp://0.0.0.0:2375 without TLS" in p.stderr
    assert "--tls=false" in p.stderr
    p = _start(tmp_path, *_tls_args(2376, tmp_path / "nowhere", "--tlsverify"))
    assert p.returncode == 1
    assert p.stderr.startswith("berthd: could not load the TLS certificate")
    assert not (tmp_path / "data").exists()  # nothing was started
