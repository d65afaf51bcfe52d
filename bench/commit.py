"""Issue 14's ``docker commit`` and ``docker diff`` figures.

A stopped container that wrote 100 MiB of random bytes (and their sha256) into its RW
layer is made once per engine. ``commit (100 MB written)`` times ``docker commit`` of it;
untimed, the new image must have one layer more than busybox and a container of it must
find the file whole (``sha256sum -c``), and the image is then removed. ``diff (100 MB
written)`` times ``docker diff`` of the same container, whose answer must be the two
files added (in either order: dockerd's differs from call to call).
"""

from __future__ import annotations

import time

from engines import Engine, Failed
from workloads import IMAGE, LABEL, Workload, _rm

COMMIT_MB = 100


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def commit_workloads() -> list[Workload]:
    made: dict[str, str] = {}

    def make(e: Engine) -> None:
        script = (
            f"dd if=/dev/urandom of=/data.bin bs=1M count={COMMIT_MB} 2>/dev/null && "
            "sha256sum /data.bin > /data.sum"
        )
        cid = e.out("create", "-l", LABEL, IMAGE, "sh", "-c", script)
        made[e.name] = cid
        e.ok("start", "-a", cid)

    def drop(e: Engine) -> None:
        cid = made.pop(e.name, "")
        if cid:
            _rm(e, [cid])

    def layers(e: Engine, ref: str) -> int:
        return len(e.out("image", "inspect", "-f", "{{json .RootFS.Layers}}", ref).split(","))

    def commit(e: Engine) -> float:
        r = e.ok("commit", made[e.name])
        image = r.stdout.decode().strip()
        _expect(image.startswith("sha256:"), f"commit printed {r.stdout[:80]!r}")
        try:
            _expect(layers(e, image) == layers(e, IMAGE) + 1, "commit: not one layer more")
            check = e.out("run", "--rm", image, "sha256sum", "-c", "/data.sum")
            _expect(check == "/data.bin: OK", f"commit: the file differs: {check[:80]!r}")
        finally:
            # A ``run --rm`` container may still hold the image for a moment: try again.
            for _ in range(50):
                if e.timed("rmi", image).returncode == 0:
                    break
                time.sleep(0.1)
        return r.seconds

    def diff(e: Engine) -> float:
        r = e.ok("diff", made[e.name])
        # dockerd lists a directory's changes in Go's map order: compare them as a set
        lines = sorted(r.stdout.decode().splitlines())
        _expect(lines == ["A /data.bin", "A /data.sum"], f"diff printed {r.stdout[:80]!r}")
        return r.seconds

    return [
        Workload(f"commit ({COMMIT_MB} MB written)", commit, rounds=7, setup=make, teardown=drop),
        Workload(f"diff ({COMMIT_MB} MB written)", diff, rounds=10, setup=make, teardown=drop),
    ]
