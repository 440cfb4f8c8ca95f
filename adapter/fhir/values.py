"""The one strict reader of FHIR primitive values at the edge: date, dateTime, instant, decimal.

Every FHIR time and number the adapter reads goes through here (resources from files and from the
EHR, the command line's ``--as-of``, the watch state's watermarks), so that they all mean the same
thing:

- A time is a span. ``2026``, ``2026-03`` and ``2026-03-02`` are partial dates: their span is the
  whole year, month or day at the site (the site's time zone); a dateTime with a time of day is a
  span of one instant. A dateTime without offset is taken at the site. Readers choose the edge
  they need: a collection time is the *start* (and needs a day), an evaluation clock the *end*
  (``--as-of 2026-03-02`` and ``--as-of 20260302`` are both the last second of that day).
- Strings are matched against the FHIR R4 regular expressions before anything is converted, so a
  value is either read whole or reported; nothing is guessed. A leap second (``:60``), which FHIR
  allows and Python cannot hold, is reported. Times outside :data:`EARLIEST`..:data:`LATEST` are
  reported too: years such as 0001 with an offset cannot even be moved to UTC, and no clinical
  record is dated there.
- Numbers are :class:`decimal.Decimal`, read from JSON numbers or strings of the FHIR decimal
  grammar, finite, and bounded in magnitude (:data:`MAX_MAGNITUDE`) and in length, so that a
  ``1e999999`` or a thousand-digit integer is an input problem in microseconds, never a hang or an
  ``OverflowError`` later. Clinical bounds (the longest days' supply) are data in ``mappings/``.

Pure: no I/O. Errors are :class:`ValueProblem` (in the one error tree) naming the FHIR path;
they never quote the value (it may belong to a person).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from adapter.errors import UnprocessableError

Precision = Literal["year", "month", "day", "time"]

#: The span of times the adapter reads. Outside it a time is reported, not read: no clinical
#: record is dated there, and every interval the rules add stays representable inside it.
EARLIEST = datetime(1800, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

#: No quantity a clinic reports reaches this (FHIR decimals carry at most 18 digits of precision).
MAX_MAGNITUDE = Decimal(10) ** 18
#: Longest decimal string read; longer ones are reported before any conversion.
MAX_NUMBER_LENGTH = 64

# FHIR R4 primitive types (https://hl7.org/fhir/R4/datatypes.html), with named groups.
_YEAR = r"(?P<year>[0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(?P<month>0[1-9]|1[0-2])"
_DAY = r"(?P<day>0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = (
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9]|60)"
    r"(?P<fraction>\.[0-9]{1,9})?"
)
_OFFSET = r"(?P<offset>Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE_RE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?")
_DATETIME_RE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_OFFSET}?)?)?)?")
_INSTANT_RE = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_OFFSET}")
# The command line's evaluation clock also takes ISO 8601 basic dates and times without seconds.
_BASIC_DATE_RE = re.compile(r"(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})")
_CLOCK_RE = re.compile(
    rf"{_YEAR}-{_MONTH}-{_DAY}[T ](?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9])"
    rf"(:(?P<second>[0-5][0-9]|60)(?P<fraction>\.[0-9]{{1,9}})?)?{_OFFSET}?"
)
_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")

Kind = Literal["date", "dateTime", "instant"]
_PATTERNS = {"date": _DATE_RE, "dateTime": _DATETIME_RE, "instant": _INSTANT_RE}


class ValueProblem(UnprocessableError, ValueError):
    """A FHIR value cannot be read; ``path`` is the FHIR path of the offending element.

    In batch and watch it is an input problem (reported, the rest decided); a service answering
    a pushed resource maps it (kind `unprocessable`) to 422 with the path as `expression`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message, where=path, expression=(path,))
        self.path = path


@dataclass(frozen=True)
class Moment:
    """A FHIR time read: its span, as aware datetimes (``end`` is the span's last microsecond;
    equal to ``start`` for a time of day)."""

    start: datetime
    end: datetime
    precision: Precision

    @property
    def has_day(self) -> bool:
        return self.precision in ("day", "time")


def _zone(offset: str | None, site_tz: tzinfo) -> tzinfo:
    if offset is None:
        return site_tz
    if offset == "Z":
        return UTC
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _bounded(moment: datetime, path: str) -> datetime:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueProblem(path, f"outside the years {EARLIEST.year}..{LATEST.year - 1}")
    return moment


