"""What berth cannot do yet is refused at create, with a clear error and no trace left;
what it accepts it does (issue 9: "nothing is accepted and then silently not done")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.testing import Berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect


def refused(berthd: Berthd, cleanup: list[str], *args: str) -> str:
    """Run ``docker run --name N <args> busybox true``; it must fail and leave no container."""
    name = unique_name("refused")
    cleanup.append(name)
    proc = berthd.docker("run", "--name", name, *args, "busybox", "true", check=False)
    assert proc.returncode == 125, proc
    gone = berthd.docker("inspect", name, check=False)
    assert gone.returncode != 0 and "No such" in gone.stderr, gone
    return proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ip", "172.17.0.99"], "user specified IP address is supported"),
        (["--network", "host", "--mac-address", "02:42:ac:11:00:99"], "mac-address and"),
        (["--volume-driver", "nfs", "-v", "vol:/v"], 'volume driver "nfs" not found'),
        (["--mount", "type=volume,target=/v,volume-driver=nfs"], 'volume driver "nfs" not found'),
        (["--mount", "type=volume,src=v,target=/v,volume-subpath=d"], "volume subpath"),
        (["--storage-opt", "size=1G"], "--storage-opt"),
        (["--log-opt", "tag={{.Foo}}"], "can't evaluate field Foo"),
        (["--log-opt", "tag={{json .Name}}"], "berth expands only {{.Field}} forms"),
        (["--log-opt", "labels-regex=("], "invalid labels-regex"),
    ],
)
def test_refused_at_create(
    berthd: Berthd, cleanup: list[str], args: list[str], expected: str
) -> None:
    stderr = refused(berthd, cleanup, *args)
    assert expected in stderr, stderr


def test_ports_with_container_network_conflict(berthd: Berthd, cleanup: list[str]) -> None:
    target = unique_name("netowner")
    cleanup.append(target)
    berthd.docker("create", "--name", target, "busybox", "true")
    stderr = refused(berthd, cleanup, "--network", f"container:{target}", "-p", "80:80")
    assert "port publishing and the container type network mode" in stderr


@pytest.mark.parametrize("mode", ["host", "none"])
def test_ports_discarded_without_a_network_of_its_own(
    berthd: Berthd, cleanup: list[str], mode: str
) -> None:
    """As dockerd: with host or none networking there is nothing to publish to."""
    name = unique_name("noports")
    cleanup.append(name)
    berthd.docker("create", "--name", name, "--network", mode, "-p", "80:80", "busybox", "true")
    assert inspect(berthd, name)["HostConfig"]["NetworkMode"] == mode


_ALIAS = {"EndpointsConfig": {"bridge": {"Aliases": ["web"]}}}


@pytest.mark.parametrize(
    ("request_body", "status", "expected"),
    [
        ({"HostConfig": {"UsernsMode": "private"}}, 501, "user namespace mode 'private'"),
        ({"HostConfig": {"Cgroup": "container:abc"}}, 501, "HostConfig.Cgroup"),
        ({"NetworkingConfig": _ALIAS}, 400, "network-scoped alias is supported only"),
        # 404, as dockerd: the CLI then tries to pull the image and shows this again
        ({"HostConfig": {"NetworkMode": "nosuchnet"}}, 404, "network nosuchnet not found"),
        ({"HostConfig": {"VolumesFrom": ["whatever"]}}, 404, "No such container: whatever"),
    ],
)
def test_refused_through_the_api(
    berthd: Berthd,
    cleanup: list[str],
    request_body: dict[str, object],
    status: int,
    expected: str,
) -> None:
    name = unique_name("apiref")
    cleanup.append(name)
    body = json.dumps({"Image": "busybox", "Cmd": ["true"], **request_body})
    version = "1.51"
    answer, _, raw = berthd.request(
        "POST",
        f"/v{version}/containers/create?name={name}",
        body.encode(),
        {"Content-Type": "application/json"},
    )
    assert answer == status, raw
    assert expected in json.loads(raw)["message"]
    assert berthd.request("GET", f"/containers/{name}/json")[0] == 404


def test_default_run_is_not_refused(berthd: Berthd, cleanup: list[str]) -> None:
    """What the CLI sends on every run (NetworkMode "default", an empty "default" endpoint,
    ConsoleSize [0, 0]) and the built-in networks by name all pass."""
    for args in ([], ["--network", "bridge"], ["--network", "none"], ["-t"]):
        name = unique_name("plain")
        cleanup.append(name)
        berthd.docker("create", "--name", name, *args, "busybox", "true")


def test_platform_of_another_image_is_not_found(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("plat")
    cleanup.append(name)
    arch = json.loads(berthd.docker("image", "inspect", "busybox").stdout)[0]["Architecture"]
    other = "s390x" if arch != "s390x" else "amd64"
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, raw = berthd.request(
        "POST", f"/containers/create?name={name}&platform=linux/{other}", body, headers
    )
    assert status == 404, raw
    assert "does not match the specified platform" in json.loads(raw)["message"]
    assert berthd.request("GET", f"/containers/{name}/json")[0] == 404
    status, _, raw = berthd.request(
        "POST", f"/containers/create?name={name}&platform=linux/{arch}", body, headers
    )
    assert status == 201, raw


def test_json_file_attrs(berthd: Berthd, cleanup: list[str]) -> None:
    """labels, labels-regex, env, env-regex and tag end up in every line's ``attrs``."""
    name = unique_name("attrs")
    cleanup.append(name)
    berthd.docker(
        "run", "--name", name,
        "--label", "team=a", "--label", "app.tier=web", "--label", "other=x",
        "-e", "STAGE=prod", "-e", "REGION_EU=1", "-e", "SECRET=s",
        "--log-opt", "labels=team,missing", "--log-opt", "labels-regex=^app\\.",
        "--log-opt", "env=STAGE", "--log-opt", "env-regex=^REGION",
        "--log-opt", "tag={{.Name}}/{{.ImageName}}/{{.ID}}",
        "busybox", "echo", "hello",
    )  # fmt: skip
    info = inspect(berthd, name)
    log_path = Path(info["LogPath"])
    text = wait_for(lambda: log_path.read_text() if log_path.exists() else "", what="a log line")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [entry["log"] for entry in lines] == ["hello\n"]
    assert lines[0]["attrs"] == {
        "team": "a",
        "app.tier": "web",
        "STAGE": "prod",
        "REGION_EU": "1",
        "tag": f"{name}/busybox/{info['Id'][:12]}",
    }
    details = berthd.docker("logs", "--details", name).stdout
    tag = f"{name}%2Fbusybox%2F{info['Id'][:12]}"
    assert details == f"REGION_EU=1,STAGE=prod,app.tier=web,tag={tag},team=a hello\n"


def test_logs_details_without_attrs(berthd: Berthd, cleanup: list[str]) -> None:
    """moby prints the (empty) attrs and their space before every line."""
    name = unique_name("details")
    cleanup.append(name)
    berthd.docker("run", "--name", name, "busybox", "echo", "hi")
    assert berthd.docker("logs", "--details", name).stdout == " hi\n"
