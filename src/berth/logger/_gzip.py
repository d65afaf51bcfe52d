"""Compressed rotated log files, as moby writes them.

moby gzips ``<log>.1`` into ``<log>.1.gz`` after a rotation and stores the
time of the file's last message in the gzip header's extra field as the JSON
``{"lastTime":"<RFC3339Nano>"}``, so a reader with ``--since`` can skip the
whole file without decompressing it.  Python's :mod:`gzip` cannot write an
extra field, so the header is written here and the body with :mod:`zlib`.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import zlib
from pathlib import Path

import msgspec

from berth.logger._codec import format_time, parse_time
from berth.logger._fdio import write_all

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_FEXTRA = 0x04
_FNAME = 0x08
_FCOMMENT = 0x10
_FHCRC = 0x02


def gzip_header(last_time_ns: int) -> bytes:
    """A gzip member header like Go's ``gzip.Writer`` with ``Header.Extra`` set."""
    extra = b'{"lastTime":"' + format_time(last_time_ns) + b'"}'
    # magic, CM=deflate, FLG=FEXTRA, MTIME=0, XFL=0, OS=255 (unknown), XLEN, extra
    fixed = b"\x1f\x8b\x08" + bytes([_FEXTRA]) + b"\0\0\0\0\0\xff"
    return fixed + struct.pack("<H", len(extra)) + extra


def compress_file(src: Path, last_time_ns: int, mode: int = 0o640) -> None:
    """Write ``src.gz`` and remove *src* once the compressed copy is complete."""
    dst = src.with_name(src.name + ".gz")
    try:
        in_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            crc = 0
            size = 0
            write_all(out_fd, gzip_header(last_time_ns))
            while chunk := os.read(in_fd, _CHUNK):
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
                write_all(out_fd, comp.compress(chunk))
            write_all(out_fd, comp.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF))
        except BaseException:
            os.close(out_fd)
            try:
                os.unlink(dst)
            except FileNotFoundError:
                pass
            raise
        os.close(out_fd)
    finally:
        os.close(in_fd)
    # Readers open the plain file first and fall back to the .gz: at no point is
    # there neither a complete plain file nor a complete compressed one.
    try:
        os.unlink(src)
    except FileNotFoundError:
        pass


def read_last_time(fd: int) -> int | None:
    """The ``lastTime`` moby keeps in the gzip header of *fd*, or None."""
    head = os.pread(fd, 12, 0)
    if len(head) < 12 or head[:3] != b"\x1f\x8b\x08" or not head[3] & _FEXTRA:
        return None
    (xlen,) = struct.unpack("<H", head[10:12])
    extra = os.pread(fd, xlen, 12)
    try:
        meta = msgspec.json.decode(extra, type=dict[str, str])
        when = meta.get("lastTime")
        if when is None:
            return None
        ns = parse_time(when)
    except (msgspec.DecodeError, ValueError):
        return None
    # Go's zero time means "not recorded".
    return None if when.startswith("0001-01-01T00:00:00") else ns


def _anonymous_file(tmpdir: Path | None) -> int:
    """A read-write descriptor of a file without a name (gone when closed)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".berth-log-", dir=tmpdir)
    except OSError:
        if tmpdir is None:
            raise
        fd, name = tempfile.mkstemp(prefix=".berth-log-")
    os.unlink(name)
    return fd


def decompress_to_temp(fd: int, tmpdir: Path | None) -> tuple[int, int]:
    """Decompress the gzip file *fd* into an anonymous temporary file: (fd, size).

    A corrupt or truncated archive yields what could be decompressed (moby
    skips such a file with a warning; what is readable is more useful).
    """
    out = _anonymous_file(tmpdir)
    size = 0
    offset = 0
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while True:
            chunk = os.pread(fd, _CHUNK, offset)
            if not chunk:
                break
            offset += len(chunk)
            while chunk:
                data = dec.decompress(chunk)
                write_all(out, data)
                size += len(data)
                chunk = b""
                if dec.eof:
                    # Concatenated members are one stream (gzip(1) semantics).
                    chunk = dec.unused_data
                    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        tail = dec.flush()
        write_all(out, tail)
        size += len(tail)
    except zlib.error as e:
        log.warning("corrupt compressed log file (using what could be read): %s", e)
    except BaseException:
        os.close(out)
        raise
    return out, size