def _from_match(match: re.Match[str], path: str, site_tz: tzinfo) -> Moment:
    groups = match.groupdict()
    year = int(groups["year"])
    if not EARLIEST.year <= year < LATEST.year:
        raise ValueProblem(path, f"outside the years {EARLIEST.year}..{LATEST.year - 1}")
    month = int(groups["month"]) if groups.get("month") else None
    day = int(groups["day"]) if groups.get("day") else None
    hour = groups.get("hour")
    zone = _zone(groups.get("offset"), site_tz)
    try:
        if hour is not None:
            if groups.get("second") == "60":
                raise ValueProblem(path, "a leap second (:60) cannot be read")
            fraction = (groups.get("fraction") or ".")[1:]
            micro = int((fraction + "000000")[:6]) if fraction else 0
            moment = datetime(
                year,
                month or 1,
                day or 1,
                int(hour),
                int(groups["minute"]),
                int(groups.get("second") or 0),
                micro,
                tzinfo=zone,
            )
            _bounded(moment, path)
            return Moment(moment, moment, "time")
        if day is not None and month is not None:
            first = date(year, month, day)
            after = first + timedelta(days=1)
            precision: Precision = "day"
        elif month is not None:
            first = date(year, month, 1)
            after = date(year + (month == 12), month % 12 + 1, 1)
            precision = "month"
        else:
            first, after = date(year, 1, 1), date(year + 1, 1, 1)
            precision = "year"
    except ValueError as error:  # 2026-02-30 and the like
        if isinstance(error, ValueProblem):
            raise
        raise ValueProblem(path, "not a calendar date") from error
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(after, time(), zone) - timedelta(microseconds=1)
    _bounded(start, path)
    _bounded(end, path)
    return Moment(start, end, precision)


#: Times read before (text, site zone, kind) -> Moment: the results of one draw share their
#: collection and issue times, so a large export reads each of them many times over. Only
#: successful reads are kept (a problem names its path); cleared when full, so it stays small.
_MOMENTS: dict[tuple[str, tzinfo, Kind], Moment] = {}
_MOMENTS_MAX = 4096


def read_moment(raw: object, path: str, site_tz: tzinfo, kind: Kind = "dateTime") -> Moment:
    """A FHIR date / dateTime / instant as its span; :class:`ValueProblem` if it cannot be read."""
    if not isinstance(raw, str):
        raise ValueProblem(path, f"expected a {kind} string, got a {type(raw).__name__}")
    key = (raw, site_tz, kind)
    known = _MOMENTS.get(key)
    if known is not None:
        return known
    moment = _common_time(raw) if kind != "date" else None
    if moment is None:
        moment = _read_moment(raw, path, site_tz, kind)
    if len(_MOMENTS) >= _MOMENTS_MAX:
        _MOMENTS.clear()
    _MOMENTS[key] = moment
    return moment


#: The shape nearly every server writes (seconds, then Z or an offset: "2026-03-02T08:46:00Z",
#: "2026-03-02T08:46:00+01:00"), a subset of the dateTime and instant grammars matched without
#: their alternations. A draw's results are issued seconds apart, so the cache above rarely
#: answers for `issued`: this path reads them at a quarter of the general path's cost.
_COMMON_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])"
)


def _common_time(raw: str) -> Moment | None:
    """`raw` read when it has the common shape, well inside the bounds; None otherwise (the
    general path then reads it, or names what is wrong: a 13th month, a year 0000)."""
    if len(raw) not in (20, 25) or _COMMON_TIME_RE.fullmatch(raw) is None:
        return None
    return _iso_time(raw, UTC)  # the shape always has an offset: the zone is never used


def _read_moment(raw: str, path: str, site_tz: tzinfo, kind: Kind) -> Moment:
    if len(raw) > 40:
        raise ValueProblem(path, f"not a FHIR {kind}")
    match = _PATTERNS[kind].fullmatch(raw)
    if match is None:
        raise ValueProblem(path, f"not a FHIR {kind}")
    if kind != "date" and match.group("hour") is not None:
        fast = _fast_time(raw, match, site_tz)
        if fast is not None:
            return fast
    return _from_match(match, path, site_tz)


def _fast_time(raw: str, match: re.Match[str], site_tz: tzinfo) -> Moment | None:
    """The common case, a full date-time well inside the bounds, read by the standard library
    (the grammar has been matched: it reads the same thing) at a fraction of the cost; None to
    take the general path (edge years, leap seconds, sub-microsecond digits)."""
    fraction = match.group("fraction")
    if match.group("second") == "60" or (fraction is not None and len(fraction) > 7):
        return None
    return _iso_time(raw, site_tz)


