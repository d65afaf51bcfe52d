"""COPY and ADD of the classic builder (moby's ``builder/dockerfile/copy.go``).

Two steps, as moby splits them, so that the cache can be probed before any
container exists:

* :func:`prepare_copy` resolves the sources (the build context, another
  stage's or image's root for ``--from``, or an ``http(s)`` URL for ADD),
  expands wildcards, and computes the cache key :attr:`CopyPlan.hash`:
  ``file:<sha256>`` for one file, ``dir:<sha256>`` for a directory,
  ``multi:<sha256>`` for several sources, a bare sha256 for a download.  The
  per-file hash is moby's (``remotecontext`` lazy source, tarsum v1 header
  selection): name, mode, owner, size, type, link target, device numbers and
  ``security.capability``, then the content; never the mtime, so a ``touch``
  keeps the cache and a change of content or mode does not.
* :func:`perform_copy` writes the sources into the step container's
  :class:`~berth.archive.ContainerFS` as moby's ``performCopy`` does: the
  destination resolved inside the container's root (a symlink there never
  leads out); a directory's contents merged in, each entry extracted as if
  the destination directory were the root (moby untars in a chroot there);
  owners as moby's ``fixPermissions`` sets them (root, the ``--chown``
  user, or the source's own for ``COPY --from``); modes and second-truncated
  mtimes of the sources; ADD's local tar archives (plain, gzip, bzip2, xz,
  zstd) extracted with the owners they carry.

Sources come from one of two trees: the build context's index, whose bytes
are copied straight from the spool the request was written to, or a host
directory (another stage's or an image's root, a download), read through
directory descriptors.  Neither follows a symlink out of its tree: links
resolve inside it, as moby's ``FollowSymlinkInScope`` does.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import ipaddress
import os
import posixpath
import shutil
import socket
import stat
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import IO, Any, Generic, TypeVar

from berth import errdefs
from berth.archive import ContainerFS, Dir, Entry, decompress, go_base, go_join
from berth.builder.contextfs import ContextEntry, ContextFS
from berth.runtime.userdb import (
    ERR_RANGE,
    GROUP_PATH,
    MAX_ID,
    PASSWD_PATH,
    go_atoi,
    parse_group,
    parse_passwd,
    read_rootfs_file,
)
from berth.utils.gostr import go_clean
from berth.utils.pathmatch import path_match

COPY = "COPY"
ADD = "ADD"

#: The name a download gets when neither its URL nor its Content-Disposition names it.
UNNAMED = "__unnamed__"

CHMOD_NEEDS_BUILDKIT = (
    "the --chmod option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ "
    "to learn how to build images with BuildKit enabled"
)

#: ``progress(done, total)`` while ADD downloads a URL; *total* is -1 when unknown.  moby
#: shows it as a "Downloading" progress bar, then prints an empty line to the step's output.
Progress = Callable[[int, int], None]

_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_CAPABILITY = "security.capability"
_XATTR_PREFIX = "SCHILY.xattr."
_DOWNLOAD_TIMEOUT = 120.0  # seconds without a byte before a download is given up

N = TypeVar("N")


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopySource:
    """The tree that COPY/ADD reads local sources from.

    Either the build *context* (read through its index), or *root*, a
    directory of the host: (``COPY --from``) the root filesystem of a
    stage's or image's layers, mounted by the dispatcher for the step (a RW
    layer on the image's ChainID, released after the copy).  Paths are
    resolved inside it as if it were ``/``.  *from_image* changes the
    not-found wording and keeps the files' owners when no ``--chown`` is
    given, as moby does for ``--from``.
    """

    root: str = ""
    from_image: bool = False
    context: ContextFS | None = None


@dataclass(frozen=True)
class CopyItem:
    """One resolved source (moby's ``copyInfo``): *path* relative to *root*, as matched."""

    root: str
    path: str
    hash: str
    no_decompress: bool = False
    #: the build context, when the source is in it (*root* is then empty)
    context: ContextFS | None = None


@dataclass
class CopyPlan:
    """A COPY/ADD ready to run: its sources, destination and cache key.

    Close it (or use it as a context manager) once the step is done: ADD's
    downloads live in temporary directories until then.
    """

    cmd: str
    items: list[CopyItem]
    dest: str
    hash: str
    chown: str = ""
    decompress: bool = False
    preserve_ownership: bool = False
    temp_dirs: list[str] = field(default_factory=list)

    @property
    def comment(self) -> str:
        """The step's ``#(nop)`` text, moby's ``"COPY --chown=u:g file:<sha> in /dest "``.

        The dispatcher puts ``"#(nop) " + comment`` after the shell in the
        probed config's Cmd (moby's ``withCmdCommentString``): that is what
        makes the cache key depend on the sources.
        """
        chown = f"--chown={self.chown} " if self.chown else ""
        return f"{self.cmd} {chown}{self.hash} in {self.dest} "

    def close(self) -> None:
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.temp_dirs.clear()

    def __enter__(self) -> CopyPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_url(text: str) -> bool:
    """moby's ``urlutil.IsURL``: ADD downloads what starts with ``http://`` or ``https://``."""
    return text.startswith(("http://", "https://"))


def contains_wildcards(name: str) -> bool:
    """moby's ``containsWildcards``: ``*``, ``?`` or ``[`` not escaped by a backslash."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 1
        elif ch in "*?[":
            return True
        i += 1
    return False


def hash_string_slice(prefix: str, items: Sequence[str]) -> str:
    """moby's ``hashStringSlice``: ``prefix:`` + sha256 of the items joined by commas."""
    return (
        f"{prefix}:{hashlib.sha256(','.join(items).encode('utf-8', 'surrogateescape')).hexdigest()}"
    )


def normalize_dest(workdir: str, requested: str) -> str:
    """moby's ``normalizeDest``: a relative destination is taken from WORKDIR, its
    trailing ``/`` kept; an absolute one is used as written."""
    if requested.startswith("/"):
        return requested
    dest = posixpath.join("/", workdir, requested)
    dest = go_clean(dest)
    return dest + "/" if requested.endswith("/") and dest != "/" else dest


# -- reading a source tree ------------------------------------------------------------------


class _Source(Generic[N]):
    """A tree COPY reads from, as a root: paths resolved inside it, per-file hashes
    computed once.  *N* is what :meth:`stat` and :meth:`walk` find at a path."""

    #: the tree's key in a :class:`CopyItem` (the host path of a directory)
    root = ""

    def close(self) -> None:
        pass

    def canonical(self, rel: str) -> str:
        """*rel* with every symlink followed inside the tree, relative (``.`` for the root)."""
        raise NotImplementedError

    def stat(self, rel: str) -> tuple[str, N]:
        """moby's ``StatAt``: the path followed (the last link too) and what is there;
        FileNotFoundError, NotADirectoryError or ELOOP as ``stat`` raises them."""
        raise NotImplementedError

    def kind(self, node: N) -> int:
        """``stat.S_IF*`` of *node*."""
        raise NotImplementedError

    def hash(self, rel: str) -> str:
        """moby's ``Source.Hash``: the hash of what *rel* resolves to."""
        raise NotImplementedError

    def hash_node(self, canon: str, node: N) -> str:
        """The hash of *node* at canonical path *canon* (no link on its way)."""
        raise NotImplementedError

    def walk(self, canon: str) -> Iterator[tuple[str, N]]:
        """Everything below the directory *canon* (itself first unless it is the root),
        depth first in name order, links not followed: Go's ``filepath.WalkDir``.
        Each path is canonical up to its last name, which may be a link."""
        raise NotImplementedError

    def link_key(self, node: N) -> object | None:
        """What the hard links of one file share; None for a file with no other name."""
        raise NotImplementedError

    def meta(self, node: N) -> _Node:
        """What a copy of *node* is made with (its mtime to the second, as moby's tar)."""
        raise NotImplementedError

    def make(self, writer: _Writer, parent: Dir, name: str, node: N) -> Entry:
        """Create *node*'s copy as *name* in *parent*, a regular file's bytes included."""
        raise NotImplementedError

    def open(self, node: N) -> IO[bytes]:
        """A regular file's bytes."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Found:
    entry: Entry
    st: os.stat_result


class _Tree(_Source[_Found]):
    """A directory of the host: another stage's or an image's root, or a download."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs = ContainerFS(root)
        self._sums: dict[str, str] = {}

    def close(self) -> None:
        self.fs.close()

    def canonical(self, rel: str) -> str:
        return self.fs.canonical("/" + rel).lstrip("/") or "."

    def _entry(self, canon: str) -> Entry:
        if canon == ".":
            return self.fs.self_entry(self.fs.root)
        parent, base = posixpath.split(canon)
        return self.fs.lookup(self.fs.open_dir("/" + parent), base)

    def stat(self, rel: str) -> tuple[str, _Found]:
        canon = self.canonical(rel)
        e = self._entry(canon)
        return canon, _Found(e, e.lstat())

    def kind(self, node: _Found) -> int:
        return stat.S_IFMT(node.st.st_mode)

    def hash(self, rel: str) -> str:
        """A path that leads nowhere (a dangling link) hashes as the name it resolves to,
        as moby's lazy source of an image or a download does."""
        try:
            canon, found = self.stat(rel)
        except (FileNotFoundError, NotADirectoryError):
            return self.canonical(rel)
        return self.hash_node(canon, found)

    def hash_node(self, canon: str, node: _Found) -> str:
        e, st = node.entry, node.st
        if stat.S_ISLNK(st.st_mode):
            return self.hash(canon)  # what it points to
        sum_ = self._sums.get(canon)
        if sum_ is None:
            sum_ = self._sums[canon] = _file_hash(e, canon, st)
        return sum_

    def walk(self, canon: str) -> Iterator[tuple[str, _Found]]:
        top_entry = self._entry(canon)
        if canon != ".":
            yield canon, _Found(top_entry, top_entry.lstat())
        prefix = "" if canon == "." else canon + "/"
        top = self.fs.open_entry(top_entry)
        stack: list[tuple[Dir, str, Iterator[str]]] = [(top, prefix, iter(_names(top)))]
        try:
            while stack:
                d, prefix, names = stack[-1]
                name = next(names, None)
                if name is None:
                    d.close()
                    stack.pop()
                    continue
                rel = prefix + name
                e = self.fs.lookup(d, name)
                try:
                    st = e.lstat()
                except OSError:
                    continue  # gone meanwhile
                yield rel, _Found(e, st)
                if not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    sub = self.fs.open_entry(e)
                except OSError:
                    continue
                stack.append((sub, rel + "/", iter(_names(sub))))
        finally:
            for d, _, _ in stack:
                d.close()

    def link_key(self, node: _Found) -> object | None:
        st = node.st
        return (st.st_dev, st.st_ino) if st.st_nlink > 1 else None

    def meta(self, node: _Found) -> _Node:
        return _stat_node(node.entry, node.st)

    def make(self, writer: _Writer, parent: Dir, name: str, node: _Found) -> Entry:
        e = node.entry
        if not stat.S_ISREG(node.st.st_mode):
            return writer.make(parent, name, _stat_node(e, node.st))
        fd = os.open(e.name, _O_FILE, dir_fd=e.dir_fd)
        try:
            meta = _stat_node(e, os.fstat(fd), fd)
            return writer.make(parent, name, meta, functools.partial(_copy_data, fd))
        finally:
            os.close(fd)

    def open(self, node: _Found) -> IO[bytes]:
        return open(os.open(node.entry.name, _O_FILE, dir_fd=node.entry.dir_fd), "rb")


class _ContextTree(_Source[ContextEntry]):
    """The build context, read through its index (:mod:`berth.builder.contextfs`)."""

    def __init__(self, fs: ContextFS) -> None:
        self.fs = fs

    def canonical(self, rel: str) -> str:
        return self.fs.canonical(rel)

    def stat(self, rel: str) -> tuple[str, ContextEntry]:
        canon = self.fs.canonical(rel)
        return canon, self.fs.lookup(canon)

    def kind(self, node: ContextEntry) -> int:
        return node.kind

    def hash(self, rel: str) -> str:
        """A path that leads nowhere (a dangling link) hashes as its own name: moby's
        ``archiveContext``."""
        try:
            canon, entry = self.stat(rel)
        except (FileNotFoundError, NotADirectoryError):
            return rel
        return self.hash_node(canon, entry)

    def hash_node(self, canon: str, node: ContextEntry) -> str:
        if node.kind == stat.S_IFLNK:
            return self.hash(canon)
        sum_ = self.fs.sums.get(canon)
        if sum_ is None:
            cap = dict(node.xattrs).get(_CAPABILITY)
            chunks = self.fs.chunks(node) if node.kind == stat.S_IFREG else ()
            sum_ = _tarsum(
                canon,
                node.kind,
                node.mode,
                (node.uid, node.gid),
                node.size,
                node.link,
                node.rdev,
                _capability_v2(cap) if cap is not None else None,
                chunks,
            )
            self.fs.sums[canon] = sum_
        return sum_

    def walk(self, canon: str) -> Iterator[tuple[str, ContextEntry]]:
        return self.fs.walk(canon)

    def link_key(self, node: ContextEntry) -> object | None:
        return node.ino

    def meta(self, node: ContextEntry) -> _Node:
        mtime = (node.mtime_ns // 1_000_000_000) * 1_000_000_000
        cap = dict(node.xattrs).get(_CAPABILITY)
        return _Node(
            kind=node.kind,
            mode=node.mode,
            uid=node.uid,
            gid=node.gid,
            times=(mtime, mtime),
            rdev=node.rdev,
            link=node.link,
            xattrs=((_CAPABILITY, _capability_v2(cap)),) if cap is not None else (),
        )

    def make(self, writer: _Writer, parent: Dir, name: str, node: ContextEntry) -> Entry:
        meta = self.meta(node)
        if node.kind != stat.S_IFREG:
            return writer.make(parent, name, meta)
        return writer.make(parent, name, meta, functools.partial(self.fs.copy_to, node))

    def open(self, node: ContextEntry) -> IO[bytes]:
        return self.fs.open(node)


def _open_tree(root: str, context: ContextFS | None) -> _Source[Any]:
    return _ContextTree(context) if context is not None else _Tree(root)


def _names(d: Dir) -> list[str]:
    with os.scandir(d.fd) as it:
        return sorted(entry.name for entry in it)


def _capability_v2(value: bytes) -> bytes:
    """``security.capability`` as moby archives it (revision 3 written as revision 2)."""
    if len(value) > 3 and value[3] == 3:
        return value[:3] + b"\x02" + value[4:20]
    return value


def _capability(path_or_fd: str | int) -> bytes | None:
    try:
        if isinstance(path_or_fd, int):
            value = os.getxattr(path_or_fd, _CAPABILITY)
        else:
            value = os.getxattr(path_or_fd, _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None
    return _capability_v2(value)


_TYPEFLAGS = {
    stat.S_IFREG: "0",
    stat.S_IFLNK: "2",
    stat.S_IFCHR: "3",
    stat.S_IFBLK: "4",
    stat.S_IFDIR: "5",
    stat.S_IFIFO: "6",
}


def _tarsum(
    canon: str,
    kind: int,
    mode: int,
    owner: tuple[int, int],
    size: int,
    link: str,
    rdev: int,
    cap: bytes | None,
    chunks: Iterable[bytes],
) -> str:
    """moby's ``NewFileHash`` + content: tarsum v1's header fields (no mtime) of the
    entry named *canon*, then its bytes."""
    flag = _TYPEFLAGS.get(kind)
    if flag is None:
        raise errdefs.InvalidParameter(
            f"failed to create hash for {canon}: archive/tar: sockets not supported"
        )
    name = canon + "/" if flag == "5" and not canon.endswith("/") else canon
    fields = [
        ("name", name),
        ("mode", str(mode & 0o7777)),
        ("uid", str(owner[0])),
        ("gid", str(owner[1])),
        ("size", str(size if flag == "0" else 0)),
        ("typeflag", flag),
        ("linkname", link if flag == "2" else ""),
        ("uname", ""),
        ("gname", ""),
        ("devmajor", str(os.major(rdev))),
        ("devminor", str(os.minor(rdev))),
    ]
    if cap is not None:
        fields.append((_CAPABILITY, cap.decode("utf-8", "surrogateescape")))
    h = hashlib.sha256()
    for key, value in fields:
        h.update((key + value).encode("utf-8", "surrogateescape"))
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _fd_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, _CHUNK):
        yield chunk


def _file_hash(e: Entry, canon: str, st: os.stat_result) -> str:
    """:func:`_tarsum` of a host file."""
    kind = stat.S_IFMT(st.st_mode)
    link = os.readlink(e.name, dir_fd=e.dir_fd) if kind == stat.S_IFLNK else ""
    args = (canon, kind, st.st_mode, (st.st_uid, st.st_gid), st.st_size, link, st.st_rdev)
    if kind != stat.S_IFREG:
        cap = None if kind in (stat.S_IFLNK, stat.S_IFSOCK) else _capability(e.proc_path())
        return _tarsum(*args, cap, ())
    fd = os.open(e.name, _O_FILE, dir_fd=e.dir_fd)
    try:
        return _tarsum(*args, _capability(fd), _fd_chunks(fd) if st.st_size else ())
    finally:
        os.close(fd)


# -- resolving the sources (moby's copier) ----------------------------------------------------


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise errdefs.Unavailable("build cancelled: the client went away")


def _forbidden(path: str) -> errdefs.BerthError:
    return errdefs.InvalidParameter(f"forbidden path outside the build context: {path} ()")


def _escapes(path: str) -> bool:
    cleaned = go_clean(path) if path else "."
    return cleaned == ".." or cleaned.startswith("../")


class _Copier:
    def __init__(
        self,
        cmd: str,
        source: CopySource,
        *,
        allow_urls: bool,
        checksum: str,
        progress: Progress | None,
        temp_root: str | None,
        cancel: threading.Event | None,
    ) -> None:
        self.cmd = cmd
        self.source = source
        self.allow_urls = allow_urls
        self.checksum = checksum
        self.progress = progress
        self.temp_root = temp_root
        self.cancel = cancel
        self.temp_dirs: list[str] = []
        self._tree: _Source[Any] | None = None

    @property
    def tree(self) -> _Source[Any]:
        if self._tree is None:
            self._tree = _open_tree(self.source.root, self.source.context)
        return self._tree

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()
            self._tree = None

    def infos(self, orig: str, dest: str) -> list[CopyItem]:
        if not is_url(orig):
            return self.calc(orig, allow_wildcards=True)
        if not self.allow_urls:
            raise errdefs.InvalidParameter("source can't be a URL for COPY")
        tmp, name = _download(orig, self.temp_root, self.progress, self.checksum, self.cancel)
        self.temp_dirs.append(tmp)
        if name == "":
            if dest.endswith("/"):
                raise errdefs.InvalidParameter(f"cannot determine filename for source {orig}")
            name = UNNAMED
        remote = _Tree(tmp)
        try:
            digest = remote.hash(name)
        finally:
            remote.close()
        return [CopyItem(tmp, name, digest, no_decompress=True)]

    def calc(self, orig: str, *, allow_wildcards: bool) -> list[CopyItem]:
        path = orig.removeprefix("/").removeprefix("./")
        if allow_wildcards and contains_wildcards(path):
            return self.wildcards(path)
        if _escapes(path):
            raise _forbidden(path)
        tree = self.tree
        context = self.source.context
        try:
            canon, node = tree.stat(path)
        except FileNotFoundError:
            missing = f"stat {path}: file does not exist"
            if self.source.from_image:
                raise errdefs.InvalidParameter(missing) from None
            raise errdefs.InvalidParameter(
                "file not found in build context or excluded by .dockerignore: " + missing
            ) from None
        except OSError as err:
            if err.errno in (errno.ENOTDIR, errno.ELOOP):
                # moby's FollowSymlinkInScope fails on these; FullPath words it so
                raise _forbidden(path) from None
            raise
        if tree.kind(node) != stat.S_IFDIR:
            return [CopyItem(tree.root, path, "file:" + tree.hash(path), context=context)]
        subfiles = []
        for rel, sub in tree.walk(canon):
            _check(self.cancel)
            try:
                subfiles.append(tree.hash_node(rel, sub))
            except (errdefs.BerthError, OSError):
                continue  # moby's walkSource skips what it cannot hash (a socket)
        subfiles.sort()
        return [CopyItem(tree.root, path, hash_string_slice("dir", subfiles), context=context)]

    def wildcards(self, pattern: str) -> list[CopyItem]:
        """moby's ``copyWithWildcards``: every path of the tree (links not followed) that
        ``filepath.Match`` matches, each a source of its own."""
        out: list[CopyItem] = []
        for rel, _ in self.tree.walk("."):
            try:
                matched = path_match(pattern, rel)
            except errdefs.InvalidParameter:
                matched = False  # Go's Match error is ignored: no match
            if matched:
                out.extend(self.calc(rel, allow_wildcards=False))
        return out


def prepare_copy(
    cmd: str,
    sources: Sequence[str],
    dest: str,
    source: CopySource,
    *,
    chown: str = "",
    chmod: str = "",
    checksum: str = "",
    progress: Progress | None = None,
    temp_root: str | None = None,
    cancel: threading.Event | None = None,
) -> CopyPlan:
    """Resolve a COPY (``cmd="COPY"``) or ADD's *sources* and compute the cache key.

    *sources* and *dest* are the instruction's words after variable expansion;
    *dest* is kept as written (a relative one is taken from WORKDIR by
    :func:`perform_copy`).  ADD downloads URLs into a directory under
    *temp_root* (the system's temporary directory by default) with
    *progress* told of it; ``--checksum`` (``sha256:<hex>``) is checked
    against a download and, as the classic builder does, ignored for a local
    source.  A set *cancel* stops it (Unavailable).

    Raises InvalidParameter with dockerd's messages: ``COPY failed:
    file not found in build context or excluded by .dockerignore: stat x: file
    does not exist``, ``COPY failed: forbidden path outside the build context:
    ../x ()``, ``COPY failed: no source files were specified``, ``When using
    COPY with more than one source file, the destination must be a directory
    and end with a /``, and the classic builder's refusal of ``--chmod``.
    """
    if cmd not in (COPY, ADD):
        raise ValueError(f"not a copy instruction: {cmd}")
    if chmod:
        raise errdefs.InvalidParameter(CHMOD_NEEDS_BUILDKIT)
    copier = _Copier(
        cmd,
        source,
        allow_urls=cmd == ADD,
        checksum=checksum,
        progress=progress,
        temp_root=temp_root,
        cancel=cancel,
    )
    try:
        try:
            items: list[CopyItem] = []
            for orig in sources:
                items.extend(copier.infos(orig, dest))
            if not items:
                raise errdefs.InvalidParameter("no source files were specified")
        except errdefs.Unavailable:
            raise
        except errdefs.BerthError as err:
            raise type(err)(f"{cmd} failed: {err.message}") from None
        except OSError as err:  # the host's failure, not the Dockerfile's
            raise errdefs.System(f"{cmd} failed: {err.filename or ''}: {err.strerror}") from None
        if len(items) > 1 and not dest.endswith("/"):
            raise errdefs.InvalidParameter(
                f"When using {cmd} with more than one source file, the destination must be "
                "a directory and end with a /"
            )
    except BaseException:
        for path in copier.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        copier.close()
    digest = (
        items[0].hash if len(items) == 1 else hash_string_slice("multi", [i.hash for i in items])
    )
    return CopyPlan(
        cmd=cmd,
        items=items,
        dest=dest,
        hash=digest,
        chown=chown,
        decompress=cmd == ADD,
        preserve_ownership=source.from_image and not chown,
        temp_dirs=copier.temp_dirs,
    )


# -- ADD's downloads ------------------------------------------------------------------------


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _filename(path: str, disposition: str | None) -> str:
    """moby's ``getFilenameForDownload``: the URL path's last element, else the
    Content-Disposition filename."""
    if path and not path.endswith("/"):
        name = go_base(path)
        if name:
            return name
    if disposition:
        m = Message()  # the header alone, parsed as Go's mime.ParseMediaType does
        m["content-disposition"] = disposition
        fname = m.get_filename()
        if fname and not fname.endswith("/"):
            return go_base(fname)
    return ""


def _fetch_error(url: str, err: Exception) -> errdefs.BerthError:
    if isinstance(err, urllib.error.HTTPError):
        try:
            body = err.read().strip().decode("utf-8", "replace")
        except OSError:
            return errdefs.System(
                f"failed to GET {url} with status {err.code} {err.reason}: error reading body"
            )
        msg = f"failed to GET {url} with status {err.code} {err.reason}: {body}"
        classes: dict[int, type[errdefs.BerthError]] = {
            404: errdefs.NotFound,
            400: errdefs.InvalidParameter,
            401: errdefs.Unauthorized,
            403: errdefs.Forbidden,
        }
        return classes.get(err.code, errdefs.System)(msg)
    reason = getattr(err, "reason", err)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if isinstance(reason, socket.gaierror):
        return errdefs.NotFound(f'Get "{url}": dial tcp: lookup {host}: no such host')
    if isinstance(reason, OSError) and reason.strerror:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = f"dial tcp {addr}: connect: {reason.strerror.lower()}"
    return errdefs.System(f'Get "{url}": {reason}')


def _download(
    url: str,
    temp_root: str | None,
    progress: Progress | None,
    checksum: str,
    cancel: threading.Event | None,
) -> tuple[str, str]:
    """moby's ``downloadSource``: the body saved in a new temporary directory, mode
    0600, mtime from Last-Modified (the epoch without one).  Returns the directory
    and the file's name ("" when none could be told, saved as ``__unnamed__``)."""
    parts = urllib.parse.urlsplit(url)
    handlers: list[urllib.request.BaseHandler] = []
    if _loopback(parts.hostname):
        handlers.append(urllib.request.ProxyHandler({}))  # as Go, never proxy loopback
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"User-Agent": "berth"})
    try:
        resp = opener.open(request, timeout=_DOWNLOAD_TIMEOUT)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _fetch_error(url, err) from None
    with resp:
        name = _filename(urllib.parse.unquote(parts.path), resp.headers.get("Content-Disposition"))
        tmp = tempfile.mkdtemp(prefix="docker-remote", dir=temp_root)
        try:
            path = os.path.join(tmp, name or UNNAMED)
            total = int(resp.headers.get("Content-Length") or -1)
            digest = hashlib.sha256()
            done = 0
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as out:
                while True:
                    _check(cancel)
                    try:
                        chunk = resp.read(_CHUNK // 4)
                    except OSError as err:
                        raise _fetch_error(url, err) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            os.chmod(path, 0o600)
            if checksum:
                _check_checksum(url, checksum, "sha256:" + digest.hexdigest())
            mtime = 0
            last_modified = resp.headers.get("Last-Modified")
            if last_modified:
                with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                    mtime = max(0, int(parsedate_to_datetime(last_modified).timestamp()))
            os.utime(path, (mtime, mtime))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp, name


def _check_checksum(url: str, expected: str, actual: str) -> None:
    algo, _, value = expected.partition(":")
    if algo != "sha256" or not value:
        raise errdefs.InvalidParameter(
            f"invalid checksum {expected}: only sha256:<hex digest> is supported"
        )
    if expected.lower() != actual:
        raise errdefs.InvalidParameter(
            f"digest mismatch for {url}: the download is {actual}, --checksum wants {expected}"
        )


# -- --chown (moby's parseChownFlag) --------------------------------------------------------


def resolve_chown(spec: str, fs: ContainerFS) -> tuple[int, int]:
    """The uid and gid of ``--chown=user[:group]``, names looked up in the container's
    ``/etc/passwd`` and ``/etc/group``; numbers are taken as they are.  Without a
    group, the user's word is looked up as the group too, as moby does.
    """
    try:
        parts = spec.split(":")
        if len(parts) > 2:
            raise errdefs.InvalidParameter(f"invalid chown string format: {spec}")
        user, group = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        rootfs = f"/proc/self/fd/{fs.root.fd}"
        uid = _lookup(rootfs, user, PASSWD_PATH, "user")
        gid = _lookup(rootfs, group, GROUP_PATH, "group")
    except errdefs.BerthError as err:
        raise type(err)(
            f"unable to convert uid/gid chown string to host mapping: {err.message}"
        ) from None
    return uid, gid


def _lookup(rootfs: str, word: str, rel: str, kind: str) -> int:
    what = "uid" if kind == "user" else "gid"
    num = go_atoi(word)
    if num is not None:
        if num < 0 or num > MAX_ID:
            raise errdefs.InvalidParameter(f"can't find {what} for {kind} {word}: {ERR_RANGE}")
        return num
    data = read_rootfs_file(rootfs, rel)
    if data is None:
        raise errdefs.InvalidParameter(
            f"can't find {what} for {kind} {word}: open /{rel}: no such file or directory"
        )
    if kind == "user":
        ids = [u.uid for u in parse_passwd(data) if u.name == word]
    else:
        ids = [g.gid for g in parse_group(data) if g.name == word]
    if not ids:
        raise errdefs.InvalidParameter(
            f"can't find {what} for {kind} {word}: no such {kind}: {word}"
        )
    return ids[0]


# -- writing into the container (moby's performCopyForInfo) -----------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """What to create: a source's metadata, from its stat or from a tar header."""

    kind: int  # stat.S_IF*
    mode: int  # permission and set-id bits
    uid: int
    gid: int
    times: tuple[int, int]  # (atime, mtime) in ns
    rdev: int = 0
    link: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()


def _stat_node(e: Entry, st: os.stat_result, fd: int = -1) -> _Node:
    """A source file's node as moby's tar of it carries it: mtime to the second."""
    mtime = (st.st_mtime_ns // 1_000_000_000) * 1_000_000_000
    kind = stat.S_IFMT(st.st_mode)
    link = os.readlink(e.name, dir_fd=e.dir_fd) if kind == stat.S_IFLNK else ""
    cap = None
    if fd >= 0:
        cap = _capability(fd)
    elif kind == stat.S_IFDIR:
        cap = _capability(e.proc_path())
    return _Node(
        kind=kind,
        mode=st.st_mode & 0o7777,
        uid=st.st_uid,
        gid=st.st_gid,
        times=(mtime, mtime),
        rdev=st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0,
        link=link,
        xattrs=((_CAPABILITY, cap),) if cap is not None else (),
    )


def _copy_data(src: int, dst: int) -> None:
    """All of *src* into *dst*: in the kernel when it can, by reads and writes if not."""
    use_range = True
    while True:
        try:
            if use_range:
                n = os.copy_file_range(src, dst, 1 << 30)
            else:
                n = os.sendfile(dst, src, None, 1 << 30)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                if use_range:
                    use_range = False
                    continue
                break
            raise
        if n == 0:
            return
    while chunk := os.read(src, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def _set_xattrs(path: str, xattrs: tuple[tuple[str, bytes], ...]) -> None:
    for key, value in xattrs:
        try:
            os.setxattr(path, key, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP):
                raise


class _Writer:
    """Creates entries in one destination filesystem as moby's ``createTarFile``:
    what is in the way replaced (a directory merged with a directory), then
    owner, xattrs, mode and times; *identity* chowned last (``fixPermissions``)."""

    def __init__(
        self,
        fs: ContainerFS,
        identity: tuple[int, int] | None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.fs = fs
        self.identity = identity
        self.cancel = cancel
        self.dir_times: list[tuple[str, tuple[int, int]]] = []

    def make(
        self,
        parent: Dir,
        name: str,
        node: _Node,
        data: Callable[[int], None] | None = None,
        hardlink: Entry | None = None,
    ) -> Entry:
        _check(self.cancel)
        fs = self.fs
        e = fs.lookup(parent, name)
        try:
            st: os.stat_result | None = e.lstat()
        except FileNotFoundError:
            st = None
        is_dir = node.kind == stat.S_IFDIR and hardlink is None
        if st is not None and not (stat.S_ISDIR(st.st_mode) and is_dir):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(e.name, dir_fd=e.dir_fd)
            else:
                os.unlink(e.name, dir_fd=e.dir_fd)
            fs.forget(e.path)
            st = None
        first_owner = None if self.identity is not None else (node.uid, node.gid)
        if hardlink is not None:
            os.link(
                hardlink.name,
                e.name,
                src_dir_fd=hardlink.dir_fd,
                dst_dir_fd=e.dir_fd,
                follow_symlinks=False,
            )
            if first_owner is not None:
                os.chown(e.name, *first_owner, dir_fd=e.dir_fd, follow_symlinks=False)
        elif node.kind == stat.S_IFREG:
            fd = os.open(e.name, _O_CREATE, 0o600, dir_fd=e.dir_fd)
            try:
                if data is not None:
                    data(fd)
                if first_owner is not None:
                    os.fchown(fd, *first_owner)
                _set_xattrs(f"/proc/self/fd/{fd}", node.xattrs)
                os.fchmod(fd, node.mode)
                os.utime(fd, ns=node.times)
                if self.identity is not None:
                    os.fchown(fd, *self.identity)
            finally:
                os.close(fd)
            return e
        else:
            if is_dir:
                if st is None:
                    os.mkdir(e.name, 0o700, dir_fd=e.dir_fd)
            elif node.kind == stat.S_IFLNK:
                os.symlink(node.link, e.name, dir_fd=e.dir_fd)
            elif node.kind in (stat.S_IFCHR, stat.S_IFBLK):
                os.mknod(e.name, node.kind | node.mode, node.rdev, dir_fd=e.dir_fd)
            elif node.kind == stat.S_IFIFO:
                os.mkfifo(e.name, node.mode, dir_fd=e.dir_fd)
            else:
                raise errdefs.InvalidParameter(f"cannot copy {e.path}: unsupported file type")
            if first_owner is not None:
                os.chown(e.name, *first_owner, dir_fd=e.dir_fd, follow_symlinks=False)
        _set_xattrs(e.proc_path(), node.xattrs)
        fd = os.open(e.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=e.dir_fd)
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                os.chmod(f"/proc/self/fd/{fd}", node.mode)
        finally:
            os.close(fd)
        if is_dir:
            self.dir_times.append((e.path, node.times))
        else:
            os.utime(e.name, ns=node.times, dir_fd=e.dir_fd, follow_symlinks=False)
        if self.identity is not None:
            os.chown(e.name, *self.identity, dir_fd=e.dir_fd, follow_symlinks=False)
        return e

    def finish(self) -> None:
        """Directory times last: creating their entries changed them."""
        for path, times in reversed(self.dir_times):
            parent, base = posixpath.split(path)
            with contextlib.suppress(OSError):
                e = self.fs.lookup(self.fs.open_dir(parent), base)
                os.utime(e.name, ns=times, dir_fd=e.dir_fd, follow_symlinks=False)
        self.dir_times.clear()


def _sub_fs(d: Dir) -> ContainerFS:
    """The directory *d* as a root of its own: moby extracts in a chroot there."""
    return ContainerFS(f"/proc/self/fd/{d.fd}")


def _mkdir_all(fs: ContainerFS, path: str, owner: tuple[int, int] | None) -> tuple[Dir, bool]:
    """The directory *path* (canonical), made with its missing parents (0755); the new
    ones are given *owner* (moby's ``MkdirAllAndChown`` with ``WithOnlyNew``).  Returns it
    and whether it was there before."""
    parts = [p for p in path.split("/") if p]
    try:
        return fs.open_dir(path), True
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise errdefs.InvalidParameter(f"mkdir {path}: not a directory") from None
    existing = 0
    for i in range(len(parts), 0, -1):
        try:
            fs.open_dir("/" + "/".join(parts[:i]))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise errdefs.InvalidParameter(
                f"mkdir /{'/'.join(parts[:i])}: not a directory"
            ) from None
        existing = i
        break
    d = fs.open_dir(path, create=True, check=False)
    if owner is not None and owner != (0, 0):
        for i in range(existing + 1, len(parts) + 1):
            parent = fs.open_dir("/" + "/".join(parts[: i - 1]))
            os.chown(parts[i - 1], *owner, dir_fd=parent.fd, follow_symlinks=False)
    return d, False


def perform_copy(
    plan: CopyPlan,
    fs: ContainerFS,
    *,
    workdir: str = "/",
    cancel: threading.Event | None = None,
) -> None:
    """Copy *plan*'s sources into the container filesystem *fs* (moby's ``performCopy``).

    The destination is resolved inside *fs*'s root (a relative one from
    *workdir*).  Files are owned by root, by the ``--chown`` user (names looked
    up in *fs*'s ``/etc/passwd`` and ``/etc/group``), or for ``COPY --from``
    without ``--chown`` by their owner in the source.  Raises InvalidParameter
    with moby's words when the destination cannot take a source; a set *cancel*
    stops it between entries (Unavailable).
    """
    dest = normalize_dest(workdir, plan.dest)
    identity: tuple[int, int] | None = None
    if not plan.preserve_ownership:
        identity = resolve_chown(plan.chown, fs) if plan.chown else (0, 0)
    dest_path = fs.canonical(dest)
    trees: dict[str, _Source[Any]] = {}
    try:
        for item in plan.items:
            tree = trees.get(item.root)
            if tree is None:
                tree = trees[item.root] = _open_tree(item.root, item.context)
            try:
                _copy_item(plan, item, tree, fs, dest, dest_path, identity, cancel)
            except errdefs.Unavailable:
                raise
            except errdefs.BerthError as err:
                raise type(err)(f"failed to copy files: {err.message}") from None
            except OSError as err:
                where = err.filename or dest_path
                raise errdefs.System(
                    f"failed to copy files: {where}: {err.strerror or err}"
                ) from None
    finally:
        for tree in trees.values():
            tree.close()


def _copy_item(
    plan: CopyPlan,
    item: CopyItem,
    tree: _Source[Any],
    fs: ContainerFS,
    dest: str,
    dest_path: str,
    identity: tuple[int, int] | None,
    cancel: threading.Event | None,
) -> None:
    try:
        canon, node = tree.stat(item.path)
    except OSError as err:
        raise errdefs.InvalidParameter(
            f"source path not found: stat {item.path}: {err.strerror}"
        ) from None
    kind = tree.kind(node)
    if kind == stat.S_IFDIR:
        try:
            d, existed = _mkdir_all(fs, dest_path, (0, 0))
        except errdefs.BerthError as err:
            raise type(err)(f"failed to copy directory: {err.message}") from None
        if not existed and identity is not None and identity != (0, 0):
            os.chown(".", *identity, dir_fd=d.fd, follow_symlinks=False)
        _copy_tree(tree, canon, d, identity, cancel)
        return
    if plan.decompress and not item.no_decompress and kind == stat.S_IFREG:
        with tree.open(node) as f:
            archive = _is_archive(f)
        if archive:
            with tree.open(node) as f:
                d, _ = _mkdir_all(fs, dest_path, (0, 0))
                _extract(f, d, cancel)
            return
    target = dest_path
    try:
        fs.open_dir(dest_path)
        dest_is_dir = True
    except OSError:
        dest_is_dir = False
    if dest_is_dir or dest.endswith("/"):
        target = go_join(dest_path, go_base(item.path))
    parent_path, base = posixpath.split(target)
    try:
        parent, _ = _mkdir_all(fs, parent_path or "/", identity)
    except errdefs.BerthError as err:
        raise type(err)(f"failed to create new directory: {err.message}") from None
    if not base:
        raise errdefs.InvalidParameter(f"cannot copy {item.path} over the root directory")
    # moby's ``copyFile``: one non-directory, its link target's contents if it is one
    tree.make(_Writer(fs, identity, cancel), parent, base, node)


def _copy_tree(
    tree: _Source[Any],
    canon: str,
    dest: Dir,
    identity: tuple[int, int] | None,
    cancel: threading.Event | None,
) -> None:
    """moby's ``CopyWithTar``: the contents of *canon* merged into *dest*, entries made
    as if *dest* were the root, hard links kept, links copied as links."""
    prefix = "" if canon == "." else canon + "/"
    with _sub_fs(dest) as out:
        writer = _Writer(out, identity, cancel)
        links: dict[object, Entry] = {}
        #: the destination directories of the walk's current path, the root first (the
        #: destination's filesystem owns them)
        stack: list[tuple[str, Dir]] = [("", out.root)]
        for rel, node in tree.walk(canon):
            if rel == canon:
                continue
            sub = rel[len(prefix) :]
            parent, name = posixpath.split(sub)
            while stack[-1][0] != parent:
                stack.pop()
            kind = tree.kind(node)
            if kind == stat.S_IFSOCK:
                continue  # Go's tar cannot carry a socket; moby skips it
            ddir = stack[-1][1]
            key = tree.link_key(node) if kind != stat.S_IFDIR else None
            if key is not None and key in links:
                writer.make(ddir, name, tree.meta(node), hardlink=links[key])
                continue
            made = tree.make(writer, ddir, name, node)
            if kind == stat.S_IFDIR:
                stack.append((sub, out.open_entry(made)))
            elif key is not None:
                links[key] = made
        writer.finish()


# -- ADD of a local tar archive ---------------------------------------------------------------


def _is_archive(f: IO[bytes]) -> bool:
    """moby's ``IsArchivePath``: the (decompressed) file starts with a valid tar header."""
    try:
        plain = decompress(f)
        try:
            block = plain.read(tarfile.BLOCKSIZE)
        finally:
            plain.close()  # stops a decompressing thread
        if len(block) < tarfile.BLOCKSIZE:
            return False
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except Exception:  # anything unreadable is "not an archive"
        return False
    return True


def _tar_node(m: tarfile.TarInfo) -> _Node:
    mtime = int(m.mtime * 1_000_000_000) if isinstance(m.mtime, float) else m.mtime * 10**9
    atime = mtime
    raw = m.pax_headers.get("atime")
    if raw:
        with contextlib.suppress(ValueError):
            atime = max(mtime, int(float(raw) * 1_000_000_000))
    if m.isdir():
        kind = stat.S_IFDIR
    elif m.issym():
        kind = stat.S_IFLNK
    elif m.ischr():
        kind = stat.S_IFCHR
    elif m.isblk():
        kind = stat.S_IFBLK
    elif m.isfifo():
        kind = stat.S_IFIFO
    else:
        kind = stat.S_IFREG
    xattrs = tuple(
        (key[len(_XATTR_PREFIX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in sorted(m.pax_headers.items())
        if key.startswith(_XATTR_PREFIX)
    )
    return _Node(
        kind=kind,
        mode=m.mode & 0o7777,
        uid=m.uid,
        gid=m.gid,
        times=(atime, mtime),
        rdev=os.makedev(m.devmajor, m.devminor) if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0,
        link=m.linkname if kind == stat.S_IFLNK else "",
        xattrs=xattrs,
    )


def _extract(f: IO[bytes], dest: Dir, cancel: threading.Event | None) -> None:
    """moby's ``Untar`` of an ADD source into *dest*, as if it were the root: entries
    keep the owners, modes and times they carry; none may leave the directory."""
    with _sub_fs(dest) as out:
        writer = _Writer(out, None, cancel)
        plain = decompress(f)
        try:
            with tarfile.open(fileobj=plain, mode="r|", bufsize=_CHUNK) as tf:
                for m in tf:
                    _extract_entry(tf, m, out, writer)
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise errdefs.InvalidParameter(f"invalid tar archive: {err}") from None
        finally:
            plain.close()
        writer.finish()


def _extract_entry(
    tf: tarfile.TarFile, m: tarfile.TarInfo, out: ContainerFS, writer: _Writer
) -> None:
    # Joined to the root of the chroot moby extracts in: ".." stops there.
    name = go_clean("/" + m.name).lstrip("/")
    if name in ("", "."):
        return  # the directory itself
    if not (
        m.isreg() or m.isdir() or m.issym() or m.islnk() or m.ischr() or m.isblk() or m.isfifo()
    ):
        return  # a header kind that is no file (Go's tar skips global PAX headers)
    parent_path, base = posixpath.split(name)
    parent = out.open_dir("/" + parent_path, create=True, check=False)
    node = _tar_node(m)
    if m.islnk():
        link = go_clean("/" + m.linkname)
        lparent, lbase = posixpath.split(link)
        try:
            source = out.lookup(out.open_dir(lparent), lbase)
            source.lstat()
        except (FileNotFoundError, NotADirectoryError):
            raise errdefs.InvalidParameter(
                f'invalid hardlink "{name}" -> "{m.linkname}": the target does not exist'
            ) from None
        writer.make(parent, base, node, hardlink=source)
        return
    member = tf.extractfile(m) if m.isreg() else None
    writer.make(
        parent, base, node, None if member is None else functools.partial(_write_from, member)
    )


def _write_from(src: IO[bytes], fd: int) -> None:
    while chunk := src.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
