"""berth.daemon.create: merge() of the image config into the user's, and the command."""

from __future__ import annotations

import copy

from berth.daemon.create import entrypoint_and_args, merge
from berth.types.container import Config, HealthConfig
from berth.types.wire import Empty

SEC = 1_000_000_000


def merged(user: Config, image: Config) -> Config:
    image_before = copy.deepcopy(image)
    merge(user, image)
    assert image == image_before, "merge must not change the image's config"
    return user


def test_empty_user_config_takes_everything() -> None:
    image = Config(
        user="app",
        exposed_ports={"80/tcp": Empty()},
        env=["PATH=/bin", "A=1"],
        labels={"l": "v"},
        cmd=["serve"],
        entrypoint=["/entry"],
        healthcheck=HealthConfig(test=["CMD", "true"], interval=5 * SEC),
        working_dir="/srv",
        volumes={"/data": Empty()},
        stop_signal="SIGINT",
    )
    user = merged(Config(), image)
    assert user.user == "app"
    assert user.exposed_ports == {"80/tcp": Empty()}
    assert user.env == ["PATH=/bin", "A=1"]
    assert user.labels == {"l": "v"}
    assert user.cmd == ["serve"]
    assert user.entrypoint == ["/entry"]
    assert user.healthcheck == HealthConfig(test=["CMD", "true"], interval=5 * SEC)
    assert user.working_dir == "/srv"
    assert user.volumes == {"/data": Empty()}
    assert user.stop_signal == "SIGINT"


def test_copies_do_not_alias_the_image() -> None:
    image = Config(
        exposed_ports={"80/tcp": Empty()},
        env=["A=1"],
        cmd=["c"],
        entrypoint=["e"],
        healthcheck=HealthConfig(test=["CMD", "x"]),
        volumes={"/v": Empty()},
    )
    user = merged(Config(), image)
    assert user.env is not None and user.exposed_ports is not None
    assert user.volumes is not None and user.cmd is not None and user.entrypoint is not None
    assert user.healthcheck is not None
    user.env.append("B=2")
    user.exposed_ports["1/tcp"] = Empty()
    user.volumes["/w"] = Empty()
    user.cmd.append("x")
    user.entrypoint.append("y")
    user.healthcheck.interval = 1
    assert image.env == ["A=1"]
    assert image.exposed_ports == {"80/tcp": Empty()}
    assert image.volumes == {"/v": Empty()}
    assert image.cmd == ["c"]
    assert image.entrypoint == ["e"]
    assert image.healthcheck is not None and image.healthcheck.interval == 0


def test_user_values_win() -> None:
    image = Config(user="img", working_dir="/img", stop_signal="SIGINT")
    user = merged(Config(user="me", working_dir="/mine", stop_signal="SIGKILL"), image)
    assert (user.user, user.working_dir, user.stop_signal) == ("me", "/mine", "SIGKILL")


def test_exposed_ports_union() -> None:
    user = merged(
        Config(exposed_ports={"8080/tcp": Empty()}),
        Config(exposed_ports={"80/tcp": Empty(), "8080/tcp": Empty()}),
    )
    assert user.exposed_ports is not None
    assert sorted(user.exposed_ports) == ["80/tcp", "8080/tcp"]


def test_exposed_ports_empty_image() -> None:
    user = merged(Config(exposed_ports={"1/udp": Empty()}), Config())
    assert user.exposed_ports == {"1/udp": Empty()}
    assert merged(Config(), Config()).exposed_ports is None


def test_env_by_key_user_first() -> None:
    user = merged(
        Config(env=["A=user", "C=3", "FLAG"]),
        Config(env=["PATH=/usr/bin", "A=image", "B=2", "FLAG=img", "C"]),
    )
    assert user.env == ["A=user", "C=3", "FLAG", "PATH=/usr/bin", "B=2"]


def test_env_empty_user_takes_image_env_or_none() -> None:
    assert merged(Config(env=[]), Config(env=["A=1"])).env == ["A=1"]
    assert merged(Config(), Config()).env is None


