"""Unpacking tars safely: image layers (with whiteouts) and ``docker cp`` into a container.

A tar comes from a client (``docker load``/``import``/``cp``), so every entry
is hostile until shown otherwise: entry names and hard link targets that
leave the target are refused, paths are resolved as if the target were ``/``
(dockerd extracts in a chroot), and nothing is ever written through a
symlink.

Both front-ends create each entry with one routine, as moby's ``UnpackLayer``
and ``Unpack`` share ``createTarFile``: the node made without following a
symlink, then owner (first: it clears set-id bits), xattrs, mode and times.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, BinaryIO

from berth import errdefs
from berth.archive._compress import COPY_CHUNK, DigestReader, decompress
from berth.archive._errors import InvalidLayer, Wording, tar_errors
from berth.archive._gopath import go_join
from berth.archive._pack import XATTR_PREFIX, write_all
from berth.archive._tarread import TarStream
from berth.archive._tarsplit import RecordingReader, TarSplitRecorder
from berth.utils.gostr import go_clean
from berth.utils.symlink import resolve_in_root

if TYPE_CHECKING:
    from berth.archive._fs import ContainerFS, Dir, Entry

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# -- one entry (moby's createTarFile) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where an entry goes: *name* in directory *dir_fd*, or the host path *name* if None."""

    dir_fd: int | None
    name: str
    xattr_path: str  # a path naming the same file (setxattr has no *at form)
    holder: object = None  # what keeps *dir_fd* open


def _ns(value: float) -> int:
    return value * 1_000_000_000 if isinstance(value, int) else int(value * 1_000_000_000)


def _times(m: tarfile.TarInfo, pax_atime: bool) -> tuple[int, int]:
    """``(atime, mtime)`` in ns: the PAX atime if asked for (and not older), else the mtime."""
    mtime = _ns(m.mtime)
    atime = mtime
    raw = m.pax_headers.get("atime") if pax_atime else None
    if raw:
        with contextlib.suppress(ValueError):
            atime = max(mtime, _ns(float(raw)))
    return atime, mtime


def _remove(at: _Place, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(at.name, dir_fd=at.dir_fd)
    else:
        os.unlink(at.name, dir_fd=at.dir_fd)


#: writes the data of the member being created to the file descriptor it is given
DataWriter = Callable[[int], None]


def _tarfile_data(tf: tarfile.TarFile, m: tarfile.TarInfo) -> DataWriter:
    def write(fd: int) -> None:
        src = tf.extractfile(m)
        if src is not None:
            while chunk := src.read(COPY_CHUNK):
                write_all(fd, chunk)

    return write


def _create(
    data: DataWriter,
    m: tarfile.TarInfo,
    at: _Place,
    *,
    owner: tuple[int, int],
    times: tuple[int, int],
    dir_exists: bool = False,
    source: _Place | None = None,
) -> bool:
    """Make the entry *m* at *at* (nothing else is there) with its attributes.

    A hard link needs its *source*.  A directory's times are the caller's to
    set once its entries are in.  False for a type that is not a file system
    node (e.g. a GNU volume header): nothing was done.
    """
    mode = m.mode & 0o7777
    if m.isreg():
        # Created with its permission bits (as moby does; the umask may take some), the
        # special bits only once the owner is set: a chown clears them.
        fd = os.open(at.name, _O_CREATE, mode & 0o777, dir_fd=at.dir_fd)
        try:
            data(fd)
            st = os.fstat(fd)
            # Most files come out right already (root's, the umask taking nothing):
            # no chown and chmod that would change nothing.
            settle = (st.st_uid, st.st_gid) != owner or stat.S_IMODE(st.st_mode) != mode
            if settle:
                os.fchown(fd, *owner)
            _xattrs(m, at)
            if settle:
                os.fchmod(fd, mode)
            os.utime(fd, ns=times)
        finally:
            os.close(fd)
        return True
    if m.isdir():
        if not dir_exists:
            os.mkdir(at.name, 0o700, dir_fd=at.dir_fd)
    elif m.issym():
        os.symlink(m.linkname, at.name, dir_fd=at.dir_fd)
    elif m.islnk():
        assert source is not None
        os.link(
            source.name,
            at.name,
            src_dir_fd=source.dir_fd,
            dst_dir_fd=at.dir_fd,
            follow_symlinks=False,
        )
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(at.name, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=at.dir_fd)
    elif m.isfifo():
        os.mkfifo(at.name, mode, dir_fd=at.dir_fd)
    else:
        return False
    os.chown(at.name, *owner, dir_fd=at.dir_fd, follow_symlinks=False)
    _xattrs(m, at)
    # fstat, not m.issym(): a hard link to a symlink is a symlink too, and chmod
    # would follow it out of the target.
    fd = os.open(at.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at.dir_fd)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
    if not m.isdir():
        os.utime(at.name, ns=times, dir_fd=at.dir_fd, follow_symlinks=False)
    return True


def _xattrs(m: tarfile.TarInfo, at: _Place) -> None:
    for key, value in m.pax_headers.items():
        if not key.startswith(XATTR_PREFIX):
            continue
        try:
            os.setxattr(
                at.xattr_path,
                key[len(XATTR_PREFIX) :],
                value.encode("utf-8", "surrogateescape"),
                follow_symlinks=False,
            )
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP):
                raise


