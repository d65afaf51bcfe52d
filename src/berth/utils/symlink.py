"""The one walk that follows symlinks inside a root, as the kernel would if it were ``/``.

Image layers and container filesystems are untrusted: their symlinks must
never lead berthd outside them.  Every resolver of berth (layer apply,
``docker cp``, mount destinations, ``/etc/passwd`` lookups) is this walk,
moby's ``FollowSymlinkInScope``: ``..`` is clamped at the root, an absolute
link restarts at the root, and link depth is capped (ELOOP).  It lives in
``utils`` because ``runtime`` needs it below ``archive``, which re-exports it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from berth import errdefs

MAX_SYMLINKS = 255

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Link:
    """A step met a symlink: its *target* is walked next, from the root if absolute."""

    target: str


def components(path: str) -> list[str]:
    """The names of *path*, without empty and ``.`` components."""
    return [p for p in path.split("/") if p and p != "."]


def follow_in_root(
    path: str, root: T, step: Callable[[list[T], str], T | Link], max_links: int = MAX_SYMLINKS
) -> list[T]:
    """Walk *path* from *root*: the stack of nodes, *root* first, the last one reached last.

    *step* looks *name* up under the top of the stack and returns the node
    to push, or a :class:`Link` to follow; it raises to stop the walk.
    Raises ``OSError(ELOOP)`` after *max_links* symlinks.
    """
    parts = deque(components(path))
    stack = [root]
    links = 0
    while parts:
        part = parts.popleft()
        if part == "..":
            if len(stack) > 1:
                stack.pop()
            continue
        found = step(stack, part)
        if isinstance(found, Link):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if found.target.startswith("/"):
                del stack[1:]
            parts.extendleft(reversed(components(found.target)))
            continue
        stack.append(found)
    return stack


def _resolve_names(root: str, rel: str) -> list[str]:
    """The names under *root* that *rel* resolves to (see :func:`resolve_in_root`)."""

    def step(stack: list[str], part: str) -> str | Link:
        candidate = os.path.join(root, *stack[1:], part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return part
        if stat.S_ISLNK(st.st_mode):
            return Link(os.readlink(candidate))
        return part

    try:
        names = follow_in_root(rel, "", step)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise errdefs.InvalidParameter(
            f"too many levels of symbolic links resolving {rel!r}"
        ) from None
    return names[1:]


def resolve_in_root(root: str, rel: str) -> str:
    """The host path of *rel* under the directory *root*, every symlink followed inside it.

    The last component is followed too; missing components are kept as
    written (a dangling final link gives its target).  ENOTDIR on the way is
    raised; too many links is InvalidParameter.
    """
    return os.path.join(root, *_resolve_names(root, rel))
