"""``--volumes-from``: another container's binds and volumes, with their modes or ro/rw."""

from __future__ import annotations

import json
from pathlib import Path

from berth.testing import Berthd, unique_name


def _mounts(berthd: Berthd, name: str) -> dict[str, dict[str, object]]:
    raw = berthd.docker("inspect", "-f", "{{json .Mounts}}", name).stdout
    return {m["Destination"]: m for m in json.loads(raw)}


def test_volumes_from_shares_volumes_and_binds(
    berthd: Berthd, cleanup: list[str], tmp_path: Path
) -> None:
    src, reader, ro = unique_name("vfsrc"), unique_name("vfread"), unique_name("vfro")
    cleanup += [src, reader, ro]
    (tmp_path / "f").write_text("from the host\n")
    berthd.docker(
        "run", "--name", src, "-v", "/data", "-v", f"{tmp_path}:/host:ro",
        "busybox", "sh", "-c", "echo hello > /data/x",
    )  # fmt: skip
    out = berthd.docker(
        "run", "--name", reader, "--volumes-from", src, "busybox",
        "sh", "-c", "cat /data/x /host/f; echo more > /data/y",
    ).stdout  # fmt: skip
    assert out == "hello\nfrom the host\n"
    theirs, mine = _mounts(berthd, src), _mounts(berthd, reader)
    assert mine["/data"]["Name"] == theirs["/data"]["Name"] and mine["/data"]["RW"] is True
    assert mine["/host"]["Source"] == str(tmp_path) and mine["/host"]["RW"] is False
    proc = berthd.docker(
        "run", "--name", ro, "--volumes-from", f"{src}:ro", "busybox",
        "sh", "-c", "cat /data/y; touch /data/z",
    check=False)  # fmt: skip
    assert proc.stdout == "more\n" and "Read-only file system" in proc.stderr, proc
    assert _mounts(berthd, ro)["/data"]["RW"] is False


def test_volumes_from_with_a_bad_mode_is_refused(berthd: Berthd, cleanup: list[str]) -> None:
    src, bad = unique_name("vfsrc"), unique_name("vfbad")
    cleanup += [src, bad]
    berthd.docker("create", "--name", src, "-v", "/data", "busybox", "true")
    proc = berthd.docker(
        "create", "--name", bad, "--volumes-from", f"{src}:xx", "busybox", "true", check=False
    )
    assert proc.returncode != 0 and "invalid mode: xx" in proc.stderr, proc.stderr
