"""Layer decompression: zstd, gzip through unpigz and through a worker thread.

Every test that starts a decoder checks afterwards that nothing of it is left: no child
process of this test process (a zombie counts), no decoder thread, no extra open fd.
"""

from __future__ import annotations

import bz2
import gc
import gzip
import hashlib
import io
import lzma
import os
import shutil
import tarfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from berth.archive import InvalidLayer, apply_layer, decompress, digest_stream
from berth.archive._compress import GZIP_METHOD_ENV, CorruptCompression, default_gzip_method

UNPIGZ = shutil.which("unpigz")
needs_unpigz = pytest.mark.skipif(UNPIGZ is None, reason="unpigz (Debian's pigz) not installed")
GZIP_PATHS = [pytest.param("unpigz", marks=needs_unpigz), "thread", "inline"]
HELPER_PATHS = [pytest.param("unpigz", marks=needs_unpigz), "thread"]


#: children of this process that were there before the running test started
_FOREIGN: set[int] = set()


def children() -> list[tuple[int, str, str]]:
    """(pid, command, state) of every process whose parent is this one, zombies included."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me and int(entry) not in _FOREIGN:
            found.append((int(entry), comm, state))
    return found


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("berth-")]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    gc.collect()
    fds = open_fds()
    # Other tests of the session may keep children of their own (a daemon, a server):
    # only what a test here starts counts.
    _FOREIGN.clear()
    _FOREIGN.update(pid for pid, _, _ in children())
    yield
    gc.collect()
    assert children() == []
    assert decoder_threads() == []
    assert open_fds() <= fds


def payload(size: int = 6 << 20) -> bytes:
    """Compressible, like a real layer: random stretches between text."""
    text = b"".join(b"line %d of a config file, key=value\n" % i for i in range(2000))
    parts, total = [], 0
    while total < size:
        part = os.urandom(64 << 10) + text
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def make_tar(files: dict[str, bytes | str]) -> bytes:
    """Regular files, and symlinks where the value is a str (their target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_all(data: bytes, method: str | None = None, chunk: int = 100_000) -> bytes:
    reader = decompress(io.BytesIO(data), gzip_method=method)
    out = []
    while piece := reader.read(chunk):
        out.append(piece)
    reader.close()
    return b"".join(out)


def zstd(data: bytes, **kw: object) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)  # type: ignore[arg-type]


# -- zstd -----------------------------------------------------------------------------------


def test_zstd_round_trip() -> None:
    plain = payload()
    assert read_all(zstd(plain, write_checksum=True)) == plain
    assert read_all(zstd(b"")) == b""


def test_zstd_frames_one_after_another_and_skippable_frames() -> None:
    a, b = payload(3 << 20), b"second frame"
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    assert read_all(zstd(a) + skippable + zstd(b)) == a + b


def test_zstd_streamed_frame_without_content_size() -> None:
    plain = payload(2 << 20)
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        for i in range(0, len(plain), 100_000):
            w.write(plain[i : i + 100_000])
    assert read_all(out.getvalue()) == plain


def test_zstd_layer_applies_and_its_diff_id_is_of_the_plain_tar(tmp_path: Path) -> None:
    big = payload(3 << 20)
    tar = make_tar({"etc/berth-layer2.txt": b"hello from zstd\n", "big.bin": big})
    packed = zstd(tar, level=3)
    target = tmp_path / "target"
    target.mkdir()
    diff_id, size = apply_layer(io.BytesIO(packed), str(target), "overlay")
    assert diff_id == sha(tar)
    assert size == len(big) + len(b"hello from zstd\n")
    assert (target / "etc/berth-layer2.txt").read_bytes() == b"hello from zstd\n"
    assert (target / "big.bin").read_bytes() == big
    assert digest_stream(io.BytesIO(packed)) == (sha(tar), len(tar))


@pytest.mark.parametrize("cut", [5, 9, 100, 1000, -5, -1])
def test_cut_zstd_is_refused(cut: int) -> None:
    packed = zstd(payload(1 << 20), write_checksum=True)
    with pytest.raises(CorruptCompression, match="ended in the middle of a frame"):
        read_all(packed[:cut])


def test_damaged_zstd_is_refused(tmp_path: Path) -> None:
    packed = bytearray(zstd(make_tar({"f": payload(1 << 20)}), write_checksum=True))
    packed[len(packed) // 2] ^= 0xFF
    with pytest.raises(CorruptCompression, match="corrupt zstd data"):
        read_all(bytes(packed))
    garbage = b"\x28\xb5\x2f\xfd" + b"\xff" * 200
    with pytest.raises(CorruptCompression, match="corrupt zstd data"):
        read_all(garbage)
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidLayer, match="invalid or truncated layer tar: corrupt zstd"):
        apply_layer(io.BytesIO(bytes(packed)), str(target), "overlay")


