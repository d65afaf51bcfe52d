"""Times as the Engine API writes them: Go's RFC 3339 with nanoseconds.

berth keeps times as integer nanoseconds since the epoch so nothing is lost
to float rounding; Go's zero time is written as ``0001-01-01T00:00:00Z``.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta

ZERO_TIME = "0001-01-01T00:00:00Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ns() -> int:
    return time.time_ns()


def format_rfc3339_nano(ns: int) -> str:
    """Format like Go's ``time.RFC3339Nano`` in UTC (trailing zeros trimmed)."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = _format_second(secs)
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def format_rfc3339(ns: int) -> str:
    """Go's ``time.RFC3339`` in UTC: to the second."""
    return _format_second(ns // 1_000_000_000) + "Z"


@functools.lru_cache(maxsize=256)
def _format_second(secs: int) -> str:
    """The date and time to the second: log lines come many to a second."""
    dt = _EPOCH + timedelta(seconds=secs)
    # Not strftime: glibc writes year 1 (Go's zero time) as "1", not "0001".
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
)


def parse_rfc3339(value: str) -> int:
    """Parse an RFC 3339 time (any precision, any offset) to epoch nanoseconds."""
    m = _RFC3339.match(value)
    if not m:
        raise ValueError(f"invalid RFC 3339 time {value!r}")
    year, mon, day, hh, mm, ss = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    tz = m.group(8)
    delta = datetime(year, mon, day, hh, mm, ss, tzinfo=UTC) - _EPOCH
    secs = delta.days * 86400 + delta.seconds
    if tz not in ("Z", "z"):
        # In seconds, not datetimes: 0001-01-01T00:00:00+01:00 is before year 1.
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return secs * 1_000_000_000 + nanos


def parse_timestamp(value: str, now: int | None = None) -> int:
    """Parse a filter/``--since`` style time: unix seconds[.nanos], RFC 3339, or a duration.

    Mirrors the formats moby's ``timetypes.GetTimestamp`` accepts; relative
    durations such as ``10m`` or ``1h30m`` are taken back from *now*.
    """
    value = value.strip()
    if not value:
        raise ValueError("empty time value")
    if re.fullmatch(r"[0-9]+(\.[0-9]{1,9})?", value):
        secs, _, frac = value.partition(".")
        return int(secs) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    dur = parse_go_duration(value)
    if dur is not None:
        return (now if now is not None else now_ns()) - dur
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            dt = datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        delta = dt - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000
    return parse_rfc3339(value)


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION = (1 << 63) - 1


def parse_go_duration(value: str) -> int | None:
    """Parse a Go duration string (``1h30m``, ``250ms``) to nanoseconds, or None."""
    s = value
    sign = 1
    if s[:1] in ("+", "-"):  # not `in "+-"`: "" is in every string
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    pos = 0
    total = 0
    if not s:
        return None
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or not (m.group(1) or m.group(2)):
            return None
        # Integer arithmetic: float would make "0.009h" one nanosecond short.
        unit = _DURATION_UNITS[m.group(3)]
        whole, frac = m.group(1) or "0", m.group(2) or ""
        total += int(whole) * unit
        if frac:
            total += int(frac) * unit // 10 ** len(frac)
        pos = m.end()
    if total > _MAX_DURATION:
        return None
    return sign * total


def human_duration(ns: int) -> str:
    """go-units ``HumanDuration``: how ``docker ps`` says how long ago."""
    seconds = int(ns / 1_000_000_000)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(ns / 60_000_000_000)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(ns / 3_600_000_000_000 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(ns / 3_600_000_000_000) // 24 // 365} years"
