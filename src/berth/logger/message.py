"""The unit every log driver writes and reads: one message of one stream."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogMessage:
    """One message of a container's output.

    ``line`` holds the bytes exactly as the container wrote them, including the
    trailing ``b"\\n"`` when the message ended a line; a *partial* message (a
    line longer than 16 KiB cut by the copier, or the unterminated end of the
    output) has none.  ``attrs`` are the extra attributes a driver stores with
    the message (json-file's ``"attrs"``: labels, env, tag), in file order.
    """

    stream: str
    line: bytes
    time_ns: int
    attrs: tuple[tuple[str, str], ...] = ()

    @property
    def partial(self) -> bool:
        """True when the message does not end a line."""
        return not self.line.endswith(b"\n")
