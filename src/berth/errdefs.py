"""One exception hierarchy for the whole daemon, mirroring moby's errdefs.

Code below the API raises the class that describes *what went wrong*; the API
layer maps the class to an HTTP status in exactly one place
(:mod:`berth.api.errors`).  Messages are written for the person at the
terminal: they say what was wrong and, where it helps, what to do.
"""

from __future__ import annotations


class BerthError(Exception):
    """Base of every error berth raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(BerthError):
    """The object named does not exist."""


class InvalidParameter(BerthError):
    """The client's input is malformed or not allowed."""


class TooLarge(InvalidParameter):
    """The client sent more than berth takes in one piece (a request body)."""


class Conflict(BerthError):
    """The request conflicts with the current state (name in use, image in use)."""


class Unauthorized(BerthError):
    """Credentials are missing or wrong."""


class Forbidden(BerthError):
    """The operation is not permitted."""


class Unavailable(BerthError):
    """The service (or part of it) cannot answer now."""


class NotModified(BerthError):
    """Nothing to do: the object is already in the requested state."""


class NotImplementedFeature(BerthError):
    """berth does not implement this (yet)."""


class System(BerthError):
    """An unexpected failure of the host or of berth itself."""


__all__ = [
    "BerthError",
    "Conflict",
    "Forbidden",
    "InvalidParameter",
    "NotFound",
    "NotImplementedFeature",
    "NotModified",
    "System",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
