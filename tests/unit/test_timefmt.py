"""berth.utils.timefmt: Go's RFC 3339 formatting, timestamps, durations, HumanDuration."""

from __future__ import annotations

import calendar

import pytest

from berth.utils.timefmt import (
    ZERO_TIME,
    format_rfc3339_nano,
    human_duration,
    parse_go_duration,
    parse_rfc3339,
    parse_timestamp,
)

SEC = 1_000_000_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

# 2024-01-02T03:04:05Z, computed independently of the module under test.
T0 = calendar.timegm((2024, 1, 2, 3, 4, 5)) * SEC


# -- format_rfc3339_nano ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (T0, "2024-01-02T03:04:05Z"),
        (T0 + 500_000_000, "2024-01-02T03:04:05.5Z"),
        (T0 + 120_000_000, "2024-01-02T03:04:05.12Z"),
        (T0 + 1, "2024-01-02T03:04:05.000000001Z"),
        (T0 + 123_456_789, "2024-01-02T03:04:05.123456789Z"),
        (T0 + 100_000, "2024-01-02T03:04:05.0001Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_rfc3339_nano(ns: int, expected: str) -> None:
    assert format_rfc3339_nano(ns) == expected


def test_format_go_zero_time_has_four_digit_year() -> None:
    zero = parse_rfc3339(ZERO_TIME)
    assert zero == -62135596800 * SEC
    assert format_rfc3339_nano(zero) == "0001-01-01T00:00:00Z"


def test_format_small_years_are_zero_padded() -> None:
    ns = parse_rfc3339("0999-03-04T05:06:07Z")
    assert format_rfc3339_nano(ns) == "0999-03-04T05:06:07Z"


# -- parse_rfc3339 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-01-02T03:04:05Z", T0),
        ("2024-01-02t03:04:05z", T0),
        ("2024-01-02T03:04:05.5Z", T0 + 500_000_000),
        ("2024-01-02T03:04:05.000000001Z", T0 + 1),
        ("2024-01-02T03:04:05.123456789Z", T0 + 123_456_789),
        ("2024-01-02T05:04:05+02:00", T0),
        ("2024-01-02T05:34:05.25+02:30", T0 + 250_000_000),
        ("2024-01-01T22:04:05-05:00", T0),
        ("2024-01-02T03:04:05+00:00", T0),
    ],
)
def test_parse_rfc3339(value: str, expected: int) -> None:
    assert parse_rfc3339(value) == expected


def test_parse_rfc3339_offset_before_year_one_does_not_overflow() -> None:
    assert parse_rfc3339("0001-01-01T00:00:00+01:00") == (-62135596800 - 3600) * SEC


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2024-01-02",
        "2024-01-02T03:04:05",  # no zone
        "2024-01-02 03:04:05Z",
        "2024-01-02T03:04:05.1234567891Z",  # ten fraction digits
        "2024-13-02T03:04:05Z",  # month 13
        "2024-01-02T03:04:05+0200",
        "2024-01-02T03:04:05Z\n",
        "x2024-01-02T03:04:05Z",
    ],
)
def test_parse_rfc3339_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(value)


@pytest.mark.parametrize(
    "ns", [0, 1, T0, T0 + 999_999_999, T0 + 10, -62135596800 * SEC, 4102444800 * SEC + 7]
)
def test_format_then_parse_round_trips(ns: int) -> None:
    assert parse_rfc3339(format_rfc3339_nano(ns)) == ns


# -- parse_timestamp ------------------------------------------------------------


NOW = T0 + 777


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("1704164645", T0),
        ("1704164645.5", T0 + 500_000_000),
        ("1704164645.000000001", T0 + 1),
        ("  1704164645  ", T0),
        ("10m", NOW - 10 * MIN),
        ("1h30m", NOW - 90 * MIN),
        ("90s", NOW - 90 * SEC),
        ("1.5h", NOW - 90 * MIN),
        ("2024-01-02", T0 - (3 * HOUR + 4 * MIN + 5 * SEC)),
        ("2024-01-02T03:04", T0 - 5 * SEC),
        ("2024-01-02T03:04:05", T0),
        ("2024-01-02T03:04:05Z", T0),
        ("2024-01-02T05:04:05.5+02:00", T0 + 500_000_000),
    ],
)
def test_parse_timestamp(value: str, expected: int) -> None:
    assert parse_timestamp(value, now=NOW) == expected


