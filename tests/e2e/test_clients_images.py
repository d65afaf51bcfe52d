"""Container filesystems and images as python-on-whales drives them (through the real CLI):
diff, commit, export, save and load, system df and prune, on a daemon of the test's own."""

from __future__ import annotations

import tarfile
from pathlib import Path

from berth.testing import DOCKER, Berthd, unique_name


def test_python_on_whales_commit_export_save_prune(fresh_berthd: Berthd, tmp_path: Path) -> None:
    from python_on_whales import DockerClient

    d = fresh_berthd
    docker = DockerClient(host=d.host, config=d.env()["DOCKER_CONFIG"], client_call=[DOCKER])
    name = unique_name("pow-fs")
    docker.run(
        "busybox:latest", ["sh", "-c", "echo committed > /made.txt && rm /bin/vi"], name=name
    )
    changes = docker.container.diff(name)
    assert changes.get("/made.txt") == "A", changes
    assert changes.get("/bin/vi") == "D", changes

    image = docker.container.commit(name, tag="pow-committed:v1", author="me", message="hi")
    assert image.author == "me"
    assert docker.image.inspect("pow-committed:v1").id == image.id
    assert image.parent == docker.image.inspect("busybox:latest").id
    out = docker.run("pow-committed:v1", ["cat", "/made.txt"], remove=True)
    assert out == "committed"

    exported = tmp_path / "fs.tar"
    docker.container.export(name, exported)
    with tarfile.open(exported) as tf:
        names = set(tf.getnames())
    assert "made.txt" in names and "bin/vi" not in names and "bin/sh" in names

    saved = tmp_path / "img.tar"
    docker.image.save("pow-committed:v1", saved)
    docker.container.remove(name)
    docker.image.remove("pow-committed:v1")
    assert docker.image.load(saved) == ["pow-committed:v1"]
    assert docker.image.inspect("pow-committed:v1").id == image.id

    df = docker.system.disk_free()
    assert df.images.total_count == 2 and df.images.size > 0
    assert df.containers.total_count == 0

    docker.image.remove("pow-committed:v1")
    docker.image.prune(all=True)  # busybox:latest is unused too
    assert docker.image.list() == []
