"""berth.daemon.validate: create-time checks with dockerd's messages."""

from __future__ import annotations

from typing import Any

import pytest

from berth import errdefs
from berth.daemon.validate import (
    json_log_options,
    parse_size,
    refuse_unsupported,
    split_proto_port,
    validate_container_config,
    validate_exposed_ports,
    validate_extra_host,
    validate_healthcheck,
    validate_port_bindings,
    validate_resources,
    validate_restart_policy,
)
from berth.types.container import (
    BindOptions,
    Config,
    EndpointSettings,
    HealthConfig,
    HostConfig,
    Mount,
    NetworkingConfig,
    PortBinding,
    RestartPolicy,
    VolumeOptions,
)
from berth.types.wire import Empty

MS = 1_000_000


def message(exc: pytest.ExceptionInfo[errdefs.InvalidParameter]) -> str:
    return str(exc.value)


# -- restart policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [("", 0), ("", 5), ("no", 0), ("always", 0), ("unless-stopped", 0), ("on-failure", 0),
     ("on-failure", 3)],
)  # fmt: skip
def test_valid_restart_policies(name: str, count: int) -> None:
    validate_restart_policy(RestartPolicy(name=name, maximum_retry_count=count))


@pytest.mark.parametrize(
    ("name", "count", "expected"),
    [
        (
            "always",
            1,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            "no",
            -1,
            "invalid restart policy: maximum retry count can only be used with 'on-failure' "
            "and cannot be negative",
        ),
        (
            "unless-stopped",
            2,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        ("on-failure", -1, "invalid restart policy: maximum retry count cannot be negative"),
        (
            "sometimes",
            0,
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'",
        ),
        (
            "Always",
            0,
            "invalid restart policy: unknown policy 'Always'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'",
        ),
    ],
)
def test_invalid_restart_policies(name: str, count: int, expected: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_restart_policy(RestartPolicy(name=name, maximum_retry_count=count))
    assert message(exc) == expected


# -- container config -------------------------------------------------------------


def test_validate_container_config_cleans_workdir() -> None:
    cfg = Config(working_dir="/srv//app/../x/", env=["A=1", "B=", "C"], stop_signal="SIGTERM")
    validate_container_config(cfg)
    assert cfg.working_dir == "/srv/x"
    validate_container_config(Config())


def test_relative_workdir() -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_container_config(Config(working_dir="srv"))
    assert message(exc) == (
        "the working directory 'srv' is invalid, it needs to be an absolute path"
    )


@pytest.mark.parametrize("env", ["=x", "=", ""])
def test_bad_env(env: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_container_config(Config(env=["OK=1", env]))
    assert message(exc) == f"invalid environment variable: {env}"


def test_bad_stop_signal() -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_container_config(Config(stop_signal="SIGNOPE"))
    assert message(exc) == "invalid signal: SIGNOPE"
    validate_container_config(Config(stop_signal="9"))


def test_container_config_checks_the_healthcheck() -> None:
    with pytest.raises(errdefs.InvalidParameter, match="Interval in Healthcheck"):
        validate_container_config(Config(healthcheck=HealthConfig(interval=1)))


@pytest.mark.parametrize(
    ("hc", "expected"),
    [
        (HealthConfig(interval=MS - 1), "Interval in Healthcheck cannot be less than 1ms"),
        (HealthConfig(timeout=1), "Timeout in Healthcheck cannot be less than 1ms"),
        (HealthConfig(start_period=5), "StartPeriod in Healthcheck cannot be less than 1ms"),
        (HealthConfig(start_interval=-1), "StartInterval in Healthcheck cannot be less than 1ms"),
        (HealthConfig(retries=-1), "Retries in Healthcheck cannot be negative"),
    ],
)
def test_invalid_healthcheck(hc: HealthConfig, expected: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_healthcheck(hc)
    assert message(exc) == expected


def test_valid_healthcheck() -> None:
    validate_healthcheck(None)
    validate_healthcheck(HealthConfig())
    validate_healthcheck(
        HealthConfig(test=["CMD", "x"], interval=MS, timeout=MS, start_period=0, retries=0)
    )


# -- ports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("80", ("tcp", "80")),
        ("80/udp", ("udp", "80")),
        ("80/", ("tcp", "80")),
        ("", ("", "")),
        ("/udp", ("", "")),
        ("1-5/sctp", ("sctp", "1-5")),
    ],
)
def test_split_proto_port(raw: str, expected: tuple[str, str]) -> None:
    assert split_proto_port(raw) == expected


def _hc(bindings: dict[str, list[PortBinding] | None]) -> HostConfig:
    return HostConfig(port_bindings=bindings)


def test_valid_port_bindings() -> None:
    validate_port_bindings(HostConfig())
    validate_port_bindings(
        _hc(
            {
                "80/tcp": [PortBinding(HostIp="0.0.0.0", HostPort="8080")],
                "53/udp": [PortBinding(HostPort="")],
                "443": [PortBinding(HostIp="::1", HostPort="8000-8010")],
                "22/tcp": None,
                "23/tcp": [PortBinding(HostIp="[::]", HostPort="65535")],
            }
        )
    )


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        ({"foo": []}, 'invalid port specification: "foo"'),
        ({"foo/tcp": []}, 'invalid port specification: "foo"'),
        ({"65536/tcp": []}, 'invalid port specification: "65536"'),
        ({"-1/tcp": []}, 'invalid port specification: "-1"'),
        ({"80-81/tcp": []}, 'invalid port specification: "80-81"'),
        ({"80/tcp": [PortBinding(HostPort="bar")]}, 'invalid port specification: "bar"'),
        ({"80/tcp": [PortBinding(HostPort="9-8")]}, 'invalid port specification: "9-8"'),
        ({"80/tcp": [PortBinding(HostPort="70000")]}, 'invalid port specification: "70000"'),
        ({"80/tcp": [PortBinding(HostPort="+80")]}, 'invalid port specification: "+80"'),
        (
            {"80/tcp": [PortBinding(HostIp="localhost", HostPort="1")]},
            "invalid host IP address: localhost",
        ),
    ],
)
def test_invalid_port_bindings(
    bindings: dict[str, list[PortBinding] | None], expected: str
) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_port_bindings(_hc(bindings))
    assert message(exc) == expected


