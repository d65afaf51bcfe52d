"""``--shim-group``: which containers share a containerd shim, how the spec says so, and
the /proc readings that tell a group's shim from a stray one and a dead shim from a live one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from berth.config import ConfigError, load
from berth.daemon.start import shim_group
from berth.runtime import _strays
from berth.runtime.spec import SHIM_GROUP_ANNOTATION
from tests.unit.test_spec import host_config, spec_of


def _mode(tmp_path: Path, *argv: str, file: dict[str, str] | None = None) -> str:
    cfg_file = tmp_path / "daemon.json"
    cfg_file.write_text(json.dumps(file or {}))
    cfg, _ = load(["--config-file", str(cfg_file), *argv])
    return cfg.options.shim_group


def test_the_option_and_its_daemon_json_key(tmp_path: Path) -> None:
    assert _mode(tmp_path) == "container"
    assert _mode(tmp_path, "--shim-group", "all") == "all"
    assert _mode(tmp_path, file={"shim-group": "project"}) == "project"
    with pytest.raises(ConfigError, match="use container, project or all"):
        _mode(tmp_path, "--shim-group", "pod")


def test_groups_by_mode() -> None:
    compose = {"com.docker.compose.project": "shop", "other": "x"}
    assert shim_group("container", compose) == ""
    assert shim_group("project", compose) == "berth-project-shop"
    assert shim_group("project", {"other": "x"}) == ""  # no project: a shim of its own
    assert shim_group("all", {}) == shim_group("all", compose) == "berth-all"


def test_the_spec_carries_the_group_and_the_users_annotation_wins() -> None:
    assert "annotations" not in spec_of()
    spec = spec_of(shim_group="berth-all", hc=host_config(annotations={"a": "b"}))
    assert spec["annotations"] == {"a": "b", SHIM_GROUP_ANNOTATION: "berth-all"}
    own = host_config(annotations={SHIM_GROUP_ANNOTATION: "mine"})
    assert spec_of(shim_group="berth-all", hc=own)["annotations"] == {SHIM_GROUP_ANNOTATION: "mine"}


def test_parent_and_liveness_from_proc() -> None:
    assert _strays.parent_pid(os.getpid()) == os.getppid()
    assert _strays.alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert _strays.parent_pid(child.pid) == os.getpid()
        assert _strays.alive(child.pid)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert not _strays.alive(child.pid)  # a zombie is dead
    finally:
        child.kill()
        child.wait()
    assert not _strays.alive(child.pid)
    assert _strays.parent_pid(child.pid) is None


def test_listening_sockets_are_found_by_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_strays, "SHIM_SOCKET_DIR", str(tmp_path))
    path = str(tmp_path / "a-group")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen()
        assert _strays.listening_sockets(os.getpid()) == [path]
    assert _strays.listening_sockets(os.getpid()) == []
