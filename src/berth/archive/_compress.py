"""Compressed tar streams: what the first bytes say, and a reader of the plain bytes."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
from typing import IO

from berth.archive._errors import InvalidLayer

COPY_CHUNK = 1 << 20


def detect_compression(head: bytes) -> str:
    """ "gzip", "bzip2", "xz", "zstd" or "none", from the first bytes of a stream."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


class _Peekable(io.RawIOBase):
    """A reader whose first bytes have been looked at and are replayed."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def decompress(stream: IO[bytes]) -> IO[bytes]:
    """Wrap *stream* so reads give the uncompressed bytes (gzip, bzip2, xz or plain)."""
    head = stream.read(6)
    kind = detect_compression(head)
    raw = io.BufferedReader(_Peekable(head, stream), buffer_size=COPY_CHUNK)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    if kind == "zstd":
        raise InvalidLayer("zstd-compressed layers are not supported by berth yet")
    return raw


class DigestReader(io.RawIOBase):
    """Pass bytes through while computing their sha256 and counting them."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.hasher.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        while self.read(COPY_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()
