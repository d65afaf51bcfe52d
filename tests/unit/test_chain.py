"""berth.layer.chain: ChainIDs as the OCI image spec defines them."""

from __future__ import annotations

import hashlib

from berth.layer.chain import chain_id, chain_ids


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


D1 = _sha("layer one")
D2 = _sha("layer two")
D3 = _sha("layer three")


def test_chain_id_of_the_base_layer_is_its_diff_id() -> None:
    assert chain_id(None, D1) == D1
    assert chain_id("", D1) == D1


def test_chain_id_hashes_parent_space_diff_id() -> None:
    expected = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    assert chain_id(D1, D2) == expected
    # order matters
    assert chain_id(D2, D1) != expected


def test_chain_ids_by_hand() -> None:
    c1 = D1
    c2 = "sha256:" + hashlib.sha256((c1 + " " + D2).encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256((c2 + " " + D3).encode()).hexdigest()
    assert chain_ids([D1, D2, D3]) == [c1, c2, c3]
    assert chain_ids([D1]) == [D1]
    assert chain_ids([]) == []


def test_shared_base_shares_chain_ids() -> None:
    a = chain_ids([D1, D2, D3])
    b = chain_ids([D1, D2, D1])
    assert a[:2] == b[:2]
    assert a[2] != b[2]


def test_known_value() -> None:
    # Fixed vector so a change to the formula (e.g. no space) is caught.
    d1 = "sha256:" + "a" * 64
    d2 = "sha256:" + "b" * 64
    assert chain_id(d1, d2) == _sha(f"sha256:{'a' * 64} sha256:{'b' * 64}")
