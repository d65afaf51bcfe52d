"""What older API versions see: the adaptations moby's routers make with ``versions.LessThan``.

Services answer in the current API's shape; the routers reshape the answer for
the version the client pinned, so no service takes a version argument. Each
function costs one tuple comparison for a current client.
"""

from __future__ import annotations

from typing import Any

from berth.types.filters import Filters
from berth.types.image import Summary as ImageSummary
from berth.types.network import NetworkCreateRequest
from berth.types.system import DiskUsage
from berth.types.volume import VolumeCreateRequest
from berth.utils.timefmt import ZERO_TIME

Version = tuple[int, int]

#: Empty fields of an image's ``Config`` that dockerd shows to clients before API 1.50.
_IMAGE_CONFIG_149 = {
    "AttachStderr": False,
    "AttachStdin": False,
    "AttachStdout": False,
    "Domainname": "",
    "Hostname": "",
    "Image": "",
    "OpenStdin": False,
    "StdinOnce": False,
    "Tty": False,
}
_USER_NETWORKS_EXCLUDED = ("bridge", "host", "none", "default")


def image_summaries(summaries: list[ImageSummary], version: Version) -> list[ImageSummary]:
    """``GET /images/json``; changes *summaries* in place (they are built per request)."""
    if version >= (1, 51):
        return summaries
    none_refs = version < (1, 43)
    virtual_size = version < (1, 44)
    for s in summaries:
        s.Containers = -1
        if none_refs and not s.RepoTags and not s.RepoDigests:
            s.RepoTags, s.RepoDigests = ["<none>:<none>"], ["<none>@<none>"]
        if virtual_size:
            s.VirtualSize = s.Size
    return summaries


def disk_usage(du: DiskUsage, version: Version) -> DiskUsage:
    """``GET /system/df``; changes *du* in place (it is built per request).  Its images
    keep ``Containers`` (the CLI's reclaimable figure needs it) and show
    ``VirtualSize`` before API 1.44, as moby's system router sets it."""
    if version < (1, 44):
        for s in du.Images or []:
            s.VirtualSize = s.Size
    return du


def image_inspect(doc: dict[str, Any], version: Version) -> dict[str, Any]:
    """``GET /images/{name}/json``; changes *doc* in place (it is built per request).

    The service always includes ``Container`` and ``ContainerConfig``, as
    moby's backend does, and the router drops them from 1.45 on.
    """
    if version >= (1, 45):
        doc.pop("Container", None)
        doc.pop("ContainerConfig", None)
    if version < (1, 44):
        if "Created" not in doc:
            doc = _insert_after(doc, "Comment", "Created", ZERO_TIME)
        doc = _insert_after(doc, "Size", "VirtualSize", doc["Size"])
    if version < (1, 50):
        doc["Config"] = dict(sorted({**doc["Config"], **_IMAGE_CONFIG_149}.items()))
    return doc


def system_info(info: dict[str, Any], version: Version) -> dict[str, Any]:
    """``GET /info``; changes *info* in place (it is built per request)."""
    if version < (1, 47):
        info["RegistryConfig"]["AllowNondistributableArtifactsCIDRs"] = None
        info["RegistryConfig"]["AllowNondistributableArtifactsHostnames"] = None
    if version < (1, 49):
        for key in ("ContainerdCommit", "RuncCommit", "InitCommit"):
            info[key]["Expected"] = info[key]["ID"]
    if version < (1, 50):
        info["BridgeNfIptables"] = False
        info["BridgeNfIp6tables"] = False
    return info


def container_inspect(doc: dict[str, Any], version: Version) -> dict[str, Any]:
    """``GET /containers/{name}/json``; *doc* is shared (memoized), so it is never changed.

    Before 1.45 an endpoint on a user-defined network lists the container's
    short ID and hostname among its aliases; the copy made for such a client
    is shallow except along that path.
    """
    if version >= (1, 45):
        return doc
    settings: dict[str, Any] = doc.get("NetworkSettings") or {}
    networks: dict[str, Any] = settings.get("Networks") or {}
    if not networks:
        return doc
    user = [
        name
        for name, ep in networks.items()
        if ep is not None
        and name not in _USER_NETWORKS_EXCLUDED
        and not name.startswith("container:")
    ]
    if not user:  # the common case: nothing to add, so no copy
        return doc
    extras = [e for e in (doc["Id"][:12], (doc.get("Config") or {}).get("Hostname", "")) if e]
    new_networks = dict(networks)
    for name in user:
        ep = networks[name]
        aliases = list(ep.get("Aliases") or [])
        for extra in extras:
            if extra not in aliases:
                aliases.append(extra)
        new_networks[name] = {**ep, "Aliases": aliases}
    return {**doc, "NetworkSettings": {**settings, "Networks": new_networks}}


def network_create(req: NetworkCreateRequest, version: Version) -> NetworkCreateRequest:
    """``POST /networks/create``: ``EnableIPv4`` came with API 1.48; an older client's
    value (it could not mean one) is dropped, so the daemon's default applies."""
    if version < (1, 48):
        req.enable_ipv4 = None
    return req


def volume_create(req: VolumeCreateRequest, version: Version) -> VolumeCreateRequest:
    """``POST /volumes/create``: cluster volumes came with API 1.42; an older client's
    ``ClusterVolumeSpec`` is ignored and a local volume made, as dockerd does."""
    if version < (1, 42):
        req.cluster_volume_spec = None
    return req


def volume_prune_filters(filters: Filters, version: Version) -> Filters:
    """``POST /volumes/prune``: before API 1.42 prune removed every unused volume,
    named ones too; moby's router adds the filter ``all=true`` for such clients
    (an ``all=false`` they sent then conflicts with it, as in dockerd)."""
    if version < (1, 42):
        return filters.with_values("all", ["true"])
    return filters


def _insert_after(doc: dict[str, Any], anchor: str, key: str, value: Any) -> dict[str, Any]:
    """*doc* with *key* placed right after *anchor*, where moby's struct has it."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out[k] = v
        if k == anchor:
            out[key] = value
    out.setdefault(key, value)
    return out
