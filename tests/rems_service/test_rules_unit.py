"""The pure rule functions, at their boundaries, without HTTP."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapter.rems_service.config import load_rules
from adapter.rems_service.rules import (
    PatientState,
    discharge_limit_days,
    overrides_in_window,
    psf_current,
)

NOW = datetime(2022, 6, 1, 12, 0, tzinfo=UTC)
RULES = load_rules()


def _patient(last_psf: datetime) -> PatientState:
    return PatientState("RP00000001", False, False, "continue", "monthly", last_psf)


@pytest.mark.parametrize(("days_ago", "counted"), [(0, 1), (364, 1), (365, 0), (-1, 0)])
def test_rolling_override_window(days_ago: int, counted: int) -> None:
    assert overrides_in_window([NOW - timedelta(days=days_ago)], NOW, RULES) == counted


def test_windows_count_calendar_days_in_the_site_zone() -> None:
    new_york = dataclasses.replace(RULES, time_zone=ZoneInfo("America/New_York"))
    psf_completed = datetime(2022, 4, 24, 12, 0, tzinfo=UTC)  # April 24 in both zones
    request = datetime(2022, 6, 1, 3, 30, tzinfo=UTC)  # June 1 in UTC, still May 31 in New York

    assert psf_current(_patient(psf_completed), request, RULES) is False  # 38 days in UTC
    assert psf_current(_patient(psf_completed), request, new_york) is True  # 37 days in New York


def test_discharge_limit_can_follow_the_monitoring_frequency() -> None:
    relaxed = dataclasses.replace(RULES, discharge_mode="monitoring-frequency")
    inpatient = frozenset({"inpatient"})

    assert discharge_limit_days(inpatient, "discharge", "monthly", RULES) == 7
    assert discharge_limit_days(inpatient, "discharge", "monthly", relaxed) == 30
    assert discharge_limit_days(inpatient, "discharge", "weekly", relaxed) == 7
    assert (
        discharge_limit_days(frozenset({"inpatient", "outpatient"}), "discharge", "weekly", RULES)
        is None
    )
    assert discharge_limit_days(inpatient, "inpatient", "weekly", RULES) is None
