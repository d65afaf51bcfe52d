"""``docker save`` (GET /images/get, GET /images/{name}/get) through a real berthd, with the
real CLI and docker-py: dockerd 25's tarball (OCI layout + docker-archive), layers byte for
byte, ``save | load`` to the same IDs, errors before the first byte, a cut after it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from berth.testing import (
    DOCKER,
    Berthd,
    busybox_rootfs_tar,
    running_berthd,
    unique_name,
    wait_for,
)
from tests.e2e.archives import Archive, docker_archive, image_config, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _pax_tar(*members: tuple[str, bytes | None], trailing: bytes = b"") -> bytes:
    """A layer with fixed mtimes; *trailing* goes after the end blocks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue() + trailing


class Saved:
    """A saved tarball, read whole: its members in order and their bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            self.members = tf.getmembers()
            self.files = {
                m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
                for m in self.members
                if m.isreg()
            }

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])

    def blob(self, digest: str) -> bytes:
        return self.files["blobs/sha256/" + digest.removeprefix("sha256:")]

    def check(self) -> None:
        """What holds of every tarball: the layout, every blob its digest, every
        manifest.json layer its DiffID, the OCI manifests in step with manifest.json."""
        names = [m.name for m in self.members]
        blobs = [n for n in names if n.startswith("blobs/sha256/")]
        assert names == ["blobs", "blobs/sha256", *sorted(blobs)] + [
            n for n in ("index.json", "manifest.json", "oci-layout", "repositories") if n in names
        ]
        assert not any(m.issym() or m.islnk() for m in self.members)
        for name in blobs:
            assert hashlib.sha256(self.files[name]).hexdigest() == name.rsplit("/", 1)[1]
        assert self.files["oci-layout"] == b'{"imageLayoutVersion": "1.0.0"}'
        configs = set()
        for item in self.json("manifest.json"):
            config = json.loads(self.files[item["Config"]])
            configs.add(item["Config"].rsplit("/", 1)[1])
            diff_ids = config["rootfs"]["diff_ids"]
            assert item["Layers"] == ["blobs/sha256/" + d[7:] for d in diff_ids]
            assert item["LayerSources"] == {
                d: {"mediaType": OCI_LAYER, "size": len(self.blob(d)), "digest": d}
                for d in diff_ids
            }
        index = self.json("index.json")
        assert index["schemaVersion"] == 2
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        for desc in index["manifests"]:
            raw = self.blob(desc["digest"])
            assert desc["mediaType"] == OCI_MANIFEST and desc["size"] == len(raw)
            manifest = json.loads(raw)
            assert manifest["config"]["digest"][7:] in configs
            config = json.loads(self.blob(manifest["config"]["digest"]))
            assert [layer["digest"] for layer in manifest["layers"]] == config["rootfs"]["diff_ids"]
            for layer in manifest["layers"]:
                assert layer["mediaType"] == OCI_LAYER
                assert layer["size"] == len(self.blob(layer["digest"]))

    def item(self, image_id: str) -> dict[str, Any]:
        (found,) = [
            i for i in self.json("manifest.json") if i["Config"] == "blobs/sha256/" + image_id[7:]
        ]
        return found  # type: ignore[no-any-return]


def _save(d: Berthd, *names: str) -> Saved:
    out = subprocess.run(
        [DOCKER, "save", *names], env=d.env(), capture_output=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr.decode()
    return Saved(out.stdout)


def _image_id(d: Berthd, ref: str) -> str:
    return d.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def _import(d: Berthd, tmp_path: Path, ref: str, extra: dict[str, bytes]) -> str:
    tar = busybox_rootfs_tar(tmp_path / f"{unique_name()}.tar", extra)
    d.docker("import", str(tar), ref)
    return _image_id(d, ref)


def test_save_and_load_on_a_fresh_daemon_keeps_ids_tags_and_layers(
    berthd: Berthd, tmp_path: Path
) -> None:
    image_id = _image_id(berthd, "busybox:latest")
    saved = subprocess.run(
        [DOCKER, "save", "busybox:latest"], env=berthd.env(), capture_output=True, check=True
    ).stdout
    Saved(saved).check()
    with running_berthd() as fresh:
        out = subprocess.run(
            [DOCKER, "load"], env=fresh.env(), input=saved, capture_output=True, check=False
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode() == "Loaded image: busybox:latest\n"
        assert _image_id(fresh, "busybox:latest") == image_id
        assert fresh.docker("run", "--rm", "busybox", "echo", "round trip").stdout == (
            "round trip\n"
        )
        # and the loaded image saves back to the very same tarball
        again = subprocess.run(
            [DOCKER, "save", "busybox:latest"], env=fresh.env(), capture_output=True, check=True
        ).stdout
        assert again == saved


def test_save_of_several_names_tags_and_repositories(
    berthd: Berthd, tmp_path: Path, image_cleanup: list[str]
) -> None:
    repo, other = unique_name("save-multi"), unique_name("save-other")
    image_cleanup += [f"{repo}:a", f"{repo}:b", f"{other}:1"]
    busybox = _image_id(berthd, "busybox:latest")
    berthd.docker("tag", "busybox:latest", f"{repo}:b")
    berthd.docker("tag", "busybox:latest", f"{repo}:a")
    other_id = _import(berthd, tmp_path, f"{other}:1", {"etc/other": b"another image\n"})

    # a repository (every tag), a tag, a tag of an image already named, and a duplicate
    saved = _save(berthd, repo, f"{other}:1", "busybox:latest", f"{repo}:a")
    saved.check()
    items = saved.json("manifest.json")
    assert [i["Config"] for i in items] == [
        f"blobs/sha256/{busybox[7:]}",
        f"blobs/sha256/{other_id[7:]}",
    ]
    assert items[0]["RepoTags"] == [f"{repo}:a", f"{repo}:b", "busybox:latest"]
    assert items[1]["RepoTags"] == [f"{other}:1"]
    top = {
        i: json.loads(saved.files[item["Config"]])["rootfs"]["diff_ids"][-1][7:]
        for i, item in zip((busybox, other_id), items, strict=True)
    }
    assert saved.json("repositories") == {
        repo: {"a": top[busybox], "b": top[busybox]},
        "busybox": {"latest": top[busybox]},
        other: {"1": top[other_id]},
    }
    annotations = [m["annotations"] for m in saved.json("index.json")["manifests"]]
    assert annotations == [
        {
            "io.containerd.image.name": f"docker.io/library/{ref.split(':')[0]}:{ref.split(':')[1]}",
            "org.opencontainers.image.ref.name": ref.split(":")[1],
        }
        for ref in (f"{repo}:a", f"{repo}:b", "busybox:latest", f"{other}:1")
    ]
    # the busybox layer both images share is in the tarball once
    layers = [n for n in saved.files if n.startswith("blobs/sha256/")]
    assert len(layers) == len(set(layers))


def test_layer_blobs_are_the_image_diff_ids(berthd: Berthd) -> None:
    saved = _save(berthd, "busybox:latest")
    diff_ids = json.loads(
        berthd.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", "busybox").stdout
    )
    item = saved.item(_image_id(berthd, "busybox:latest"))
    assert [sha256(saved.files[p]) for p in item["Layers"]] == diff_ids
    # a tar mtime on the config as dockerd gives it: the image's creation time
    created = berthd.docker("image", "inspect", "--format", "{{.Created}}", "busybox").stdout
    member = next(m for m in saved.members if m.name == item["Config"])
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(member.mtime)) == created[:19]


def test_save_by_id_has_no_tags(berthd: Berthd, tmp_path: Path) -> None:
    image_id = _image_id(berthd, "busybox:latest")
    for name in (image_id, image_id[7:19]):
        saved = _save(berthd, name)
        saved.check()
        (item,) = saved.json("manifest.json")
        assert item["RepoTags"] is None
        assert "repositories" not in saved.files
        (desc,) = saved.json("index.json")["manifests"]
        assert "annotations" not in desc
    path = tmp_path / "by-id.tar"
    path.write_bytes(saved.data)
    with running_berthd() as fresh:
        out = fresh.docker("load", "-i", str(path)).stdout
        assert out == f"Loaded image ID: {image_id}\n"


def test_odd_layer_tars_come_back_byte_for_byte(tmp_path: Path) -> None:
    """A loaded image whose tars no tar writer would make (PAX long names, whiteouts, data
    after the end blocks, uncompressed and gzip'd) saves back to the same bytes."""
    deep = "/".join(["long-directory-name"] * 8)
    layers = [
        busybox_rootfs_tar(tmp_path / "busybox.tar").read_bytes(),
        _pax_tar(
            ("etc", None),
            ("etc/.wh.group", b""),
            (deep, None),
            (f"{deep}/file", b"behind a PAX path\n"),
            ("srv/empty", b""),
        ),
        _pax_tar(("last", b"with bytes after the end blocks"), trailing=b"\0" * 2048 + b"tail"),
    ]
    archive = tmp_path / "odd.tar"
    archive.write_bytes(docker_archive(layers, ["odd-tars:1"], compress=True))
    with running_berthd() as d:
        d.docker("load", "-i", str(archive))
        saved = _save(d, "odd-tars:1")
        saved.check()
        (item,) = saved.json("manifest.json")
        assert [saved.files[p] for p in item["Layers"]] == layers
        # and the saved tarball loads on another daemon to the same image
        path = tmp_path / "saved.tar"
        path.write_bytes(saved.data)
        image_id = _image_id(d, "odd-tars:1")
    with running_berthd() as fresh:
        fresh.docker("load", "-i", str(path))
        assert _image_id(fresh, "odd-tars:1") == image_id


def test_the_oci_layout_alone_loads_too(berthd: Berthd, tmp_path: Path) -> None:
    """What an OCI tool reads of the tarball (index.json, blobs) is a whole image."""
    saved = _save(berthd, "busybox:latest")
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tf:
        for m in saved.members:
            if m.name not in ("manifest.json", "repositories"):
                data = saved.files.get(m.name)
                tf.addfile(m, io.BytesIO(data) if data is not None else None)
    with running_berthd() as fresh:
        assert fresh.docker("load", "-i", str(path)).stdout == "Loaded image: busybox:latest\n"
        assert _image_id(fresh, "busybox:latest") == _image_id(berthd, "busybox:latest")


def test_missing_image_is_a_404_before_any_byte(berthd: Berthd, tmp_path: Path) -> None:
    query = urllib.parse.urlencode([("names", "busybox:latest"), ("names", "no-such-image:1")])
    status, headers, body = berthd.request("GET", f"/images/get?{query}")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": "No such image: no-such-image:1"}
    for path, message in (
        ("/images/no-such-image/get", "No such image: no-such-image"),
        (f"/images/{'0' * 64}/get", f"No such image: {'0' * 64}"),
        (
            "/images/busybox@sha256:" + "1" * 64 + "/get",
            f"No such image: busybox@sha256:{'1' * 64}",
        ),
    ):
        status, _, body = berthd.request("GET", path)
        assert (status, json.loads(body)) == (404, {"message": message})
    status, _, body = berthd.request("GET", "/images/Not_Valid/get")
    assert status == 400, body

    out = tmp_path / "never.tar"
    r = berthd.docker("save", "-o", str(out), "busybox", "no-such-image:2", check=False)
    assert r.returncode == 1
    assert "No such image: no-such-image:2" in r.stderr
    assert not out.exists()


def test_docker_py_save_streams_chunks(berthd: Berthd) -> None:
    client = berthd.client()
    try:
        image = client.images.get("busybox:latest")
        chunks = list(image.save(chunk_size=64 * 1024))
        named = b"".join(image.save(named=True))
    finally:
        client.close()
    assert len(chunks) > 1 and all(len(c) <= 64 * 1024 for c in chunks)
    by_id = Saved(b"".join(chunks))
    by_id.check()
    assert by_id.json("manifest.json")[0]["RepoTags"] is None  # saved by ID
    by_name = Saved(named)
    by_name.check()
    assert by_name.json("manifest.json")[0]["RepoTags"] == ["busybox:latest"]


def test_save_event_per_image(berthd: Berthd, tmp_path: Path, image_cleanup: list[str]) -> None:
    first, second = unique_name("save-event"), unique_name("save-event")
    image_cleanup += [f"{first}:1", f"{first}:2", f"{second}:1"]
    first_id = _import(berthd, tmp_path, f"{first}:1", {"etc/event": b"1\n"})
    berthd.docker("tag", f"{first}:1", f"{first}:2")
    second_id = _import(berthd, tmp_path, f"{second}:1", {"etc/event": b"2\n"})
    since = str(int(time.time()) - 1)
    _save(berthd, first, f"{second}:1")  # two tags of the first: still one event
    events = berthd.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=image", "--filter", "event=save",
        "--format", "{{.Actor.ID}} {{.Actor.Attributes.name}}",
    ).stdout.splitlines()  # fmt: skip
    ours = [e for e in events if e.split()[0] in (first_id, second_id)]
    assert ours == [f"{first_id} {first_id}", f"{second_id} {second_id}"]


