"""Date arithmetic in the site's time zone: calendar months, intervals, grace."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta, tzinfo

from adapter.core.protocol import Interval


def add_months(day: date, months: int) -> date:
    """Same day of month ``months`` later, clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    try:  # the common case: that month has the day (the month's length costs more to look up)
        return date(year, month, day.day)
    except ValueError:
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_interval(day: date, interval: Interval) -> date:
    return add_months(day, interval.months) + timedelta(days=interval.days)


def months_between(start: date, day: date) -> int:
    """Whole calendar months from ``start`` to ``day`` (``day`` >= ``start``)."""
    months = (day.year - start.year) * 12 + (day.month - start.month)
    if add_months(start, months) > day:
        months -= 1
    return max(months, 0)


def local_date(moment: datetime, site_tz: tzinfo) -> date:
    return moment.astimezone(site_tz).date()
