"""moby's json-file line format, byte for byte.

One message is one line::

    {"log":"hi\\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}\\n

The writer follows moby's hand-written encoder (``jsonlog/jsonlogbytes.go``):
keys in the order log, stream, attrs, time; ``log`` and ``stream`` left out
when empty; inside strings ``"`` and ``\\`` get a backslash, ``\\n`` and
``\\r`` their short escapes, every other byte below 0x20 and ``<``, ``>``,
``&`` become ``\\u00XX``, U+2028/U+2029 become ``\\u2028``/``\\u2029``, and
each byte that is not part of valid UTF-8 becomes ``\\ufffd`` (Go's
``utf8.DecodeRune`` rejects one byte at a time).  The time is Go's
``RFC3339Nano`` in UTC.  ``attrs`` are written as Go's ``encoding/json``
writes a ``map[string]string``: keys sorted, HTML-safe escaping.

The reader accepts what Go's ``encoding/json`` accepts for moby's
``JSONLog``: it trims NULs and whitespace around a line (moby does), skips
lines that are not a JSON object of the right shape, and replaces invalid
UTF-8 and lone surrogate escapes with U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import msgspec

from berth.logger.message import LogMessage
from berth.utils.timefmt import ZERO_TIME, format_rfc3339_nano, parse_rfc3339

__all__ = [
    "decode_entry",
    "encode_attrs",
    "encode_entry",
    "escape_json_bytes",
    "format_time",
    "parse_time",
    "plain_ascii",
]

_NS = 1_000_000_000

# -- string escaping (writer) ---------------------------------------------------------

#: ASCII bytes moby's escaper does not write as they are.
_ASCII_ESCAPED = bytes(range(0x20)) + b'"\\<>&'
_ASCII_SPECIAL = re.compile(b"[" + re.escape(_ASCII_ESCAPED) + b"]")
#: The ASCII bytes written as they are, to delete: what is left needs escaping (a
#: translate is several times faster than a regex search over a clean 16 KiB message).
_ASCII_PLAIN = bytes(b for b in range(0x80) if b not in _ASCII_ESCAPED)
_ASCII_PLAIN_AND_NEWLINE = _ASCII_PLAIN + b"\n"


def plain_ascii(data: bytes, newlines: bool = False) -> bool:
    """*data* is ASCII that moby writes as it is (but for its newlines, with *newlines*)."""
    return data.isascii() and not data.translate(
        None, _ASCII_PLAIN_AND_NEWLINE if newlines else _ASCII_PLAIN
    )


#: The same in decoded text, plus U+2028/U+2029 and the surrogates that
#: ``surrogateescape`` makes of bytes that are not valid UTF-8.
_TEXT_SPECIAL = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\udc80-\udcff]')


def _ffjson_escape(code: int) -> str:
    if code in (0x22, 0x5C):
        return "\\" + chr(code)
    if code == 0x0A:
        return "\\n"
    if code == 0x0D:
        return "\\r"
    return f"\\u{code:04x}"


_ASCII_CODES = (*range(0x20), 0x22, 0x5C, 0x3C, 0x3E, 0x26)
_BYTE_ESCAPES: dict[bytes, bytes] = {
    bytes([c]): _ffjson_escape(c).encode("ascii") for c in _ASCII_CODES
}
_TEXT_ESCAPES: dict[str, str] = {chr(c): _ffjson_escape(c) for c in _ASCII_CODES}
_TEXT_ESCAPES["\u2028"] = "\\u2028"
_TEXT_ESCAPES["\u2029"] = "\\u2029"
for _b in range(0x80, 0x100):
    _TEXT_ESCAPES[chr(0xDC00 + _b)] = "\\ufffd"


def _sub_byte(m: re.Match[bytes]) -> bytes:
    return _BYTE_ESCAPES[m.group()]


def _sub_text(m: re.Match[str]) -> str:
    return _TEXT_ESCAPES[m.group()]


def escape_json_bytes(data: bytes) -> bytes:
    """The inside of a JSON string for *data*, escaped exactly as moby's json-file does."""
    if data.isascii():
        if plain_ascii(data):
            return data
        return _ASCII_SPECIAL.sub(_sub_byte, data)
    # surrogateescape turns each byte that is not part of valid UTF-8 into one
    # lone surrogate, byte by byte, which is how Go's DecodeRune rejects them.
    text = data.decode("utf-8", "surrogateescape")
    if _TEXT_SPECIAL.search(text) is None:
        return data
    return _TEXT_SPECIAL.sub(_sub_text, text).encode("utf-8")


