"""Unpacking tars safely: image layers (with whiteouts) and ``docker cp`` into a container.

A tar comes from a client (``docker load``/``import``/``cp``), so every entry
is hostile until shown otherwise: entry names and hard link targets that
leave the target are refused, paths are resolved as if the target were ``/``
(dockerd extracts in a chroot), and nothing is ever written through a
symlink.

Layers (:func:`apply_layer`): a symlink's own target is stored as it is, even
``../../etc/shadow`` or an absolute path: it means a path of the container,
which dockerd accepts, and berthd never follows it on the host.  Whiteouts
become what the graph driver needs:

* ``overlay``: ``.wh.NAME`` → a 0/0 character device ``NAME``;
  ``.wh..wh..opq`` → ``trusted.overlay.opaque=y`` on the directory.
* ``delete``: the whiteout removes ``NAME`` (or the directory's old
  contents) from a target that already holds the parent's files (vfs).

``docker cp`` (:func:`unpack`, moby's ``archive.Unpack``): entries land in a
directory of a :class:`~berth.archive.ContainerFS`, through its mounts, by
directory descriptors; a symlink or hard link pointing out of the
destination is refused, whiteouts are plain files.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from typing import IO, TYPE_CHECKING, BinaryIO

from berth import errdefs
from berth.archive._compress import COPY_CHUNK, DigestReader, decompress
from berth.archive._errors import InvalidLayer, Wording, tar_errors
from berth.archive._gopath import go_clean, go_join
from berth.archive._pack import XATTR_PREFIX, write_all
from berth.utils.symlink import resolve_in_root

if TYPE_CHECKING:
    from berth.archive._fs import ContainerFS, Dir, Entry

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# -- layers ---------------------------------------------------------------------------------


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
    """:func:`resolve_in_root`, failing with this module's error class."""
    try:
        return resolve_in_root(root, rel)
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
                shutil.copyfileobj(src, out, COPY_CHUNK)
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


def _layer_entry_error(e: OSError) -> errdefs.BerthError:
    if isinstance(e, gzip.BadGzipFile) or e.errno is None:
        return _layer_corrupt(e)
    return InvalidLayer(f"invalid layer tar: {e.strerror}: {e.filename or ''}".rstrip(": "))


def _layer_corrupt(e: Exception) -> errdefs.BerthError:
    return InvalidLayer(f"invalid or truncated layer tar: {str(e) or type(e).__name__}")


_LAYER_WORDS = Wording(
    corrupt_types=(tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, ValueError),
    corrupt=_layer_corrupt,
    host=lambda e: errdefs.System(f"applying layer: {e}"),
    entry=_layer_entry_error,
)


def apply_layer(stream: BinaryIO | IO[bytes], target: str, whiteouts: str) -> tuple[str, int]:
    """Extract the (possibly compressed) layer *stream* into *target*.

    Returns the DiffID (sha256 of the uncompressed tar, trailing padding
    included) and the size of the applied contents.
    """
    with tar_errors(_LAYER_WORDS):
        plain = decompress(stream)
        digest = DigestReader(plain)
        reader = io.BufferedReader(digest, buffer_size=COPY_CHUNK)
        applier = _Applier(target, whiteouts)
        with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tf:
            applier.apply(tf)
        # Whatever follows the end-of-archive blocks is part of the DiffID.
        while reader.read(COPY_CHUNK):
            pass
        return digest.digest(), applier.size


def digest_stream(stream: IO[bytes]) -> tuple[str, int]:
    """DiffID and length of a (possibly compressed) tar without applying it."""
    with tar_errors(_LAYER_WORDS):
        digest = DigestReader(decompress(stream))
        digest.drain()
        return digest.digest(), digest.count


# -- docker cp ------------------------------------------------------------------------------


def _within(path: str, root: str) -> bool:
    return root in ("/", path) or path.startswith(root + "/")


def _ns(value: float) -> int:
    return value * 1_000_000_000 if isinstance(value, int) else int(value * 1_000_000_000)


