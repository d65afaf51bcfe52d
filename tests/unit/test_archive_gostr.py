"""berth.utils.gostr: Go's ``strconv.Quote``, as moby's and runc's ``%q`` messages show input."""

from __future__ import annotations

import pytest

from berth.utils.gostr import go_quote


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", '""'),
        ("foo=bar", '"foo=bar"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),  # other controls: \x, not JSON's \u00XX
        ("café ☃ 日本", '"café ☃ 日本"'),  # printable runes stay (JSON would write \u00e9)
        ("\x85\xa0", '"\\u0085\\u00a0"'),  # C1 control, no-break space: not printable
        ("\u2028", '"\\u2028"'),
        ("\U000e0001", '"\\U000e0001"'),  # a format character above the BMP
        ("😀", '"😀"'),
        (b"a\xffb".decode("utf-8", "surrogateescape"), '"a\\xffb"'),  # invalid UTF-8 byte
        ("\ud800", '"\\xed\\xa0\\x80"'),  # a lone surrogate is three invalid bytes in Go
    ],
)
def test_go_quote_is_strconv_quote(text: str, expected: str) -> None:
    assert go_quote(text) == expected