# Go's encoding/json (used by moby for "attrs"): short forms for \b \f \n \r \t.
_GO_JSON_TEXT_ESCAPES = dict(_TEXT_ESCAPES)
_GO_JSON_TEXT_ESCAPES.update({"\b": "\\b", "\f": "\\f", "\t": "\\t"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_json_string(value: str) -> bytes:
    # A Python str holds no invalid UTF-8; a lone surrogate is the nearest thing.
    text = _SURROGATE.sub("\ufffd", value)
    return b'"' + _TEXT_SPECIAL.sub(_sub_go_json, text).encode("utf-8") + b'"'


def _sub_go_json(m: re.Match[str]) -> str:
    return _GO_JSON_TEXT_ESCAPES[m.group()]


def encode_attrs(attrs: Mapping[str, str] | None) -> bytes:
    """``json.Marshal(map[string]string)`` as Go writes it (sorted keys), or b"" when empty."""
    if not attrs:
        return b""
    items = [_go_json_string(k) + b":" + _go_json_string(v) for k, v in sorted(attrs.items())]
    return b"{" + b",".join(items) + b"}"


# -- times ------------------------------------------------------------------------------

# Messages come in bursts within the same second: cache the formatted and the
# parsed "YYYY-MM-DDTHH:MM:SS" part.  Tuples are swapped whole, so a reader in
# another thread never sees a torn pair.
_fmt_cache: tuple[int, bytes] = (-(1 << 62), b"")
_parse_cache: dict[str, int] = {}
_PARSE_CACHE_MAX = 4096


def format_time(ns: int) -> bytes:
    """Go's ``time.RFC3339Nano`` in UTC, as ASCII bytes (same text as ``format_rfc3339_nano``)."""
    global _fmt_cache
    secs, frac = divmod(ns, _NS)
    cached = _fmt_cache
    if cached[0] == secs:
        prefix = cached[1]
    else:
        prefix = format_rfc3339_nano(secs * _NS)[:-1].encode("ascii")
        _fmt_cache = (secs, prefix)
    if frac:
        return prefix + b"." + (b"%09d" % frac).rstrip(b"0") + b"Z"
    return prefix + b"Z"


def parse_time(value: str) -> int:
    """Parse an RFC 3339 time as moby writes it to epoch nanoseconds (any offset accepted)."""
    # Fast path for moby's own "YYYY-MM-DDTHH:MM:SS[.fffffffff]Z".
    n = len(value)
    if 20 <= n <= 30 and value[-1] == "Z" and value[10] == "T":
        prefix = value[:19]
        secs = _parse_cache.get(prefix)
        if secs is None:
            secs = parse_rfc3339(prefix + "Z") // _NS
            if len(_parse_cache) >= _PARSE_CACHE_MAX:
                _parse_cache.clear()
            _parse_cache[prefix] = secs
        if n == 20:
            return secs * _NS
        frac = value[20:-1]
        if value[19] == "." and frac.isascii() and frac.isdigit():
            return secs * _NS + int(frac.ljust(9, "0"))
    return parse_rfc3339(value)


_ZERO_NS = parse_rfc3339(ZERO_TIME)


# -- entries ----------------------------------------------------------------------------


def encode_entry(line: bytes, stream_json: bytes, attrs_json: bytes, time_ns: int) -> bytes:
    """One complete json-file line (with its newline).

    *stream_json* is the already escaped stream name (no quotes), *attrs_json*
    the encoded attrs object or b"".
    """
    parts = [b"{"]
    if line:
        if line[-1] == 0x0A:
            parts += (b'"log":"', escape_json_bytes(line[:-1]), b'\\n"')
        else:
            parts += (b'"log":"', escape_json_bytes(line), b'"')
    if stream_json:
        if len(parts) > 1:
            parts.append(b",")
        parts += (b'"stream":"', stream_json, b'"')
    if attrs_json:
        if len(parts) > 1:
            parts.append(b",")
        parts += (b'"attrs":', attrs_json)
    if len(parts) > 1:
        parts.append(b",")
    parts += (b'"time":"', format_time(time_ns), b'"}\n')
    return b"".join(parts)


class _Entry(msgspec.Struct):
    log: str = ""
    stream: str = ""
    time: str | None = None
    attrs: dict[str, str] | None = None


_decoder = msgspec.json.Decoder(_Entry)
_TRIM = b"\x00\r\n \t"


def _fix_text(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value)


def _slow_decode(raw: bytes) -> _Entry | None:
    """What Go accepts but msgspec does not: invalid UTF-8, lone surrogate escapes."""
    try:
        obj = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    log = obj.get("log", "")
    stream = obj.get("stream", "")
    when = obj.get("time")
    attrs = obj.get("attrs")
    if not isinstance(log, str) or not isinstance(stream, str):
        return None
    if when is not None and not isinstance(when, str):
        return None
    if attrs is not None and not (
        isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())
    ):
        return None
    return _Entry(
        log=_fix_text(log),
        stream=_fix_text(stream),
        time=when,
        attrs={_fix_text(k): _fix_text(v) for k, v in attrs.items()} if attrs else None,
    )


_block_decoder = msgspec.json.Decoder(list[_Entry])


def decode_entries(lines: list[bytes]) -> list[LogMessage]:
    """``decode_entry`` of each of *lines*, in one decoder call when they are all well
    formed (the usual case: a file berthd wrote); a block with a bad line goes one by one."""
    try:
        entries = _block_decoder.decode(b"[" + b",".join([r for r in lines if r]) + b"]")
    except msgspec.DecodeError:
        return [m for m in map(decode_entry, lines) if m is not None]
    return [m for m in map(_message, entries) if m is not None]


def decode_entry(raw: bytes) -> LogMessage | None:
    """Decode one json-file line (newline optional); None for a blank or corrupt line."""
    raw = raw.strip(_TRIM)
    if not raw:
        return None
    try:
        entry: _Entry | None = _decoder.decode(raw)
    except msgspec.DecodeError:
        entry = _slow_decode(raw)
    return None if entry is None else _message(entry)


def _message(entry: _Entry) -> LogMessage | None:
    """The message of a decoded line; None when its time is not a time."""
    if entry.time is None:
        time_ns = _ZERO_NS
    else:
        try:
            time_ns = parse_time(entry.time)
        except ValueError:
            return None
    attrs = tuple(entry.attrs.items()) if entry.attrs else ()
    return LogMessage(entry.stream, entry.log.encode("utf-8"), time_ns, attrs)
