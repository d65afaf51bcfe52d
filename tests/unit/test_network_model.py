"""berth.network.model, the pure helpers of berth.network.controller, and
berth.network.service (list filters, inspect, create checks) over a fake controller."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, cast

import pytest

from berth import errdefs
from berth.network.controller import NetworkController, _mac_for, host_nameservers
from berth.network.model import (
    OPT_ENABLE_ICC,
    PREDEFINED,
    Endpoint,
    Network,
    Subnet,
)
from berth.network.service import NetworkService
from berth.types.filters import Filters
from berth.types.network import (
    IPAM,
    ConfigReference,
    IPAMConfig,
    NetworkCreateRequest,
)

# -- model -------------------------------------------------------------------------


def mknet(name: str, driver: str = "bridge", **kw: Any) -> Network:
    kw.setdefault("id", (name.encode().hex() + "0" * 64)[:64])
    kw.setdefault("created", "2025-01-01T00:00:00.000000000Z")
    return Network(name=name, driver=driver, **kw)


def test_predefined() -> None:
    assert mknet("bridge").predefined
    assert mknet("host", "host").predefined
    assert mknet("none", "null").predefined
    assert set(PREDEFINED) == {"bridge", "host", "none"}
    # the name alone is not enough, nor the driver alone
    assert not mknet("host", "bridge").predefined
    assert not mknet("none", "bridge").predefined
    assert not mknet("mynet").predefined
    assert not mknet("mynull", "null").predefined


def test_dns_only_on_user_defined_bridges() -> None:
    assert mknet("mynet").dns
    assert not mknet("bridge").dns
    assert not mknet("host", "host").dns
    assert not mknet("none", "null").dns
    assert mknet("mynet").is_bridge
    assert not mknet("host", "host").is_bridge


def test_subnet_by_family() -> None:
    v4 = Subnet("10.1.0.0/24", gateway="10.1.0.1")
    v6 = Subnet("fd00:1::/64")
    n = mknet("mynet", subnets=[v6, v4])
    assert n.subnet(4) is v4
    assert n.subnet(6) is v6
    assert mknet("other", subnets=[v4]).subnet(6) is None
    assert mknet("empty").subnet(4) is None


def test_subnet_first_of_a_family_wins() -> None:
    a, b = Subnet("10.1.0.0/24"), Subnet("10.2.0.0/24")
    assert mknet("mynet", subnets=[a, b]).subnet(4) is a


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("t", True),
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("T", True),
        ("0", False),
        ("f", False),
        ("false", False),
        ("False", False),
    ],
)
def test_option_bool(value: str, expected: bool) -> None:
    n = mknet("mynet", options={OPT_ENABLE_ICC: value})
    assert n.option_bool(OPT_ENABLE_ICC, not expected) is expected


def test_option_bool_default() -> None:
    n = mknet("mynet")
    assert n.option_bool(OPT_ENABLE_ICC, True) is True
    assert n.option_bool(OPT_ENABLE_ICC, False) is False


def test_subnet_version_and_network() -> None:
    assert Subnet("10.0.0.0/8").version == 4
    assert Subnet("fd00::/64").version == 6
    assert Subnet("10.1.2.3/24").network == ipaddress.ip_network("10.1.2.0/24")


def test_endpoint_addresses() -> None:
    ep = Endpoint(
        id="e",
        network_id="n",
        container_id="c",
        name="web",
        iface="eth0",
        host_veth="veth1",
        mac="02:42:0a:00:00:02",
        ipv4=ipaddress.IPv4Interface("10.0.0.2/24"),
    )
    assert ep.addresses(4) == ["10.0.0.2"]
    assert ep.addresses(6) == []


# -- controller helpers -------------------------------------------------------------


def test_mac_for_ipv4() -> None:
    assert _mac_for(ipaddress.IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert _mac_for(ipaddress.IPv4Address("10.210.255.254")) == "02:42:0a:d2:ff:fe"


def test_mac_for_none_is_random_02_42() -> None:
    macs = {_mac_for(None) for _ in range(8)}
    for mac in macs:
        assert re.fullmatch(r"02:42(:[0-9a-f]{2}){4}", mac), mac
    assert len(macs) > 1


def test_host_nameservers(tmp_path: Path) -> None:
    p = tmp_path / "resolv.conf"
    p.write_text(
        "# generated\n"
        "search example.com\n"
        "nameserver 10.0.0.53\n"
        "  nameserver\t1.1.1.1  \n"
        "#nameserver 9.9.9.9\n"
        "; nameserver 8.8.4.4\n"
        "nameserver\n"
        "options ndots:2\n"
        "nameserver 2001:db8::53\n"
    )
    assert host_nameservers(str(p)) == ["10.0.0.53", "1.1.1.1", "2001:db8::53"]


def test_host_nameservers_missing_or_empty(tmp_path: Path) -> None:
    assert host_nameservers(str(tmp_path / "nope")) == []
    empty = tmp_path / "empty"
    empty.write_text("")
    assert host_nameservers(str(empty)) == []


# -- service over a fake controller -------------------------------------------------


class FakeController:
    """What NetworkService reads of the controller: networks, endpoints, in_use, find;
    create() records its arguments."""

    def __init__(self, nets: list[Network], used: set[str] | None = None) -> None:
        self.nets = nets
        self.used = set(used or ())
        self.eps: dict[str, list[Endpoint]] = {}
        self.created: list[dict[str, Any]] = []

    def networks(self) -> list[Network]:
        return list(self.nets)

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return list(self.eps.get(network_id, []))

    def in_use(self, network_id: str) -> bool:
        return network_id in self.used

    def find(self, ref: str) -> Network:
        for n in self.nets:
            if ref in (n.id, n.name):
                return n
        matches = [n for n in self.nets if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise errdefs.NotFound(f"network {ref} not found")

    def create(self, name: str, **kw: Any) -> Network:
        self.created.append({"name": name, **kw})
        return mknet(name, id="f" * 64)


def _nets() -> list[Network]:
    return [
        mknet(
            "bridge",
            id="b" * 64,
            created="2025-01-01T00:00:01Z",
            subnets=[Subnet("172.17.0.0/16", gateway="172.17.0.1")],
        ),
        mknet("host", "host", id="c" * 64, created="2025-01-01T00:00:02Z"),
        mknet("none", "null", id="d" * 64, created="2025-01-01T00:00:03Z"),
        mknet(
            "frontend",
            id="1234" + "a" * 60,
            created="2025-01-02T00:00:00Z",
            labels={"tier": "web", "env": "prod"},
            subnets=[Subnet("10.210.0.0/24", gateway="10.210.0.1", user=True)],
        ),
        mknet(
            "backend", id="1299" + "a" * 60, created="2025-01-03T00:00:00Z", labels={"tier": "db"}
        ),
        mknet("myfront", id="5678" + "a" * 60, created="2025-01-04T00:00:00Z"),
    ]


@pytest.fixture
def fake() -> FakeController:
    # frontend is in use, backend and myfront are dangling
    return FakeController(_nets(), used={"1234" + "a" * 60})


@pytest.fixture
def svc(fake: FakeController) -> NetworkService:
    return NetworkService(cast(NetworkController, fake))


def names(svc: NetworkService, **filters: list[str]) -> list[str]:
    return [r.name for r in svc.list_networks(Filters(filters))]


ALL = ["bridge", "host", "none", "frontend", "backend", "myfront"]


def test_list_all_sorted_by_created(svc: NetworkService, fake: FakeController) -> None:
    fake.nets.reverse()
    assert names(svc) == ALL


def test_list_name_regex_and_substring(svc: NetworkService) -> None:
    assert names(svc, name=["front"]) == ["frontend", "myfront"]
    assert names(svc, name=["^front"]) == ["frontend"]
    assert names(svc, name=["end$"]) == ["frontend", "backend"]
    assert names(svc, name=["^b"]) == ["bridge", "backend"]
    assert names(svc, name=["host", "none"]) == ["host", "none"]
    assert names(svc, name=["nomatch"]) == []


def test_list_id_prefix(svc: NetworkService) -> None:
    assert names(svc, id=["12"]) == ["frontend", "backend"]
    assert names(svc, id=["1234"]) == ["frontend"]
    assert names(svc, id=["1234" + "a" * 60]) == ["frontend"]
    # a prefix, not a substring
    assert names(svc, id=["aaaa"]) == []


def test_list_driver(svc: NetworkService) -> None:
    assert names(svc, driver=["host"]) == ["host"]
    assert names(svc, driver=["null", "host"]) == ["host", "none"]
    assert names(svc, driver=["bridge"]) == ["bridge", "frontend", "backend", "myfront"]
    assert names(svc, driver=["bri"]) == []  # exact


def test_list_label(svc: NetworkService) -> None:
    assert names(svc, label=["tier"]) == ["frontend", "backend"]
    assert names(svc, label=["tier=web"]) == ["frontend"]
    assert names(svc, label=["tier=web", "env=prod"]) == ["frontend"]
    assert names(svc, label=["tier=web", "env=dev"]) == []
    assert names(svc, label=["tier="]) == []
    assert names(svc, label=["nope"]) == []


def test_list_type(svc: NetworkService) -> None:
    assert names(svc, type=["builtin"]) == ["bridge", "host", "none"]
    assert names(svc, type=["custom"]) == ["frontend", "backend", "myfront"]
    assert names(svc, type=["custom", "builtin"]) == ALL


def test_list_type_invalid(svc: NetworkService) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="type"):
        svc.list_networks(Filters({"type": ["foo"]}))


def test_list_dangling(svc: NetworkService) -> None:
    assert names(svc, dangling=["true"]) == ["backend", "myfront"]
    assert names(svc, dangling=["1"]) == ["backend", "myfront"]
    # not dangling: the predefined ones and those in use (dockerd's filterNetworkByUse)
    assert names(svc, dangling=["false"]) == ["bridge", "host", "none", "frontend"]
    assert names(svc, dangling=["0"]) == ["bridge", "host", "none", "frontend"]


@pytest.mark.parametrize("value", [["maybe"], ["true", "false"], []])
def test_list_dangling_invalid(svc: NetworkService, value: list[str]) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="dangling"):
        svc.list_networks(Filters({"dangling": value}))


def test_list_scope(svc: NetworkService) -> None:
    assert names(svc, scope=["local"]) == ALL
    assert names(svc, scope=["swarm"]) == []
    assert names(svc, scope=["global", "local"]) == ALL


def test_list_combined(svc: NetworkService) -> None:
    assert names(svc, type=["custom"], dangling=["true"], name=["front"]) == ["myfront"]
    assert names(svc, driver=["bridge"], label=["tier"], id=["1299"]) == ["backend"]


def test_list_unknown_filter(svc: NetworkService) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="invalid filter 'until'"):
        svc.list_networks(Filters({"until": ["1h"]}))


def test_list_has_no_containers(svc: NetworkService, fake: FakeController) -> None:
    fake.eps["1234" + "a" * 60] = [_endpoint()]
    for r in svc.list_networks(Filters()):
        assert r.containers == {}
        assert r.scope == "local"


def test_list_resource_shape(svc: NetworkService) -> None:
    by = {r.name: r for r in svc.list_networks(Filters())}
    assert by["bridge"].ipam.options is None  # predefined: Go's nil
    assert by["frontend"].ipam.options == {}
    assert by["host"].ipam.config is None
    assert by["bridge"].enable_ipv4 is True
    assert by["host"].enable_ipv4 is False  # only bridge networks
    fe = by["frontend"]
    assert fe.labels == {"tier": "web", "env": "prod"}
    assert fe.ipam.config is not None
    assert fe.ipam.config[0].subnet == "10.210.0.0/24"
    assert fe.ipam.config[0].gateway == "10.210.0.1"
    assert fe.ipam.config[0].aux_addresses is None


def _endpoint() -> Endpoint:
    return Endpoint(
        id="e" * 64,
        network_id="1234" + "a" * 60,
        container_id="9" * 64,
        name="web",
        iface="eth0",
        host_veth="vethabc",
        mac="02:42:0a:d2:00:02",
        ipv4=ipaddress.IPv4Interface("10.210.0.2/24"),
    )


def test_inspect(svc: NetworkService, fake: FakeController) -> None:
    fake.eps["1234" + "a" * 60] = [_endpoint()]
    for scope in ("", "local"):
        r = svc.inspect_network("frontend", verbose=False, scope=scope)
        assert r.id == "1234" + "a" * 60
        ep = r.containers["9" * 64]
        assert ep.name == "web"
        assert ep.endpoint_id == "e" * 64
        assert ep.mac_address == "02:42:0a:d2:00:02"
        assert ep.ipv4_address == "10.210.0.2/24"
        assert ep.ipv6_address == ""
    assert svc.inspect_network("1299", verbose=False, scope="").name == "backend"


@pytest.mark.parametrize("scope", ["swarm", "global"])
def test_inspect_other_scope_not_found(svc: NetworkService, scope: str) -> None:
    with pytest.raises(errdefs.NotFound, match="network frontend not found"):
        svc.inspect_network("frontend", verbose=False, scope=scope)


def test_inspect_missing(svc: NetworkService) -> None:
    with pytest.raises(errdefs.NotFound):
        svc.inspect_network("nope", verbose=False, scope="")


# -- create checks ------------------------------------------------------------------


def test_create_empty_name(svc: NetworkService, fake: FakeController) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="name"):
        svc.create_network(NetworkCreateRequest(name=""))
    assert fake.created == []


@pytest.mark.parametrize(
    "req",
    [
        NetworkCreateRequest(name="n", ingress=True),
        NetworkCreateRequest(name="n", scope="swarm"),
        NetworkCreateRequest(name="n", scope="global"),
        NetworkCreateRequest(name="n", config_only=True),
        NetworkCreateRequest(name="n", config_from=ConfigReference(network="base")),
    ],
)
def test_create_not_implemented(
    svc: NetworkService, fake: FakeController, req: NetworkCreateRequest
) -> None:
    with pytest.raises(errdefs.NotImplementedFeature):
        svc.create_network(req)
    assert fake.created == []


@pytest.mark.parametrize(
    "config",
    [IPAMConfig(ip_range="10.0.0.0/24"), IPAMConfig(gateway="10.0.0.1")],
)
def test_create_range_or_gateway_without_subnet(
    svc: NetworkService, fake: FakeController, config: IPAMConfig
) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="subnet"):
        svc.create_network(NetworkCreateRequest(name="n", ipam=IPAM(config=[config])))
    assert fake.created == []


def test_create_bad_subnet(svc: NetworkService, fake: FakeController) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="bogus"):
        svc.create_network(
            NetworkCreateRequest(name="n", ipam=IPAM(config=[IPAMConfig(subnet="bogus")]))
        )
    assert fake.created == []


def test_create_subnet_with_host_bits_refused(svc: NetworkService) -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"it should be 10\.1\.2\.0/24"):
        svc.create_network(
            NetworkCreateRequest(name="n", ipam=IPAM(config=[IPAMConfig(subnet="10.1.2.3/24")]))
        )


def test_create_aux_without_subnet_refused(svc: NetworkService) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        svc.create_network(
            NetworkCreateRequest(
                name="n", ipam=IPAM(config=[IPAMConfig(aux_addresses={"a": "10.0.0.5"})])
            )
        )


def test_create_passes_request_to_controller(svc: NetworkService, fake: FakeController) -> None:
    resp = svc.create_network(
        NetworkCreateRequest(
            name="n",
            internal=True,
            attachable=True,
            options={"com.docker.network.driver.mtu": "1400"},
            labels={"a": "b"},
            ipam=IPAM(
                options={"o": "v"},
                config=[
                    IPAMConfig(
                        subnet="10.5.0.0/16",
                        ip_range="10.5.1.0/24",
                        gateway="10.5.0.254",
                        aux_addresses={"router": "10.5.0.253"},
                    )
                ],
            ),
        )
    )
    assert resp.id == "f" * 64
    [call] = fake.created
    assert call["name"] == "n"
    assert call["driver"] == "bridge"
    assert call["internal"] is True and call["attachable"] is True
    assert call["enable_ipv4"] is True
    assert call["enable_ipv6"] is False
    assert call["ipam_driver"] == "default"
    assert call["ipam_options"] == {"o": "v"}
    assert call["labels"] == {"a": "b"}
    assert call["options"] == {"com.docker.network.driver.mtu": "1400"}
    assert call["subnets"] == [
        Subnet(
            "10.5.0.0/16",
            gateway="10.5.0.254",
            ip_range="10.5.1.0/24",
            aux={"router": "10.5.0.253"},
        )
    ]


def test_create_defaults(svc: NetworkService, fake: FakeController) -> None:
    svc.create_network(NetworkCreateRequest(name="n", enable_ipv4=False, enable_ipv6=True))
    [call] = fake.created
    assert call["enable_ipv4"] is False
    assert call["enable_ipv6"] is True
    assert call["subnets"] == []
