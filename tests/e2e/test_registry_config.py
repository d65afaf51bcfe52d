"""berthd's registry settings with the real CLI: ``--registry-mirror``, ``--insecure-registry``
(by name and by CIDR), CAs from ``<certs dir>/<host:port>/ca.crt``, and what ``docker info``
shows of them; a setting given both as a flag and in daemon.json stops the daemon.

Registries that must not count as loopback listen on addresses of a veth pair this module
makes (in 198.18.0.0/15, the benchmarking range: never routed, and local here) and removes.
Nothing leaves the host: the only Docker Hub reference pulled (``busybox``, through the mirror)
is pulled once the mirror is known to hold all of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import Berthd, running_berthd
from tests.e2e.registries import (
    OPENSSL,
    OciImage,
    Registry,
    missing_tools,
    oci_image,  # noqa: F401  (fixtures are taken from the module's namespace)
    registry,  # noqa: F401
)

IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "/sbin/ip"
_BENCH_NET = ipaddress.ip_network("198.18.0.0/15")


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, text=True)


def _taken_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        [IP, "-4", "-o", "addr", "show"], check=True, capture_output=True, text=True
    ).stdout
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    return nets


@pytest.fixture(scope="module")
def host_addrs() -> Iterator[tuple[str, str]]:
    """Two addresses of this host that are not loopback, in different /24s, on a veth
    pair of the module's own (removed after it)."""
    if not Path(IP).exists():
        pytest.skip(f"{IP} is missing (Debian's iproute2)")
    taken = _taken_networks()
    subnets = [
        net for net in _BENCH_NET.subnets(new_prefix=24) if not any(net.overlaps(t) for t in taken)
    ]
    first, second = secrets.SystemRandom().sample(subnets, 2)
    addrs = (str(first[77]), str(second[77]))
    name = f"brg{secrets.token_hex(4)}"
    peer = name + "p"
    _ip("link", "add", name, "type", "veth", "peer", "name", peer)
    try:
        for dev in (name, peer):
            _ip("link", "set", "dev", dev, "addrgenmode", "none")  # no IPv6 chatter
        for addr in addrs:
            _ip("addr", "add", f"{addr}/32", "dev", name)
        for dev in (name, peer):
            _ip("link", "set", "dev", dev, "up")
        yield addrs
    finally:
        subprocess.run([IP, "link", "delete", name], check=False, capture_output=True)