class _Extractor:
    def __init__(
        self,
        fs: ContainerFS,
        dest: Dir,
        no_overwrite_dir_non_dir: bool,
        chown: tuple[int, int] | None,
    ) -> None:
        self.fs = fs
        self.dest = dest.path
        self.no_overwrite = no_overwrite_dir_non_dir
        self.chown = chown
        self.dirs: list[tuple[str, int, int]] = []
        self.current = ""

    def _member_path(self, name: str) -> str:
        """The entry's path relative to the destination; a path leaving it is refused.

        As Go's ``filepath.Join(dest, name)``, an absolute name is taken below the
        destination (``docker cp C:/ -`` writes ``/bin/...``).
        """
        cleaned = go_clean(name)
        if cleaned == ".." or cleaned.startswith("../"):
            raise errdefs.InvalidParameter(f'"{name}" is outside of "{self.dest}"')
        cleaned = cleaned.lstrip("/")
        return "" if cleaned in ("", ".") else cleaned

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = self._member_path(m.name)
        if not rel:
            if m.isdir():
                return  # the extraction directory itself
            raise errdefs.InvalidParameter(
                f'cannot overwrite the extraction directory "{self.dest}" with non-directory '
                f'"{m.name}"'
            )
        parent_rel, base = posixpath.split(rel)
        parent = self.fs.open_dir(go_join(self.dest, parent_rel), create=True)
        e = self.fs.lookup(parent, base)
        try:
            st: os.stat_result | None = e.lstat()
        except FileNotFoundError:
            if e.mount_point:  # nothing to write over: never create beside a bind's source
                raise errdefs.InvalidParameter(
                    f"cannot write {e.path}: the source of this mount is missing"
                ) from None
            st = None
        if st is not None:
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.no_overwrite and is_dir and not m.isdir():
                raise errdefs.InvalidParameter(
                    f'cannot overwrite directory "{e.path}" with non-directory "{self.dest}"'
                )
            if self.no_overwrite and not is_dir and m.isdir():
                raise errdefs.InvalidParameter(
                    f'cannot overwrite non-directory "{e.path}" with directory "{self.dest}"'
                )
            if not (is_dir and m.isdir()):
                if e.mount_point:
                    raise errdefs.InvalidParameter(
                        f"cannot replace {e.path}: it is a mount point of the container"
                    )
                self.fs.check_writable(e.mount)
                if is_dir:
                    shutil.rmtree(e.name, dir_fd=e.dir_fd)
                else:
                    os.unlink(e.name, dir_fd=e.dir_fd)
                self.fs.forget(e.path)
                st = None
        self.fs.check_writable(e.mount)
        mode = m.mode & 0o7777
        if m.isreg():
            self._regular(tf, m, e, mode)
            return
        if m.isdir():
            if st is None:
                os.mkdir(e.name, 0o700, dir_fd=e.dir_fd)
        elif m.issym():
            target = go_join(posixpath.dirname(go_join(self.dest, rel)), m.linkname)
            if not _within(target, self.dest):
                raise errdefs.InvalidParameter(
                    f'invalid symlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
                )
            os.symlink(m.linkname, e.name, dir_fd=e.dir_fd)
        elif m.islnk():
            self._hardlink(m, e)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(e.name, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=e.dir_fd)
        elif m.isfifo():
            os.mkfifo(e.name, mode, dir_fd=e.dir_fd)
        else:
            raise errdefs.InvalidParameter(f"unhandled tar header type {m.type!r} of {m.name!r}")
        self._attrs(m, e, mode)
        if m.isdir():
            self.dirs.append((e.path, *self._times(m)))

    def _regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, e: Entry, mode: int) -> None:
        fd = os.open(e.name, _O_CREATE, 0o600, dir_fd=e.dir_fd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                while chunk := src.read(COPY_CHUNK):
                    write_all(fd, chunk)
            uid, gid = self.chown or (m.uid, m.gid)
            os.fchown(fd, uid, gid)
            self._xattrs(m, e)
            os.fchmod(fd, mode)
            os.utime(fd, ns=self._times(m))
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, e: Entry) -> None:
        target = go_join(self.dest, m.linkname)
        if not _within(target, self.dest):
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
            )
        parent, base = posixpath.split(target)
        try:
            source = self.fs.lookup(self.fs.open_dir(parent), base)
            os.link(
                source.name,
                e.name,
                src_dir_fd=source.dir_fd,
                dst_dir_fd=e.dir_fd,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{e.path}" -> "{m.linkname}": the target does not exist'
            ) from None

    def _times(self, m: tarfile.TarInfo) -> tuple[int, int]:
        mtime = _ns(m.mtime)
        atime = mtime
        raw = m.pax_headers.get("atime")
        if raw:
            with contextlib.suppress(ValueError):
                atime = max(mtime, _ns(float(raw)))
        return atime, mtime

    def _xattrs(self, m: tarfile.TarInfo, e: Entry) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith(XATTR_PREFIX):
                continue
            try:
                os.setxattr(
                    e.proc_path(),
                    key[len(XATTR_PREFIX) :],
                    value.encode("utf-8", "surrogateescape"),
                    follow_symlinks=False,
                )
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP):
                    raise

    def _attrs(self, m: tarfile.TarInfo, e: Entry, mode: int) -> None:
        """Owner, xattrs, mode and times, never through a symlink (chown first: it clears
        set-id bits)."""
        uid, gid = self.chown or (m.uid, m.gid)
        os.chown(e.name, uid, gid, dir_fd=e.dir_fd, follow_symlinks=False)
        self._xattrs(m, e)
        fd = os.open(e.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=e.dir_fd)
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
        os.utime(e.name, ns=self._times(m), dir_fd=e.dir_fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times last: creating their entries changed them."""
        for path, atime, mtime in self.dirs:
            parent, base = posixpath.split(path)
            try:
                e = self.fs.lookup(self.fs.open_dir(parent), base)
                os.utime(e.name, ns=(atime, mtime), dir_fd=e.dir_fd, follow_symlinks=False)
            except OSError:
                pass  # replaced or removed by a later entry


def _cp_words(ex: _Extractor) -> Wording:
    """dockerd's words for ``PUT /archive``, naming the entry being written."""
    return Wording(
        corrupt_types=(tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error),
        corrupt=lambda e: errdefs.InvalidParameter(f"invalid tar archive: {e}"),
        host=lambda e: errdefs.System(f"extracting {ex.current}: {e.strerror}"),
        entry=lambda e: errdefs.InvalidParameter(
            f"cannot extract {ex.current!r}: {e.strerror or e}"
        ),
    )


def unpack(
    fs: ContainerFS,
    dest: Dir,
    stream: IO[bytes],
    *,
    no_overwrite_dir_non_dir: bool = False,
    chown: tuple[int, int] | None = None,
) -> None:
    """Unpack the tar *stream* (possibly compressed) into *dest* of *fs*, as moby's ``Unpack``."""
    ex = _Extractor(fs, dest, no_overwrite_dir_non_dir, chown)
    with tar_errors(_cp_words(ex)):
        plain = decompress(stream)
        try:
            tf = tarfile.open(fileobj=plain, mode="r|", bufsize=COPY_CHUNK)  # noqa: SIM115
        except tarfile.ReadError as e:
            if str(e) == "empty file":
                return  # nothing to extract, as Go's tar reader sees an empty stream
            raise
        with tf:
            for member in tf:
                ex.current = member.name
                ex.entry(tf, member)
        ex.finish()