# -- gzip, each way -------------------------------------------------------------------------


@pytest.mark.parametrize("method", GZIP_PATHS)
def test_gzip_round_trip(method: str) -> None:
    plain = payload()
    assert read_all(gzip.compress(plain, compresslevel=6), method) == plain
    # members one after another, zero padding after the last one (what Python's gzip reads)
    two = gzip.compress(plain[:1000]) + gzip.compress(plain[1000:]) + b"\0" * 1024
    assert read_all(two, method) == plain
    assert read_all(gzip.compress(b""), method) == b""


@needs_unpigz
def test_unpigz_is_the_one_decompressing() -> None:
    reader = decompress(io.BytesIO(gzip.compress(payload(20 << 20))), gzip_method="unpigz")
    assert reader.read(10)
    assert [(comm, state != "Z") for _, comm, state in children()] == [("unpigz", True)]
    assert decoder_threads() == ["berth-unpigz"]
    reader.close()


def test_the_thread_is_the_one_decompressing() -> None:
    reader = decompress(io.BytesIO(gzip.compress(payload(20 << 20))), gzip_method="thread")
    assert reader.read(10)
    assert children() == []
    assert decoder_threads() == ["berth-decompress"]
    reader.close()


@pytest.mark.parametrize("method", HELPER_PATHS)
def test_gzip_layer_applies_and_its_diff_id_is_of_the_plain_tar(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GZIP_METHOD_ENV, method)
    monkeypatch.delenv("MOBY_DISABLE_PIGZ", raising=False)
    assert default_gzip_method() == method
    tar = make_tar({"a.txt": b"a" * 5000, "b.bin": payload(2 << 20)})
    target = tmp_path / "t"
    target.mkdir()
    diff_id, _ = apply_layer(io.BytesIO(gzip.compress(tar)), str(target), "overlay")
    assert diff_id == sha(tar)
    assert (target / "a.txt").read_bytes() == b"a" * 5000
    assert digest_stream(io.BytesIO(gzip.compress(tar))) == (sha(tar), len(tar))


def damaged_crc(plain: bytes) -> bytes:
    data = bytearray(gzip.compress(plain))
    data[-8] ^= 0xFF  # the trailer's CRC32
    return bytes(data)


def damaged_deflate(plain: bytes) -> bytes:
    data = bytearray(gzip.compress(plain))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    return bytes(data)


def truncated(plain: bytes) -> bytes:
    data = gzip.compress(plain)
    return data[: len(data) * 2 // 3]


BROKEN = {"crc": damaged_crc, "deflate": damaged_deflate, "truncated": truncated}


@pytest.mark.parametrize("method", GZIP_PATHS)
@pytest.mark.parametrize("damage", sorted(BROKEN))
def test_broken_gzip_is_a_clear_error(method: str, damage: str) -> None:
    data = BROKEN[damage](payload(3 << 20))
    with pytest.raises(CorruptCompression) as exc:
        read_all(data, method)
    message = str(exc.value)
    if method == "unpigz":
        assert message.startswith("unpigz: ")
        assert "corrupted" in message or "invalid" in message
    elif damage == "truncated":
        assert "ended before the end-of-stream marker" in message
    else:
        assert message.startswith("corrupt gzip data: ")


@pytest.mark.parametrize("method", HELPER_PATHS)
@pytest.mark.parametrize("damage", sorted(BROKEN))
def test_broken_gzip_layer_is_the_clients_error(
    tmp_path: Path, method: str, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GZIP_METHOD_ENV, method)
    monkeypatch.delenv("MOBY_DISABLE_PIGZ", raising=False)
    assert default_gzip_method() == method
    tar = make_tar({"big": payload(3 << 20)})
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidLayer, match="invalid or truncated layer tar: "):
        apply_layer(io.BytesIO(BROKEN[damage](tar)), str(target), "overlay")
    with pytest.raises(InvalidLayer, match="invalid or truncated layer tar: "):
        digest_stream(io.BytesIO(BROKEN[damage](tar)))


@pytest.mark.parametrize("method", HELPER_PATHS)
def test_the_error_stays(method: str) -> None:
    reader = decompress(io.BytesIO(truncated(payload(1 << 20))), gzip_method=method)
    with pytest.raises(CorruptCompression):
        reader.read()
    with pytest.raises(CorruptCompression):  # not a quiet end on the next read
        reader.read(10)
    reader.close()


