"""The build context: the request's tar unpacked once into a directory of the daemon's own,
and the Dockerfile found in it (moby's ``builder/remotecontext``: ``FromArchive``,
``withDockerfileFromContext``, ``removeDockerfile``).

The tar (plain, gzip, bzip2, xz or zstd) is unpacked through :mod:`berth.builder.untar`
into a fresh directory under the daemon's tmp dir: every name is resolved inside that
directory, so no entry (``..``, an absolute name, a symlink followed) lands outside it.
The context is never held whole in memory.  Whatever fails removes the directory;
:meth:`BuildContext.close` removes it after the build.

A local context goes through :class:`ContextCache`: the request body is spooled to one
file while it is hashed, and a body equal to a recent one (the CLI sends the same bytes
when nothing in the context changed) reuses that build's unpacked directory instead of
writing every file again — the bulk of a fully cached rebuild's time otherwise.  Builds
only read a context, so one directory serves several at once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from berth import errdefs
from berth.archive import Wording, decompress, tar_errors
from berth.builder.dockerignore import PatternMatcher, read_patterns
from berth.builder.untar import unpack_tar
from berth.utils.symlink import resolve_in_root

log = logging.getLogger(__name__)

DEFAULT_DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
#: the largest Dockerfile read (the parser has its own limits on lines)
MAX_DOCKERFILE = 64 << 20


#: what goes wrong while the context unpacks: a bad stream is the client's, a full disk
#: the host's
_CONTEXT_WORDS = Wording(
    corrupt_types=(tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile),
    corrupt=lambda e: errdefs.InvalidParameter(f"invalid tar archive: {e}"),
    host=lambda e: errdefs.System(f"unpacking the build context: {e.strerror}"),
    entry=lambda e: errdefs.InvalidParameter(f"invalid tar archive: {e.strerror or e}"),
)


@dataclass
class BuildContext:
    """An unpacked context (*root*; None for a remote Dockerfile sent alone) and its
    Dockerfile, read and removed from the context as moby removes it when
    .dockerignore names it."""

    root: Path | None
    dockerfile: bytes
    dockerfile_name: str
    _owned: list[Path] = field(default_factory=list)
    #: a cached context is not removed but handed back to its cache
    _release: Callable[[], None] | None = None
    #: a fresh one may be kept by its cache after a build that succeeded
    _adopt: Callable[[BuildContext], bool] | None = None

    def close(self, *, keep: bool = False) -> None:
        """Remove the unpacked context, give it back to its cache, or (*keep*: the build
        succeeded) let the cache keep it for the next build of the same body
        (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()
        adopt, self._adopt = self._adopt, None
        if keep and adopt is not None and adopt(self):
            self._owned.clear()
        for path in self._owned:
            shutil.rmtree(path, ignore_errors=True)
        self._owned.clear()


@dataclass
class _Cached:
    root: Path
    dockerfile: bytes
    dockerfile_name: str
    size: int
    users: int = 0


class ContextCache:
    """Unpacked local contexts by the sha256 of the request body that carried them (and
    the Dockerfile named), the most recently used kept within *max_bytes* of bodies and
    *max_entries* directories; one in use by a build is never removed.  Only the context
    of a build that succeeded is kept: a failed or cancelled one leaves nothing."""

    def __init__(
        self, tmp_dir: Path, keep_dir: Path, *, max_bytes: int = 1 << 30, max_entries: int = 8
    ) -> None:
        self.tmp_dir = tmp_dir
        #: where kept contexts live (on the tmp dir's filesystem: they are moved there)
        self.keep_dir = keep_dir
        shutil.rmtree(keep_dir, ignore_errors=True)
        keep_dir.mkdir(parents=True, mode=0o700)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, body: IO[bytes], dockerfile: str) -> BuildContext:
        """The context the request *body* carries, with its Dockerfile read."""
        digest, size, spool = self._spool(body)
        key = (digest, dockerfile or DEFAULT_DOCKERFILE)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                hit.users += 1
                self._entries.move_to_end(key)
        if hit is not None:
            os.unlink(spool)
            log.debug("build context %s reused", digest[:12])
            return BuildContext(
                hit.root, hit.dockerfile, hit.dockerfile_name, [], lambda: self._release(key)
            )
        root = make_context_dir(self.tmp_dir)
        try:
            with open(spool, "rb") as f:
                unpack_context(f, root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            os.unlink(spool)
        ctx = open_context(root, dockerfile)
        if size <= self.max_bytes:
            ctx._adopt = lambda done: self._adopt(key, done, size)
        return ctx

    def _adopt(self, key: tuple[str, str], ctx: BuildContext, size: int) -> bool:
        """Keep *ctx*'s directory for later builds of the same body; False if another
        build of it got there first."""
        assert ctx.root is not None
        with self._lock:
            if key in self._entries:
                return False
            kept = self.keep_dir / ctx.root.name
            try:
                os.rename(ctx.root, kept)
            except OSError as e:
                log.debug("not keeping the build context %s: %s", ctx.root, e)
                return False
            self._entries[key] = _Cached(kept, ctx.dockerfile, ctx.dockerfile_name, size)
            doomed = self._evict()
        self._remove(doomed)
        return True

    def _spool(self, body: IO[bytes]) -> tuple[str, int, str]:
        fd, path = tempfile.mkstemp(prefix="build-body-", dir=self.tmp_dir)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := body.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
        except BaseException:
            os.unlink(path)
            raise
        return h.hexdigest(), size, path

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users -= 1
            doomed = self._evict()
        self._remove(doomed)

    def _evict(self) -> list[Path]:
        """Drop the least recently used idle entries beyond the bounds (lock held)."""
        doomed: list[Path] = []
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes and len(self._entries) <= self.max_entries:
                break
            entry = self._entries[key]
            if entry.users > 0:
                continue
            del self._entries[key]
            total -= entry.size
            doomed.append(entry.root)
        return doomed

    @staticmethod
    def _remove(roots: list[Path]) -> None:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)

    def close(self) -> None:
        """Remove every idle entry (the daemon stops)."""
        with self._lock:
            doomed = [e.root for e in self._entries.values() if e.users == 0]
            self._entries = OrderedDict((k, e) for k, e in self._entries.items() if e.users > 0)
        self._remove(doomed)