def test_platform(berthd: Berthd) -> None:
    arch = json.loads(
        berthd.docker("image", "inspect", "--format", "{{json .Architecture}}", "busybox").stdout
    )
    _save(berthd, "--platform", f"linux/{arch}", "busybox:latest").check()
    wrong = "arm64" if arch != "arm64" else "amd64"
    r = berthd.docker("save", "--platform", f"linux/{wrong}", "busybox:latest", check=False)
    assert r.returncode == 1
    assert f"no suitable export target found for platform linux/{wrong}" in r.stderr
    for value, message in (
        ("{", "failed to parse platform"),
        ('{"variant":"v7"}', "optional platform fields provided, but OS and Architecture"),
        ('{"os":"linux"}', "both OS and Architecture must be provided"),
    ):
        query = urllib.parse.urlencode({"platform": value})
        status, _, body = berthd.request("GET", f"/v1.48/images/busybox/get?{query}")
        assert status == 400 and message in json.loads(body)["message"], body
    query = urllib.parse.urlencode(
        [("platform", '{"os":"linux","architecture":"amd64"}')] * 2 + [("names", "busybox")]
    )
    status, _, body = berthd.request("GET", f"/images/get?{query}")
    assert status == 400 and "use API version 1.52" in json.loads(body)["message"]
    # before API 1.48 the parameter is not looked at
    status, _, _ = berthd.request("GET", "/v1.47/images/busybox/get?platform=nonsense")
    assert status == 200


