"""The unit every log driver writes and reads: one message of one stream."""

from __future__ import annotations

import msgspec


class LogMessage(msgspec.Struct, frozen=True, gc=False):
    """One message of a container's output.

    ``line`` holds the bytes exactly as the container wrote them, including the
    trailing ``b"\\n"`` when the message ended a line; a *partial* message (a
    line longer than 16 KiB cut by the copier, or the unterminated end of the
    output) has none.  ``attrs`` are the extra attributes a driver stores with
    the message (json-file's ``"attrs"``: labels, env, tag), in file order.
    A ``msgspec.Struct``: a 50 MB log is half a million of them.
    """

    stream: str
    line: bytes
    time_ns: int
    attrs: tuple[tuple[str, str], ...] = ()

    @property
    def partial(self) -> bool:
        """True when the message does not end a line."""
        return not self.line.endswith(b"\n")
