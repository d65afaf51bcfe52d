"""``docker ps -s``, ``docker inspect -s`` and ``docker system df`` (``-v``, ``type=``) with
the real CLI and docker-py: sizes are the bytes the tests wrote, computed only when asked,
and measured again whenever the container may have changed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from berth.testing import DOCKER, Berthd, running_berthd, unique_name, wait_for
from berth.testing import inspect_container as inspect
from tests.e2e.archives import docker_archive, layer_tar


def human(size: float, precision: int = 4) -> str:
    """go-units' ``HumanSizeWithPrecision``, as the CLI prints sizes."""
    units = ["B", "kB", "MB", "GB", "TB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def get_json(d: Berthd, path: str) -> Any:
    status, _, body = d.request("GET", path)
    assert status == 200, body
    return json.loads(body)


def listed(d: Berthd, cid: str, size: bool = True) -> dict[str, Any]:
    flt = quote(json.dumps({"id": [cid]}))
    rows = get_json(d, f"/containers/json?all=1&size={int(size)}&filters={flt}")
    assert len(rows) == 1
    return rows[0]  # type: ignore[no-any-return]


def size_rw(d: Berthd, cid: str) -> int:
    """SizeRw of ``ps -s`` (left out when 0, as Go's omitempty does)."""
    row = listed(d, cid)
    assert "SizeRootFs" in row
    return int(row.get("SizeRw", 0))


def image_size(d: Berthd, ref: str) -> int:
    return int(json.loads(d.docker("image", "inspect", ref).stdout)[0]["Size"])


def write(d: Berthd, cid: str, path: str, n: int) -> None:
    d.docker("exec", cid, "sh", "-c", f"head -c {n} /dev/zero > {path}")


# -- docker ps -s / docker inspect -s ------------------------------------------------------


def test_ps_s_sizes_grow_with_what_the_container_writes(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("size-run")
    cleanup.append(name)
    cid = berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "1000").stdout.strip()
    base = size_rw(berthd, cid)
    write(berthd, cid, "/f1", 300_000)
    assert size_rw(berthd, cid) == base + 300_000
    write(berthd, cid, "/tmp/f2", 45_000)
    rw = size_rw(berthd, cid)
    assert rw == base + 345_000
    row = listed(berthd, cid)
    assert row["SizeRootFs"] == rw + image_size(berthd, "busybox")
    # The CLI's SIZE column, and inspect -s.
    shown = berthd.docker("ps", "-s", "--filter", f"id={cid}", "--format", "{{.Size}}").stdout
    assert shown.strip() == f"{human(rw, 3)} (virtual {human(row['SizeRootFs'], 3)})"
    doc = json.loads(berthd.docker("inspect", "-s", cid).stdout)[0]
    assert (doc["SizeRw"], doc["SizeRootFs"]) == (rw, row["SizeRootFs"])


def test_plain_ps_and_inspect_carry_no_sizes(berthd: Berthd, cleanup: list[str]) -> None:
    name = unique_name("size-plain")
    cleanup.append(name)
    cid = berthd.docker("run", "-d", "--name", name, "busybox", "sleep", "1000").stdout.strip()
    write(berthd, cid, "/f", 1000)
    row = listed(berthd, cid, size=False)
    assert "SizeRw" not in row and "SizeRootFs" not in row
    doc = inspect(berthd, cid)
    assert "SizeRw" not in doc and "SizeRootFs" not in doc
    client = berthd.client()
    try:
        (plain,) = client.api.containers(filters={"id": cid})
        (sized,) = client.api.containers(filters={"id": cid}, size=True)
    finally:
        client.close()
    assert "SizeRw" not in plain
    assert sized["SizeRw"] >= 1000


def test_sizes_follow_cp_start_and_exit(berthd: Berthd, cleanup: list[str], tmp_path: Path) -> None:
    """A stopped container's size is kept, and measured again after each change: a
    docker cp into it, a run that writes."""
    name = unique_name("size-life")
    cleanup.append(name)
    cid = berthd.docker(
        "create", "--name", name, "busybox", "sh", "-c", "head -c 2000 /dev/zero >> /runs"
    ).stdout.strip()
    assert size_rw(berthd, cid) == 0
    # inspect -s shows the sizes even when 0 (pointers in dockerd), ps -s leaves out a 0
    doc = json.loads(berthd.docker("inspect", "-s", cid).stdout)[0]
    assert (doc["SizeRw"], doc["SizeRootFs"]) == (0, image_size(berthd, "busybox"))
    assert "SizeRw" not in listed(berthd, cid)
    (tmp_path / "in").write_bytes(b"x" * 1000)
    berthd.docker("cp", str(tmp_path / "in"), f"{cid}:/copied")
    assert size_rw(berthd, cid) == 1000
    assert size_rw(berthd, cid) == 1000
    berthd.docker("start", "-a", cid)
    assert size_rw(berthd, cid) == 3000
    berthd.docker("cp", str(tmp_path / "in"), f"{cid}:/copied-2")
    assert size_rw(berthd, cid) == 4000
    berthd.docker("start", "-a", cid)  # appends 2000 more
    assert size_rw(berthd, cid) == 6000


def test_a_stopped_containers_size_is_kept_until_it_changes(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    """Bytes put in the layer behind the daemon's back (not through the container) do
    not show while the cached size holds; the next change through the daemon (docker cp)
    measures the layer again, and then they do."""
    name = unique_name("size-cache")
    cleanup.append(name)
    berthd.docker("run", "--name", name, "busybox", "sh", "-c", "head -c 5000 /dev/zero > /a")
    cid = inspect(berthd, name)["Id"]
    data = inspect(berthd, cid)["GraphDriver"]["Data"]
    # The exit is announced before the layer is unmounted: a size measured while it is
    # mounted is never kept.
    wait_for(lambda: data["MergedDir"] not in berthd.mounts(), what="the unmount")
    first = size_rw(berthd, cid)
    assert first == 5000
    upper = Path(data["UpperDir"])
    (upper / "behind-the-back").write_bytes(b"y" * 777)
    assert size_rw(berthd, cid) == first
    (tmp_path / "in").write_bytes(b"z" * 100)
    berthd.docker("cp", str(tmp_path / "in"), f"{cid}:/in")
    assert size_rw(berthd, cid) == first + 777 + 100


def test_ps_s_on_vfs_counts_only_the_changes(tmp_path: Path, busybox_tar: Path) -> None:
    """vfs layers are whole copies: SizeRw is what differs from the init layer, as
    dockerd's naive diff counts it (a new file, a modified one whole; not what is
    unchanged or deleted)."""
    with running_berthd(["--storage-driver", "vfs"], root=tmp_path / "vfs") as d:
        d.docker("import", str(busybox_tar), "busybox:latest")
        script = "head -c 5000 /dev/zero > /new && echo more >> /etc/passwd && rm /bin/vi"
        d.docker("run", "--name", "vfs-w", "busybox", "sh", "-c", script)
        passwd = int(
            d.docker("run", "--rm", "busybox", "wc", "-c", "/etc/passwd").stdout.split()[0]
        )
        cid = inspect(d, "vfs-w")["Id"]
        assert size_rw(d, cid) == 5000 + passwd + len("more\n")
        row = listed(d, cid)
        assert row["SizeRootFs"] == row["SizeRw"] + image_size(d, "busybox")
        d.docker("rm", "vfs-w")


# -- docker system df ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def df_berthd(busybox_tar: Path) -> Iterator[Berthd]:
    """A daemon of this module's own: ``system df`` counts everything on the daemon."""
    with running_berthd() as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield d


def cli_rows(out: str) -> dict[str, list[str]]:
    """``docker system df``'s table: TYPE → [TOTAL, ACTIVE, SIZE, RECLAIMABLE]."""
    rows = {}
    for line in out.splitlines()[1:]:
        cells = [c for c in line.split("  ") if c.strip()]
        rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return rows


def load(d: Berthd, archive: bytes) -> None:
    subprocess.run([DOCKER, "load"], env=d.env(), input=archive, capture_output=True, check=True)


def test_system_df_counts_what_was_made(df_berthd: Berthd, busybox_tar: Path) -> None:
    d = df_berthd
    base = busybox_tar.read_bytes()  # the layer of busybox:latest, shared by df-a and df-b
    top = layer_tar({"data/": None, "data/blob": b"b" * 3000})
    load(d, docker_archive([base], ["df-a:1"]))
    load(d, docker_archive([base, top], ["df-b:1"]))
    s1 = image_size(d, "busybox")
    assert image_size(d, "df-a:1") == s1
    assert image_size(d, "df-b:1") == s1 + 3000

    used = unique_name("df-used")
    free = unique_name("df-free")
    d.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "df-tmpfs")
    c1 = d.docker("run", "-d", "-v", f"{used}:/v", "df-b:1", "sh", "-c",
                  "head -c 7000 /dev/zero > /v/f && head -c 10000 /dev/zero > /w && sleep 1000",
                  ).stdout.strip()  # fmt: skip
    d.docker("run", "--rm", "-v", f"{free}:/v", "busybox", "sh", "-c",
             "head -c 4000 /dev/zero > /v/f")  # fmt: skip
    c2 = d.docker("create", "busybox", "sh", "-c", "head -c 20000 /dev/zero > /w").stdout.strip()
    d.docker("start", "-a", c2)
    c3 = d.docker("create", "busybox", "true").stdout.strip()
    try:
        _wait_size(d, c1, 10_000)
        rw2 = size_rw(d, c2)
        assert rw2 == 20_000
        du = get_json(d, "/system/df")
        assert set(du) == {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
        assert du["LayersSize"] == s1 + 3000
        images = {tuple(i["RepoTags"]): i for i in du["Images"]}
        assert set(images) == {("busybox:latest",), ("df-a:1",), ("df-b:1",)}
        assert images[("busybox:latest",)]["Containers"] == 2
        assert images[("df-a:1",)]["Containers"] == 0
        assert images[("df-b:1",)]["Containers"] == 1
        for img in images.values():
            assert img["SharedSize"] == s1  # the busybox layer: used by all three
        assert images[("df-b:1",)]["Size"] == s1 + 3000
        containers = {c["Id"]: c for c in du["Containers"]}
        assert set(containers) == {c1, c2, c3}
        assert containers[c1].get("SizeRw", 0) == 10_000
        assert containers[c2]["SizeRw"] == rw2
        assert containers[c3].get("SizeRw", 0) == 0
        assert containers[c1]["SizeRootFs"] == 10_000 + s1 + 3000
        assert containers[c3]["SizeRootFs"] == s1
        volumes = {v["Name"]: v for v in du["Volumes"]}
        assert set(volumes) == {used, free}  # no option volume: its data is a tmpfs
        assert volumes[used]["UsageData"] == {"RefCount": 1, "Size": 7000}
        assert volumes[free]["UsageData"] == {"RefCount": 0, "Size": 4000}
        assert du["BuildCache"] == []

        # The CLI's table: reclaimable as the CLI works it out from the answer.
        rows = cli_rows(d.docker("system", "df").stdout)
        layers = s1 + 3000
        reclaim = layers - 3000  # df-b's own layer is in use; shared ones never count
        assert rows["Images"] == [
            "3",
            "2",
            human(layers),
            f"{human(reclaim)} ({reclaim * 100 // layers}%)",
        ]
        total = 10_000 + rw2
        assert rows["Containers"] == [
            "3",
            "1",
            human(total),
            f"{human(rw2)} ({rw2 * 100 // total}%)",
        ]
        assert rows["Local Volumes"] == ["2", "1", human(11_000), f"{human(4000)} (36%)"]
        assert rows["Build Cache"] == ["0", "0", "0B", "0B"]

        verbose = d.docker("system", "df", "-v").stdout
        sections = verbose.split("\n\n")
        image_lines = next(s for s in sections if s.startswith("REPOSITORY")).splitlines()[1:]
        by_repo = {line.split()[0] + ":" + line.split()[1]: line.split() for line in image_lines}
        # SIZE to 3 digits, SHARED and UNIQUE SIZE to 4, as the CLI prints them
        assert by_repo["df-b:1"][-4:] == [human(s1 + 3000, 3), human(s1), human(3000), "1"]
        assert by_repo["df-a:1"][-4:] == [human(s1, 3), human(s1), "0B", "0"]
        volume_lines = next(s for s in sections if s.startswith("VOLUME NAME")).splitlines()[1:]
        assert sorted(line.split() for line in volume_lines) == sorted(
            [[used, "1", human(7000)], [free, "0", human(4000)]]
        )
        container_lines = next(s for s in sections if s.startswith("CONTAINER ID")).splitlines()
        assert len(container_lines) == 4
        c1_line = next(line for line in container_lines if line.startswith(c1[:12]))
        assert f" {human(10_000)} " in c1_line
    finally:
        d.docker("rm", "-f", c1, c2, c3)
        d.docker("volume", "rm", used, free, "df-tmpfs")
        d.docker("rmi", "df-a:1", "df-b:1")


def _wait_size(d: Berthd, cid: str, n: int) -> None:
    wait_for(lambda: size_rw(d, cid) == n, what=f"{cid[:12]} to have written {n} bytes")


def test_system_df_type_and_api_versions(df_berthd: Berthd) -> None:
    d = df_berthd
    cid = d.docker("create", "busybox", "true").stdout.strip()
    try:
        only = get_json(d, "/v1.51/system/df?type=container&type=volume")
        assert only["Images"] is None and only["LayersSize"] == 0 and only["BuildCache"] is None
        assert [c["Id"] for c in only["Containers"]] == [cid]
        assert only["Volumes"] == []
        cache = get_json(d, "/v1.51/system/df?type=build-cache")
        assert cache["BuildCache"] == []
        assert cache["Images"] is None and cache["Containers"] is None and cache["Volumes"] is None
        status, _, body = d.request("GET", "/v1.51/system/df?type=images")
        assert status == 400
        assert json.loads(body) == {"message": "unknown object type: images"}
        # Before API 1.42 the type is ignored; before 1.44 images carry VirtualSize.
        old = get_json(d, "/v1.41/system/df?type=container")
        assert old["Images"] and old["Containers"] and old["Volumes"] == []
        assert all(i["VirtualSize"] == i["Size"] for i in old["Images"])
        current = get_json(d, "/system/df")
        assert all("VirtualSize" not in i for i in current["Images"])
        assert [i["Containers"] for i in current["Images"]] == [1]
    finally:
        d.docker("rm", cid)


def test_docker_py_df(df_berthd: Berthd) -> None:
    d = df_berthd
    name = unique_name("df-py")
    cid = d.docker(
        "run", "--name", name, "-v", f"{name}:/v", "busybox", "sh", "-c",
        "head -c 1234 /dev/zero > /v/f && head -c 4321 /dev/zero > /f",
    ).stdout  # fmt: skip
    cid = inspect(d, name)["Id"]
    client = d.client()
    try:
        du = client.df()
    finally:
        client.close()
    try:
        assert du["LayersSize"] == image_size(d, "busybox")
        (container,) = du["Containers"]
        assert container["Id"] == cid and container["SizeRw"] >= 4321
        (volume,) = du["Volumes"]
        assert volume["Name"] == name and volume["UsageData"] == {"RefCount": 1, "Size": 1234}
        assert [i["RepoTags"] for i in du["Images"]] == [["busybox:latest"]]
    finally:
        d.docker("rm", "-v", cid)
        d.docker("volume", "rm", name)


def test_ps_s_of_a_container_with_a_tree_counts_hard_links_once(
    berthd: Berthd, cleanup: list[str]
) -> None:
    name = unique_name("size-links")
    cleanup.append(name)
    berthd.docker(
        "run", "--name", name, "busybox", "sh", "-c",
        "mkdir -p /t/a/b && head -c 1500 /dev/zero > /t/a/b/f && ln /t/a/b/f /t/hard && "
        "ln -s /t/a/b/f /t/soft",
    )  # fmt: skip
    cid = inspect(berthd, name)["Id"]
    # 1500 once for the two names of the file, and the link's target path (its size).
    assert size_rw(berthd, cid) == 1500 + len("/t/a/b/f")