def test_labels() -> None:
    user = merged(Config(labels={"a": "user"}), Config(labels={"a": "image", "b": "2"}))
    assert user.labels == {"a": "user", "b": "2"}
    # nil labels become an empty map even when the image has none
    assert merged(Config(), Config()).labels == {}


def test_cmd_from_image_when_user_has_none() -> None:
    user = merged(Config(), Config(cmd=["sh"], entrypoint=["/e"]))
    assert (user.entrypoint, user.cmd) == (["/e"], ["sh"])


def test_user_cmd_keeps_image_entrypoint() -> None:
    user = merged(Config(cmd=["ls", "-l"]), Config(cmd=["sh"], entrypoint=["/e"]))
    assert (user.entrypoint, user.cmd) == (["/e"], ["ls", "-l"])


def test_user_entrypoint_suppresses_image_cmd() -> None:
    user = merged(Config(entrypoint=["/mine"]), Config(cmd=["sh"], entrypoint=["/e"]))
    assert user.entrypoint == ["/mine"]
    assert user.cmd is None
    user = merged(Config(entrypoint=["/mine"], cmd=["a"]), Config(cmd=["sh"], entrypoint=["/e"]))
    assert (user.entrypoint, user.cmd) == (["/mine"], ["a"])


def test_empty_user_entrypoint_resets_image_entrypoint() -> None:
    # `--entrypoint ""`: an empty (not nil) entrypoint is kept, the image cmd still applies
    user = merged(Config(entrypoint=[]), Config(cmd=["sh"], entrypoint=["/e"]))
    assert user.entrypoint == []
    assert user.cmd == ["sh"]


def test_healthcheck_merged_field_by_field() -> None:
    image = HealthConfig(
        test=["CMD", "img"],
        interval=10 * SEC,
        timeout=3 * SEC,
        start_period=4 * SEC,
        start_interval=5 * SEC,
        retries=6,
    )
    user = merged(
        Config(healthcheck=HealthConfig(interval=1 * SEC, retries=2)), Config(healthcheck=image)
    )
    assert user.healthcheck == HealthConfig(
        test=["CMD", "img"],
        interval=1 * SEC,
        timeout=3 * SEC,
        start_period=4 * SEC,
        start_interval=5 * SEC,
        retries=2,
    )
    user = merged(Config(healthcheck=HealthConfig(test=["NONE"])), Config(healthcheck=image))
    assert user.healthcheck is not None
    assert user.healthcheck.test == ["NONE"]
    assert user.healthcheck.interval == 10 * SEC


def test_healthcheck_user_only() -> None:
    hc = HealthConfig(test=["CMD", "x"])
    user = merged(Config(healthcheck=hc), Config())
    assert user.healthcheck is hc
    assert user.healthcheck == HealthConfig(test=["CMD", "x"])


def test_volumes_union_image_wins_nothing_is_lost() -> None:
    user = merged(Config(volumes={"/a": Empty()}), Config(volumes={"/b": Empty(), "/a": Empty()}))
    assert user.volumes is not None
    assert sorted(user.volumes) == ["/a", "/b"]
    assert merged(Config(volumes={}), Config(volumes={"/b": Empty()})).volumes == {"/b": Empty()}


def test_entrypoint_and_args() -> None:
    assert entrypoint_and_args(Config(entrypoint=["/e", "-x"], cmd=["a", "b"])) == (
        "/e",
        ["-x", "a", "b"],
    )
    assert entrypoint_and_args(Config(entrypoint=["/e"])) == ("/e", [])
    assert entrypoint_and_args(Config(cmd=["ls", "-l"])) == ("ls", ["-l"])
    assert entrypoint_and_args(Config(entrypoint=[], cmd=["ls"])) == ("ls", [])
    assert entrypoint_and_args(Config()) == ("", [])
    assert entrypoint_and_args(Config(cmd=[])) == ("", [])
