"""Layer tars built entry by entry, and a real layer store over each graph driver, for the
tests of tar-split, save and container changes.

Fixtures (tests/unit/conftest.py makes them every unit test's):
``driver`` (overlay2 and vfs, mounts checked at the end) and ``store``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.graphdriver import new_driver
from berth.graphdriver.base import Driver
from berth.layer import LayerStore, ROLayer
from berth.utils.mountinfo import mounts_under

MTIME = 1_600_000_000

Entry = tuple[tarfile.TarInfo, bytes | None]


def info(name: str, kind: bytes, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = MTIME
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    ti = info(name, tarfile.REGTYPE, mode)
    ti.size = len(data)
    return ti, data


def dir_(name: str, mode: int = 0o755) -> Entry:
    return info(name, tarfile.DIRTYPE, mode), None


def sym(name: str, target: str) -> Entry:
    return info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hard(name: str, target: str) -> Entry:
    return info(name, tarfile.LNKTYPE, linkname=target), None


def make_tar(*entries: Entry, fmt: int = tarfile.PAX_FORMAT, trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue() + trailing


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["overlay2", "vfs"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    d = new_driver(str(request.param), tmp_path / "data")
    yield d
    d.cleanup()
    assert mounts_under(str(tmp_path)) == []


@pytest.fixture
def store(driver: Driver, tmp_path: Path) -> LayerStore:
    return LayerStore(tmp_path / "data" / "layerdb", driver)


def stream_of(store: LayerStore, layer: ROLayer) -> bytes:
    """What push and save get: the layer's tar, written to a temp file."""
    with tempfile.TemporaryFile() as out:
        store.tar_stream(layer, out)
        out.seek(0)
        return out.read()
