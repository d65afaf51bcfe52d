"""Apply a layer tar to a directory safely, converting whiteouts.

A layer tar comes from a client (``docker load``/``import``), so every entry
is hostile until shown otherwise: entry names and hard link targets that leave
the root are refused, paths are resolved as if the target were ``/`` (dockerd
extracts in a chroot), and nothing is ever written through a symlink.  A
symlink's own target is stored as it is, even ``../../etc/shadow`` or an
absolute path: it means a path of the container, which dockerd accepts, and
berthd never follows it on the host.  Whiteouts become what the graph driver
needs:

* ``overlay``: ``.wh.NAME`` → a 0/0 character device ``NAME``;
  ``.wh..wh..opq`` → ``trusted.overlay.opaque=y`` on the directory.
* ``delete``: the whiteout removes ``NAME`` (or the directory's old
  contents) from a target that already holds the parent's files (vfs).
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO

from berth import errdefs
from berth.utils.securejoin import secure_join as _secure_join

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_COPY_CHUNK = 1 << 20


class InvalidLayer(errdefs.InvalidParameter):
    """The tar stream is corrupt, truncated or tries to escape its target."""


# -- compression -------------------------------------------------------------


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
    raw = io.BufferedReader(_Peekable(head, stream), buffer_size=_COPY_CHUNK)
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
        while self.read(_COPY_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


# -- path confinement ----------------------------------------------------------


def clean_member_name(name: str) -> str:
    """The entry's path relative to the root, or InvalidLayer if it leaves it."""
    if name.startswith("/"):
        raise InvalidLayer(f"invalid tar entry {name!r}: absolute paths are not allowed")
    cleaned = posixpath.normpath(name)
    if cleaned == ".." or cleaned.startswith("../"):
        raise InvalidLayer(f"invalid tar entry {name!r}: path escapes the layer root")
    return "" if cleaned == "." else cleaned


def secure_join(root: str, rel: str) -> str:
    """:func:`berth.utils.securejoin.secure_join`, with this module's error class."""
    try:
        return _secure_join(root, rel)
    except errdefs.InvalidParameter as e:
        raise InvalidLayer(str(e)) from None


# -- extraction ----------------------------------------------------------------


