"""The one place where an error class becomes an HTTP status."""

from __future__ import annotations

import errno
import logging
import os

import msgspec

from berth import errdefs

log = logging.getLogger(__name__)

#: a full disk or quota, wherever a write met it
_FULL = (errno.ENOSPC, errno.EDQUOT)

_STATUS: list[tuple[type[BaseException], int]] = [
    (errdefs.NotFound, 404),
    (errdefs.TooLarge, 413),
    (errdefs.InvalidParameter, 400),
    (errdefs.Conflict, 409),
    (errdefs.Unauthorized, 401),
    (errdefs.Forbidden, 403),
    (errdefs.Unavailable, 503),
    (errdefs.NotModified, 304),
    (errdefs.NotImplementedFeature, 501),
    (errdefs.System, 500),
]


def status_of(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def message_of(exc: BaseException) -> str:
    if isinstance(exc, errdefs.BerthError):
        return exc.message
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid request body: {exc}"
    if isinstance(exc, msgspec.DecodeError):
        return f"invalid JSON: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def classify(exc: BaseException) -> tuple[int, str]:
    """Status and message for *exc*; unexpected errors are logged with their traceback."""
    if isinstance(exc, (msgspec.ValidationError, msgspec.DecodeError)):
        return 400, message_of(exc)
    if isinstance(exc, OSError) and exc.errno in _FULL:
        # the host, not berth: said in the host's words, as dockerd says it
        log.warning("%s", exc)
        where = f"{exc.filename}: " if exc.filename else ""
        return 500, where + os.strerror(exc.errno).lower()
    status = status_of(exc)
    if not isinstance(exc, errdefs.BerthError):
        log.error("unexpected error", exc_info=exc)
    return status, message_of(exc)
