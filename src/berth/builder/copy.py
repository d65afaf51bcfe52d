"""COPY and ADD of the classic builder (moby's ``builder/dockerfile/copy.go``).

Two steps, as moby splits them, so that the cache can be probed before any
container exists:

* :func:`prepare_copy` resolves the sources (the build context, another
  stage's or image's root for ``--from``, or an ``http(s)`` URL for ADD),
  expands wildcards, and computes the cache key :attr:`CopyPlan.hash`
  (``file:<sha256>``, ``dir:<sha256>``, ``multi:<sha256>``, moby's tarsum-like
  per-file hashes: header fields and content, not the mtime).
* :func:`perform_copy` writes the sources into the step container's
  :class:`~berth.archive.ContainerFS`, every destination path resolved inside
  its root, with moby's ownership, mode and mtime rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from berth.archive import ContainerFS

COPY = "COPY"
ADD = "ADD"

#: ``progress(done, total)`` while ADD downloads a URL; *total* is -1 when unknown.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CopySource:
    """The tree that COPY/ADD reads local sources from: a directory of the host.

    *root* is the extracted build context, or (``COPY --from``) the root
    filesystem of a stage's or image's layers mounted by the dispatcher for the
    step.  Paths are resolved inside it as if it were ``/``.  *from_image*
    changes the not-found wording and keeps the files' owners when no
    ``--chown`` is given, as moby does for ``--from``.
    """

    root: str
    from_image: bool = False


@dataclass(frozen=True)
class CopyItem:
    """One resolved source (moby's ``copyInfo``): *path* relative to *root*, as matched."""

    root: str
    path: str
    hash: str
    no_decompress: bool = False


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
        """The step's ``#(nop)`` text, moby's ``"COPY --chown=u:g file:<sha> in /dest "``."""
        chown = f"--chown={self.chown} " if self.chown else ""
        return f"{self.cmd} {chown}{self.hash} in {self.dest} "

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> CopyPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
) -> CopyPlan:
    """Resolve a COPY (``cmd="COPY"``) or ADD's *sources* and compute the cache key.

    *sources* and *dest* are the instruction's words after variable expansion;
    *dest* is kept as written (a relative one is taken from WORKDIR by
    :func:`perform_copy`).  Raises InvalidParameter with dockerd's messages
    ("COPY failed: file not found in build context or excluded by
    .dockerignore: stat x: file does not exist", "COPY failed: forbidden path
    outside the build context: ../x ()", "When using COPY with more than one
    source file, the destination must be a directory and end with a /", and
    the classic builder's refusal of ``--chmod``).
    """
    raise NotImplementedError


def perform_copy(plan: CopyPlan, fs: ContainerFS, *, workdir: str = "/") -> None:
    """Copy *plan*'s sources into the container filesystem *fs* (moby's ``performCopy``).

    ``--chown`` names are looked up in *fs*'s ``/etc/passwd`` and ``/etc/group``.
    """
    raise NotImplementedError