def _iso_time(raw: str, site_tz: tzinfo) -> Moment | None:
    """A date-time the grammar allows, read by the standard library; None for what only the
    general path reads right (the edge years, an impossible date such as 2026-02-30)."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if not EARLIEST.year < moment.year < LATEST.year - 1:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=site_tz)
    return Moment(moment, moment, "time")


def read_datetime(raw: object, path: str, site_tz: tzinfo, kind: Kind = "dateTime") -> datetime:
    """The start of a FHIR time precise at least to the day (a date alone: midnight at the site).
    A year or a month alone cannot place a collection, a dispense or an answer in time."""
    moment = read_moment(raw, path, site_tz, kind)
    if not moment.has_day:
        raise ValueProblem(path, "not precise to the day")
    return moment.start


def read_clock(raw: str, site_tz: tzinfo) -> datetime:
    """The evaluation clock (``--as-of``): the end of the span named, to the second.

    A date alone, extended (``2026-03-02``) or basic (``20260302``), a month or a year means its
    last second at the site; a date-time (seconds optional) without offset is taken at the site.
    """
    text = raw.strip()
    basic = _BASIC_DATE_RE.fullmatch(text)
    if basic:
        text = f"{basic['year']}-{basic['month']}-{basic['day']}"
    clock = _CLOCK_RE.fullmatch(text)
    if clock:
        moment = _from_match(clock, "--as-of", site_tz)
    else:
        match = _DATE_RE.fullmatch(text)
        if match is None:
            raise ValueProblem("--as-of", "not an ISO 8601 date or date-time")
        moment = _from_match(match, "--as-of", site_tz)
    return moment.end.replace(microsecond=0)


def read_instant_or_none(raw: object) -> datetime | None:
    """A server's raw ``meta.lastUpdated`` (an instant) for ordering, or None if it is not one."""
    try:
        return read_moment(raw, "meta.lastUpdated", UTC, "instant").start
    except ValueProblem:
        return None


def read_decimal(
    raw: object,
    path: str,
    *,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
) -> Decimal:
    """A FHIR decimal as a finite, bounded :class:`Decimal` (a JSON number, or a string of the
    decimal grammar). Bounds are inclusive; the magnitude is always below :data:`MAX_MAGNITUDE`."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise ValueProblem(path, f"expected a number, got a {type(raw).__name__}")
    if isinstance(raw, int):
        if not -MAX_MAGNITUDE < raw < MAX_MAGNITUDE:  # before str(): huge ints are slow
            raise ValueProblem(path, "out of range")
        value = Decimal(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if len(text) > MAX_NUMBER_LENGTH or not _DECIMAL_RE.fullmatch(text):
            raise ValueProblem(path, "expected a number")
        try:
            value = Decimal(text)
        except InvalidOperation as error:  # pragma: no cover - the grammar was matched
            raise ValueProblem(path, "expected a number") from error
    else:
        # A parser's float by its shortest repr: the digits the source wrote, no rounding.
        value = Decimal(repr(raw)) if isinstance(raw, float) else raw
    if not value.is_finite():
        raise ValueProblem(path, "expected a finite number")
    if value.adjusted() >= 18 or not -MAX_MAGNITUDE < value < MAX_MAGNITUDE:
        raise ValueProblem(path, "out of range")
    if minimum is not None and value < minimum:
        raise ValueProblem(path, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueProblem(path, f"must be at most {maximum}")
    return value


def read_whole_number(raw: object, path: str, *, minimum: int, maximum: int) -> int:
    """A count such as a days' supply, rounded up (a part day is a day), within the bounds."""
    value = read_decimal(raw, path, minimum=Decimal(minimum), maximum=Decimal(maximum))
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


# ---------------------------------------------------------------- shapes


def as_list(node: object, path: str) -> list[Any]:
    """An optional repeating element: absent -> [], a list as is, anything else reported."""
    if node is None:
        return []
    if type(node) is list:
        return node
    raise ValueProblem(path, f"expected a list, got a {type(node).__name__}")


def as_object(node: object, path: str) -> dict[str, Any] | None:
    """An optional complex element: absent -> None, an object as is, anything else reported."""
    if node is None:
        return None
    if isinstance(node, dict):
        return node
    raise ValueProblem(path, f"expected an object, got a {type(node).__name__}")


def as_string(node: object, path: str) -> str | None:
    """An optional primitive string: absent -> None, a string as is, anything else reported."""
    if node is None:
        return None
    if isinstance(node, str):
        return node
    raise ValueProblem(path, f"expected a string, got a {type(node).__name__}")


def too_deep(node: object, limit: int) -> bool:
    """Whether JSON `node` nests deeper than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(node, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if type(child) in _NESTED)
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if type(child) in _NESTED)
    return False


_NESTED = (dict, list)
