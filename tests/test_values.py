"""The one strict reader of FHIR times and numbers (adapter/fhir/values.py), at every edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.cli import UsageError, parse_as_of
from adapter.fhir import values
from adapter.fhir.values import ValueProblem
from adapter.watch.config import ConfigError
from adapter.watch.config import parse_as_of as watch_as_of
from adapter.watch.state import instant_of

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("raw", "precision", "start", "end"),
    [
        ("2026", "year", datetime(2026, 1, 1, tzinfo=NY), datetime(2027, 1, 1, tzinfo=NY)),
        ("2026-02", "month", datetime(2026, 2, 1, tzinfo=NY), datetime(2026, 3, 1, tzinfo=NY)),
        ("2026-12", "month", datetime(2026, 12, 1, tzinfo=NY), datetime(2027, 1, 1, tzinfo=NY)),
        ("2024-02-29", "day", datetime(2024, 2, 29, tzinfo=NY), datetime(2024, 3, 1, tzinfo=NY)),
    ],
)
def test_partial_dates_are_spans_at_the_site(raw, precision, start, end) -> None:
    moment = values.read_moment(raw, "x", NY)
    assert moment.precision == precision
    assert moment.start == start
    assert moment.end == end - timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-02T10:00:00Z", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        ("2026-03-02T10:00:00+14:00", datetime(2026, 3, 1, 20, tzinfo=UTC)),
        ("2026-03-02T10:00:00-14:00", datetime(2026, 3, 3, 0, tzinfo=UTC)),
        ("2026-03-02T10:00:00", datetime(2026, 3, 2, 10, tzinfo=NY)),
        ("2026-03-02T10:00:00.123456789Z", datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-02", datetime(2026, 3, 2, tzinfo=NY)),
    ],
)
def test_datetimes(raw: str, expected: datetime) -> None:
    assert values.read_datetime(raw, "x", NY) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0001-01-01T00:00:00+14:00", "outside the years"),
        ("0001-01-01", "outside the years"),
        ("9999-12-31T23:59:59-14:00", "outside the years"),
        ("1799-12-31T23:59:59Z", "outside the years"),
        ("3000-01-01", "outside the years"),
        ("2016-12-31T23:59:60Z", "leap second"),
        ("2026-02-30", "not a calendar date"),
        ("2026-02-29T10:00:00Z", "not a calendar date"),
        ("2026-13", "not a FHIR dateTime"),
        ("2026-03-02T24:00:00Z", "not a FHIR dateTime"),
        ("2026-03-02T10:00Z", "not a FHIR dateTime"),  # FHIR needs the seconds
        ("2026-03-02T10:00:00+15:00", "not a FHIR dateTime"),
        ("2026-03-02T10:00:00.1234567891Z", "not a FHIR dateTime"),
        ("20260302", "not a FHIR dateTime"),
        (" 2026-03-02", "not a FHIR dateTime"),
        ("", "not a FHIR dateTime"),
        ("2" * 100000, "not a FHIR dateTime"),
        (20260302, "expected a dateTime string, got a int"),
        (None, "got a NoneType"),
        (["2026-03-02"], "got a list"),
    ],
)
def test_unreadable_times_are_reported_with_the_path(raw: object, message: str) -> None:
    with pytest.raises(ValueProblem, match=message) as caught:
        values.read_datetime(raw, "Observation.effectiveDateTime", UTC)
    assert caught.value.path == "Observation.effectiveDateTime"
    if isinstance(raw, str) and len(raw) > 3:
        assert raw not in str(caught.value)  # values belong to a person: never quoted


@pytest.mark.parametrize("raw", ["2026", "2026-03"])
def test_a_collection_time_needs_a_day(raw: str) -> None:
    with pytest.raises(ValueProblem, match="not precise to the day"):
        values.read_datetime(raw, "x", UTC)


def test_an_instant_needs_time_and_offset() -> None:
    assert values.read_moment("2026-03-02T10:00:00Z", "x", UTC, "instant").precision == "time"
    for raw in ("2026-03-02", "2026-03-02T10:00:00"):
        with pytest.raises(ValueProblem):
            values.read_moment(raw, "x", UTC, "instant")


def test_a_date_element_takes_no_time() -> None:
    with pytest.raises(ValueProblem):
        values.read_moment("2026-03-02T10:00:00Z", "x", UTC, "date")


# ---------------------------------------------------------------- the evaluation clock


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-02", datetime(2026, 3, 2, 23, 59, 59, tzinfo=NY)),
        ("20260302", datetime(2026, 3, 2, 23, 59, 59, tzinfo=NY)),
        ("2026-03", datetime(2026, 3, 31, 23, 59, 59, tzinfo=NY)),
        ("2026", datetime(2026, 12, 31, 23, 59, 59, tzinfo=NY)),
        ("2026-03-02T10:00", datetime(2026, 3, 2, 10, tzinfo=NY)),
        ("2026-03-02T10:00:00", datetime(2026, 3, 2, 10, tzinfo=NY)),
        ("2026-03-02T10:00:00Z", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        ("2026-03-02 10:00:00+01:00", datetime(2026, 3, 2, 9, tzinfo=UTC)),
    ],
)
def test_as_of_means_the_same_on_every_command(raw: str, expected: datetime) -> None:
    assert parse_as_of(raw, NY) == expected
    assert watch_as_of(raw, NY) == expected
    assert values.read_clock(raw, NY) == expected


@pytest.mark.parametrize(
    "raw", ["2026-02-30", "0001-01-01T00:00:00+14:00", "yesterday", "2026-03-02T10:00:60Z", ""]
)
def test_as_of_that_cannot_be_read_is_a_usage_error(raw: str) -> None:
    with pytest.raises(UsageError, match="--as-of"):
        parse_as_of(raw, UTC)
    with pytest.raises(ConfigError):
        watch_as_of(raw, UTC)


def test_watermarks_are_instants_or_nothing() -> None:
    assert instant_of("2026-03-02T10:00:00.5+01:00") == datetime(
        2026, 3, 2, 10, 0, 0, 500000, tzinfo=timezone(timedelta(hours=1))
    )
    assert instant_of("2026-03-02") is None
    assert instant_of("0001-01-01T00:00:00+14:00") is None


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, Decimal(1)),
        (1.5, Decimal("1.5")),
        ("1.5", Decimal("1.5")),
        ("-0", Decimal(0)),
        (999.9, Decimal("999.9")),
        ("1e3", Decimal(1000)),
        (Decimal("2.50"), Decimal("2.50")),
    ],
)
def test_numbers_are_decimals(raw: object, expected: Decimal) -> None:
    value = values.read_decimal(raw, "x")
    assert isinstance(value, Decimal)
    assert value == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1e999999", "out of range"),
        ("-1e999999", "out of range"),
        ("1" * 5000, "expected a number"),
        (10**18, "out of range"),
        (10**4000, "out of range"),
        (1e308, "out of range"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("NaN", "expected a number"),
        ("Infinity", "expected a number"),
        ("0x10", "expected a number"),
        ("1,5", "expected a number"),
        (True, "got a bool"),
        (None, "got a NoneType"),
        ([1], "got a list"),
        ({"value": 1}, "got a dict"),
    ],
)
def test_numbers_that_cannot_be_read(raw: object, message: str) -> None:
    with pytest.raises(ValueProblem, match=message):
        values.read_decimal(raw, "Observation.valueQuantity.value")


def test_tiny_numbers_are_read_exactly() -> None:
    assert values.read_decimal("1e-300", "x") == Decimal("1e-300")
    assert values.read_decimal(5e-324, "x") > 0


def test_whole_numbers_round_up_within_bounds() -> None:
    assert values.read_whole_number(6.2, "d", minimum=0, maximum=366) == 7
    assert values.read_whole_number("366", "d", minimum=0, maximum=366) == 366
    for raw in (367, 1e9, -1, "1e999999"):
        with pytest.raises(ValueProblem):
            values.read_whole_number(raw, "d", minimum=0, maximum=366)


# ---------------------------------------------------------------- shapes


def test_shapes() -> None:
    assert values.as_list(None, "x") == []
    assert values.as_list([1], "x") == [1]
    with pytest.raises(ValueProblem, match="x: expected a list, got a str"):
        values.as_list("abc", "x")
    with pytest.raises(ValueProblem, match="expected an object"):
        values.as_object([], "x")
    with pytest.raises(ValueProblem, match="expected a string"):
        values.as_string(1, "x")
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    assert values.too_deep(deep, 100)
    assert not values.too_deep({"a": [{"b": 1}]}, 3)


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_string_is_read_or_reported(raw: str) -> None:
    for kind in ("date", "dateTime", "instant"):
        try:
            moment = values.read_moment(raw, "x", NY, kind)  # type: ignore[arg-type]
        except ValueProblem:
            continue
        assert moment.start <= moment.end
        assert values.EARLIEST <= moment.start.astimezone(UTC) < values.LATEST


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1800, 1, 2), max_value=datetime(2999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60).filter(lambda m: m % 15 == 0),
)
def test_written_instants_read_back(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=zone)
    text = aware.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):
        text = text[:-6] + "Z"
    assert values.read_moment(text, "x", UTC, "instant").start == aware


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.decimals(allow_nan=True, allow_infinity=True),
        st.text(max_size=80),
        st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,9})?", fullmatch=True),
    )
)
def test_any_number_is_read_or_reported(raw: object) -> None:
    try:
        value = values.read_decimal(raw, "x")
    except ValueProblem:
        return
    assert value.is_finite()
    assert abs(value) < values.MAX_MAGNITUDE


# The common shape's shortcut (seconds, then Z or an offset) reads exactly what the grammar reads.

_TIME_CHARS = st.sampled_from("0123456789-:TZ+.")


def _common_shaped() -> st.SearchStrategy[str]:
    digits = st.text("0123456789", min_size=2, max_size=2)
    zones = st.one_of(
        st.just("Z"),
        st.tuples(st.sampled_from("+-"), digits, digits).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
    )
    return st.tuples(
        st.text("0123456789", min_size=4, max_size=4), digits, digits, digits, digits, digits, zones
    ).map(lambda t: f"{t[0]}-{t[1]}-{t[2]}T{t[3]}:{t[4]}:{t[5]}{t[6]}")


def _general(raw: str, kind: str) -> object:
    try:
        return values._read_moment(raw, "x", NY, kind)  # type: ignore[arg-type]
    except ValueProblem as problem:
        return ("problem", problem.path)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_common_shaped(), st.text(_TIME_CHARS, max_size=30)))
def test_the_common_shape_shortcut_reads_what_the_grammar_reads(raw: str) -> None:
    shortcut = values._common_time(raw)
    for kind in ("dateTime", "instant"):
        general = _general(raw, kind)
        if shortcut is not None:
            assert general == shortcut, (raw, kind)
            assert general.start.utcoffset() == shortcut.start.utcoffset()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "taken"),
    [
        ("2026-03-02T08:46:00Z", True),
        ("2026-03-02T08:46:00+05:30", True),
        ("2026-03-02T08:46:00-13:59", True),
        ("2026-03-02T08:46:00+14:00", False),  # valid, and left to the grammar
        ("2026-03-02T08:46:00+15:00", False),
        ("2026-13-02T08:46:00Z", False),
        ("2026-02-30T08:46:00Z", False),
        ("2026-03-02T24:00:00Z", False),
        ("2026-03-02T23:59:60Z", False),  # a leap second: the grammar's path
        ("2026-03-02T08:46:00.5Z", False),
        ("0000-03-02T08:46:00Z", False),
        ("1800-01-01T00:00:00Z", False),  # the edge years: the grammar's path checks the bounds
        ("2026-03-02T08:46Z", False),
        ("2026-03-02 08:46:00Z", False),
    ],
)
def test_the_common_shape_shortcut_takes_only_that_shape(raw: str, taken: bool) -> None:
    assert (values._common_time(raw) is not None) is taken
    if taken:
        assert values.read_moment(raw, "x", NY, "instant") == values._read_moment(
            raw, "x", NY, "instant"
        )
