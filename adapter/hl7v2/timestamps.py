"""HL7 v2 DTM/TS -> FHIR dateTime / instant strings, keeping the precision the sender gave.

``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`` (v2.5 2A.3.22; TS component 2, the
deprecated degree of precision, is ignored). FHIR needs an offset on any time: a v2 time
without one is the sender's local time, taken in the site's time zone (``evaluation.site_tz``,
with its daylight-saving rules at that moment). A date alone stays a date (midnight at the site
for the reader); a year or a month alone stays so, and the reader reports it as not precise to
the day. Pure.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache

_DTM = re.compile(
    r"(?P<year>\d{4})(?:(?P<month>\d{2})(?:(?P<day>\d{2})(?:(?P<hour>\d{2})(?:(?P<minute>\d{2})"
    r"(?:(?P<second>\d{2})(?P<fraction>\.\d{1,4})?)?)?)?)?)?(?P<offset>[+-]\d{4})?"
)


def _offset(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59:
        raise ValueError("offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _iso_offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}:{total % 60:02d}"


@lru_cache(maxsize=4096)
def fhir_datetime(raw: str, site_tz: tzinfo) -> str:
    """A FHIR dateTime for a v2 DTM; ValueError when it is not one (the caller names the
    field)."""
    match = _DTM.fullmatch(raw.strip())
    if match is None:
        raise ValueError("not an HL7 v2 date/time")
    parts = match.groupdict()
    year = parts["year"]
    if parts["month"] is None:
        return year
    datetime(int(year), int(parts["month"]), 1)  # range check
    if parts["day"] is None:
        return f"{year}-{parts['month']}"
    date = datetime(int(year), int(parts["month"]), int(parts["day"]))
    if parts["hour"] is None:
        return date.strftime("%Y-%m-%d")
    moment = date.replace(
        hour=int(parts["hour"]),
        minute=int(parts["minute"] or 0),
        second=int(parts["second"] or 0),
    )
    zone: tzinfo = _offset(parts["offset"]) if parts["offset"] else site_tz
    moment = moment.replace(tzinfo=zone)
    fraction = parts["fraction"] or ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + _iso_offset(moment)


def fhir_instant(raw: str, site_tz: tzinfo) -> str | None:
    """A FHIR instant (seconds and offset required) when the v2 time is precise to the minute
    at least (seconds then 00); None when it is less precise. ValueError when malformed."""
    text = fhir_datetime(raw, site_tz)
    return text if "T" in text else None


def v2_timestamp(moment: datetime) -> str:
    """An aware datetime as a v2 DTM to the second with its offset (ACK MSH-7)."""
    offset = _iso_offset(moment).replace(":", "")
    return moment.strftime("%Y%m%d%H%M%S") + offset
