"""``docker image prune``, ``docker system prune`` and ``POST /build/prune`` through the
real docker CLI and docker-py (issue 14): dangling images against ``-a``, images used
by containers kept, the until and label filters, refusals, SpaceReclaimed against the
sizes of the layers that went, the image events, and a prune racing container creates.

What dockerd does is taken from moby (``daemon/images/image_prune.go``,
``image_delete.go``, ``builder-next``) and docker/cli (``system/prune.go``), and was
checked against Debian's dockerd 20.10 for the same steps (same messages, same layer
IDs and sizes).  Pruning removes every unused image of a daemon, so every test that
prunes runs on a daemon of its own: busybox:latest stays on the session's.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from berth.layer import chain_id
from berth.testing import DOCKER, Berthd, busybox_rootfs_tar, inspect_container, unique_name
from tests.e2e.archives import Archive, docker_archive, image_config, layer_tar, sha256


def image_tar(tmp_path: Path, name: str, size: int) -> Path:
    """A layer of its own (*size* bytes in /data/<name>): no other image shares it
    unless the same tar is imported twice."""
    path = tmp_path / f"{name}.tar"
    path.write_bytes(layer_tar({"data": None, f"data/{name}": b"p" * size}))
    return path


def chain_of(tar: Path) -> str:
    """A one-layer image's ChainID is its DiffID, the sha256 of the tar imported: what
    a delete lists for the layer."""
    return sha256(tar.read_bytes())


def imported(d: Berthd, tar: Path, *args: str) -> str:
    return d.docker("import", *args, str(tar)).stdout.strip()


def loaded(d: Berthd, archive: bytes) -> str:
    """``docker load`` of an archive without tags: the image ID it printed."""
    p = subprocess.run(
        [DOCKER, "load"], input=archive, env=d.env(), capture_output=True, timeout=120, check=True
    )
    return p.stdout.decode().split("Loaded image ID: ")[1].split()[0]


def exists(d: Berthd, ref: str) -> bool:
    return d.docker("image", "inspect", ref, check=False).returncode == 0


def size_of(d: Berthd, ref: str) -> int:
    return int(d.docker("image", "inspect", "-f", "{{.Size}}", ref).stdout)


def events_since(d: Berthd, since: float, *filters: str) -> list[dict[str, Any]]:
    out = d.docker(
        "events", "--since", f"{since:.9f}", "--until", f"{time.time() + 0.01:.9f}",
        "--format", "{{json .}}", *(f"--filter={f}" for f in filters),
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def human(size: int) -> str:
    """go-units HumanSize, as the CLI prints "Total reclaimed space" (4 digits, SI)."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value, i = float(size), 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{value:.4g}{units[i]}"


# -- refusals, on the session daemon (nothing is pruned) -------------------------------


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"foo": {"bar": True}}, "invalid filter 'foo'"),
        ({"reference": {"busybox": True}}, "invalid filter 'reference'"),
        ({"dangling": {"maybe": True}}, "invalid filter 'dangling=[maybe]'"),
        (
            {"until": {"abc": True}},
            "invalid value for 'until' filter: failed to parse value as time or duration: \"abc\"",
        ),
        ({"until": {"1h": True, "2h": True}}, "more than one until filter specified"),
    ],
)
def test_bad_filters_are_400_and_prune_nothing(
    berthd: Berthd, flt: dict[str, Any], message: str
) -> None:
    query = json.dumps(flt, separators=(",", ":"))
    status, _, body = berthd.request("POST", f"/v1.51/images/prune?filters={query}")
    assert (status, json.loads(body)) == (400, {"message": message})
    assert exists(berthd, "busybox:latest")


