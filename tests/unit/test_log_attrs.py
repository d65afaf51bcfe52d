"""berth.logger.attrs: the json-file ``attrs`` of moby's ExtraAttributes and ``tag``."""

from __future__ import annotations

import pytest

from berth.logger.attrs import LogInfo, check_options, extra_attributes

INFO = LogInfo(
    container_id="0123456789abcdef" * 4,
    container_name="/web",
    image_id="sha256:" + "fedcba9876543210" * 4,
    image_name="busybox:latest",
    hostname="host1",
    entrypoint="sh",
    args=("-c", "echo hi"),
    labels={"team": "a", "app.tier": "web", "other": "x"},
    env=("STAGE=prod", "REGION_EU=1", "BARE", "SECRET=s"),
)


def test_no_options_no_attrs() -> None:
    assert extra_attributes({"max-size": "1m"}, INFO) == {}


def test_labels_and_env_by_name_and_regex() -> None:
    opts = {
        "labels": "team,missing",
        "labels-regex": r"^app\.",
        "env": "STAGE,BARE",
        "env-regex": "^REG",
    }
    assert extra_attributes(opts, INFO) == {
        "team": "a",
        "app.tier": "web",
        "STAGE": "prod",
        "REGION_EU": "1",
    }


def test_regex_matches_anywhere_as_go_does() -> None:
    assert extra_attributes({"env-regex": "CRE"}, INFO) == {"SECRET": "s"}


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("plain", "plain"),
        ("{{.Name}}", "web"),
        ("{{.ID}}", "0123456789ab"),
        ("{{ .FullID }}", "0123456789abcdef" * 4),
        ("{{.ImageID}}/{{.ImageName}}", "fedcba987654/busybox:latest"),
        ("{{.DaemonName}}|{{.Hostname}}|{{.Command}}", "docker|host1|sh -c echo hi"),
    ],
)
def test_tag(tag: str, expected: str) -> None:
    assert check_options({"tag": tag}) is None
    assert extra_attributes({"tag": tag}, INFO) == {"tag": expected}


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"tag": "{{.Nope}}"}, "can't evaluate field Nope"),
        ({"tag": "{{json .Name}}"}, "only {{.Field}} forms"),
        ({"tag": "{{.Name}} {{if .ID}}x{{end}}"}, "only {{.Field}} forms"),
        ({"labels-regex": "("}, "invalid labels-regex"),
        ({"env-regex": "[a"}, "invalid env-regex"),
    ],
)
def test_refused_options(opts: dict[str, str], expected: str) -> None:
    problem = check_options(opts)
    assert problem is not None and expected in problem
