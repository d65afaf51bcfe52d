"""Images: import, load, list, inspect, tag, rmi, history — through the docker CLI."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from berth.testing import DOCKER, Berthd, unique_name
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


def test_import_with_changes_and_message(
    berthd: Berthd, busybox_tar: Path, image_cleanup: list[str]
) -> None:
    ref = unique_name("changed") + ":1"
    image_cleanup.append(ref)
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
        ref,
    ).stdout.strip()  # fmt: skip
    assert image_id.startswith("sha256:") and len(image_id) == 71
    img = inspect_image(berthd, ref)
    assert img["Id"] == image_id
    assert img["RepoTags"] == [ref]
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
    history = berthd.docker("history", "--no-trunc", "--format", "{{.Comment}}", ref)
    assert history.stdout.strip() == "imported by a test"


def test_import_gzip_from_stdin(
    berthd: Berthd, busybox_tar: Path, image_cleanup: list[str]
) -> None:
    repo = unique_name("gz")
    image_cleanup.append(repo)
    raw = busybox_tar.read_bytes()
    p = subprocess.run(
        [DOCKER, "import", "-", f"{repo}:latest"],
        input=gzip.compress(raw),
        env=berthd.env(),
        capture_output=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    img = inspect_image(berthd, repo)
    assert img["RootFS"]["Layers"] == [sha256(raw)]
    assert img["Comment"] == "Imported from -"
    # Same content as busybox:latest, so the layer is shared, not stored twice.
    assert img["RootFS"]["Layers"] == inspect_image(berthd, "busybox")["RootFS"]["Layers"]
    assert (
        img["GraphDriver"]["Data"]["UpperDir"]
        == inspect_image(berthd, "busybox")["GraphDriver"]["Data"]["UpperDir"]
    )


def test_import_refuses_bad_changes_before_reading(
    berthd: Berthd, busybox_tar: Path, image_cleanup: list[str]
) -> None:
    ref = unique_name("bad") + ":1"
    image_cleanup.append(ref)  # if it were made after all
    before = berthd.docker("images", "-aq").stdout
    proc = berthd.docker("import", "--change", "RUN rm -rf /", str(busybox_tar), ref, check=False)
    assert proc.returncode == 1
    assert "run is not a valid change command" in proc.stderr
    proc = berthd.docker("import", "--change", "STOPSIGNAL SIGFOO", str(busybox_tar), check=False)
    assert "invalid signal: SIGFOO" in proc.stderr
    assert berthd.docker("images", "-aq").stdout == before


def test_load_docker_archive_with_whiteouts(berthd: Berthd, image_cleanup: list[str]) -> None:
    ref = unique_name("layered") + ":1"
    image_cleanup.append(ref)
    base = layer_tar({"etc/": None, "etc/a": "a", "etc/b": "b", "keep/": None, "keep/x": "x"})
    top = layer_tar(
        {"etc/": None, "etc/.wh.a": "", "keep/": None, "keep/.wh..wh..opq": "", "keep/y": "y"}
    )
    _, out = load(berthd, docker_archive([base, top], [ref], compress=True))
    assert f"Loaded image: {ref}" in out
    img = inspect_image(berthd, ref)
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


def test_load_a_compressed_archive(berthd: Berthd, image_cleanup: list[str]) -> None:
    """``docker save busybox | gzip`` loads as well as the plain tar."""
    ref = unique_name("zipped") + ":1"
    image_cleanup.append(ref)
    layer = layer_tar({"zipped": "z"})
    _, out = load(berthd, gzip.compress(docker_archive([layer], [ref])))
    assert f"Loaded image: {ref}" in out
    assert inspect_image(berthd, ref)["RootFS"]["Layers"] == [sha256(layer)]
    assert os.listdir(berthd.data_root / "tmp") == []


def test_load_oci_layout(berthd: Berthd, image_cleanup: list[str]) -> None:
    ref = unique_name("ocitest") + ":2"
    image_cleanup.append(ref)
    layer = layer_tar({"hello.txt": "from an OCI layout"})
    _, out = load(berthd, oci_layout([layer], f"docker.io/library/{ref}"))
    assert f"Loaded image: {ref}" in out
    img = inspect_image(berthd, ref)
    assert img["Config"]["Cmd"] == ["echo", "oci"]
    assert img["RootFS"]["Layers"] == [sha256(layer)]
    upper = Path(img["GraphDriver"]["Data"]["UpperDir"])
    assert (upper / "hello.txt").read_text() == "from an OCI layout"
    # Without a name the image is loaded untagged and reported by ID.
    _, out = load(berthd, oci_layout([layer_tar({"other": unique_name()})], None))
    assert "Loaded image ID: sha256:" in out
    image_cleanup.append(out.split("Loaded image ID: ")[1].split()[0])


def test_load_again_renames_the_old_tag(berthd: Berthd, image_cleanup: list[str]) -> None:
    repo = unique_name("again")
    image_cleanup.append(repo)
    first = layer_tar({"v": "1"})
    second = layer_tar({"v": "2"})
    _, out = load(berthd, docker_archive([first], [f"{repo}:latest"]))
    old_id = inspect_image(berthd, repo)["Id"]
    image_cleanup.append(old_id)
    _, out = load(berthd, docker_archive([first], [f"{repo}:latest"]))
    assert "already exists" not in out
    _, out = load(berthd, docker_archive([second], [f"{repo}:latest"]))
    assert (
        f"The image {repo}:latest already exists, renaming the old one with ID {old_id} "
        "to empty string" in out
    )
    assert inspect_image(berthd, repo)["Id"] != old_id


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


# A symlink that climbs above the root is no longer hostile: dockerd loads it as is (it
# resolves inside the container), and so does berth since d536140; see test_symlinks.py.
HOSTILE = {
    "dotdot layer entry": (
        lambda: docker_archive([layer_tar({"../../escaped-by-dotdot": "x"})], ["evil:1"]),
        "escapes the layer",
    ),
    "absolute layer entry": (
        lambda: docker_archive([layer_tar({"/tmp/berth-escaped-absolute": "x"})], ["evil:1"]),
        "absolute",
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
def test_hostile_archives_are_refused_and_leave_nothing(
    berthd: Berthd, image_cleanup: list[str], case: str
) -> None:
    build, expected = HOSTILE[case]
    image_cleanup.append("evil:1")  # if it were loaded after all
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


def test_images_list_filters(berthd: Berthd, image_cleanup: list[str]) -> None:
    """Counts are of this test's images only: a repository and a label no other test uses."""
    repo, label = unique_name("flt"), unique_name("berth.test")
    image_cleanup.extend([f"{repo}:one", f"{repo}:two"])
    mine = ("--filter", f"label={label}")

    def config(layer: bytes, **extra: str) -> bytes:
        return image_config([sha256(layer)], labels={label: "1"}, **extra)

    one, two, three = layer_tar({"one": "1"}), layer_tar({"two": "2"}), layer_tar({"three": "3"})
    load(berthd, docker_archive([one], [f"{repo}:one"], config=config(one)))
    two_cfg = config(two, created="2025-06-01T00:00:00Z")
    load(berthd, docker_archive([two], [f"{repo}:two"], config=two_cfg))
    _, out = load(berthd, docker_archive([three], [], config=config(three)))
    untagged = out.split("Loaded image ID: ")[1].split()[0]
    image_cleanup.append(untagged)

    ls = berthd.docker("images", "--format", "{{.Repository}}:{{.Tag}}", repo).stdout.split()
    assert sorted(ls) == [f"{repo}:one", f"{repo}:two"]
    refs = berthd.docker(
        "images", "--filter", f"reference={repo}:t*", "--format", "{{.Tag}}"
    ).stdout
    assert refs.split() == ["two"]
    dangling = berthd.docker("images", "-q", "--no-trunc", "--filter", "dangling=true", *mine)
    assert dangling.stdout.split() == [untagged]
    assert inspect_image(berthd, untagged)["RepoTags"] == []
    labelled = berthd.docker("images", "-q", "--filter", "label=built=by-hand", *mine).stdout
    assert len(labelled.split()) == 3
    since = berthd.docker(
        "images", "--format", "{{.Tag}}", "--filter", f"since={repo}:one", repo
    ).stdout
    assert since.split() == ["two"]
    before = berthd.docker(
        "images", "--format", "{{.Tag}}", "--filter", f"before={repo}:two", repo
    ).stdout
    assert before.split() == ["one"]
    bad = berthd.docker("images", "--filter", "dangling=maybe", check=False)
    assert bad.returncode == 1 and "invalid filter 'dangling=[maybe]'" in bad.stderr
    bad = berthd.docker("images", "--filter", "colour=red", check=False)
    assert "invalid filter 'colour'" in bad.stderr
    digests = berthd.docker("images", "--digests", "--format", "{{.Digest}}", repo).stdout
    assert digests.split() == ["<none>", "<none>"]
    quiet = berthd.docker("images", "-q", f"{repo}:one").stdout.strip()
    assert inspect_image(berthd, f"{repo}:one")["Id"][7:19] == quiet


