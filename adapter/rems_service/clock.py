"""Instants on the wire and calendar-day arithmetic in the site's time zone."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from adapter.fhir.values import LATEST as VALUES_LATEST
from adapter.fhir.values import ValueProblem, read_moment

Clock = Callable[[], datetime]
"""Returns the current instant, timezone-aware. Injected so tests control time."""

# RFC 3339 demands an explicit offset; a naive timestamp would be read in an unknown zone.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Instants outside this range are refused: no REMS record predates it, and instants near year 1
# or 9999 overflow when moved between time zones.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = VALUES_LATEST  # the reader's own upper bound


def system_clock() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 date-time with offset; ValueError names the problem.

    The reading is the adapter's one reader of instants (:mod:`adapter.fhir.values`), within
    this service's own range."""
    if not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time with offset")
    try:
        instant = read_moment(text.upper(), "date-time", UTC, "instant").start.astimezone(UTC)
    except ValueProblem as exc:
        raise ValueError(exc.message) from exc
    if not EARLIEST <= instant < LATEST:
        raise ValueError(f"date-time outside {EARLIEST.year}..{LATEST.year - 1}")
    return instant


def is_instant(text: str) -> bool:
    try:
        parse_instant(text)
    except ValueError:
        return False
    return True


def is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def to_wire(instant: datetime) -> str:
    """UTC with fixed-width microseconds, so stored strings also sort chronologically in SQL."""
    utc = instant.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def require_aware(instant: datetime, where: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(
            f"{where} returned a naive datetime; the REMS clock must be timezone-aware"
        )
    return instant


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def days_between(earlier: datetime, later: datetime, zone: ZoneInfo) -> int:
    """Calendar days from `earlier` to `later` in `zone` (negative when `earlier` is later)."""
    return (local_date(later, zone) - local_date(earlier, zone)).days
