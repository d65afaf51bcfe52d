"""The build context: the request's tar written once to a spool of the daemon's own and
indexed (:mod:`berth.builder.contextfs`), and the Dockerfile found in it (moby's
``builder/remotecontext``: ``FromArchive``, ``withDockerfileFromContext``,
``removeDockerfile``).

The context is never held whole in memory, and never unpacked: COPY reads it through its
index.  Whatever fails closes the spool, an unlinked file, so nothing is left behind.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from berth import errdefs
from berth.archive import Wording, decompress, tar_errors
from berth.builder.contextfs import ContextEntry, ContextFS, spool_context
from berth.builder.dockerignore import PatternMatcher, read_patterns

log = logging.getLogger(__name__)

DEFAULT_DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
#: the largest Dockerfile read (the parser has its own limits on lines)
MAX_DOCKERFILE = 64 << 20


#: what goes wrong while the context is read: a bad stream is the client's, a full disk
#: the host's
_CONTEXT_WORDS = Wording(
    corrupt_types=(tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile),
    corrupt=lambda e: errdefs.InvalidParameter(f"invalid tar archive: {e}"),
    host=lambda e: errdefs.System(f"writing the build context: {e.strerror}"),
    entry=lambda e: errdefs.InvalidParameter(f"invalid tar archive: {e.strerror or e}"),
)


@dataclass
class BuildContext:
    """A context (*fs*: empty for a remote Dockerfile sent alone) and its Dockerfile, read
    and removed from the context as moby removes it when .dockerignore names it."""

    dockerfile: bytes
    dockerfile_name: str
    fs: ContextFS = field(default_factory=ContextFS)

    def close(self) -> None:
        """Let the spool go (idempotent)."""
        self.fs.close()


def read_context(stream: IO[bytes], tmp_dir: Path) -> ContextFS:
    """The context the (possibly compressed) tar *stream* carries, spooled under *tmp_dir*;
    a stream that is not a tar is InvalidParameter, a host out of space a System error."""
    try:
        with tar_errors(_CONTEXT_WORDS):
            return spool_context(decompress(stream), tmp_dir)
    except errdefs.InvalidParameter as e:
        raise errdefs.InvalidParameter(f"the build context is not a valid tar: {e}") from None


def open_local_context(body: IO[bytes], tmp_dir: Path, dockerfile_name: str) -> BuildContext:
    """The context a ``POST /build`` body carries, with its Dockerfile read."""
    return open_context(read_context(body, tmp_dir), dockerfile_name)


def open_context(
    fs: ContextFS, dockerfile_name: str, *, apply_dockerignore: bool = False
) -> BuildContext:
    """The context *fs* with its Dockerfile read (moby's ``withDockerfileFromContext``);
    the context takes *fs* over and closes it when closed, or at once if this fails.
    With *apply_dockerignore* (a ``remote`` context, which no client filtered) what
    .dockerignore excludes leaves the context first."""
    ctx = BuildContext(b"", dockerfile_name or DEFAULT_DOCKERFILE, fs)
    try:
        patterns = _dockerignore(fs)
        if apply_dockerignore and patterns:
            _exclude(fs, PatternMatcher(patterns), ctx.dockerfile_name)
        name = ctx.dockerfile_name
        entry = _find(fs, name)
        if entry is None and name == DEFAULT_DOCKERFILE:
            name = name.lower()
            entry = _find(fs, name)
        if entry is None:
            raise errdefs.InvalidParameter(
                f"Cannot locate specified Dockerfile: {ctx.dockerfile_name}"
            )
        ctx.dockerfile_name = name
        ctx.dockerfile = _read_dockerfile(fs, entry, name)
        if patterns:
            _remove_named(fs, PatternMatcher(patterns), name)
    except BaseException:
        ctx.close()
        raise
    return ctx


def dockerfile_only(data: bytes, name: str = DEFAULT_DOCKERFILE) -> BuildContext:
    """A context of a Dockerfile alone (a ``remote`` URL that served ``text/plain``):
    nothing to COPY from, as in moby."""
    if not data:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    return BuildContext(data, name)


def _file(fs: ContextFS, name: str) -> ContextEntry | None:
    """The entry *name* leads to (symlinks followed inside the context); None when there
    is nothing there."""
    try:
        return fs.lookup(fs.canonical(name))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # a loop of links
        raise errdefs.InvalidParameter(f"{name}: {e.strerror}") from None


def _dockerignore(fs: ContextFS) -> list[str]:
    entry = _file(fs, DOCKERIGNORE)
    if entry is None or entry.kind != stat.S_IFREG:
        return []
    return read_patterns(fs.read(entry, MAX_DOCKERFILE))


def _find(fs: ContextFS, name: str) -> ContextEntry | None:
    """The regular file *name* names in the context; None when there is none."""
    entry = _file(fs, name)
    if entry is not None and entry.kind == stat.S_IFDIR:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) is a directory")
    return entry if entry is not None and entry.kind == stat.S_IFREG else None


def _read_dockerfile(fs: ContextFS, entry: ContextEntry, name: str) -> bytes:
    if not entry.size:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    if entry.size > MAX_DOCKERFILE:
        raise errdefs.InvalidParameter(
            f"the Dockerfile ({name}) is larger than {MAX_DOCKERFILE >> 20} MiB"
        )
    return fs.read(entry)


def _remove_named(fs: ContextFS, matcher: PatternMatcher, dockerfile: str) -> None:
    """moby's ``removeDockerfile``: .dockerignore and the Dockerfile leave the context
    when .dockerignore names them (the CLI always sends both)."""
    for name in (DOCKERIGNORE, dockerfile):
        rel = os.path.normpath(name).lstrip("/")
        if not matcher.matches(rel):
            continue
        parent, base = posixpath.split(rel)
        try:
            directory = fs.canonical(parent) if parent else "."
        except OSError as e:
            log.debug("removing %s from the build context: %s", rel, e)
            continue
        fs.remove(base if directory == "." else f"{directory}/{base}")


def _exclude(fs: ContextFS, matcher: PatternMatcher, dockerfile: str) -> None:
    """Drop what *matcher* excludes, as the CLI leaves it out of a local context: a
    directory is walked only if an exclusion (``!``) could take something in it back;
    the Dockerfile and .dockerignore stay (the CLI keeps them too)."""
    keep = {DOCKERIGNORE, os.path.normpath(dockerfile).lstrip("/")}

    def walk(directory: ContextEntry, rel: str) -> None:
        children = directory.children
        assert children is not None
        for name in sorted(children):
            entry = children[name]
            path = f"{rel}/{name}" if rel else name
            if path in keep:
                continue
            excluded = matcher.matches(path)
            if entry.children is not None and (not excluded or matcher.exclusions):
                walk(entry, path)
                if excluded and not entry.children:  # nothing in it was taken back
                    del children[name]
            elif excluded:
                del children[name]

    walk(fs.root, "")
