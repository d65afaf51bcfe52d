"""Issue 14's ``docker export`` and ``docker system df`` figures.

``export (100 MB written)``: a stopped container that wrote 100 MiB of random bytes
(and their sha256) into its RW layer, made once per engine; each sample times
``docker export -o FILE`` and then checks, untimed, that the tar holds the file whole
(its sha256 is the one the container wrote) beside busybox.

``system df (200 containers, 50 images)``: 50 images imported from tars of busybox plus
a file of their own (so each has its own layer), 200 created containers spread over
them, made once per engine; each sample times ``docker system df`` and checks the
table's totals against what the engine lists (every image and container it has,
the bench's among them). Sizes are computed by both engines on each call; berth keeps
a stopped container's RW-layer size until the layer is mounted again, so its first
sample (the max) is the cold figure and the median the repeated one.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from pathlib import Path

from engines import Engine, Failed
from workloads import IMAGE, LABEL, Workload, _rm

from berth.testing import busybox_rootfs_tar

EXPORT_MB = 100
DF_IMAGES = 50
DF_CONTAINERS = 200
DF_PREFIX = "berth-bench-df"


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def disk_workloads(tmp: Path) -> list[Workload]:
    exporters: dict[str, str] = {}
    made: dict[str, list[str]] = {}

    def make_exporter(e: Engine) -> None:
        script = (
            f"dd if=/dev/urandom of=/data.bin bs=1M count={EXPORT_MB} 2>/dev/null && "
            "sha256sum /data.bin > /data.sum"
        )
        cid = e.out("create", "-l", LABEL, IMAGE, "sh", "-c", script)
        exporters[e.name] = cid
        e.ok("start", "-a", cid)

    def drop_exporter(e: Engine) -> None:
        cid = exporters.pop(e.name, "")
        if cid:
            _rm(e, [cid])

    def export(e: Engine) -> float:
        with tempfile.TemporaryDirectory(dir=tmp) as d:
            dest = Path(d) / "export.tar"
            r = e.ok("export", "-o", str(dest), exporters[e.name])
            with tarfile.open(dest) as tf:
                names = set(tf.getnames())
                _expect({"bin/busybox", "data.bin", "data.sum"} <= names, "export: files missing")
                member = tf.getmember("data.bin")
                _expect(member.size == EXPORT_MB << 20, f"export: data.bin has {member.size} B")
                f, s = tf.extractfile(member), tf.extractfile("data.sum")
                _expect(f is not None and s is not None, "export: unreadable members")
                assert f is not None and s is not None
                digest = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                want = s.read().split()[0].decode()
                _expect(digest.hexdigest() == want, "export: data.bin checksum differs")
        return r.seconds

    def make_df(e: Engine) -> None:
        images = []
        for i in range(DF_IMAGES):
            tar = tmp / f"df-{i}.tar"
            if not tar.exists():
                busybox_rootfs_tar(tar, {f"df/{i}": f"image {i}\n".encode() * 100})
            ref = f"{DF_PREFIX}:{i}"
            e.ok("import", "--change", f"LABEL {LABEL}", str(tar), ref)
            images.append(ref)
        ids = [
            e.out("create", "-l", LABEL, images[i % DF_IMAGES], "true")
            for i in range(DF_CONTAINERS)
        ]
        made[e.name] = ids

    def drop_df(e: Engine) -> None:
        _rm(e, made.pop(e.name, []))
        refs = [f"{DF_PREFIX}:{i}" for i in range(DF_IMAGES)]
        for i in range(0, len(refs), 25):
            e.timed("rmi", *refs[i : i + 25])

    def system_df(e: Engine) -> float:
        n_images = len(set(e.out("images", "-q", "--no-trunc").split()))
        n_containers = len(e.out("ps", "-a", "-q", "--no-trunc").split())
        r = e.ok("system", "df")
        rows = {}
        for line in r.stdout.decode().splitlines()[1:]:
            cells = [c.strip() for c in line.split("  ") if c.strip()]
            rows[cells[0]] = cells[1:]
        _expect(rows.get("Images", [""])[0] == str(n_images), f"df: images {rows.get('Images')}")
        _expect(
            rows.get("Containers", [""])[0] == str(n_containers),
            f"df: containers {rows.get('Containers')}, want {n_containers}",
        )
        _expect(n_containers >= DF_CONTAINERS and n_images > DF_IMAGES, "df: set-up missing")
        return r.seconds

    return [
        Workload(
            f"export ({EXPORT_MB} MB written)",
            export,
            rounds=7,
            setup=make_exporter,
            teardown=drop_exporter,
        ),
        Workload(
            f"system df ({DF_CONTAINERS} containers, {DF_IMAGES} images)",
            system_df,
            rounds=10,
            setup=make_df,
            teardown=drop_df,
        ),
    ]
