"""berth.archive._tarread.parse_header decodes a tar header exactly as
tarfile.TarInfo.frombuf does (it is a faster path for the usual header)."""

from __future__ import annotations

import io
import tarfile

import pytest

from berth.archive._tarread import parse_header

_ATTRS = [
    "name",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime",
    "chksum",
    "type",
    "linkname",
    "uname",
    "gname",
    "devmajor",
    "devminor",
]


def _archive(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tf:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            ti.mtime = 1_700_000_000
            for k, v in kw.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(data) if data else None)

        add("a.txt", data=b"hello\n", mode=0o644, uid=1000, gid=1000, uname="u", gname="g")
        add("dir", tarfile.DIRTYPE, mode=0o755)
        add("dir/sub/", tarfile.DIRTYPE, mode=0o700)
        add("p/" * 60 + "long-name-in-prefix", data=b"x")
        add("link", tarfile.SYMTYPE, linkname="a.txt")
        add("hard", tarfile.LNKTYPE, linkname="a.txt")
        add("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("fifo", tarfile.FIFOTYPE)
        add("caf\u00e9-\u2603", data=b"utf8 name")
        add("setuid", data=b"s", mode=0o4755)
        if fmt != tarfile.USTAR_FORMAT:
            add("big-uid", data=b"b", uid=0o10000000, gid=2**40)  # base-256 in GNU
            add("n" * 150, data=b"long")  # GNU long name / PAX path
            add("old", data=b"o", mtime=-1)
    return buf.getvalue()


def _blocks() -> list[bytes]:
    """Every 512-byte block of archives in each format: headers and, as headers that
    must fail the same way, data and padding blocks."""
    out = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = _archive(fmt)
        out += [data[i : i + 512] for i in range(0, len(data), 512)]
    return out


def _same(buf: bytes) -> None:
    try:
        want = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        with pytest.raises(type(e)):
            parse_header(buf)
        return
    got = parse_header(buf)
    assert {a: getattr(got, a) for a in _ATTRS} == {a: getattr(want, a) for a in _ATTRS}
    assert getattr(got, "_sparse_structs", None) == getattr(want, "_sparse_structs", None)


@pytest.mark.parametrize("buf", _blocks())
def test_each_block_reads_as_tarfile_reads_it(buf: bytes) -> None:
    _same(buf)


def _header(**kw: object) -> bytearray:
    ti = tarfile.TarInfo("f")
    for k, v in kw.items():
        setattr(ti, k, v)
    return bytearray(ti.tobuf(tarfile.USTAR_FORMAT))


def _set_checksum(buf: bytearray, value: int) -> None:
    buf[148:156] = b"%06o\0 " % value


def test_unusual_headers_read_as_tarfile_reads_them() -> None:
    v7_dir = _header(name="olddir/", type=tarfile.AREGTYPE)  # V7: a file with a slash
    _same(bytes(v7_dir))
    assert parse_header(bytes(v7_dir)).type == tarfile.DIRTYPE

    signed = _header(name="\u00e9" * 10)  # high bytes: a signed checksum differs
    _set_checksum(signed, 256 + sum(b - 256 if b > 127 else b for b in signed[:148] + signed[156:]))
    _same(bytes(signed))

    bad = _header()
    bad[0] ^= 1
    _same(bytes(bad))

    sparse = _header(type=tarfile.GNUTYPE_SPARSE)
    _set_checksum(sparse, 256 + sum(sparse[:148]) + sum(sparse[156:]))
    _same(bytes(sparse))

    spaced = _header(mode=0o640)
    spaced[100:108] = b"  640 \0\0"
    _set_checksum(spaced, 256 + sum(spaced[:148]) + sum(spaced[156:]))
    _same(bytes(spaced))

    for short in (b"", bytes(511), bytes(512)):
        _same(short)


def test_the_usual_header_does_not_go_through_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> tarfile.TarInfo:
        raise AssertionError("tarfile was asked")

    buf = _archive(tarfile.PAX_FORMAT)[:512]
    want = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    monkeypatch.setattr(tarfile.TarInfo, "frombuf", refuse)
    assert parse_header(buf).name == want.name == "a.txt"


@pytest.mark.parametrize("fill", [0, 0x30, 0x7F, 0x80, 0xFF])
def test_the_byte_sum_is_the_sum_of_the_bytes(fill: int) -> None:
    from berth.archive._tarread import _byte_sum

    buf = bytes([fill]) * 511 + b"\x01"
    assert _byte_sum(buf) == sum(buf)
