"""Images: import, load, list, inspect, tag, rmi, history — through the docker CLI."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd
from tests.e2e.archives import (
    Archive,
    docker_archive,
    image_config,
    layer_tar,
    oci_layout,
    sha256,
)


def inspect_image(d: Berthd, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(d.docker("image", "inspect", ref).stdout)[0]


def load(d: Berthd, data: bytes, check: bool = True) -> tuple[int, str]:
    """``docker load`` from stdin; returns the exit code and everything printed."""
    p = subprocess.run(
        [DOCKER, "load"], input=data, env=d.env(), capture_output=True, timeout=120, check=False
    )
    out = (p.stdout + p.stderr).decode()
    if check:
        assert p.returncode == 0, out
    return p.returncode, out


def layer_dirs(d: Berthd) -> set[str]:
    return set(os.listdir(d.data_root / "overlay2"))


def test_import_with_changes_and_message(berthd: Berthd, busybox_tar: Path) -> None:
    image_id = berthd.docker(
        "import",
        "--change", 'ENTRYPOINT ["/bin/sh", "-c"]',
        "--change", "CMD echo hello",
        "--change", "ENV A=1 B=two",
        "--change", "WORKDIR /srv",
        "--change", "EXPOSE 80 53/udp",
        "--change", "LABEL org.example=yes",
        "--change", "USER app",
        "--change", "VOLUME /data",
        "--change", "STOPSIGNAL SIGINT",
        "--message", "imported by a test",
        str(busybox_tar),
        "changed:1",
    ).stdout.strip()  # fmt: skip
    assert image_id.startswith("sha256:") and len(image_id) == 71
    img = inspect_image(berthd, "changed:1")
    assert img["Id"] == image_id
    assert img["RepoTags"] == ["changed:1"]
    assert img["Comment"] == "imported by a test"
    cfg = img["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hello"]
    assert cfg["Env"] == ["A=1", "B=two"]
    assert cfg["WorkingDir"] == "/srv"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"org.example": "yes"}
    assert cfg["User"] == "app"
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGINT"
    # The layer's DiffID is the digest of the tar that was sent.
    assert img["RootFS"]["Layers"] == [sha256(busybox_tar.read_bytes())]
    history = berthd.docker("history", "--no-trunc", "--format", "{{.Comment}}", "changed:1")
    assert history.stdout.strip() == "imported by a test"
    berthd.docker("rmi", "changed:1")


def test_import_gzip_from_stdin(berthd: Berthd, busybox_tar: Path) -> None:
    raw = busybox_tar.read_bytes()
    p = subprocess.run(
        [DOCKER, "import", "-", "gz:latest"],
        input=gzip.compress(raw),
        env=berthd.env(),
        capture_output=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    img = inspect_image(berthd, "gz")
    assert img["RootFS"]["Layers"] == [sha256(raw)]
    assert img["Comment"] == "Imported from -"
    # Same content as busybox:latest, so the layer is shared, not stored twice.
    assert img["RootFS"]["Layers"] == inspect_image(berthd, "busybox")["RootFS"]["Layers"]
    assert (
        img["GraphDriver"]["Data"]["UpperDir"]
        == inspect_image(berthd, "busybox")["GraphDriver"]["Data"]["UpperDir"]
    )
    berthd.docker("rmi", "gz")


def test_import_refuses_bad_changes_before_reading(berthd: Berthd, busybox_tar: Path) -> None:
    before = berthd.docker("images", "-aq").stdout
    proc = berthd.docker(
        "import", "--change", "RUN rm -rf /", str(busybox_tar), "bad:1", check=False
    )
    assert proc.returncode == 1
    assert "run is not a valid change command" in proc.stderr
    proc = berthd.docker("import", "--change", "STOPSIGNAL SIGFOO", str(busybox_tar), check=False)
    assert "invalid signal: SIGFOO" in proc.stderr
    assert berthd.docker("images", "-aq").stdout == before


def test_load_docker_archive_with_whiteouts(berthd: Berthd) -> None:
    base = layer_tar({"etc/": None, "etc/a": "a", "etc/b": "b", "keep/": None, "keep/x": "x"})
    top = layer_tar(
        {"etc/": None, "etc/.wh.a": "", "keep/": None, "keep/.wh..wh..opq": "", "keep/y": "y"}
    )
    _, out = load(berthd, docker_archive([base, top], ["layered:1"], compress=True))
    assert "Loaded image: layered:1" in out
    img = inspect_image(berthd, "layered:1")
    assert img["RootFS"]["Layers"] == [sha256(base), sha256(top)]
    data = img["GraphDriver"]["Data"]
    upper = Path(data["UpperDir"])
    whiteout = os.lstat(upper / "etc" / "a")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(upper / "keep", "trusted.overlay.opaque") == b"y"
    assert (upper / "keep" / "y").read_text() == "y"
    assert [Path(p).name for p in data["LowerDir"].split(":")] == ["diff"]
    # The whole chain mounted as overlay shows the effect of the whiteouts.
    assert img["Size"] == 4
    berthd.docker("rmi", "layered:1")


def test_load_a_compressed_archive(berthd: Berthd) -> None:
    """``docker save busybox | gzip`` loads as well as the plain tar."""
    layer = layer_tar({"zipped": "z"})
    _, out = load(berthd, gzip.compress(docker_archive([layer], ["zipped:1"])))
    assert "Loaded image: zipped:1" in out
    assert inspect_image(berthd, "zipped:1")["RootFS"]["Layers"] == [sha256(layer)]
    assert os.listdir(berthd.data_root / "tmp") == []
    berthd.docker("rmi", "zipped:1")


def test_load_oci_layout(berthd: Berthd) -> None:
    layer = layer_tar({"hello.txt": "from an OCI layout"})
    _, out = load(berthd, oci_layout([layer], "docker.io/library/ocitest:2"))
    assert "Loaded image: ocitest:2" in out
    img = inspect_image(berthd, "ocitest:2")
    assert img["Config"]["Cmd"] == ["echo", "oci"]
    assert img["RootFS"]["Layers"] == [sha256(layer)]
    upper = Path(img["GraphDriver"]["Data"]["UpperDir"])
    assert (upper / "hello.txt").read_text() == "from an OCI layout"
    # Without a name the image is loaded untagged and reported by ID.
    _, out = load(berthd, oci_layout([layer_tar({"other": "x"})], None))
    assert "Loaded image ID: sha256:" in out
    image_id = out.split("Loaded image ID: ")[1].split()[0]
    berthd.docker("rmi", image_id)
    berthd.docker("rmi", "ocitest:2")


def test_load_again_renames_the_old_tag(berthd: Berthd) -> None:
    first = layer_tar({"v": "1"})
    second = layer_tar({"v": "2"})
    _, out = load(berthd, docker_archive([first], ["again:latest"]))
    old_id = inspect_image(berthd, "again")["Id"]
    _, out = load(berthd, docker_archive([first], ["again:latest"]))
    assert "already exists" not in out
    _, out = load(berthd, docker_archive([second], ["again:latest"]))
    assert (
        f"The image again:latest already exists, renaming the old one with ID {old_id} to empty string"
        in out
    )
    assert inspect_image(berthd, "again")["Id"] != old_id
    berthd.docker("rmi", "again")
    berthd.docker("rmi", old_id)


def _escaping_manifest() -> bytes:
    ar = Archive()
    cfg = image_config([sha256(layer_tar({"a": "a"}))])
    ar.add("cfg.json", cfg)
    ar.add(
        "manifest.json",
        json.dumps(
            [{"Config": "cfg.json", "RepoTags": ["evil:1"], "Layers": ["../../../etc/passwd"]}]
        ).encode(),
    )
    return ar.build()


HOSTILE = {
    "dotdot layer entry": (
        lambda: docker_archive([layer_tar({"../../escaped-by-dotdot": "x"})], ["evil:1"]),
        "escapes the layer",
    ),
    "absolute layer entry": (
        lambda: docker_archive([layer_tar({"/tmp/berth-escaped-absolute": "x"})], ["evil:1"]),
        "absolute",
    ),
    "escaping symlink": (
        lambda: docker_archive([layer_tar({}, symlinks={"up": "../../../../etc"})], ["evil:1"]),
        "invalid symlink",
    ),
    "digest mismatch": (
        lambda: docker_archive(
            [layer_tar({"a": "a"})],
            ["evil:1"],
            config=image_config([sha256(b"something else")]),
        ),
        "invalid diffID for layer 0",
    ),
    "manifest path escapes": (
        _escaping_manifest,
        "outside of the archive",
    ),
    "truncated": (
        lambda: docker_archive([layer_tar({"big": os.urandom(200_000)})], ["evil:1"])[:150_000],
        "invalid",
    ),
    "not a tar": (lambda: b"this is not a tarball at all" * 100, "invalid"),
    "oci blob digest mismatch": (
        lambda: oci_layout([layer_tar({"a": "a"})], "evil:1", wrong_blob=True),
        "digest",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_leave_nothing(berthd: Berthd, case: str) -> None:
    build, expected = HOSTILE[case]
    images_before = berthd.docker("images", "-aq", "--no-trunc").stdout
    dirs_before = layer_dirs(berthd)
    code, out = load(berthd, build(), check=False)
    assert code == 1, out
    assert expected in out.lower() or expected in out
    assert berthd.docker("images", "-aq", "--no-trunc").stdout == images_before
    assert layer_dirs(berthd) == dirs_before
    assert not os.path.exists("/tmp/berth-escaped-absolute")
    assert not os.path.exists(berthd.data_root.parent.parent / "escaped-by-dotdot")
    assert os.listdir(berthd.data_root / "tmp") == []


def test_images_list_filters(berthd: Berthd) -> None:
    load(berthd, docker_archive([layer_tar({"one": "1"})], ["flt:one"]))
    cfg_layer = layer_tar({"two": "2"})
    load(
        berthd,
        docker_archive(
            [cfg_layer],
            ["flt:two"],
            config=image_config([sha256(cfg_layer)], created="2025-06-01T00:00:00Z"),
        ),
    )
    load(berthd, docker_archive([layer_tar({"three": "3"})], []))
    try:
        ls = berthd.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "flt").stdout.split()
        assert sorted(ls) == ["flt:one", "flt:two"]
        refs = berthd.docker(
            "images", "--filter", "reference=flt:t*", "--format", "{{.Tag}}"
        ).stdout
        assert refs.split() == ["two"]
        dangling = berthd.docker("images", "-q", "--filter", "dangling=true").stdout.split()
        assert len(dangling) == 1
        assert inspect_image(berthd, dangling[0])["RepoTags"] == []
        labelled = berthd.docker("images", "-q", "--filter", "label=built=by-hand").stdout.split()
        assert len(labelled) == 3
        since = berthd.docker(
            "images", "--format", "{{.Tag}}", "--filter", "since=flt:one", "flt"
        ).stdout
        assert since.split() == ["two"]
        before = berthd.docker(
            "images", "--format", "{{.Tag}}", "--filter", "before=flt:two", "flt"
        ).stdout
        assert before.split() == ["one"]
        bad = berthd.docker("images", "--filter", "dangling=maybe", check=False)
        assert bad.returncode == 1 and "invalid filter 'dangling=[maybe]'" in bad.stderr
        bad = berthd.docker("images", "--filter", "colour=red", check=False)
        assert "invalid filter 'colour'" in bad.stderr
        digests = berthd.docker("images", "--digests", "--format", "{{.Digest}}", "flt").stdout
        assert digests.split() == ["<none>", "<none>"]
        quiet = berthd.docker("images", "-q", "flt:one").stdout.strip()
        assert inspect_image(berthd, "flt:one")["Id"][7:19] == quiet
    finally:
        for ref in ("flt:one", "flt:two", *dangling):
            berthd.docker("rmi", ref, check=False)


def test_tag_and_rmi_untag_versus_delete(berthd: Berthd) -> None:
    load(berthd, docker_archive([layer_tar({"t": "t"})], ["tagme:1"]))
    image_id = inspect_image(berthd, "tagme:1")["Id"]
    berthd.docker("tag", "tagme:1", "tagme:2")
    berthd.docker("tag", image_id[7:19], "localhost:5000/other/name:v3")
    assert sorted(inspect_image(berthd, image_id)["RepoTags"]) == [
        "localhost:5000/other/name:v3",
        "tagme:1",
        "tagme:2",
    ]
    assert inspect_image(berthd, "tagme:2")["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"
    out = berthd.docker("rmi", "tagme:1").stdout
    assert out.strip() == "Untagged: tagme:1"
    proc = berthd.docker("rmi", image_id[7:19], check=False)
    assert proc.returncode == 1
    assert "image is referenced in multiple repositories" in proc.stderr
    cid = berthd.docker("create", "tagme:2", "sh").stdout.strip()
    berthd.docker("rmi", "localhost:5000/other/name:v3")
    proc = berthd.docker("rmi", "tagme:2", check=False)
    assert proc.returncode == 1
    assert f"container {cid[:12]} is using its referenced image {image_id[7:19]}" in proc.stderr
    proc = berthd.docker("rmi", image_id, check=False)
    assert f"(must be forced) - image is being used by stopped container {cid[:12]}" in proc.stderr
    # Forced, the image goes even though a stopped container was made from it; its layer
    # stays, held by the container's RW layer, until the container is removed.
    dirs = layer_dirs(berthd)
    out = berthd.docker("rmi", "-f", "tagme:2").stdout.splitlines()
    assert out == ["Untagged: tagme:2", f"Deleted: {image_id}"]
    assert layer_dirs(berthd) == dirs
    ps = berthd.docker("ps", "-a", "--filter", f"id={cid}", "--format", "{{.Image}}").stdout
    assert ps.strip() == image_id[7:19]
    berthd.docker("rm", cid)
    assert len(layer_dirs(berthd)) == len(dirs) - 3  # RW, init and the image layer
    proc = berthd.docker("image", "inspect", image_id, check=False)
    assert "No such image" in proc.stderr
    proc = berthd.docker("tag", "nosuchimage", "x:1", check=False)
    assert "No such image: nosuchimage:latest" in proc.stderr


def test_history(berthd: Berthd) -> None:
    layers = [layer_tar({"l1": "1"}), layer_tar({"l2": "22"})]
    load(berthd, docker_archive(layers, ["hist:1"]))
    rows = [
        json.loads(line)
        for line in berthd.docker(
            "history", "--no-trunc", "--format", "{{json .}}", "hist:1"
        ).stdout.splitlines()
    ]
    assert [r["CreatedBy"] for r in rows] == ["layer 1", "layer 0"]
    assert rows[0]["ID"] == inspect_image(berthd, "hist:1")["Id"]
    assert rows[1]["ID"] == "<missing>"
    assert rows[0]["Size"] == "2B" and rows[1]["Size"] == "1B"
    berthd.docker("rmi", "hist:1")


def test_docker_py_images(berthd: Berthd) -> None:
    client = berthd.client()
    try:
        loaded = client.images.load(docker_archive([layer_tar({"py": "py"})], ["dockerpy:1"]))
        assert [img.tags for img in loaded] == [["dockerpy:1"]]
        names = {t for img in client.images.list() for t in img.tags}
        assert {"dockerpy:1", "busybox:latest"} <= names
        img = client.images.get("dockerpy:1")
        assert img.attrs["Config"]["Cmd"] == ["sh"]
        img.tag("dockerpy", "2")
        assert sorted(client.images.get("dockerpy:2").tags) == ["dockerpy:1", "dockerpy:2"]
        client.images.remove("dockerpy:1")
        client.images.remove("dockerpy:2")
        import docker.errors

        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("dockerpy:2")
    finally:
        client.close()