# -- ending early ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*HELPER_PATHS, "zstd"])
def test_early_close_leaves_nothing(method: str) -> None:
    plain = payload(20 << 20)
    data = zstd(plain) if method == "zstd" else gzip.compress(plain, compresslevel=1)
    reader = decompress(io.BytesIO(data), gzip_method=None if method == "zstd" else method)
    assert reader.read(3 << 20) == plain[: 3 << 20]
    if method == "unpigz":
        assert [comm for _, comm, _ in children()] == ["unpigz"]
    assert decoder_threads()
    reader.close()
    assert children() == []
    assert decoder_threads() == []


@pytest.mark.parametrize("method", HELPER_PATHS)
def test_abandoned_reader_is_stopped_when_collected(method: str) -> None:
    reader = decompress(io.BytesIO(gzip.compress(payload(20 << 20))), gzip_method=method)
    assert reader.read(1 << 20)
    del reader
    gc.collect()
    assert children() == []
    assert decoder_threads() == []


@pytest.mark.parametrize("method", HELPER_PATHS)
def test_tar_error_mid_layer_leaves_nothing(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply_layer gives up with most of the stream unread; the helper goes with its reader."""
    monkeypatch.setenv(GZIP_METHOD_ENV, method)
    monkeypatch.delenv("MOBY_DISABLE_PIGZ", raising=False)
    tar = make_tar({"a": payload(1 << 20), "loop": "loop", "loop/f": b"x", "b": payload(8 << 20)})
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidLayer, match="too many levels of symbolic links"):
        apply_layer(io.BytesIO(gzip.compress(tar, compresslevel=1)), str(target), "overlay")
    gc.collect()
    assert children() == []
    assert decoder_threads() == []


class FailingSource(io.RawIOBase):
    """Compressed bytes that fail part-way, as a dropped connection would."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self._data = memoryview(data)
        self._fail_at = fail_at
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._fail_at:
            raise ConnectionResetError(104, "Connection reset by peer")
        n = min(len(b), self._fail_at - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("method", [*HELPER_PATHS, "zstd"])
def test_a_failing_source_surfaces_its_own_error(method: str) -> None:
    plain = payload(4 << 20)
    data = zstd(plain) if method == "zstd" else gzip.compress(plain)
    src = io.BufferedReader(FailingSource(data, len(data) // 2))
    reader = decompress(src, gzip_method=None if method == "zstd" else method)
    with pytest.raises(ConnectionResetError):
        reader.read()
    reader.close()


# -- choosing ---------------------------------------------------------------------------------


def test_default_gzip_method(tmp_path: Path) -> None:
    """The thread unless asked; unpigz when asked, with dockerd's MOBY_DISABLE_PIGZ rule."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unpigz").write_text("#!/bin/sh\n")
    (bin_dir / "unpigz").chmod(0o755)
    pigz = {"PATH": str(bin_dir)}
    asked = {**pigz, GZIP_METHOD_ENV: "unpigz"}
    assert default_gzip_method(pigz) == "thread"
    assert default_gzip_method({**pigz, GZIP_METHOD_ENV: "inline"}) == "inline"
    assert default_gzip_method({**pigz, GZIP_METHOD_ENV: "gunzip"}) == "thread"  # warned
    assert default_gzip_method(asked) == "unpigz"
    assert default_gzip_method({**asked, "MOBY_DISABLE_PIGZ": "true"}) == "thread"
    assert default_gzip_method({**asked, "MOBY_DISABLE_PIGZ": "1"}) == "thread"
    assert default_gzip_method({**asked, "MOBY_DISABLE_PIGZ": "false"}) == "unpigz"
    # not a Go bool: dockerd warns and keeps pigz
    assert default_gzip_method({**asked, "MOBY_DISABLE_PIGZ": "yes"}) == "unpigz"
    assert default_gzip_method({**asked, "PATH": str(tmp_path / "empty")}) == "thread"


def test_the_daemon_default_is_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GZIP_METHOD_ENV, raising=False)
    reader = decompress(io.BytesIO(gzip.compress(payload(20 << 20))))
    assert reader.read(10)
    assert children() == []
    assert decoder_threads() == ["berth-decompress"]
    reader.close()


def test_unknown_gzip_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown gzip method"):
        decompress(io.BytesIO(gzip.compress(b"x")), gzip_method="pigz")


def test_plain_bzip2_and_xz_are_unchanged() -> None:
    plain = payload(1 << 20)
    assert read_all(plain) == plain
    assert read_all(bz2.compress(plain)) == plain
    assert read_all(lzma.compress(plain)) == plain


def test_zlib_error_inline_is_corrupt_compression() -> None:
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    with pytest.raises(CorruptCompression, match="invalid block type"):
        read_all(header + b"\xff" * 2000, "inline")
    assert issubclass(CorruptCompression, EOFError)
    assert not issubclass(CorruptCompression, zlib.error)
