"""berth.utils.stringid: 64-hex IDs that never look like numbers when short."""

from __future__ import annotations

import re
import secrets

import pytest

from berth.utils import stringid
from berth.utils.stringid import generate_id, is_full_id, truncate_id


def test_generate_id_is_64_lowercase_hex() -> None:
    seen = set()
    for _ in range(50):
        ident = generate_id()
        assert re.fullmatch(r"[0-9a-f]{64}", ident), ident
        assert not ident[:12].isdigit()
        seen.add(ident)
    assert len(seen) == 50


def test_generate_id_draws_again_when_short_form_is_all_digits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    numeric = "123456789012" + "a" * 52
    good = "12345678901a" + "b" * 52
    drawn = [numeric, numeric, good]
    calls: list[int] = []

    def fake_token_hex(nbytes: int) -> str:
        calls.append(nbytes)
        return drawn.pop(0)

    monkeypatch.setattr(stringid.secrets, "token_hex", fake_token_hex)
    assert generate_id() == good
    assert calls == [32, 32, 32]


def test_generate_id_accepts_digits_after_the_short_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the 12-character short form matters.
    ident = "abcdef123456" + "7" * 52
    monkeypatch.setattr(secrets, "token_hex", lambda n: ident)
    assert generate_id() == ident


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        ("0123456789abcdef" * 4, "0123456789ab"),
        ("sha256:" + "fedcba9876543210" * 4, "fedcba987654"),
        ("abc", "abc"),
        ("", ""),
        ("sha256:abc", "abc"),
    ],
)
def test_truncate_id(ident: str, expected: str) -> None:
    assert truncate_id(ident) == expected


def test_is_full_id() -> None:
    full = "0123456789abcdef" * 4
    assert is_full_id(full)
    assert not is_full_id(full[:63])
    assert not is_full_id(full + "0")
    assert not is_full_id(full.upper())
    assert not is_full_id("sha256:" + full)
    assert not is_full_id(full + "\n")
