"""The one mapping of what goes wrong while unpacking a tar to the errdefs classes.

A tar comes from a client, so its faults are the client's (4xx): corrupt or
truncated data, entries that cannot be created.  Only a failing host (disk
full, quota, I/O error) is the daemon's (500).  The layer store and ``docker
cp`` word their messages as dockerd does for each, hence :class:`Wording`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from berth import errdefs

HOST_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


class InvalidLayer(errdefs.InvalidParameter):
    """The tar stream is corrupt, truncated or tries to escape its target."""


@dataclass(frozen=True)
class Wording:
    """How one caller words the three kinds of failure."""

    corrupt_types: tuple[type[Exception], ...]  # errors of the stream's format
    corrupt: Callable[[Exception], errdefs.BerthError]
    host: Callable[[OSError], errdefs.BerthError]  # the host failed: a System error
    entry: Callable[[OSError], errdefs.BerthError]  # an entry could not be written


@contextmanager
def tar_errors(words: Wording) -> Iterator[None]:
    """Raise what went wrong inside as a :class:`errdefs.BerthError` worded by *words*."""
    try:
        yield
    except errdefs.BerthError:
        raise
    except Exception as e:
        if isinstance(e, words.corrupt_types):
            raise words.corrupt(e) from None
        if isinstance(e, OSError):
            if e.errno in HOST_ERRNOS:
                raise words.host(e) from e
            raise words.entry(e) from None
        raise