def test_the_cli_says_why_a_filter_is_refused(berthd: Berthd) -> None:
    p = berthd.docker("image", "prune", "-f", "--filter", "foo=bar", check=False)
    assert (p.returncode, p.stderr.strip()) == (
        1,
        "Error response from daemon: invalid filter 'foo'",
    )
    p = berthd.docker("image", "prune", "-a", "-f", "--filter", "until=yesterday", check=False)
    assert (p.returncode, p.stderr.strip()) == (
        1,
        "Error response from daemon: invalid value for 'until' filter: failed to parse value "
        'as time or duration: "yesterday"',
    )
    client = berthd.client()
    try:
        import docker  # type: ignore[import-untyped]

        with pytest.raises(docker.errors.APIError) as e:
            client.images.prune(filters={"label!": "x", "color": "red"})
        assert e.value.status_code == 400
        assert e.value.explanation == "invalid filter 'color'"
    finally:
        client.close()
    assert exists(berthd, "busybox:latest")


def test_build_prune_answers_as_dockerd_with_no_cache(berthd: Berthd) -> None:
    berthd.request("POST", "/v1.51/build/prune?all=1")  # what earlier tests' builds left
    since = time.time()
    status, headers, body = berthd.request("POST", "/v1.51/build/prune")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert body == b'{"CachesDeleted":null,"SpaceReclaimed":0}\n'
    client = berthd.client()
    try:
        assert client.api.prune_builds() == {"CachesDeleted": None, "SpaceReclaimed": 0}
        answer = client.api.prune_builds(filters={"until": "24h"}, keep_storage=1 << 20)
        assert answer == {"CachesDeleted": None, "SpaceReclaimed": 0}
    finally:
        client.close()
    p = berthd.docker("builder", "prune", "-f", "--filter", "until=2020-01-01T00:00:00Z")
    assert p.stdout.strip() == "Total reclaimed space: 0B"
    seen = events_since(berthd, since, "type=builder")
    assert [(e["Action"], e["Actor"]) for e in seen] == [
        ("prune", {"ID": "", "Attributes": {"reclaimed": "0"}})
    ] * 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('filters={"foo":{"x":true}}', "failed to prune build cache: invalid filter 'foo'"),
        (
            'filters={"mutable":{"x":true}}',
            "failed to prune build cache: invalid filter 'mutable'",
        ),
        (
            'filters={"until":{"abc":true}}',
            "failed to prune build cache: \"until\" filter expects a duration (e.g., '24h') "
            'or a timestamp: failed to parse value as time or duration: "abc"',
        ),
        (
            'filters={"until":{"1h":true},"unused-for":{"2h":true}}',
            'failed to prune build cache: conflicting filters: "until" and "unused-for"',
        ),
        (
            'filters={"id":{"a":true,"b":true}}',
            "failed to prune build cache: filters expect only one value",
        ),
        (
            "keep-storage=abc",
            "keep-storage is in bytes and expects an integer, got abc: "
            'strconv.Atoi: parsing "abc": invalid syntax',
        ),
        (
            "max-used-space=1.5",
            "max-used-space is in bytes and expects an integer, got 1.5: "
            'strconv.Atoi: parsing "1.5": invalid syntax',
        ),
    ],
)
def test_build_prune_refusals(berthd: Berthd, query: str, message: str) -> None:
    status, _, body = berthd.request("POST", f"/v1.51/build/prune?{query}")
    assert (status, json.loads(body)) == (400, {"message": message})


def test_rmi_publishes_untag_and_delete_under_the_image_id(
    berthd: Berthd, tmp_path: Path, image_cleanup: list[str]
) -> None:
    name = unique_name("rmi-events")
    image_cleanup.append(f"{name}:1")
    ident = imported(berthd, image_tar(tmp_path, "rmi", 10), "--change", "LABEL team=x")
    berthd.docker("tag", ident, f"{name}:1")
    berthd.docker("tag", ident, f"{name}:2")
    since = time.time()
    berthd.docker("rmi", f"{name}:1")
    berthd.docker("rmi", f"{name}:2")
    seen = events_since(berthd, since, "type=image")
    assert [(e["Action"], e["Actor"]) for e in seen] == [
        ("untag", {"ID": ident, "Attributes": {"team": "x", "name": ident}}),
        ("untag", {"ID": ident, "Attributes": {"team": "x", "name": ident}}),
        ("delete", {"ID": ident, "Attributes": {"name": ident}}),
    ]
    assert not exists(berthd, ident)