def test_a_layer_that_cannot_be_reproduced_is_refused_before_streaming(tmp_path: Path) -> None:
    """A tar that writes a file twice leaves no trace of the first contents: its layer
    is marked at load, and save says so instead of sending another tar."""
    twice = _pax_tar(("dup", b"first"), ("dup", b"second"))
    archive = tmp_path / "twice.tar"
    archive.write_bytes(docker_archive([twice], ["written-twice:1"]))
    with running_berthd() as d:
        d.docker("load", "-i", str(archive))
        status, headers, body = d.request("GET", "/images/written-twice:1/get")
        assert status == 500 and headers["content-type"] == "application/json"
        message = json.loads(body)["message"]
        assert f"layer {sha256(twice)} cannot be reproduced" in message
        assert "'dup'" in message


def test_a_failure_part_way_cuts_the_stream(tmp_path: Path) -> None:
    """A layer's file changed on disk (same size, so the record's length still holds):
    the digest check at the end of the layer fails after its bytes went out, and the
    client must see an error, not a complete-looking tarball."""
    layer = _pax_tar(("data", os.urandom(3 << 20)))
    config = image_config([sha256(layer)])
    archive = tmp_path / "cut.tar"
    archive.write_bytes(docker_archive([layer], ["cut-me:1"], config=config))
    with running_berthd() as d:
        d.docker("load", "-i", str(archive))
        upper = d.docker(
            "image", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", "cut-me:1"
        ).stdout.strip()
        path = Path(upper) / "data"
        with open(path, "r+b") as f:
            f.seek(1 << 20)
            f.write(b"changed")
        out = tmp_path / "cut-out.tar"
        r = d.docker("save", "-o", str(out), "cut-me:1", check=False)
        assert r.returncode == 1, r.stdout
        assert "unexpected EOF" in r.stderr
        # the CLI (atomicwriter) keeps what arrived; it is no whole tarball
        assert b"manifest.json" not in out.read_bytes()
        r = subprocess.run(
            [DOCKER, "save", "cut-me:1"], env=d.env(), capture_output=True, check=False
        )
        assert r.returncode == 1
        assert r.stdout.startswith(b"blobs/")  # the tarball had begun...
        assert b"manifest.json" not in r.stdout  # ...and was cut before its end
        assert "files changed since it was registered" in d.log()
        # the daemon serves on
        assert d.docker("image", "inspect", "--format", "{{.Id}}", "cut-me:1").returncode == 0