# -- layers (moby's UnpackLayer) -----------------------------------------------------------


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


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _host(path: str) -> _Place:
    return _Place(None, path, path)


class _Applier:
    def __init__(self, root: str, whiteouts: str, recorder: TarSplitRecorder | None) -> None:
        self.root = os.path.realpath(root)
        self.whiteouts = whiteouts
        self.recorder = recorder
        self.size = 0
        self.dir_times: list[tuple[str, tuple[int, int]]] = []
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
                self.removed(os.path.relpath(resolved, self.root), False)
            os.makedirs(resolved, mode=0o755, exist_ok=True)
        if resolved == os.path.join(self.root, parent):
            self.real_dirs.add(parent)
        return resolved

    def removed(self, rel: str, is_dir: bool) -> None:
        """*rel* (relative to the root as resolved) was removed: the recording must know."""
        if self.recorder is not None:
            self.recorder.removed(rel, is_dir)

    def forget(self, rel: str) -> None:
        if rel in self.real_dirs:
            prefix = rel + "/"
            self.real_dirs = {d for d in self.real_dirs if d != rel and not d.startswith(prefix)}

    def apply(self, tf: tarfile.TarFile) -> None:
        for member in tf:
            self.entry(tf, member)
            if self.recorder is not None:
                # What this entry left unclaimed, up to the next header, is the tar's own.
                self.recorder.segment_until(tf.offset)
        for path, times in reversed(self.dir_times):
            # A later entry may have replaced a directory on the way with a
            # symlink: only touch a path that still has none.
            if os.path.realpath(path) != path:
                continue
            try:
                os.utime(path, ns=times, follow_symlinks=False)
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
            _remove(_host(path), stat.S_ISDIR(st.st_mode))
            self.removed(rel_real, stat.S_ISDIR(st.st_mode))
            self.forget(rel_real)
            st = None

        times = _times(m, pax_atime=False)
        source = self.link_source(m) if m.islnk() else None
        if self.recorder is not None and m.isreg() and not m.issparse():
            # Claimed before it is read, so the recording never holds it.  A sparse
            # file's stored bytes are not what lands on disk: they stay in the record.
            self.recorder.file(m.name, rel_real, m.offset_data, m.size)
        if not _create(
            _tarfile_data(tf, m),
            m,
            _host(path),
            owner=(m.uid, m.gid),
            times=times,
            dir_exists=st is not None,
            source=source,
        ):
            return  # nothing to apply
        if m.isdir():
            self.dir_times.append((path, times))
            if rel_real == rel:
                self.real_dirs.add(rel)
        elif m.isreg():
            self.size += m.size
        elif m.issym():
            # As written: a target above the root is clamped at the container's root
            # when it is resolved (as the kernel does there, and resolve_in_root here).
            self.size += len(m.linkname.encode())
        self.created.add(rel_real)

    def link_source(self, m: tarfile.TarInfo) -> _Place:
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
        return _host(source)

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
                    is_dir = _real_dir(child)
                    _remove(_host(child), is_dir)
                    self.removed(child_rel, is_dir)
                    self.forget(child_rel)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and friends)
        name = base[len(WHITEOUT_PREFIX) :]
        if not name or name in (".", ".."):
            raise InvalidLayer(f"invalid whiteout entry {m.name!r}")
        target = os.path.join(parent, name)
        if os.path.lexists(target):
            is_dir = _real_dir(target)
            _remove(_host(target), is_dir)
            self.removed(posixpath.join(rel_parent, name) if rel_parent else name, is_dir)
        if self.whiteouts == "overlay":
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            os.lchown(target, m.uid, m.gid)
        self.forget(posixpath.join(rel_parent, name) if rel_parent else name)


def _layer_entry_error(e: OSError) -> errdefs.BerthError:
    if e.errno is None:
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


