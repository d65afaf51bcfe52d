"""IPv6: user networks with --ipv6, and the default bridge with berthd --ipv6."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing import Berthd, running_berthd, unique_name


def _http_get(host: str, port: int, path: str = "/hostname") -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect((host, port))
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return data.decode(errors="replace").split("\r\n\r\n", 1)[-1]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def v6net(berthd: Berthd) -> Iterator[str]:
    name = unique_name("v6net")
    berthd.docker("network", "create", "--ipv6", "--subnet", "fd42:7b1::/64", name)
    yield name
    berthd.docker("network", "rm", name, check=False)


def test_user_network_is_dual_stack(berthd: Berthd, cleanup: list[str], v6net: str) -> None:
    web = unique_name("v6web")
    cleanup.append(web)
    port = _free_port()
    berthd.docker(
        "run", "-d", "--name", web, "--network", v6net, "-p", f"{port}:80",
        "busybox", "httpd", "-f", "-p", "80", "-h", "/etc",
    )  # fmt: skip
    nets = json.loads(
        berthd.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", web).stdout
    )
    ep = nets[v6net]
    assert ep["GlobalIPv6Address"].startswith("fd42:7b1::") and ep["GlobalIPv6PrefixLen"] == 64
    assert ep["IPv6Gateway"] == "fd42:7b1::1"
    assert ep["IPAddress"]  # IPv4 beside it
    ports = berthd.docker("port", web, "80").stdout.split()
    assert f"0.0.0.0:{port}" in ports and f"[::]:{port}" in ports
    # both families reach it through berth's own gateway addresses
    assert _http_get(ep["Gateway"], port).strip() == _http_get("fd42:7b1::1", port).strip()
    # AAAA and ping6 by name from another container of the network
    out = berthd.docker(
        "run", "--rm", "--network", v6net, "busybox", "sh", "-c",
        f"nslookup -type=AAAA {web}; ping -6 -c1 -W2 {web}",
    ).stdout  # fmt: skip
    assert ep["GlobalIPv6Address"] in out, out
    inspect = json.loads(berthd.docker("network", "inspect", v6net).stdout)[0]
    assert inspect["EnableIPv6"] is True
    subnets = {c["Subnet"] for c in inspect["IPAM"]["Config"]}
    assert "fd42:7b1::/64" in subnets and len(subnets) == 2


def test_ipv6_subnet_without_ipv6_is_refused(berthd: Berthd) -> None:
    name = unique_name("nov6")
    proc = berthd.docker("network", "create", "--subnet", "fd42:7b2::/64", name, check=False)
    if proc.returncode == 0:
        berthd.docker("network", "rm", name)
    assert proc.returncode != 0 and "IPv6" in proc.stderr, proc.stderr


def test_default_bridge_with_daemon_ipv6(tmp_path: Path, busybox_tar: Path) -> None:
    with running_berthd(["--ipv6", "--fixed-cidr-v6", "fd42:7b3::/64"]) as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        out = d.docker(
            "run", "--rm", "busybox", "sh", "-c", "ip -6 addr show eth0; ip -6 route"
        ).stdout
        assert "inet6 fd42:7b3::2/64" in out and "default via fd42:7b3::1" in out, out
        bridge = json.loads(d.docker("network", "inspect", "bridge").stdout)[0]
        assert bridge["EnableIPv6"] is True
