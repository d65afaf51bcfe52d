"""Legacy links (``--link``): /etc/hosts entries on the default bridge, per-container
aliases on a user-defined network, ``docker rm --link``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from berth.testing import Berthd, unique_name


@pytest.fixture
def target(berthd: Berthd, cleanup: list[str]) -> str:
    name = unique_name("linkdb")
    cleanup.append(name)
    berthd.docker(
        "run", "-d", "--name", name, "--expose", "5432", "--expose", "53/udp",
        "-e", "POSTGRES_DB=app", "busybox", "sleep", "300",
    )  # fmt: skip
    return name


def _ip(berthd: Berthd, name: str, network: str = "bridge") -> str:
    fmt = "{{json .NetworkSettings.Networks}}"
    nets = json.loads(berthd.docker("inspect", "-f", fmt, name).stdout)
    return str(nets[network]["IPAddress"])


def test_link_on_the_default_bridge_writes_hosts(
    berthd: Berthd, cleanup: list[str], target: str
) -> None:
    web = unique_name("linkweb")
    cleanup.append(web)
    berthd.docker(
        "run", "-d", "--name", web, "--link", f"{target}:dbalias", "busybox", "sleep", "300"
    )
    hosts = berthd.docker("exec", web, "cat", "/etc/hosts").stdout
    hostname = berthd.docker("inspect", "-f", "{{.Config.Hostname}}", target).stdout.strip()
    assert f"{_ip(berthd, target)}\tdbalias {hostname} {target}\n" in hosts, hosts
    ping = berthd.docker("exec", web, "ping", "-c1", "-W2", "dbalias", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    links = json.loads(berthd.docker("inspect", "-f", "{{json .HostConfig.Links}}", web).stdout)
    assert links == [f"/{target}:/{web}/dbalias"]
    env = set(berthd.docker("exec", web, "env").stdout.split())
    ip = _ip(berthd, target)
    assert {
        f"DBALIAS_NAME=/{web}/dbalias",
        f"DBALIAS_PORT=udp://{ip}:53",
        f"DBALIAS_PORT_5432_TCP=tcp://{ip}:5432",
        f"DBALIAS_PORT_5432_TCP_ADDR={ip}",
        "DBALIAS_PORT_5432_TCP_PORT=5432",
        "DBALIAS_PORT_5432_TCP_PROTO=tcp",
        f"DBALIAS_PORT_53_UDP=udp://{ip}:53",
        "DBALIAS_ENV_POSTGRES_DB=app",
    } <= env, env
    # docker rm --link takes it out of the parent's config, and leaves both containers
    berthd.docker("rm", "--link", f"/{web}/dbalias")
    links = json.loads(berthd.docker("inspect", "-f", "{{json .HostConfig.Links}}", web).stdout)
    assert not links
    assert berthd.docker("inspect", target).returncode == 0


def test_link_to_a_missing_container_is_refused(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("linkbad")
    cleanup.append(name)
    proc = berthd.docker(
        "create", "--name", name, "--link", "nosuchcontainer:x", "busybox", "true", check=False
    )
    assert proc.returncode != 0
    assert "could not get container for nosuchcontainer" in proc.stderr
    assert berthd.docker("inspect", name, check=False).returncode != 0


def test_link_to_a_stopped_container_fails_at_start(berthd: Berthd, cleanup: list[str]) -> None:
    stopped = unique_name("linkstopped")
    web = unique_name("linkweb")
    cleanup += [stopped, web]
    berthd.docker("create", "--name", stopped, "busybox", "true")
    berthd.docker("create", "--name", web, "--link", stopped, "busybox", "sleep", "300")
    proc = berthd.docker("start", web, check=False)
    assert proc.returncode != 0
    assert f"Cannot link to a non running container: /{stopped} AS /{web}/{stopped}" in proc.stderr
    state = berthd.docker("inspect", "-f", "{{.State.Status}}", web).stdout.strip()
    assert state == "created"
    assert (
        "link" not in berthd.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", web).stdout
    )


@pytest.fixture
def user_network(berthd: Berthd) -> Iterator[str]:
    name = unique_name("linknet")
    berthd.docker("network", "create", name)
    yield name
    berthd.docker("network", "rm", name, check=False)


def test_link_on_a_user_network_is_an_alias_for_that_container_only(
    berthd: Berthd, cleanup: list[str], user_network: str
) -> None:
    db = unique_name("linkdb")
    web = unique_name("linkweb")
    other = unique_name("linkother")
    cleanup += [db, web, other]
    berthd.docker("run", "-d", "--name", db, "--network", user_network, "busybox", "sleep", "300")
    for name, extra in ((web, ["--link", f"{db}:dbalias"]), (other, [])):
        berthd.docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            user_network,
            *extra,
            "busybox",
            "sleep",
            "300",
        )
    ip = _ip(berthd, db, user_network)
    seen = berthd.docker("exec", web, "nslookup", "dbalias", check=False).stdout
    assert ip in seen, seen
    # nobody else on the network knows the alias (dockerd: the link is the container's own)
    unseen = berthd.docker("exec", other, "timeout", "3", "nslookup", "dbalias", check=False).stdout
    assert ip not in unseen, unseen


def test_inspect_of_a_reference_with_a_registry_port_is_not_a_method_error(berthd: Berthd) -> None:
    """The route for ``rm --link /parent/alias`` must not swallow ``GET
    /containers/<host:port/repo:tag>/json``: the CLI needs its 404 to look for an image."""
    proc = berthd.docker("inspect", "127.0.0.1:5999/nosuch:latest", check=False)
    assert proc.returncode != 0
    assert "No such object" in proc.stderr and "method not allowed" not in proc.stderr, proc