def test_tag_and_rmi_untag_versus_delete(
    berthd: Berthd, cleanup: list[str], image_cleanup: list[str]
) -> None:
    repo = unique_name("tagme")
    remote = f"localhost:5000/{unique_name('other')}/name:v3"
    image_cleanup.extend([f"{repo}:1", f"{repo}:2", remote])
    load(berthd, docker_archive([layer_tar({"t": "t"})], [f"{repo}:1"]))
    image_id = inspect_image(berthd, f"{repo}:1")["Id"]
    image_cleanup.append(image_id)
    berthd.docker("tag", f"{repo}:1", f"{repo}:2")
    berthd.docker("tag", image_id[7:19], remote)
    assert sorted(inspect_image(berthd, image_id)["RepoTags"]) == [remote, f"{repo}:1", f"{repo}:2"]
    assert inspect_image(berthd, f"{repo}:2")["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"
    out = berthd.docker("rmi", f"{repo}:1").stdout
    assert out.strip() == f"Untagged: {repo}:1"
    proc = berthd.docker("rmi", image_id[7:19], check=False)
    assert proc.returncode == 1
    assert "image is referenced in multiple repositories" in proc.stderr
    cid = berthd.docker("create", f"{repo}:2", "sh").stdout.strip()
    cleanup.append(cid)
    berthd.docker("rmi", remote)
    proc = berthd.docker("rmi", f"{repo}:2", check=False)
    assert proc.returncode == 1
    assert f"container {cid[:12]} is using its referenced image {image_id[7:19]}" in proc.stderr
    proc = berthd.docker("rmi", image_id, check=False)
    assert f"(must be forced) - image is being used by stopped container {cid[:12]}" in proc.stderr
    # Forced, the image goes even though a stopped container was made from it; its layer
    # stays, held by the container's RW layer, until the container is removed.
    dirs = layer_dirs(berthd)
    out = berthd.docker("rmi", "-f", f"{repo}:2").stdout.splitlines()
    assert out == [f"Untagged: {repo}:2", f"Deleted: {image_id}"]
    assert layer_dirs(berthd) == dirs
    ps = berthd.docker("ps", "-a", "--filter", f"id={cid}", "--format", "{{.Image}}").stdout
    assert ps.strip() == image_id[7:19]
    berthd.docker("rm", cid)
    assert len(layer_dirs(berthd)) == len(dirs) - 3  # RW, init and the image layer
    proc = berthd.docker("image", "inspect", image_id, check=False)
    assert "No such image" in proc.stderr
    proc = berthd.docker("tag", "nosuchimage", "x:1", check=False)
    assert "No such image: nosuchimage:latest" in proc.stderr


def test_history(berthd: Berthd, image_cleanup: list[str]) -> None:
    ref = unique_name("hist") + ":1"
    image_cleanup.append(ref)
    layers = [layer_tar({"l1": "1"}), layer_tar({"l2": "22"})]
    load(berthd, docker_archive(layers, [ref]))
    rows = [
        json.loads(line)
        for line in berthd.docker(
            "history", "--no-trunc", "--format", "{{json .}}", ref
        ).stdout.splitlines()
    ]
    assert [r["CreatedBy"] for r in rows] == ["layer 1", "layer 0"]
    assert rows[0]["ID"] == inspect_image(berthd, ref)["Id"]
    assert rows[1]["ID"] == "<missing>"
    assert rows[0]["Size"] == "2B" and rows[1]["Size"] == "1B"


def test_docker_py_images(berthd: Berthd, image_cleanup: list[str]) -> None:
    import docker.errors

    repo = unique_name("dockerpy")
    image_cleanup.extend([f"{repo}:1", f"{repo}:2"])
    client = berthd.client()
    try:
        loaded = client.images.load(docker_archive([layer_tar({"py": "py"})], [f"{repo}:1"]))
        assert [img.tags for img in loaded] == [[f"{repo}:1"]]
        names = {t for img in client.images.list() for t in img.tags}
        assert {f"{repo}:1", "busybox:latest"} <= names
        img = client.images.get(f"{repo}:1")
        assert img.attrs["Config"]["Cmd"] == ["sh"]
        img.tag(repo, "2")
        assert sorted(client.images.get(f"{repo}:2").tags) == [f"{repo}:1", f"{repo}:2"]
        client.images.remove(f"{repo}:1")
        client.images.remove(f"{repo}:2")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(f"{repo}:2")
    finally:
        client.close()


def test_rmi_right_after_run_rm(
    berthd: Berthd, busybox_tar: Path, image_cleanup: list[str]
) -> None:
    """``docker run --rm IMG`` then ``docker rmi IMG``: once the run has returned, the
    removed container no longer holds the image (it did while its layer was released)."""
    for _ in range(5):
        name = unique_name("rmi-after-run").lower() + ":v1"
        image_cleanup.append(name)
        berthd.docker("import", str(busybox_tar), name)
        assert berthd.docker("run", "--rm", name, "/bin/busybox", "true").returncode == 0
        removed = berthd.docker("rmi", name, check=False)
        assert removed.returncode == 0, removed.stderr
        assert berthd.docker("image", "inspect", name, check=False).returncode == 1


def test_load_event_names_the_image_id(berthd: Berthd, image_cleanup: list[str]) -> None:
    """One ``load`` event per image, under its ID (moby's load), not per tag."""
    one, two = unique_name("ev-load").lower() + ":a", unique_name("ev-load").lower() + ":b"
    image_cleanup += [one, two]
    since = str(int(time.time()) - 1)
    load(berthd, docker_archive([layer_tar({"f": "load event\n"})], [one, two]))
    ident = berthd.docker("image", "inspect", "--format", "{{.Id}}", one).stdout.strip()
    fmt = '{{.Actor.ID}} {{index .Actor.Attributes "name"}}'
    out = berthd.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=image", "--filter", "event=load", "--format", fmt,
    ).stdout.splitlines()  # fmt: skip
    # (other tests' loads of the same second may be there too)
    assert [line for line in out if ident in line] == [f"{ident} {ident}"], out
    assert not [line for line in out if one in line or two in line], out
