"""A full disk: berthd's roots on a small tmpfs the test mounts.  What runs out of space
fails with the host's words ("no space left on device"), leaves no half-written image,
layer or container behind, and berthd keeps serving; once space is freed everything
works, and a restart finds the same images and containers."""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing import Berthd, running_berthd, wait_for

SIZE_MB = 96


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(root)], check=True
    )
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(root: Path, leave: int) -> Path:
    """A file that leaves *leave* bytes free."""
    filler = root / "filler"
    size = max(0, _free(root) - leave + (filler.stat().st_size if filler.exists() else 0))
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * (1 << 20)
        left = size
        try:
            while left > 0:
                left -= f.write(block[: min(left, len(block))])
            while not leave:  # to the last block
                f.write(block[:4096])
        except OSError:
            pass
    return filler


def _big_tar(path: Path, mb: int) -> Path:
    data = path.with_suffix(".bin")
    data.write_bytes(os.urandom(mb << 20))
    with tarfile.open(path, "w") as tf:
        tf.add(data, arcname="big")
    data.unlink()
    return path


def _same(d: Berthd, before: tuple[str, str, list[str]]) -> None:
    now = _state(d)
    assert now[:2] == before[:2]
    assert sorted(set(now[2]) ^ set(before[2])) == []


def _state(d: Berthd) -> tuple[str, str, list[str]]:
    """Images, containers and berthd's own files (what a failure must not change)."""
    files = sorted(
        os.path.relpath(os.path.join(top, name), d.data_root)
        for top, _, names in os.walk(d.data_root)
        # containerd's own files, and what a mounted root filesystem shows
        if not {"containerd", "merged"} & set(Path(top).relative_to(d.data_root).parts)
        for name in names
    )
    return (
        d.docker("images", "-q", "--no-trunc").stdout,
        d.docker("ps", "-aq", "--no-trunc").stdout,
        files,
    )


def _no_space(p: subprocess.CompletedProcess[str]) -> None:
    assert p.returncode != 0
    assert "no space left on device" in p.stderr.lower(), p.stderr


def test_out_of_space_fails_cleanly_and_recovers(
    small: Path, tmp_path: Path, busybox_tar: Path
) -> None:
    with running_berthd(root=small / "berth") as d:
        d.docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        kept = d.docker("create", "--name", "kept", "busybox", "sleep", "600").stdout.strip()
        big = _big_tar(tmp_path / "big.tar", 24)
        filler = _fill(small, 8 << 20)
        before = _state(d)

        # an image bigger than the space left
        _no_space(d.docker("import", str(big), "big:1", check=False))
        _no_space(d.docker("load", "-i", str(big), check=False))
        _same(d, before)

        # a copy into a container
        _no_space(d.docker("cp", str(big), "kept:/big.tar", check=False))
        assert d.docker("inspect", "-f", "{{.Id}}", "kept").stdout.strip() == kept

        # a commit of a container that wrote more than the space left
        d.docker("rm", "-f", "kept")
        filler.unlink()
        d.docker("run", "--name", "writer", "busybox", "dd", "if=/dev/urandom",
                 "of=/data", "bs=1M", "count=12")  # fmt: skip
        _fill(small, 4 << 20)
        before = _state(d)
        _no_space(d.docker("commit", "writer", "writer:1", check=False))
        _same(d, before)

        # a container that logs with no space for its log: it runs, berthd carries on
        filler.unlink()
        d.docker("create", "--name", "talker", "busybox", "sh", "-c",
                 "for i in $(seq 1 20000); do echo line $i; done")  # fmt: skip
        _fill(small, 0)
        d.docker("start", "-a", "talker", check=False)
        assert d.docker("wait", "talker").stdout == "0\n"
        assert d.docker("logs", "talker", check=False).returncode == 0
        d.docker("rm", "talker")

        # a create with no space at all (what a removal frees may come back a moment later)
        wait_for(lambda: _fill(small, 0) and _free(small) == 0, what="the disk full")
        before = _state(d)
        p = d.docker("create", "busybox", "true", check=False)
        assert p.returncode != 0, p.stdout
        _same(d, before)

        # berthd still answers; with space again, everything works
        assert d.docker("version", "--format", "{{.Server.Os}}").stdout == "linux\n"
        filler.unlink()
        assert d.docker("run", "--rm", "busybox", "echo", "ok").stdout == "ok\n"
        d.docker("commit", "writer", "writer:1")
        d.docker("rm", "writer")
        images, containers, _ = _state(d)
        d.stop()
        d.start()
        assert _state(d)[:2] == (images, containers)
        out = d.docker("run", "--rm", "writer:1", "sh", "-c", "wc -c < /data").stdout
        assert out.strip() == str(12 << 20)
        d.docker("rmi", "writer:1")