def test_exposed_ports() -> None:
    validate_exposed_ports(Config(exposed_ports={"80/tcp": Empty(), "53/UDP": Empty()}))
    validate_exposed_ports(Config(exposed_ports={"1000-2000/tcp": Empty(), "9": Empty()}))
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_exposed_ports(Config(exposed_ports={"80/icmp": Empty()}))
    assert message(exc) == "invalid proto: icmp in exposed port '80/icmp'"
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_exposed_ports(Config(exposed_ports={"x/tcp": Empty()}))
    assert message(exc) == 'invalid port specification: "x/tcp"'


@pytest.mark.parametrize(
    "value",
    ["db:10.0.0.2", "db=10.0.0.2", "gw:host-gateway", "gw=host-gateway", "v6:::1", "v6=::1",
     "v6=[::1]", "v6:[2001:db8::1]", "v4=[10.0.0.1]"],
)  # fmt: skip
def test_valid_extra_hosts(value: str) -> None:
    validate_extra_host(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nohost", 'bad format for add-host: "nohost"'),
        (":10.0.0.1", 'bad format for add-host: ":10.0.0.1"'),
        ("=10.0.0.1", 'bad format for add-host: "=10.0.0.1"'),
        ("a:b=10.0.0.1", 'bad format for add-host: "a:b=10.0.0.1"'),
        ("db:notanip", 'invalid IP address in add-host: "notanip"'),
        ("db=[bad]", 'invalid IP address in add-host: "bad"'),
        ("db=", 'invalid IP address in add-host: ""'),
    ],
)
def test_invalid_extra_hosts(value: str, expected: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_extra_host(value)
    assert message(exc) == expected


# -- sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("10", 10),
        ("10b", 10),
        ("10B", 10),
        ("1k", 1024),
        ("1kb", 1024),
        ("1KiB", 1024),
        ("10m", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("10mb", 10 * 1024**2),
        ("10MiB", 10 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("2g", 2 * 1024**3),
        ("1t", 1024**4),
        ("1TB", 1024**4),
        ("1p", 1024**5),
        (" 64m ", 64 * 1024**2),
        ("0.5k", 512),
    ],
)
def test_parse_size(value: str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["", "m", "-1", "-1m", "10x", "10kk", "10bb", "10ib", "10bib", "1mbb", "inf", "nan"]
)
def test_parse_size_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


# -- refused rather than accepted and ignored ----------------------------------------------

_PORTS: dict[str, list[PortBinding] | None] = {"80/tcp": [PortBinding(HostPort="8080")]}


def _net(name: str = "default", **fields: Any) -> NetworkingConfig:
    return NetworkingConfig(endpoints_config={name: EndpointSettings(**fields)})


@pytest.mark.parametrize(
    ("hc", "net"),
    [
        (HostConfig(network_mode="default", console_size=[0, 0]), _net()),  # every docker run
        (HostConfig(network_mode="bridge"), _net("bridge")),
        (HostConfig(network_mode="host", port_bindings=_PORTS), NetworkingConfig({})),
        (HostConfig(network_mode="none", port_bindings=_PORTS, publish_all_ports=True), None),
        (HostConfig(network_mode="container:abc"), None),
        (HostConfig(port_bindings={}, links=[], volumes_from=[], storage_opt={}), None),
        (HostConfig(userns_mode="host", volume_driver="local"), None),
        (
            HostConfig(
                mounts=[
                    Mount(type="volume", target="/v", volume_options=VolumeOptions(no_copy=True)),
                    Mount(type="bind", source="/", target="/b", bind_options=BindOptions()),
                ]
            ),
            None,
        ),
    ],
)
def test_defaults_are_not_refused(hc: HostConfig, net: NetworkingConfig | None) -> None:
    refuse_unsupported(Config(), hc, net)


@pytest.mark.parametrize(
    ("hc", "net", "kind", "expected"),
    [
        (
            HostConfig(network_mode="container:x", port_bindings=_PORTS),
            None,
            errdefs.InvalidParameter,
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            HostConfig(network_mode="host"),
            _net("host", mac_address="02:42:ac:11:00:02"),
            errdefs.InvalidParameter,
            "conflicting options: mac-address and the network mode",
        ),
        (HostConfig(), _net(driver_opts={"a": "b"}), errdefs.NotImplementedFeature, "driver-opt"),
        (HostConfig(volume_driver="nfs"), None, errdefs.NotImplementedFeature, '"nfs" not found'),
        (HostConfig(storage_opt={"size": "1G"}), None, errdefs.NotImplementedFeature, "storage"),
        (HostConfig(userns_mode="private"), None, errdefs.NotImplementedFeature, "--userns"),
        (HostConfig(cgroup="container:x"), None, errdefs.NotImplementedFeature, "Cgroup"),
        (
            HostConfig(mounts=[Mount(type="image", source="busybox", target="/i")]),
            None,
            errdefs.NotImplementedFeature,
            'mount type "image"',
        ),
        (
            HostConfig(
                mounts=[
                    Mount(
                        type="volume",
                        source="v",
                        target="/v",
                        volume_options=VolumeOptions(subpath="d"),
                    )
                ]
            ),
            None,
            errdefs.NotImplementedFeature,
            "volume subpath",
        ),
    ],
)
def test_refused(
    hc: HostConfig,
    net: NetworkingConfig | None,
    kind: type[errdefs.BerthError],
    expected: str,
) -> None:
    with pytest.raises(kind) as exc:
        refuse_unsupported(Config(), hc, net)
    assert expected in str(exc.value)


def test_kernel_memory_tcp_is_discarded_with_a_warning() -> None:
    """berth never writes it to the spec: said, and dropped from what inspect shows."""
    hc = HostConfig(kernel_memory_tcp=1 << 20)
    warnings = validate_resources(hc, 1)
    assert any("kernel memory TCP limit" in w for w in warnings)
    assert hc.kernel_memory_tcp == 0


def test_json_file_options_parse_compress_as_go_does() -> None:
    """The json-file driver took only "1"/"true" for compress; Go's ParseBool takes "t" too,
    and an unparsable value is refused at create instead of read as false."""
    assert json_log_options({}) == (-1, 1, False)
    assert json_log_options({"max-size": "1k", "max-file": "3", "compress": "t"}) == (1024, 3, True)
    with pytest.raises(errdefs.InvalidParameter, match="invalid boolean value for compress"):
        json_log_options({"compress": "yes"})