def _two_generations(related: bool = True) -> tuple[bytes, str, str]:
    """An archive of an image and its child (one layer and one history step more, unless
    not *related*), the child's manifest.json entry naming the parent; (archive, parent
    ID, child ID)."""
    base = _pax_tar(("gen", None), ("gen/1", b"first\n"))
    more = _pax_tar(("gen", None), ("gen/2", b"second\n"))
    parent = image_config([sha256(base)])
    child = image_config([sha256(base), sha256(more)])
    if not related:
        history = [{"created": "2024-01-02T03:04:05Z", "created_by": f"other {i}"} for i in (0, 1)]
        child = image_config([sha256(base), sha256(more)], history=history)
    ar = Archive()
    for layer in (base, more):
        ar.add(f"blobs/sha256/{sha256(layer)[7:]}", layer)
    for cfg in (parent, child):
        ar.add(f"blobs/sha256/{sha256(cfg)[7:]}", cfg)
    manifest = [
        {
            "Config": f"blobs/sha256/{sha256(parent)[7:]}",
            "RepoTags": ["gen:1"],
            "Layers": [f"blobs/sha256/{sha256(base)[7:]}"],
        },
        {
            "Config": f"blobs/sha256/{sha256(child)[7:]}",
            "RepoTags": ["gen:2"],
            "Layers": [f"blobs/sha256/{sha256(base)[7:]}", f"blobs/sha256/{sha256(more)[7:]}"],
            "Parent": sha256(parent),
        },
    ]
    ar.add("manifest.json", json.dumps(manifest).encode())
    return ar.build(), sha256(parent), sha256(child)