class AddrRegistry(Registry):
    """A ``docker-registry`` (no auth) on *addr* instead of 127.0.0.1, plain HTTP or, with
    *tls* (certificate, key, CA), HTTPS."""

    def __init__(self, directory: Path, addr: str, tls: tuple[Path, Path, Path] | None) -> None:
        super().__init__("none", directory)
        self.addr = addr
        self.tls = tls

    @property
    def host(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.tls:
            cert, key, _ca = self.tls
            cfg["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
        return cfg

    def _wait_ready(self, timeout: float) -> bool:
        if self.tls is None:
            return super()._wait_ready(timeout)
        assert self.proc is not None
        ctx = ssl.create_default_context(cafile=str(self.tls[2]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/v2/", timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return True
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False


@contextlib.contextmanager
def registry_on(addr: str, tls: tuple[Path, Path, Path] | None = None) -> Iterator[AddrRegistry]:
    reason = missing_tools(token=tls is not None)
    if reason:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="berth-registry-addr-"))
    reg = AddrRegistry(directory, addr, tls)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)


def make_server_cert(directory: Path, addr: str) -> tuple[Path, Path, Path]:
    """A CA made for the test and a certificate it signs for the IP *addr*: (cert, key, CA)."""
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-subj", "/CN=berth test CA", "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
        "-subj", f"/CN={addr}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName=IP:{addr}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-sha256",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key, ca


def registry_config(d: Berthd) -> dict[str, Any]:
    out = d.docker("info", "--format", "{{json .RegistryConfig}}").stdout
    config: dict[str, Any] = json.loads(out)
    return config


def image_id(d: Berthd, ref: str) -> str:
    return d.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def pull_fails(d: Berthd, ref: str) -> str:
    proc = d.docker("pull", ref, check=False)
    assert proc.returncode != 0, proc
    gone = d.docker("image", "inspect", ref, check=False)
    assert gone.returncode != 0, "a failed pull left an image"
    return proc.stderr


def test_pull_through_a_mirror(
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
) -> None:
    mirror = registry
    digest = mirror.push(oci_image, "library/busybox:latest")
    # The mirror must hold every part of the image before berthd is asked for it: a mirror
    # that failed would send berthd on to Docker Hub.
    assert mirror.manifest("library/busybox", "latest").status == 200
    amd64 = oci_image.images["amd64"]
    for blob in (amd64.manifest, amd64.config, *oci_image.layers):
        if blob is amd64.manifest:
            assert mirror.manifest("library/busybox", blob.digest).status == 200
        else:
            assert mirror.blob("library/busybox", blob.digest).status == 200

    with running_berthd(["--registry-mirror", mirror.url]) as d:
        listed = f"{mirror.url}/"  # dockerd's normal form
        config = registry_config(d)
        assert config["Mirrors"] == [listed]
        assert config["IndexConfigs"]["docker.io"] == {
            "Name": "docker.io",
            "Mirrors": [listed],
            "Secure": True,
            "Official": True,
        }
        assert f"Registry Mirrors:\n  {listed}\n" in d.docker("info").stdout

        out = d.docker("pull", "busybox").stdout
        assert "Using default tag: latest" in out
        assert f"Digest: {digest}" in out
        assert "Status: Downloaded newer image for busybox:latest" in out
        assert image_id(d, "busybox") == amd64.image_id  # the mirror's image, no other
        digests = d.docker("image", "inspect", "--format", "{{json .RepoDigests}}", "busybox")
        assert json.loads(digests.stdout) == [f"busybox@{digest}"]
        run = d.docker("run", "--rm", "busybox", "cat", "/" + oci_image.layer2_path)
        assert run.stdout == oci_image.layer2_content.decode()


def test_max_concurrent_downloads_reaches_the_pull(
    registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
) -> None:
    """With one download at a time, the second layer waits for the first (dockerd's
    "Waiting"); three at a time, the default, leave none of the two waiting."""
    registry.push(oci_image, "layers:two")
    ref = f"{registry.host}/layers:two"
    first, second = (layer.digest.split(":", 1)[1][:12] for layer in oci_image.layers)
    with running_berthd(["--max-concurrent-downloads", "1"]) as d:
        out = d.docker("pull", ref).stdout
        assert f"{second}: Waiting" in out, out
        assert f"{first}: Waiting" not in out, out
    with running_berthd() as d:
        out = d.docker("pull", ref).stdout
        assert "Waiting" not in out, out
        assert f"{second}: Pull complete" in out, out


def test_insecure_registry_by_name_and_by_cidr(
    host_addrs: tuple[str, str],
    oci_image: OciImage,  # noqa: F811
) -> None:
    first, second = host_addrs
    cidr = str(ipaddress.ip_network(f"{second}/24", strict=False))
    with contextlib.ExitStack() as stack:
        named = stack.enter_context(registry_on(first))
        by_cidr = stack.enter_context(registry_on(second))
        other_port = stack.enter_context(registry_on(first))  # named registry's host, not port
        for reg in (named, by_cidr, other_port):
            reg.push(oci_image, "busybox:latest")
            assert reg.manifest("busybox", "latest").status == 200

        # Not loopback, not configured: https only, and the registry answers plain HTTP.
        with running_berthd() as d:
            ref = f"{named.host}/busybox:latest"
            err = pull_fails(d, ref)
            assert (
                f'Get "https://{named.host}/v2/": http: server gave HTTP response to HTTPS client'
                in err
            ), err

        with running_berthd(["--insecure-registry", named.host, "--insecure-registry", cidr]) as d:
            config = registry_config(d)
            assert config["InsecureRegistryCIDRs"] == [cidr, "::1/128", "127.0.0.0/8"]
            assert config["IndexConfigs"][named.host] == {
                "Name": named.host,
                "Mirrors": [],
                "Secure": False,
                "Official": False,
            }
            assert config["IndexConfigs"]["docker.io"]["Secure"] is True
            assert config["Mirrors"] == []
            info = d.docker("info").stdout
            assert (
                f"Insecure Registries:\n  {named.host}\n  {cidr}\n  ::1/128\n  127.0.0.0/8\n"
                in info
            ), info
            assert "Registry Mirrors:" not in info

            amd64 = oci_image.images["amd64"]
            for reg in (named, by_cidr):
                ref = f"{reg.host}/busybox:latest"
                out = d.docker("pull", ref).stdout
                assert f"Status: Downloaded newer image for {ref}" in out
                assert image_id(d, ref) == amd64.image_id

            # a name is host *and* port
            err = pull_fails(d, f"{other_port.host}/busybox:latest")
            assert "http: server gave HTTP response to HTTPS client" in err, err


def test_tls_registry_verified_with_a_ca_from_the_certs_dir(
    host_addrs: tuple[str, str],
    oci_image: OciImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    addr = host_addrs[0]
    pki = tmp_path / "pki"
    pki.mkdir()
    tls = make_server_cert(pki, addr)
    certs_dir = tmp_path / "certs.d"
    with registry_on(addr, tls) as trusted, registry_on(addr, tls) as untrusted:
        for reg in (trusted, untrusted):
            reg.push(oci_image, "busybox:latest")
        # only the first registry's host:port has the CA
        (certs_dir / trusted.host).mkdir(parents=True)
        shutil.copy(tls[2], certs_dir / trusted.host / "ca.crt")

        with running_berthd(["--registry-certs-dir", str(certs_dir)]) as d:
            ref = f"{trusted.host}/busybox:latest"
            out = d.docker("pull", ref).stdout
            assert f"Status: Downloaded newer image for {ref}" in out
            assert image_id(d, ref) == oci_image.images["amd64"].image_id

            err = pull_fails(d, f"{untrusted.host}/busybox:latest")
            assert f'Get "https://{untrusted.host}/v2/": tls: failed to verify certificate' in err
            assert "x509: certificate signed by unknown authority" in err, err


def test_flag_and_daemon_json_key_together_stop_the_daemon(tmp_path: Path) -> None:
    d = Berthd(tmp_path)
    for key, value, flag in (
        ("insecure-registries", ["reg.example:5000"], ["--insecure-registry", "reg.example:5001"]),
        ("registry-mirrors", ["http://127.0.0.1:1"], ["--registry-mirror", "http://127.0.0.1:2"]),
        ("max-concurrent-downloads", 4, ["--max-concurrent-downloads", "2"]),
    ):
        (tmp_path / "daemon.json").write_text(json.dumps({key: value}))
        proc = subprocess.run(
            [*d.args(), *flag], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 1, proc
        assert f"specified both as a flag and in the configuration file: {key}" in proc.stderr, (
            proc.stderr
        )
    (tmp_path / "daemon.json").write_text("{}")
    for flag, expected in (
        (["--registry-mirror", "mirror.example:5000"], "invalid mirror: no scheme specified"),
        (["--insecure-registry", "[fe80::]/64"], 'invalid host "[fe80::]/64"'),
        (["--max-concurrent-uploads=-1"], "invalid max concurrent uploads: -1"),
    ):
        proc = subprocess.run(
            [*d.args(), *flag], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 1, proc
        assert expected in proc.stderr, proc.stderr
    assert not d.data_root.exists()  # refused before anything was made
