"""Go's string handling where berth must do what dockerd does.

Error messages of moby and runc quote user input with ``%q``; clients and
tests compare those messages byte for byte, so the quoting follows Go's
``strconv.Quote`` exactly rather than JSON's or Python's ``repr``.  It lives
in ``utils`` (the bottom layer) because both ``runtime`` and ``archive`` use it.
"""

from __future__ import annotations

import posixpath
import unicodedata

_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def _is_print(ch: str) -> bool:
    """Go's ``strconv.IsPrint``: letters, marks, numbers, punctuation, symbols, ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (``%q``): printable runes kept, the rest escaped.

    Bytes that are not valid UTF-8 arrive here as surrogate escapes (``os``
    decodes with ``surrogateescape``); Go shows each such byte as ``\\xNN``.
    """
    out = ['"']
    for ch in text:
        cp = ord(ch)
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif 0xD800 <= cp <= 0xDFFF:
            if 0xDC80 <= cp <= 0xDCFF:
                out.append(f"\\x{cp - 0xDC00:02x}")
            else:  # a lone surrogate: Go sees its three invalid UTF-8 bytes
                out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        elif cp < 0x80 and (cp < 0x20 or cp == 0x7F):
            out.append(f"\\x{cp:02x}")
        elif _is_print(ch):
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def go_clean(path: str) -> str:
    """``filepath.Clean``: unlike ``posixpath.normpath``, ``//x`` becomes ``/x``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def go_parse_bool(value: str) -> bool | None:
    """``strconv.ParseBool``; None where Go returns an error."""
    return _BOOLS.get(value)