class _Applier:
    def __init__(self, root: str, whiteouts: str) -> None:
        self.root = os.path.realpath(root)
        self.whiteouts = whiteouts
        self.size = 0
        self.dir_times: list[tuple[str, float]] = []
        self.created: set[str] = set()  # paths (relative) written by this layer, for opaque dirs
        self.real_dirs: set[str] = {""}

    # A directory path verified to be a real directory (no symlink on the way),
    # so its children can be created with a plain join.
    def parent_dir(self, rel: str) -> str:
        parent = posixpath.dirname(rel)
        if parent in self.real_dirs:
            return os.path.join(self.root, parent) if parent else self.root
        resolved = secure_join(self.root, parent)
        if not os.path.isdir(resolved):
            if os.path.lexists(resolved):
                os.unlink(resolved)
            os.makedirs(resolved, mode=0o755, exist_ok=True)
        if resolved == os.path.join(self.root, parent):
            self.real_dirs.add(parent)
        return resolved

    def forget(self, rel: str) -> None:
        if rel in self.real_dirs:
            prefix = rel + "/"
            self.real_dirs = {d for d in self.real_dirs if d != rel and not d.startswith(prefix)}

    def apply(self, tf: tarfile.TarFile) -> None:
        for member in tf:
            self.entry(tf, member)
        for path, mtime in reversed(self.dir_times):
            # A later entry may have replaced a directory on the way with a
            # symlink: only touch a path that still has none.
            if os.path.realpath(path) != path:
                continue
            try:
                os.utime(path, (mtime, mtime), follow_symlinks=False)
            except FileNotFoundError:
                pass

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = clean_member_name(m.name)
        if rel == "":
            return
        if any(part.startswith(WHITEOUT_META_PREFIX) for part in rel.split("/")[:-1]):
            return  # inside aufs bookkeeping directories (.wh..wh.plnk/...)
        base = posixpath.basename(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base, m)
            return
        parent = self.parent_dir(rel)
        path = os.path.join(parent, base)
        rel_real = os.path.relpath(path, self.root)

        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not (stat.S_ISDIR(st.st_mode) and m.isdir()):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            self.forget(rel_real)

        if m.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(path, 0o700)
            self.dir_times.append((path, float(m.mtime)))
            if rel_real == rel:
                self.real_dirs.add(rel)
        elif m.isreg():
            self.regular(tf, m, path)
        elif m.issym():
            self.symlink(m, path)
        elif m.islnk():
            self.hardlink(m, path)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(path, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path, m.mode & 0o7777)
        else:
            # Unknown types (e.g. GNU volume headers) carry nothing to apply.
            return
        self.created.add(rel_real)
        self.attrs(m, path)

    def regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        src = tf.extractfile(m)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
        self.size += m.size

    def symlink(self, m: tarfile.TarInfo, path: str) -> None:
        """The link as written: a target above the root is clamped at the container's
        root when it is resolved (as the kernel does there, and secure_join here)."""
        os.symlink(m.linkname, path)
        self.size += len(m.linkname.encode())

    def hardlink(self, m: tarfile.TarInfo, path: str) -> None:
        if m.linkname.startswith("/"):
            link_rel = clean_member_name(m.linkname.lstrip("/"))
        else:
            link_rel = clean_member_name(m.linkname)
        # The target must already be in this layer: resolve its parent but not
        # the entry itself (linking to a symlink links the symlink, as tar does).
        source_parent = secure_join(self.root, posixpath.dirname(link_rel))
        source = os.path.join(source_parent, posixpath.basename(link_rel))
        if not os.path.lexists(source):
            raise InvalidLayer(
                f"invalid hardlink {m.name!r} -> {m.linkname!r}: target not found in the layer"
            )
        os.link(source, path, follow_symlinks=False)

    def attrs(self, m: tarfile.TarInfo, path: str) -> None:
        os.lchown(path, m.uid, m.gid)
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                name = key[len("SCHILY.xattr.") :]
                try:
                    os.setxattr(
                        path,
                        name,
                        value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False,
                    )
                except OSError as e:
                    if e.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise
        # lstat, not m.issym(): a hard link to a symlink is a symlink too, and
        # chmod/utime would follow it out of the layer.
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            os.chmod(path, m.mode & 0o7777)
            if not m.isdir():
                os.utime(path, (float(m.mtime), float(m.mtime)))
        else:
            os.utime(path, (float(m.mtime), float(m.mtime)), follow_symlinks=False)

    def whiteout(self, rel: str, base: str, m: tarfile.TarInfo) -> None:
        parent = self.parent_dir(rel)
        # Relative to the root as resolved (the parent may lie behind symlinks),
        # like the keys of self.created and self.real_dirs.
        rel_parent = os.path.relpath(parent, self.root)
        if rel_parent == ".":
            rel_parent = ""
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts == "overlay":
                os.setxattr(parent, OPAQUE_XATTR, b"y")
            else:
                prefix = (rel_parent + "/") if rel_parent else ""
                for name in os.listdir(parent):
                    child_rel = prefix + name
                    if child_rel in self.created:
                        continue
                    child = os.path.join(parent, name)
                    if os.path.isdir(child) and not os.path.islink(child):
                        shutil.rmtree(child)
                    else:
                        os.unlink(child)
                    self.forget(child_rel)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and friends)
        name = base[len(WHITEOUT_PREFIX) :]
        if not name or name in (".", ".."):
            raise InvalidLayer(f"invalid whiteout entry {m.name!r}")
        target = os.path.join(parent, name)
        if self.whiteouts == "overlay":
            if os.path.lexists(target):
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.unlink(target)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            os.lchown(target, m.uid, m.gid)
        elif os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        self.forget(posixpath.join(rel_parent, name) if rel_parent else name)


@contextmanager
def _tar_errors() -> Iterator[None]:
    try:
        yield
    except InvalidLayer:
        raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise errdefs.System(f"applying layer: {e}") from e
        if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.errno is not None:
            raise InvalidLayer(
                f"invalid layer tar: {e.strerror}: {e.filename or ''}".rstrip(": ")
            ) from e
        text = str(e) or type(e).__name__
        raise InvalidLayer(f"invalid or truncated layer tar: {text}") from e


def apply_layer(stream: BinaryIO | IO[bytes], target: str, whiteouts: str) -> tuple[str, int]:
    """Extract the (possibly compressed) layer *stream* into *target*.

    Returns the DiffID (sha256 of the uncompressed tar, trailing padding
    included) and the size of the applied contents.
    """
    with _tar_errors():
        plain = decompress(stream)
        digest = DigestReader(plain)
        reader = io.BufferedReader(digest, buffer_size=_COPY_CHUNK)
        applier = _Applier(target, whiteouts)
        with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tf:
            applier.apply(tf)
        # Whatever follows the end-of-archive blocks is part of the DiffID.
        while reader.read(_COPY_CHUNK):
            pass
        return digest.digest(), applier.size


def digest_stream(stream: IO[bytes]) -> tuple[str, int]:
    """DiffID and length of a (possibly compressed) tar without applying it."""
    with _tar_errors():
        digest = DigestReader(decompress(stream))
        digest.drain()
        return digest.digest(), digest.count
