"""Random identifiers as dockerd makes them."""

from __future__ import annotations

import re
import secrets

_HEX64 = re.compile(r"^[a-f0-9]{64}\Z")


def generate_id() -> str:
    """64 hex characters from the OS CSPRNG; never all-digits when truncated.

    An all-numeric short ID would be taken for a number when used as a
    hostname (moby#3869), so such IDs are drawn again.
    """
    while True:
        ident = secrets.token_hex(32)
        if not truncate_id(ident).isdigit():
            return ident


def truncate_id(ident: str) -> str:
    """The 12-character short form, ignoring any ``sha256:`` prefix."""
    _, _, hexpart = ident.rpartition(":")
    return hexpart[:12]


def is_full_id(value: str) -> bool:
    return bool(_HEX64.match(value))