def test_parent_links_survive_save_and_load(tmp_path: Path) -> None:
    archive, parent_id, child_id = _two_generations()
    path = tmp_path / "generations.tar"
    path.write_bytes(archive)
    with running_berthd() as d:
        d.docker("load", "-i", str(path))
        assert d.docker("image", "inspect", "-f", "{{.Parent}}", "gen:2").stdout.strip() == (
            parent_id
        )
        saved = _save(d, "gen:2", "gen:1")
        saved.check()
        assert saved.item(child_id)["Parent"] == parent_id
        assert "Parent" not in saved.item(parent_id)
        # alone, the child is saved without a parent the tarball does not hold
        assert "Parent" not in _save(d, "gen:2").item(child_id)
    path.write_bytes(saved.data)
    with running_berthd() as fresh:
        fresh.docker("load", "-i", str(path))
        assert fresh.docker("image", "inspect", "-f", "{{.Parent}}", "gen:2").stdout.strip() == (
            parent_id
        )
        assert fresh.docker("image", "inspect", "-f", "{{.Parent}}", "gen:1").stdout.strip() == ""


def test_a_parent_whose_history_does_not_lead_to_the_child_is_not_recorded(
    tmp_path: Path,
) -> None:
    archive, _, child_id = _two_generations(related=False)
    path = tmp_path / "unrelated.tar"
    path.write_bytes(archive)
    with running_berthd() as d:
        d.docker("load", "-i", str(path))
        assert d.docker("image", "inspect", "-f", "{{.Id}} {{.Parent}}", "gen:2").stdout == (
            f"{child_id} \n"
        )


def test_a_client_that_goes_away_stops_the_save_and_frees_the_layers(tmp_path: Path) -> None:
    big = _pax_tar(("big", os.urandom(24 << 20)))  # more than the pipe and socket hold
    archive = tmp_path / "big.tar"
    archive.write_bytes(docker_archive([big], ["going-away:1"]))
    with running_berthd() as d:
        d.docker("load", "-i", str(archive))
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(d.sock)
        sock.sendall(b"GET /images/going-away:1/get HTTP/1.1\r\nHost: berth\r\n\r\n")
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.close()
        wait_for(lambda: "docker save: the client went away" in d.log(), what="the save to stop")
        assert "Traceback" not in d.log()
        # nothing holds the layer any more: it goes with the image
        d.docker("rmi", "going-away:1")
        layerdb = next((d.data_root / "image").iterdir()) / "layerdb" / "sha256"
        assert list(layerdb.iterdir()) == []


def test_no_names_is_an_empty_archive(berthd: Berthd) -> None:
    status, headers, body = berthd.request("GET", "/images/get")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    saved = Saved(body)
    saved.check()
    assert saved.json("manifest.json") == []
    assert saved.json("index.json")["manifests"] == []