def apply_layer(
    stream: BinaryIO | IO[bytes],
    target: str,
    whiteouts: str,
    recorder: TarSplitRecorder | None = None,
) -> tuple[str, int]:
    """Extract the (possibly compressed) layer *stream* into *target*.

    Returns the DiffID (sha256 of the uncompressed tar, trailing padding
    included) and the size of the applied contents.  With a *recorder*, the
    tar's skeleton is recorded in the same pass (see :mod:`._tarsplit`) and
    finished when the stream is.
    """
    with tar_errors(_LAYER_WORDS):
        plain = decompress(stream)
        digest = DigestReader(plain)
        reader: IO[bytes] = io.BufferedReader(digest, buffer_size=COPY_CHUNK)
        if recorder is not None:
            reader = RecordingReader(reader, recorder)  # type: ignore[assignment]
        applier = _Applier(target, whiteouts, recorder)
        with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tf:
            applier.apply(tf)
        if recorder is not None:
            recorder.segment_until(None)
        # Whatever follows the end-of-archive blocks is part of the DiffID.
        while reader.read(COPY_CHUNK):
            pass
        if recorder is not None:
            recorder.finish()
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
        # the last entry's parent, relative to dest and in the container: a tar lists a
        # directory's entries together, so one is enough (and stays one, however big the tar)
        self._parent: tuple[str | None, str] = (None, dest.path)

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

    def entry(self, tar: TarStream, m: tarfile.TarInfo) -> None:
        rel = self._member_path(m.name)
        if not rel:
            if m.isdir():
                return  # the extraction directory itself
            raise errdefs.InvalidParameter(
                f'cannot overwrite the extraction directory "{self.dest}" with non-directory '
                f'"{m.name}"'
            )
        parent_rel, _, base = rel.rpartition("/")  # rel is clean: no trailing or double "/"
        if parent_rel != self._parent[0]:
            self._parent = (parent_rel, go_join(self.dest, parent_rel))
        parent = self.fs.open_dir(self._parent[1], create=True)
        e = self.fs.lookup(parent, base)
        at = _Place(e.dir_fd, e.name, e.proc_path())
        # Most entries are new: create first and look at what is there only when the name
        # is taken (looking a missing name up in an overlay was a sixth of a small file's cost).
        fresh = not e.mount_point and self.fs.writable(e.mount)
        if not fresh:
            st = self._clear(e, m, at)
            self.fs.check_writable(e.mount)
        else:
            st = None
        source = None
        if m.issym():
            target = go_join(posixpath.dirname(go_join(self.dest, rel)), m.linkname)
            if not _within(target, self.dest):
                raise errdefs.InvalidParameter(
                    f'invalid symlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
                )
        elif m.islnk():
            source = self._link_source(m, e)
        times = _times(m, pax_atime=True)

        def make(dir_exists: bool) -> bool:
            return _create(
                lambda fd: tar.copy_data(lambda piece: write_all(fd, piece), m.size),
                m,
                at,
                owner=self.chown or (m.uid, m.gid),
                times=times,
                dir_exists=dir_exists,
                source=source,
            )

        try:
            try:
                created = make(st is not None)
            except FileExistsError:
                if not fresh:
                    raise
                st = self._clear(e, m, at)
                created = make(st is not None)
        except FileNotFoundError:
            if not m.islnk():
                raise
            raise self._bad_link(m, e) from None
        if not created:
            raise errdefs.InvalidParameter(f"unhandled tar header type {m.type!r} of {m.name!r}")
        if m.isdir():
            self.dirs.append((e.path, *times))

    def _clear(self, e: Entry, m: tarfile.TarInfo, at: _Place) -> os.stat_result | None:
        """Make room for *m* at *e*: what is there is removed unless both are directories
        (whose stat is returned); None when the name is free."""
        try:
            st = e.lstat()
        except FileNotFoundError:
            if e.mount_point:  # nothing to write over: never create beside a bind's source
                raise errdefs.InvalidParameter(
                    f"cannot write {e.path}: the source of this mount is missing"
                ) from None
            return None
        is_dir = stat.S_ISDIR(st.st_mode)
        if self.no_overwrite and is_dir and not m.isdir():
            raise errdefs.InvalidParameter(
                f'cannot overwrite directory "{e.path}" with non-directory "{self.dest}"'
            )
        if self.no_overwrite and not is_dir and m.isdir():
            raise errdefs.InvalidParameter(
                f'cannot overwrite non-directory "{e.path}" with directory "{self.dest}"'
            )
        if is_dir and m.isdir():
            return st
        if e.mount_point:
            raise errdefs.InvalidParameter(
                f"cannot replace {e.path}: it is a mount point of the container"
            )
        self.fs.check_writable(e.mount)
        _remove(at, is_dir)
        self.fs.forget(e.path)
        return None

    def _bad_link(self, m: tarfile.TarInfo, e: Entry) -> errdefs.BerthError:
        return errdefs.InvalidParameter(
            f'invalid hardlink "{e.path}" -> "{m.linkname}": the target does not exist'
        )

    def _link_source(self, m: tarfile.TarInfo, e: Entry) -> _Place:
        target = go_join(self.dest, m.linkname)
        if not _within(target, self.dest):
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{e.path}" -> "{m.linkname}": it points outside "{self.dest}"'
            )
        parent, base = posixpath.split(target)
        try:
            source = self.fs.lookup(self.fs.open_dir(parent), base)
        except FileNotFoundError:
            raise self._bad_link(m, e) from None
        return _Place(source.dir_fd, source.name, source.proc_path(), source.dir)

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
        # An empty stream has no members, as Go's tar reader sees it.
        tar = TarStream(decompress(stream, buffered=False))
        while (member := tar.next()) is not None:
            ex.current = member.name
            ex.entry(tar, member)
        ex.finish()