def make_context_dir(tmp_dir: Path) -> Path:
    """A fresh directory for one build's context, under the daemon's tmp dir."""
    return Path(tempfile.mkdtemp(prefix="build-context-", dir=tmp_dir))


class _TarEnd(io.RawIOBase):
    """The plain tar with the end Go's writer may leave out: the CLI's ``-f -`` context
    (``ReplaceFileTarWrapper``) stops right after its last file's data, with neither
    the padding to 512 bytes nor the two zero blocks, and Go's reader takes that as the
    end.  Zeros are added after the real end, which a whole tar ignores."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        self._src = src
        self._count = 0
        self._tail = -1

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._tail < 0:
            data = self._src.read(len(b))
            if data:
                n = len(data)
                b[:n] = data
                self._count += n
                return n
            self._tail = -self._count % 512 + 1024
        n = min(len(b), self._tail)
        b[:n] = bytes(n)
        self._tail -= n
        return n


def unpack_context(stream: IO[bytes], root: Path) -> None:
    """Unpack the (possibly compressed) tar *stream* into *root*; a stream that is not a
    tar is InvalidParameter, a host that runs out of space a System error."""
    os.chmod(root, 0o755)
    try:
        with tar_errors(_CONTEXT_WORDS):
            unpack_tar(io.BufferedReader(_TarEnd(decompress(stream)), 1 << 20), str(root))
    except errdefs.InvalidParameter as e:
        raise errdefs.InvalidParameter(f"the build context is not a valid tar: {e}") from None


def open_context(
    root: Path, dockerfile_name: str, *, apply_dockerignore: bool = False
) -> BuildContext:
    """The context unpacked at *root* with its Dockerfile read (moby's
    ``withDockerfileFromContext``); the context takes *root* over and removes it when
    closed, or at once if this fails.  With *apply_dockerignore* (a ``remote`` context,
    which no client filtered) what .dockerignore excludes is removed first."""
    ctx = BuildContext(root, b"", dockerfile_name or DEFAULT_DOCKERFILE, [root])
    try:
        patterns = _dockerignore(root)
        if apply_dockerignore and patterns:
            _exclude(root, PatternMatcher(patterns), ctx.dockerfile_name)
        name = ctx.dockerfile_name
        path = _find(root, name)
        if path is None and name == DEFAULT_DOCKERFILE:
            name = name.lower()
            path = _find(root, name)
        if path is None:
            raise errdefs.InvalidParameter(
                f"Cannot locate specified Dockerfile: {ctx.dockerfile_name}"
            )
        ctx.dockerfile_name = name
        ctx.dockerfile = _read_dockerfile(path, name)
        if patterns:
            _remove_named(root, PatternMatcher(patterns), name)
    except BaseException:
        ctx.close()
        raise
    return ctx


def dockerfile_only(data: bytes, name: str = DEFAULT_DOCKERFILE) -> BuildContext:
    """A context of a Dockerfile alone (a ``remote`` URL that served ``text/plain``):
    nothing to COPY from, as in moby."""
    if not data:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    return BuildContext(None, data, name)


def _dockerignore(root: Path) -> list[str]:
    try:
        path = resolve_in_root(str(root), DOCKERIGNORE)
        with open(path, "rb") as f:
            return read_patterns(f.read(MAX_DOCKERFILE))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


def _find(root: Path, name: str) -> str | None:
    """The host path of *name* in the context, symlinks resolved inside it; None when
    there is no such regular file."""
    try:
        path = resolve_in_root(str(root), name)
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(st.st_mode):
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) is a directory")
    return path


def _read_dockerfile(path: str, name: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_DOCKERFILE + 1)
    if not data:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    if len(data) > MAX_DOCKERFILE:
        raise errdefs.InvalidParameter(
            f"the Dockerfile ({name}) is larger than {MAX_DOCKERFILE >> 20} MiB"
        )
    return data


def _remove_named(root: Path, matcher: PatternMatcher, dockerfile: str) -> None:
    """moby's ``removeDockerfile``: .dockerignore and the Dockerfile leave the context
    when .dockerignore names them (the CLI always sends both)."""
    for name in (DOCKERIGNORE, dockerfile):
        rel = os.path.normpath(name).lstrip("/")
        if not matcher.matches(rel):
            continue
        parent, base = posixpath.split(rel)
        try:
            directory = resolve_in_root(str(root), parent) if parent else str(root)
            os.unlink(os.path.join(directory, base))
        except OSError as e:
            log.debug("removing %s from the build context: %s", rel, e)


def _exclude(root: Path, matcher: PatternMatcher, dockerfile: str) -> None:
    """Remove what *matcher* excludes, as the CLI leaves it out of a local context: a
    directory is walked only if an exclusion (``!``) could take something in it back;
    the Dockerfile and .dockerignore stay (the CLI keeps them too)."""
    keep = {DOCKERIGNORE, os.path.normpath(dockerfile).lstrip("/")}

    def walk(directory: str, rel: str) -> None:
        with os.scandir(directory) as it:
            entries = list(it)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            if path in keep:
                continue
            excluded = matcher.matches(path)
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and (not excluded or matcher.exclusions):
                walk(entry.path, path)
                if excluded:
                    try:
                        os.rmdir(entry.path)  # only if nothing in it was taken back
                    except OSError:
                        pass
            elif excluded:
                if is_dir:
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

    walk(str(root), "")