def test_parse_timestamp_duration_is_relative_to_now() -> None:
    assert parse_timestamp("1h", now=10 * HOUR) == 9 * HOUR
    assert parse_timestamp("1h", now=20 * HOUR) == 19 * HOUR


@pytest.mark.parametrize("value", ["", "   ", "yesterday", "10x", "2024-01-02T03", "-5"])
def test_parse_timestamp_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value, now=NOW)


# -- parse_go_duration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("+0", 0),
        ("-0", 0),
        ("1ns", 1),
        ("1us", 1_000),
        ("1µs", 1_000),  # micro sign U+00B5
        ("1μs", 1_000),  # Greek mu U+03BC
        ("250ms", 250_000_000),
        ("30s", 30 * SEC),
        ("10m", 10 * MIN),
        ("2h", 2 * HOUR),
        ("1h30m", 90 * MIN),
        ("1h2m3s4ms5us6ns", HOUR + 2 * MIN + 3 * SEC + 4_000_000 + 5_000 + 6),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", SEC),
        ("-1.5h", -90 * MIN),
        ("+3m", 3 * MIN),
        # float arithmetic would give 32399999999 here
        ("0.009h", 32_400_000_000),
        ("0.001ms", 1_000),
        ("1.000000001s", 1_000_000_001),
        ("2562047h47m16.854775807s", (1 << 63) - 1),
    ],
)
def test_parse_go_duration(value: str, expected: int) -> None:
    assert parse_go_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "-", "1", "10", "s", ".s", "1x", "1 s", "1h-5m", "h1", "1hh", "2562047h47m16.854775808s"],
)
def test_parse_go_duration_rejects(value: str) -> None:
    assert parse_go_duration(value) is None


# -- human_duration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "expected"),
    [
        (0, "Less than a second"),
        (999_999_999, "Less than a second"),
        (SEC, "1 second"),
        (SEC + 999_999_999, "1 second"),
        (2 * SEC, "2 seconds"),
        (59 * SEC, "59 seconds"),
        (59 * SEC + 999_999_999, "59 seconds"),
        (60 * SEC, "About a minute"),
        (119 * SEC, "About a minute"),
        (120 * SEC, "2 minutes"),
        (59 * MIN, "59 minutes"),
        (59 * MIN + 59 * SEC, "59 minutes"),
        (60 * MIN, "About an hour"),
        (89 * MIN, "About an hour"),  # hours are rounded: 1.48h -> 1
        (90 * MIN, "2 hours"),  # 1.5h rounds to 2
        (47 * HOUR, "47 hours"),
        (47 * HOUR + 29 * MIN, "47 hours"),
        (47 * HOUR + 30 * MIN, "2 days"),  # rounds to 48 hours
        (48 * HOUR, "2 days"),
        (13 * DAY, "13 days"),
        (14 * DAY, "2 weeks"),
        (59 * DAY, "8 weeks"),
        (60 * DAY, "2 months"),
        (364 * DAY, "12 months"),
        (729 * DAY, "24 months"),
        (730 * DAY, "2 years"),
        (3 * 365 * DAY, "3 years"),
        (10 * 365 * DAY + 5 * DAY, "10 years"),
    ],
)
def test_human_duration(ns: int, expected: str) -> None:
    assert human_duration(ns) == expected


def test_human_duration_years_use_unrounded_hours() -> None:
    # go-units: int(d.Hours())/24/365 for years, while the branch uses rounded hours.
    assert human_duration(2 * 365 * DAY - 20 * MIN) == "1 years"


def test_human_duration_negative_is_less_than_a_second() -> None:
    assert human_duration(-5 * SEC) == "Less than a second"