# -- image prune, on daemons of their own ----------------------------------------------


def test_image_prune_dangling_then_all(fresh_berthd: Berthd, tmp_path: Path) -> None:
    d = fresh_berthd
    shared = image_tar(tmp_path, "shared", 300_000)
    own = image_tar(tmp_path, "own", 200_000)
    kept = imported(d, shared)
    d.docker("tag", kept, "kept:1")
    twin = imported(d, shared, "--change", "LABEL twin=1")  # dangling; layer under kept:1
    alone = imported(d, own)  # dangling, with a layer of its own
    used = imported(d, image_tar(tmp_path, "used", 1000))
    d.docker("tag", used, "used:1")
    d.docker("tag", used, "used:2")
    stopped, running = unique_name("stopped"), unique_name("running")
    d.docker("create", "--name", stopped, "used:1", "true")
    d.docker("run", "-d", "--name", running, "busybox", "sleep", "300")
    alone_size, kept_size = size_of(d, alone), size_of(d, "kept:1")
    assert alone_size == 200_000 and kept_size == 300_000
    since = time.time()

    client = d.client()
    try:
        report = client.images.prune()  # no filter: dangling images only
    finally:
        client.close()
    assert report == {
        "ImagesDeleted": [{"Deleted": twin}, {"Deleted": alone}, {"Deleted": chain_of(own)}],
        "SpaceReclaimed": alone_size,  # the twin's layer stays under kept:1: nothing
    }
    assert not exists(d, twin) and not exists(d, alone)
    for ref in ("kept:1", "used:1", "used:2", "busybox:latest"):
        assert exists(d, ref)

    # -a: kept:1 is unused and goes, layer and all; used:1 and used:2 (a stopped
    # container's image) and busybox (a running one's) stay, with every tag.
    out = d.docker("image", "prune", "-a", "-f").stdout
    assert out == (
        "Deleted Images:\n"
        "untagged: kept:1\n"
        f"deleted: {kept}\n"
        f"deleted: {chain_of(shared)}\n"
        "\n"
        f"Total reclaimed space: {human(kept_size)}\n"
    )
    for ref in ("used:1", "used:2", "busybox:latest"):
        assert exists(d, ref)
    assert inspect_container(d, stopped)["Image"] == used

    seen = events_since(d, since, "type=image")
    assert [(e["Action"], e["Actor"]) for e in seen] == [
        ("delete", {"ID": twin, "Attributes": {"name": twin}}),
        ("delete", {"ID": alone, "Attributes": {"name": alone}}),
        ("prune", {"ID": "", "Attributes": {"reclaimed": str(alone_size)}}),
        ("untag", {"ID": kept, "Attributes": {"name": kept}}),
        ("delete", {"ID": kept, "Attributes": {"name": kept}}),
        ("prune", {"ID": "", "Attributes": {"reclaimed": str(kept_size)}}),
    ]
    # Nothing left to prune: null, 0, and the CLI's bare total.
    assert d.docker("image", "prune", "-a", "-f").stdout == "Total reclaimed space: 0B\n"
    d.docker("rm", "-f", running, stopped)
    assert d.docker("image", "prune", "-a", "-f").stdout.startswith("Deleted Images:\n")
    assert d.docker("images", "-a", "-q").stdout == ""


