"""The routers' adaptations for older API versions (api/_versions.py)."""

from __future__ import annotations

import copy
from typing import Any

from berth.api import _versions
from berth.types.image import Summary
from berth.utils.timefmt import ZERO_TIME

CID = "0123456789ab" + "c" * 52


def _summary(tags: list[str], digests: list[str]) -> Summary:
    return Summary(
        Containers=2,
        Created=1,
        Id="sha256:x",
        Labels=None,
        ParentId="",
        RepoDigests=digests,
        RepoTags=tags,
        SharedSize=-1,
        Size=42,
    )


def test_image_summaries_current_version_is_untouched() -> None:
    rows = [_summary([], [])]
    assert _versions.image_summaries(rows, (1, 51)) is rows
    assert rows[0].Containers == 2
    assert rows[0].RepoTags == [] and rows[0].RepoDigests == []
    assert rows[0].VirtualSize is _versions.ImageSummary.__struct_defaults__[-1]


def test_image_summaries_before_151_hide_container_counts() -> None:
    (row,) = _versions.image_summaries([_summary(["a:1"], [])], (1, 50))
    assert row.Containers == -1
    assert row.RepoTags == ["a:1"] and row.RepoDigests == []


def test_image_summaries_before_144_show_virtual_size() -> None:
    (row,) = _versions.image_summaries([_summary(["a:1"], [])], (1, 43))
    assert row.VirtualSize == 42
    (row,) = _versions.image_summaries([_summary(["a:1"], [])], (1, 44))
    assert row.VirtualSize != 42


def test_image_summaries_before_143_name_untagged_images_none() -> None:
    untagged, tagged, digested = _versions.image_summaries(
        [_summary([], []), _summary(["a:1"], []), _summary([], ["a@sha256:1"])], (1, 42)
    )
    assert (untagged.RepoTags, untagged.RepoDigests) == (["<none>:<none>"], ["<none>@<none>"])
    assert (tagged.RepoTags, tagged.RepoDigests) == (["a:1"], [])
    assert (digested.RepoTags, digested.RepoDigests) == ([], ["a@sha256:1"])
    (row,) = _versions.image_summaries([_summary([], [])], (1, 43))
    assert (row.RepoTags, row.RepoDigests) == ([], [])


def _image_doc(created: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"Id": "sha256:x", "Parent": "", "Comment": ""}
    if created:
        doc["Created"] = "2024-01-01T00:00:00Z"
    doc |= {
        "Container": "",
        "ContainerConfig": {"Hostname": ""},
        "DockerVersion": "",
        "Size": 7,
        "GraphDriver": {},
        "Config": {"Cmd": ["sh"], "User": ""},
    }
    return doc


def test_image_inspect_current_drops_container_fields() -> None:
    doc = _versions.image_inspect(_image_doc(), (1, 51))
    assert "Container" not in doc and "ContainerConfig" not in doc
    assert "VirtualSize" not in doc
    assert doc["Config"] == {"Cmd": ["sh"], "User": ""}


def test_image_inspect_before_150_shows_legacy_config_fields_sorted() -> None:
    doc = _versions.image_inspect(_image_doc(), (1, 49))
    config = doc["Config"]
    assert list(config) == sorted(config)
    assert config["Cmd"] == ["sh"] and config["Tty"] is False and config["Hostname"] == ""
    assert "Container" not in doc


def test_image_inspect_before_145_keeps_container_fields() -> None:
    doc = _versions.image_inspect(_image_doc(), (1, 44))
    assert doc["Container"] == "" and doc["ContainerConfig"] == {"Hostname": ""}
    assert "VirtualSize" not in doc


def test_image_inspect_before_144_zero_created_and_virtual_size_in_place() -> None:
    doc = _versions.image_inspect(_image_doc(created=False), (1, 43))
    assert doc["Created"] == ZERO_TIME and doc["VirtualSize"] == 7
    keys = list(doc)
    assert keys[keys.index("Comment") + 1] == "Created"
    assert keys[keys.index("Size") + 1] == "VirtualSize"
    kept = _versions.image_inspect(_image_doc(created=True), (1, 43))
    assert kept["Created"] == "2024-01-01T00:00:00Z"


def _info() -> dict[str, Any]:
    return {
        "RegistryConfig": {"Mirrors": []},
        "ContainerdCommit": {"ID": "a"},
        "RuncCommit": {"ID": "b"},
        "InitCommit": {"ID": ""},
    }


def test_system_info_by_version() -> None:
    assert _versions.system_info(_info(), (1, 51)) == _info()
    assert _versions.system_info(_info(), (1, 50)) == _info()
    v149 = _versions.system_info(_info(), (1, 49))
    assert v149["BridgeNfIptables"] is False and v149["BridgeNfIp6tables"] is False
    assert "Expected" not in v149["RuncCommit"]
    v148 = _versions.system_info(_info(), (1, 48))
    assert v148["RuncCommit"] == {"ID": "b", "Expected": "b"}
    assert "AllowNondistributableArtifactsCIDRs" not in v148["RegistryConfig"]
    v146 = _versions.system_info(_info(), (1, 46))
    assert v146["RegistryConfig"]["AllowNondistributableArtifactsCIDRs"] is None
    assert v146["RegistryConfig"]["AllowNondistributableArtifactsHostnames"] is None


def _container_doc(hostname: str) -> dict[str, Any]:
    return {
        "Id": CID,
        "Config": {"Hostname": hostname},
        "NetworkSettings": {
            "Ports": {},
            "Networks": {
                "bridge": {"Aliases": None, "IPAddress": "10.0.0.2"},
                "mynet": {"Aliases": ["web"], "IPAddress": "10.1.0.2"},
                "container:abc": {"Aliases": None},
            },
        },
    }


def test_container_inspect_current_is_the_shared_document() -> None:
    doc = _container_doc("h")
    assert _versions.container_inspect(doc, (1, 45)) is doc


def test_container_inspect_before_145_adds_aliases_on_a_copy() -> None:
    doc = _container_doc("h")
    before = copy.deepcopy(doc)
    old = _versions.container_inspect(doc, (1, 44))
    assert doc == before  # memoized for every client: never changed
    nets = old["NetworkSettings"]["Networks"]
    assert nets["mynet"]["Aliases"] == ["web", CID[:12], "h"]
    assert nets["mynet"]["IPAddress"] == "10.1.0.2"
    assert nets["bridge"]["Aliases"] is None
    assert nets["container:abc"]["Aliases"] is None
    assert old["NetworkSettings"]["Ports"] is doc["NetworkSettings"]["Ports"]


def test_container_inspect_before_145_default_hostname_listed_once() -> None:
    old = _versions.container_inspect(_container_doc(CID[:12]), (1, 44))
    assert old["NetworkSettings"]["Networks"]["mynet"]["Aliases"] == ["web", CID[:12]]


def test_container_inspect_without_networks() -> None:
    doc = {"Id": CID, "Config": {"Hostname": "h"}, "NetworkSettings": {"Networks": {}}}
    assert _versions.container_inspect(doc, (1, 24)) is doc


def test_container_inspect_before_145_on_builtin_networks_only_is_the_shared_document() -> None:
    """Nothing to add (no user-defined network): older clients get the memo, not a copy."""
    doc = _container_doc("h")
    del doc["NetworkSettings"]["Networks"]["mynet"]
    assert _versions.container_inspect(doc, (1, 41)) is doc
