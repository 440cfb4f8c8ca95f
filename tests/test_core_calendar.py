"""Calendar months (adapter/core/calendar.py) and the state copies of the replay
(adapter/core/model.evolve): the fast paths give what the plain definitions give."""

from __future__ import annotations

import calendar
import dataclasses
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core.calendar import add_months
from adapter.core.model import evolve
from adapter.core.monitoring import Excursion, TherapyState


def _plain_add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # a leap year
        (date(2100, 1, 29), 1, date(2100, 2, 28)),  # not a leap year (century)
        (date(2000, 1, 30), 1, date(2000, 2, 29)),  # a leap year (four centuries)
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 3, 28), -1, date(2026, 2, 28)),
        (date(2026, 5, 31), -3, date(2026, 2, 28)),
        (date(2026, 2, 28), 12, date(2027, 2, 28)),
    ],
)
def test_a_month_later_is_clamped_to_the_month_end(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)), st.integers(-60, 60))
def test_add_months_is_the_plain_definition(day: date, months: int) -> None:
    assert add_months(day, months) == _plain_add_months(day, months)


def test_evolve_is_replace() -> None:
    state = TherapyState(course_start=date(2026, 1, 1), supply_end=date(2026, 1, 8))
    changed = evolve(state, supply_end=date(2026, 1, 15), interrupted_on=date(2026, 1, 9))
    assert changed == dataclasses.replace(
        state, supply_end=date(2026, 1, 15), interrupted_on=date(2026, 1, 9)
    )
    assert state.supply_end == date(2026, 1, 8)  # the original is untouched
    excursion = Excursion("mild", True, False)
    assert evolve(excursion, interrupted=False) == Excursion("mild", False, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.supply_end = None  # type: ignore[misc]


def test_evolve_refuses_a_field_that_does_not_exist() -> None:
    with pytest.raises(TypeError, match="no field 'supply_ends'"):
        evolve(TherapyState(), supply_ends=date(2026, 1, 1))