def test_a_nameless_parent_is_not_dangling(fresh_berthd: Berthd) -> None:
    """An image without a name that another image names as its parent (here through
    ``docker load``'s Parent link) is no dangling image: it goes with its last child."""
    d = fresh_berthd
    d.docker("rmi", "busybox:latest")
    base = layer_tar({"gen": None, "gen/1": b"a" * 3000})
    more = layer_tar({"gen": None, "gen/2": b"b" * 4000})
    parent, child = image_config([sha256(base)]), image_config([sha256(base), sha256(more)])
    ar = Archive()
    for blob in (base, more, parent, child):
        ar.add(f"blobs/sha256/{sha256(blob)[7:]}", blob)
    ar.add(
        "manifest.json",
        json.dumps([
            {"Config": f"blobs/sha256/{sha256(parent)[7:]}", "RepoTags": None,
             "Layers": [f"blobs/sha256/{sha256(base)[7:]}"]},
            {"Config": f"blobs/sha256/{sha256(child)[7:]}", "RepoTags": ["child:1"],
             "Layers": [f"blobs/sha256/{sha256(b)[7:]}" for b in (base, more)],
             "Parent": sha256(parent)},
        ]).encode(),
    )  # fmt: skip
    subprocess.run([DOCKER, "load"], input=ar.build(), env=d.env(), capture_output=True, check=True)
    assert d.docker("image", "inspect", "-f", "{{.Parent}}", "child:1").stdout.strip() == (
        sha256(parent)
    )
    assert d.docker("image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    assert exists(d, sha256(parent))
    client = d.client()
    try:
        report = client.images.prune(filters={"dangling": False})
    finally:
        client.close()
    base_chain = chain_id(None, sha256(base))
    assert report == {
        "ImagesDeleted": [
            {"Untagged": "child:1"},
            {"Deleted": sha256(child)},
            {"Deleted": chain_id(base_chain, sha256(more))},
            {"Deleted": sha256(parent)},
            {"Deleted": base_chain},
        ],
        "SpaceReclaimed": 3000 + 4000,
    }
    assert d.docker("images", "-a", "-q").stdout == ""


def test_until_and_label_filters(fresh_berthd: Berthd, tmp_path: Path) -> None:
    d = fresh_berthd

    def archive(name: str, created: str, labels: dict[str, str]) -> bytes:
        layer = layer_tar({f"{name}.txt": name * 100})
        config = image_config([sha256(layer)], labels=labels, created=created)
        return docker_archive([layer], [], config=config)

    old_a = loaded(d, archive("olda", "2020-05-01T00:00:00Z", {"team": "a"}))
    old_b = loaded(d, archive("oldb", "2020-06-01T00:00:00Z", {"team": "b", "keep": "1"}))
    new_a = imported(d, image_tar(tmp_path, "newa", 10), "--change", "LABEL team=a")
    new_c = imported(d, image_tar(tmp_path, "newc", 10), "--change", "LABEL team=c")
    client = d.client()
    try:

        def pruned(**filters: Any) -> list[str]:
            report = client.images.prune(filters=filters)
            return [i["Deleted"] for i in report["ImagesDeleted"] or [] if i.get("Deleted")]

        # A timestamp: only what was made before it (the 2020 images), and of those
        # only the ones the label filters leave.
        assert pruned(until="2021-01-01T00:00:00Z", label="team=a")[0] == old_a
        assert exists(d, old_b) and exists(d, new_a) and exists(d, new_c)
        assert pruned(until="2021-01-01T00:00:00Z", **{"label!": "keep"}) == []
        assert exists(d, old_b)
        # A Go duration back from now: made more than an hour ago.
        assert pruned(until="1h")[0] == old_b
        assert exists(d, new_a) and exists(d, new_c)
        assert pruned(label="team=c")[0] == new_c
        assert exists(d, new_a)
    finally:
        client.close()
    # Unix seconds through the CLI, in the future: new_a was made before it.
    out = d.docker("image", "prune", "-f", "--filter", f"until={int(time.time()) + 3600}").stdout
    assert f"deleted: {new_a}\n" in out
    assert d.docker("images", "-q").stdout.split() == [
        d.docker("image", "inspect", "-f", "{{.ID}}", "busybox").stdout.strip()[7:19]
    ]


def test_system_prune_with_some_of_everything(fresh_berthd: Berthd, tmp_path: Path) -> None:
    d = fresh_berthd
    stopped = d.docker("create", "busybox", "true").stdout.strip()
    running = unique_name("running")
    in_use = unique_name("inuse")
    d.docker("network", "create", in_use)
    d.docker("run", "-d", "--name", running, "--network", in_use, "busybox", "sleep", "300")
    unused_net = unique_name("unused")
    d.docker("network", "create", unused_net)
    # An anonymous volume nobody uses any more, and a named one.
    gone = d.docker("create", "-v", "/data", "busybox", "true").stdout.strip()
    anonymous = inspect_container(d, gone)["Mounts"][0]["Name"]
    d.docker("rm", gone)
    named = unique_name("named")
    d.docker("volume", "create", named)
    dangling = imported(d, image_tar(tmp_path, "dangling", 5000))
    tagged = imported(d, image_tar(tmp_path, "tagged", 7000))
    d.docker("tag", tagged, "tagged:1")
    since = time.time()

    out = d.docker("system", "prune", "-f").stdout
    assert out == (
        f"Deleted Containers:\n{stopped}\n\n"
        f"Deleted Networks:\n{unused_net}\n\n"
        f"Deleted Images:\ndeleted: {dangling}\ndeleted: {chain_of(tmp_path / 'dangling.tar')}\n"
        "\n"
        f"Total reclaimed space: {human(5000)}\n"
    )
    for ref in ("tagged:1", "busybox:latest"):
        assert exists(d, ref)
    assert d.docker("volume", "inspect", anonymous, check=False).returncode == 0
    assert d.docker("network", "inspect", in_use, check=False).returncode == 0

    out = d.docker("system", "prune", "-a", "--volumes", "-f").stdout
    assert out == (
        f"Deleted Volumes:\n{anonymous}\n\n"
        f"Deleted Images:\nuntagged: tagged:1\ndeleted: {tagged}\n"
        f"deleted: {chain_of(tmp_path / 'tagged.tar')}\n"
        "\n"
        f"Total reclaimed space: {human(7000)}\n"
    )
    assert exists(d, "busybox:latest")  # the running container's
    assert d.docker("volume", "ls", "-q").stdout.split() == [named]
    kinds = [(e["Type"], e["Action"]) for e in events_since(d, since) if e["Action"] == "prune"]
    assert ("image", "prune") in kinds and ("builder", "prune") in kinds
    assert ("container", "prune") in kinds and ("network", "prune") in kinds
    assert ("volume", "prune") in kinds
    assert kinds.count(("builder", "prune")) == 2
    d.docker("rm", "-f", running)
    d.docker("network", "rm", in_use)
    d.docker("volume", "rm", named)


def test_prune_racing_creates_never_takes_a_containers_image(
    fresh_berthd: Berthd, tmp_path: Path
) -> None:
    """Each round a container is created from a fresh image while ``prune -a`` runs:
    either the create wins (the image and its layers stay, and the container runs) or
    the prune does (the image is gone and the create is a 404, never a container on a
    deleted image)."""
    d = fresh_berthd
    client = d.client()
    created: list[tuple[str, str]] = []
    refused = 0
    try:
        for n in range(8):
            tar = busybox_rootfs_tar(tmp_path / f"race{n}.tar", {f"round{n}": b"r"})
            ident = imported(d, tar, "--change", 'CMD ["true"]')
            ref = f"race:{n}"
            d.docker("tag", ident, ref)
            outcome: dict[str, Any] = {}

            def create(ref: str = ref, outcome: dict[str, Any] = outcome) -> None:
                try:
                    outcome["id"] = client.api.create_container(ref)["Id"]
                except Exception as e:  # the docker-py error, checked below
                    outcome["error"] = e

            maker = threading.Thread(target=create)
            maker.start()
            report = client.images.prune(filters={"dangling": False})
            maker.join()
            went = {i.get("Deleted") for i in report["ImagesDeleted"] or []}
            if "id" in outcome:
                assert ident not in went
                created.append((outcome["id"], ident))
            else:
                assert getattr(outcome["error"], "status_code", None) == 404, outcome["error"]
                assert ident in went
                refused += 1
        for cid, ident in created:
            assert inspect_container(d, cid)["Image"] == ident
            assert exists(d, ident)
            assert d.docker("start", "-a", cid).returncode == 0
    finally:
        client.close()
    assert len(created) + refused == 8
