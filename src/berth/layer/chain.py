"""ChainIDs: the identity of a layer *with everything below it*.

``ChainID(L0) = DiffID(L0)`` and ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``
(OCI image-spec, identity/chainid.go), so two images that share a base
share its layers on disk.
"""

from __future__ import annotations

import hashlib


def chain_id(parent: str | None, diff_id: str) -> str:
    if not parent:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The ChainID of every prefix of *diff_ids*."""
    out: list[str] = []
    parent: str | None = None
    for d in diff_ids:
        parent = chain_id(parent, d)
        out.append(parent)
    return out
