"""The demo patients: one function per clinical scenario, each with its hand-derived outcome.

Every scenario writes months of clozapine history with :class:`DemoPatient` and states, next to
the data, what the adapter must conclude at :data:`DEMO_AS_OF`. The expected values are worked
out by hand from ``clinical-rules.md`` (sections 1, 2 and 4) and ``interfaces.md`` section 3; they
are deliberately NOT computed by code, so they can check the implementation. The ``readings``
of a patient name every place where the spec left a choice and which reading the value assumes.

Fixed reference clock: 2026-03-02 12:00 UTC (a Monday). Site time zone: UTC (the default). Every
pending dispense is prepared at 11:00 UTC that day, after every ANC it depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from adapter.demo.builders import (
    EASTERN,
    UCUM,
    V3_ACT_CODE,
    DemoPatient,
    Resource,
    at,
    luhn_npi,
    months_between,
    practitioner,
    practitioner_role,
)

DEMO_AS_OF = "2026-03-02T12:00:00Z"
AS_OF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PENDING_AT = at(date(2026, 3, 2), 11)
CREATED = datetime(2023, 1, 2, 9, 0, tzinfo=UTC)

PRESCRIBERS = ("demo-prescriber-1", "demo-prescriber-2", "demo-prescriber-3")
PHARMACIST = "demo-pharmacist-1"

#: The scenarios the issue asks the demo to cover; every tag below appears in some patient.
REQUIRED_SCENARIOS = (
    "initiation",
    "step-down-weekly",
    "step-down-every-2-weeks",
    "step-down-monthly",
    "mild-excursion",
    "mild-recovery",
    "moderate-excursion",
    "moderate-recovery-three-times-weekly",
    "moderate-recovery-weekly-4-weeks",
    "moderate-recovery-back-to-normal-interval",
    "severe-excursion",
    "severe-rechallenge-awaiting-prescriber",
    "ben-normal",
    "ben-neutropenia",
    "ben-severe",
    "ben-initiation",
    "hospice",
    "overdue",
    "grace-last-day",
    "derived-anc",
    "corrected-result",
    "entered-in-error",
    "out-of-order",
    "discharge-over-limit",
    "supply-at-limit",
    "unevaluable",
    "prescriber-rationale",
    "pharmacist-override",
    "interruption-restart",
    "interruption-under-30-days",
    "noise-ignored",
    "unit-10*3/uL",
    "unit-10*9/L",
    "unit-/uL",
    "unit-/mm3",
    "unit-{cells}/uL",
    "unit-K/uL",
    "unit-x10^3/uL",
    "unit-10^9/L",
    "unit-cells/uL",
    "unit-cells/mm3",
)

#: How the expected values read the spec where it is terse; each patient's ``readings`` adds the
#: choices specific to its scenario.
CONVENTIONS = (
    "site time zone UTC; every demo collection has the same date in UTC and in its own offset",
    "nextAncDue = collection date + interval (daily 1, three-times-weekly 3, weekly 7, "
    "every-2-weeks 14 days; monthly 1 and every-6-months 6 calendar months)",
    "overdue = as-of date > nextAncDue + 2 days (grace), so the last day of grace is current",
    "time on therapy in whole calendar months from therapyStart (first supply handed over, or "
    "the first supply after 30 or more days without clozapine); 6 and 12 inclusive",
    "every pending dispense is decided at its whenPrepared, 2026-03-02T11:00:00Z",
    "repeatAncBy = collection + 24 h, only when the latest result is the first one below the "
    "confirmation threshold after a normal one; null otherwise",
    "hematologyConsult follows the band of the latest usable ANC",
    "authorizations.ndjson lists reasons only for not-authorized; an authorized-override's "
    "set-aside reasons are in its DetectedIssue (evidence.code), with the answer it cites",
    "patient 30 ships in data/demo-bundle.json, everyone else in data/demo.ndjson: "
    "run batch mode on the data folder",
)

# Deterministic wobble for routine results (no random source).
_WOBBLE = (0, 150, -100, 250, 50, -50, 200, 100)


def d(year: int, month: int, day: int) -> date:
    return date(year, month, day)


def routine(
    p: DemoPatient,
    start: date,
    until: date,
    base: int,
    unit: str = "/uL",
    baseline: bool = True,
    category: str | None = None,
) -> date:
    """Uneventful therapy from ``start`` up to (not including) ``until``.

    A baseline ANC three days before the first supply (unless the scenario writes its own), then
    an ANC and a matching supply on the normal-range schedule: weekly for 6 calendar months,
    every 2 weeks to 12, then every 4 weeks (28-day supplies, so there is never a gap). Returns
    the date of the last routine ANC.
    """
    if baseline:
        p.anc(at(start - timedelta(days=3), 9), base + 100, unit)
    day = start
    last = start
    index = 0
    while day < until:
        p.anc(at(day, 9), base + _WOBBLE[index % len(_WOBBLE)], unit)
        months = months_between(start, day)
        step = 7 if months < 6 else 14 if months < 12 else 28
        p.supply(at(day, 15), step, category)
        last = day
        day += timedelta(days=step)
        index += 1
    return last


def status(
    *,
    therapy_start: str | None,
    anc: Resource,
    value: int,
    category: str,
    recommendation: str,
    frequency: str,
    next_due: str,
    overdue: bool = False,
    population: str = "general",
    hospice: bool = False,
    repeat_by: str | None = None,
    consult: bool = False,
) -> dict[str, Any]:
    return {
        "population": population,
        "hospice": hospice,
        "therapyStart": therapy_start,
        "latestAnc": {
            "valuePerUL": value,
            "collected": anc["effectiveDateTime"],
            "observation": f"Observation/{anc['id']}",
        },
        "category": category,
        "recommendation": recommendation,
        "monitoringFrequency": frequency,
        "nextAncDue": next_due,
        "overdue": overdue,
        "repeatAncBy": repeat_by,
        "hematologyConsult": consult,
    }


def decision(pending: Resource, outcome: str, reasons: list[str] | None = None) -> dict[str, Any]:
    category = pending.get("category")
    setting = category["coding"][0]["code"] if category else "outpatient"
    return {
        "dispense": f"MedicationDispense/{pending['id']}",
        "outcome": outcome,
        "reasons": reasons or [],
        "daysSupply": pending["daysSupply"]["value"],
        "setting": setting,
    }


Expected = dict[str, Any]
Scenario = Callable[[DemoPatient], Expected]


def new_patient(p: DemoPatient, request_on: date, birth: date, gender: str = "female") -> None:
    # Postal codes 00001.. do not exist in the US: clearly synthetic.
    p.patient(gender, birth, f"{p.number:05d}", at(CREATED.date(), 9))
    p.clozapine_request(at(request_on, 10))


# ---------------------------------------------------------------------- normal-range schedule


def s01_initiation(p: DemoPatient) -> Expected:
    new_patient(p, d(2026, 2, 20), d(1990, 4, 12))
    p.anc(at(d(2026, 2, 13), 9), 2100, "10*3/uL")
    latest = p.anc(at(d(2026, 2, 27), 9), 1900, "10*3/uL")
    p.vital_signs(at(d(2026, 2, 27), 9, 30))
    pending = p.pending(PENDING_AT, 7, "outpatient")
    return {
        "why": "Initiation: baseline ANCs 2100 and 1900 (10*3/uL), first supply awaiting decision",
        "scenarios": ["initiation", "unit-10*3/uL", "noise-ignored"],
        # No supply handed over yet: not on therapy, baseline 1900 >= 1500 within 30 days.
        "status": status(
            therapy_start=None,
            anc=latest,
            value=1900,
            category="normal",
            recommendation="may-initiate",
            frequency="weekly",
            next_due="2026-03-06",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "a patient with a prescription but no supply: new-patient schedule (weekly), due = "
            "baseline collection date + 7 days",
        ],
    }


def s02_weekly(p: DemoPatient) -> Expected:
    start = d(2025, 12, 1)
    new_patient(p, start - timedelta(days=5), d(1985, 1, 20), "male")
    last = routine(p, start, d(2026, 2, 23), 2300)
    assert last == d(2026, 2, 16), last
    latest = p.anc(at(d(2026, 2, 23), 9), 2350)
    p.supply(at(d(2026, 2, 23), 15), 7)
    # Collected after the clock: must be ignored (a low value, so misuse shows).
    p.anc(at(d(2026, 3, 3), 9), 600)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Weekly monitoring under 6 months on therapy; a result dated after the clock",
        "scenarios": ["step-down-weekly", "unit-/uL", "noise-ignored"],
        # 3 calendar months on therapy -> weekly; 2026-02-23 + 7 = 2026-03-02 (due today).
        "status": status(
            therapy_start="2025-12-01",
            anc=latest,
            value=2350,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-02",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the 2026-03-03 result is after the clock and ignored"],
    }


def s03_six_months(p: DemoPatient) -> Expected:
    start = d(2025, 9, 1)
    new_patient(p, start - timedelta(days=5), d(1979, 7, 3))
    last = routine(p, start, d(2026, 3, 1), 2300, "10*9/L")
    assert last == d(2026, 2, 23), last
    latest = p.anc(at(d(2026, 3, 1), 9), 2400, "10*9/L")
    pending = p.pending(PENDING_AT, 14, "outpatient")
    return {
        "why": "Step-down to every 2 weeks exactly 6 calendar months after therapy start",
        "scenarios": ["step-down-every-2-weeks", "unit-10*9/L"],
        # 2025-09-01 -> 2026-03-01 is 6 calendar months: every-2-weeks; 03-01 + 14 = 03-15.
        "status": status(
            therapy_start="2025-09-01",
            anc=latest,
            value=2400,
            category="normal",
            recommendation="continue",
            frequency="every-2-weeks",
            next_due="2026-03-15",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "time on therapy counted at the ANC collection date (the as-of date gives the same "
            "band); 6 calendar months inclusive starts every-2-weeks",
        ],
    }


def s04_every_two_weeks(p: DemoPatient) -> Expected:
    start = d(2025, 6, 23)
    new_patient(p, start - timedelta(days=5), d(1972, 11, 30), "male")
    routine(p, start, d(2026, 2, 5), 2100)
    p.anc(at(d(2026, 2, 9), 9), 2200, loinc="26499-4")
    p.supply(at(d(2026, 2, 9), 15), 14)
    latest = p.anc(at(d(2026, 2, 23), 9), 2050, loinc="26499-4")
    p.supply(at(d(2026, 2, 23), 15), 14)
    # Preliminary results are never used for decisions (a low value, so misuse shows).
    p.anc(at(d(2026, 3, 2), 7), 700, status="preliminary")
    pending = p.pending(PENDING_AT, 14, "inpatient")
    return {
        "why": "Every 2 weeks at 8 months; inpatient supply of 14 days is exactly the limit",
        "scenarios": ["step-down-every-2-weeks", "supply-at-limit", "noise-ignored"],
        # 8 calendar months -> every-2-weeks; 02-23 + 14 = 03-09; limit 14 under every-2-weeks.
        "status": status(
            therapy_start="2025-06-23",
            anc=latest,
            value=2050,
            category="normal",
            recommendation="continue",
            frequency="every-2-weeks",
            next_due="2026-03-09",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the preliminary 700 on 2026-03-02 is not used"],
    }


def s05_twelve_months(p: DemoPatient) -> Expected:
    start = d(2025, 3, 1)
    new_patient(p, start - timedelta(days=5), d(1968, 2, 14))
    routine(p, start, d(2026, 2, 12), 2400, "/mm3")
    p.anc(at(d(2026, 2, 16), 9), 2500, "/mm3")
    p.supply(at(d(2026, 2, 16), 15), 14)
    latest = p.anc(at(d(2026, 3, 2), 8), 2600, "/mm3")
    pending = p.pending(PENDING_AT, 30, "discharge")
    return {
        "why": "Step-down to monthly the day after 12 calendar months; 30-day discharge = limit",
        "scenarios": ["step-down-monthly", "unit-/mm3", "supply-at-limit"],
        # 2025-03-01 -> 2026-03-02 is after 12 months: monthly; due 03-02 + 1 calendar month.
        "status": status(
            therapy_start="2025-03-01",
            anc=latest,
            value=2600,
            category="normal",
            recommendation="continue",
            frequency="monthly",
            next_due="2026-04-02",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["30 days of discharge supply under monthly monitoring is at most 30: allowed"],
    }


def s06_monthly(p: DemoPatient) -> Expected:
    start = d(2024, 2, 5)
    new_patient(p, start - timedelta(days=5), d(1961, 9, 9), "male")
    routine(p, start, d(2026, 2, 5), 2200, "{cells}/uL", category="community")
    latest = p.anc(at(d(2026, 2, 9), 9), 2300, "{cells}/uL")
    p.supply(at(d(2026, 2, 9), 15), 28, "community")
    # Segmented neutrophils only (768-2) are not an ANC: a low one must change nothing.
    p.anc(at(d(2026, 2, 23), 9), 900, loinc="768-2")
    p.vital_signs(at(d(2026, 2, 23), 10))
    p.other_drug_dispense(PENDING_AT)
    pending = p.pending(PENDING_AT, 28, "community")
    return {
        "why": "Monthly after 2 years; segmented neutrophils and an olanzapine dispense ignored",
        "scenarios": ["step-down-monthly", "unit-{cells}/uL", "noise-ignored"],
        # 24 months -> monthly; 02-09 + 1 month = 03-09. Community: no supply limit.
        "status": status(
            therapy_start="2024-02-05",
            anc=latest,
            value=2300,
            category="normal",
            recommendation="continue",
            frequency="monthly",
            next_due="2026-03-09",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the olanzapine dispense gets no authorization row"],
    }


def s07_hospice(p: DemoPatient) -> Expected:
    start = d(2023, 1, 9)
    new_patient(p, start - timedelta(days=5), d(1950, 6, 1))
    routine(p, start, d(2025, 5, 1), 2000, "K/uL")
    p.designation_condition("hospice", "Hospice care", at(d(2025, 5, 1), 10))
    p.anc(at(d(2025, 5, 12), 9), 2000, "K/uL")
    day = d(2025, 5, 12)
    while day < d(2026, 3, 1):
        p.supply(at(day, 15), 28)
        day += timedelta(days=28)
    latest = p.anc(at(d(2025, 11, 10), 10), 1900, "K/uL")
    pending = p.pending(PENDING_AT, 28)
    return {
        "why": "Hospice designation: every 6 months; last ANC in November is still current",
        "scenarios": ["hospice", "unit-K/uL"],
        # Hospice -> every-6-months; 2025-11-10 + 6 calendar months = 2026-05-10.
        "status": status(
            therapy_start="2023-01-09",
            anc=latest,
            value=1900,
            category="normal",
            recommendation="continue",
            frequency="every-6-months",
            next_due="2026-05-10",
            hospice=True,
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


# ---------------------------------------------------------------------- excursions


def s08_mild(p: DemoPatient) -> Expected:
    start = d(2025, 5, 26)
    new_patient(p, start - timedelta(days=5), d(1993, 3, 17), "male")
    routine(p, start, d(2026, 2, 10), 2000, "x10^3/uL")
    p.anc(at(d(2026, 2, 15), 9), 1900, "x10^3/uL")
    p.supply(at(d(2026, 2, 15), 15), 14)
    latest = p.anc(at(d(2026, 3, 1), 14), 1300, "x10^3/uL")
    # An inactive BEN flag is no designation: the patient stays in the general population.
    p.designation_flag(
        "benign-ethnic-neutropenia",
        "Benign ethnic neutropenia",
        at(d(2025, 5, 20), 10),
        status="inactive",
    )
    pending = p.pending(PENDING_AT, 14)
    return {
        "why": "Mild neutropenia 1300 after a normal result: continue, three times weekly, repeat",
        "scenarios": ["mild-excursion", "unit-x10^3/uL"],
        # First result < 1500 after a normal one: repeat within 24 h of 03-01 14:00.
        "status": status(
            therapy_start="2025-05-26",
            anc=latest,
            value=1300,
            category="mild-neutropenia",
            recommendation="continue",
            frequency="three-times-weekly",
            next_due="2026-03-04",
            repeat_by="2026-03-02T14:00:00Z",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the inactive BEN Flag is ignored (general population)"],
    }


def s09_mild_recovered(p: DemoPatient) -> Expected:
    start = d(2025, 5, 12)
    new_patient(p, start - timedelta(days=5), d(1988, 8, 8))
    routine(p, start, d(2026, 1, 28), 2000, "10^9/L")
    p.anc(at(d(2026, 2, 2), 9), 1800, "10^9/L")
    p.supply(at(d(2026, 2, 2), 15), 14)
    p.anc(at(d(2026, 2, 9), 9), 1350, "10^9/L")
    p.anc(at(d(2026, 2, 12), 9), 1450, "10^9/L")
    p.anc(at(d(2026, 2, 16), 9), 1650, "10^9/L")
    p.supply(at(d(2026, 2, 16), 15), 14)
    latest = p.anc(at(d(2026, 3, 2), 8), 1700, "10^9/L")
    pending = p.pending(PENDING_AT, 14)
    return {
        "why": "Mild excursion in February, recovered: back to every 2 weeks (the last normal one)",
        "scenarios": ["mild-excursion", "mild-recovery", "unit-10^9/L"],
        # 9 months on therapy; the interval before the excursion was every-2-weeks.
        "status": status(
            therapy_start="2025-05-12",
            anc=latest,
            value=1700,
            category="normal",
            recommendation="continue",
            frequency="every-2-weeks",
            next_due="2026-03-16",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


def s10_moderate(p: DemoPatient) -> Expected:
    start = d(2024, 9, 9)
    new_patient(p, start - timedelta(days=5), d(1975, 12, 24), "male")
    routine(p, start, d(2026, 2, 5), 2000, "cells/uL")
    p.anc(at(d(2026, 2, 9), 9), 2000, "cells/uL")
    p.supply(at(d(2026, 2, 9), 15), 28)
    latest = p.anc(at(d(2026, 3, 2), 7), 800, "cells/uL")
    pending = p.pending(PENDING_AT, 28)
    return {
        "why": "Moderate neutropenia 800 today: interrupt, daily ANC, hematology consult",
        "scenarios": ["moderate-excursion", "unit-cells/uL"],
        "status": status(
            therapy_start="2024-09-09",
            anc=latest,
            value=800,
            category="moderate-neutropenia",
            recommendation="interrupt",
            frequency="daily",
            next_due="2026-03-03",
            repeat_by="2026-03-03T07:00:00Z",
            consult=True,
        ),
        "dispenses": [decision(pending, "not-authorized", ["treatment-interrupted"])],
        "readings": [
            "moderate is not a rechallenge (no new patient), so only treatment-interrupted; "
            "anc-below-threshold is for a first supply or restart whose baseline is too low",
        ],
    }


def s11_moderate_resuming(p: DemoPatient) -> Expected:
    start = d(2024, 12, 2)
    new_patient(p, start - timedelta(days=5), d(1982, 5, 5))
    routine(p, start, d(2026, 1, 28), 2000, "cells/mm3")
    p.anc(at(d(2026, 2, 2), 9), 2000, "cells/mm3")
    p.supply(at(d(2026, 2, 2), 15), 28)
    for day, value in ((20, 800), (21, 850), (22, 950), (23, 1100), (26, 1300)):
        p.anc(at(d(2026, 2, day), 8), value, "cells/mm3")
    latest = p.anc(at(d(2026, 3, 1), 8), 1400, "cells/mm3")
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Moderate 800 on 02-20, daily until 1100, now three times weekly at 1400",
        "scenarios": [
            "moderate-excursion",
            "moderate-recovery-three-times-weekly",
            "unit-cells/mm3",
        ],
        # >= 1000 after moderate: may resume; three times weekly until >= 1500; 03-01 + 3.
        "status": status(
            therapy_start="2024-12-02",
            anc=latest,
            value=1400,
            category="mild-neutropenia",
            recommendation="may-resume",
            frequency="three-times-weekly",
            next_due="2026-03-04",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "recommendation may-resume (not continue) while 1000-1499 after a moderate interrupt",
            "hematologyConsult follows the latest category (mild: false)",
            "the 8-day break in supplies is under 30 days: no restart",
        ],
    }


def s12_moderate_weekly(p: DemoPatient) -> Expected:
    start = d(2024, 7, 1)
    new_patient(p, start - timedelta(days=5), d(1966, 10, 10), "male")
    routine(p, start, d(2026, 1, 1), 2100)
    p.anc(at(d(2026, 1, 5), 9), 2100)
    p.supply(at(d(2026, 1, 5), 15), 28)
    excursion = (
        (d(2026, 1, 26), 700),
        (d(2026, 1, 27), 800),
        (d(2026, 1, 28), 950),
        (d(2026, 1, 29), 1050),
        (d(2026, 2, 2), 1300),
        (d(2026, 2, 5), 1450),
        (d(2026, 2, 9), 1600),
        (d(2026, 2, 16), 1750),
    )
    for day, value in excursion:
        p.anc(at(day, 8), value, loinc="753-4")
    for day in (d(2026, 1, 30), d(2026, 2, 6), d(2026, 2, 13), d(2026, 2, 20)):
        p.supply(at(day, 15), 7)
    latest = p.anc(at(d(2026, 2, 23), 8), 1900, loinc="753-4")
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Moderate in January, >= 1500 on 02-09: weekly for 4 weeks (a monthly patient)",
        "scenarios": ["moderate-excursion", "moderate-recovery-weekly-4-weeks"],
        # First >= 1500 on 02-09; 02-23 is 14 days later, well inside the 4 weeks (under any
        # reading: by time, or by counting 4 weekly results): weekly, due 03-02, due today.
        "status": status(
            therapy_start="2024-07-01",
            anc=latest,
            value=1900,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-02",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "the 4 weeks run from the collection date of the first result >= 1500",
            "supplies resumed 01-30 after >= 1000: the patient has resumed, so continue",
        ],
    }


def s13_moderate_back(p: DemoPatient) -> Expected:
    start = d(2024, 7, 8)
    new_patient(p, start - timedelta(days=5), d(1970, 1, 19))
    routine(p, start, d(2025, 11, 27), 2200)
    series = (
        (d(2025, 12, 1), 650),
        (d(2025, 12, 2), 800),
        (d(2025, 12, 3), 1050),
        (d(2025, 12, 5), 1300),
        (d(2025, 12, 8), 1550),
        (d(2025, 12, 15), 1700),
        (d(2025, 12, 22), 1800),
        (d(2025, 12, 29), 1900),
        (d(2026, 1, 4), 2000),
        (d(2026, 1, 11), 2050),
    )
    for day, value in series:
        p.anc(at(day, 8), value)
    for day in (d(2025, 12, 4), d(2025, 12, 11), d(2025, 12, 18), d(2025, 12, 25), d(2026, 1, 1)):
        p.supply(at(day, 15), 7)
    p.supply(at(d(2026, 1, 11), 15), 28)
    latest = p.anc(at(d(2026, 2, 11), 9), 2100)
    p.supply(at(d(2026, 2, 11), 15), 28)
    pending = p.pending(PENDING_AT, 28)
    return {
        "why": "Moderate in December, recovered; after 4 weekly weeks back to monthly",
        "scenarios": ["moderate-excursion", "moderate-recovery-back-to-normal-interval"],
        # First >= 1500 on 12-08; 01-11 is 34 days later: monthly again; 02-11 + 1 month.
        "status": status(
            therapy_start="2024-07-08",
            anc=latest,
            value=2100,
            category="normal",
            recommendation="continue",
            frequency="monthly",
            next_due="2026-03-11",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


def s14_severe(p: DemoPatient) -> Expected:
    start = d(2025, 4, 28)
    new_patient(p, start - timedelta(days=5), d(1996, 2, 2), "male")
    routine(p, start, d(2026, 2, 12), 2000, "10*3/uL")
    p.anc(at(d(2026, 2, 16), 9), 2000, "10*3/uL")
    p.supply(at(d(2026, 2, 16), 15), 14)
    latest = p.anc(at(d(2026, 3, 1), 9), 400, "10*3/uL")
    pending = p.pending(PENDING_AT, 14)
    return {
        "why": "Severe neutropenia 400 after a normal result: interrupt, daily, consult",
        "scenarios": ["severe-excursion", "unit-10*3/uL"],
        "status": status(
            therapy_start="2025-04-28",
            anc=latest,
            value=400,
            category="severe-neutropenia",
            recommendation="interrupt",
            frequency="daily",
            next_due="2026-03-02",
            repeat_by="2026-03-02T09:00:00Z",
            consult=True,
        ),
        "dispenses": [decision(pending, "not-authorized", ["treatment-interrupted"])],
        "readings": [
            "below the rechallenge level treatment is simply interrupted (rule 2.3(2)); a supply "
            "is a rechallenge (a new patient, rule 2.3(3)) only once ANC >= 1500",
            "rechallenge-requires-prescriber only once ANC >= 1500",
        ],
    }


def s15_severe_rechallenge(p: DemoPatient) -> Expected:
    start = d(2025, 4, 21)
    new_patient(p, start - timedelta(days=5), d(1987, 9, 27))
    routine(p, start, d(2026, 1, 29), 2000)
    p.anc(at(d(2026, 2, 2), 9), 2000)
    p.supply(at(d(2026, 2, 2), 15), 14)
    series = (
        (9, 380),
        (10, 420),
        (11, 600),
        (12, 900),
        (13, 1100),
        (16, 1250),
        (19, 1400),
        (22, 1600),
    )
    for day, value in series:
        p.anc(at(d(2026, 2, day), 8), value)
    latest = p.anc(at(d(2026, 3, 1), 9), 1800)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Severe 380 on 02-09, now 1800: a rechallenge is possible but needs the prescriber",
        "scenarios": ["severe-excursion", "severe-rechallenge-awaiting-prescriber"],
        "status": status(
            therapy_start="2025-04-21",
            anc=latest,
            value=1800,
            category="normal",
            recommendation="prescriber-decision-required",
            frequency="weekly",
            next_due="2026-03-08",
        ),
        "dispenses": [decision(pending, "not-authorized", ["rechallenge-requires-prescriber"])],
        "readings": [
            "after severe and >= 1500 the rechallenge restarts as a new patient: weekly",
            "therapyStart stays the original start until a rechallenge supply is handed over",
            "hematologyConsult follows the latest category (normal: false)",
            "the baseline for the rechallenge (1800 on 03-01) meets 1500, so only the "
            "prescriber's decision is missing",
        ],
    }


# ---------------------------------------------------------------------- BEN


def _ben_baselines(p: DemoPatient, first: date, second: date, values: tuple[int, int]) -> None:
    p.anc(at(first, 9), values[0])
    p.anc(at(second, 9), values[1])


def s16_ben_normal(p: DemoPatient) -> Expected:
    start = d(2025, 10, 13)
    new_patient(p, d(2025, 9, 26), d(1991, 11, 11))
    p.designation_condition(
        "benign-ethnic-neutropenia", "Benign ethnic neutropenia", at(d(2025, 9, 26), 10)
    )
    _ben_baselines(p, d(2025, 9, 29), d(2025, 10, 6), (1100, 1200))
    last = routine(p, start, d(2026, 2, 23), 1200, baseline=False)
    assert last == d(2026, 2, 16), last
    latest = p.anc(at(d(2026, 2, 23), 9), 1250)
    p.supply(at(d(2026, 2, 23), 15), 7)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "BEN (Condition): ANCs 1050-1450 are normal for this patient; weekly at 4 months",
        "scenarios": ["ben-normal"],
        "status": status(
            therapy_start="2025-10-13",
            anc=latest,
            value=1250,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-02",
            population="ben",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


def s17_ben_neutropenia(p: DemoPatient) -> Expected:
    start = d(2025, 6, 16)
    new_patient(p, d(2025, 5, 30), d(1984, 4, 4), "male")
    p.designation_flag(
        "benign-ethnic-neutropenia", "Benign ethnic neutropenia", at(d(2025, 5, 30), 10)
    )
    _ben_baselines(p, d(2025, 6, 2), d(2025, 6, 9), (1150, 1250))
    routine(p, start, d(2026, 2, 12), 1200, baseline=False)
    p.anc(at(d(2026, 2, 16), 9), 1200)
    p.supply(at(d(2026, 2, 16), 15), 14)
    latest = p.anc(at(d(2026, 3, 1), 10), 800)
    pending = p.pending(PENDING_AT, 14)
    return {
        "why": "BEN (Flag) neutropenia 800: continue, three times weekly, hematology consult",
        "scenarios": ["ben-neutropenia"],
        "status": status(
            therapy_start="2025-06-16",
            anc=latest,
            value=800,
            category="ben-neutropenia",
            recommendation="continue",
            frequency="three-times-weekly",
            next_due="2026-03-04",
            population="ben",
            repeat_by="2026-03-02T10:00:00Z",
            consult=True,
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


def s18_ben_severe(p: DemoPatient) -> Expected:
    start = d(2025, 1, 13)
    new_patient(p, d(2024, 12, 27), d(1977, 7, 7))
    p.designation_condition(
        "benign-ethnic-neutropenia", "Benign ethnic neutropenia", at(d(2024, 12, 27), 10)
    )
    _ben_baselines(p, d(2024, 12, 30), d(2025, 1, 6), (1000, 1100))
    routine(p, start, d(2026, 2, 5), 1200, baseline=False)
    p.anc(at(d(2026, 2, 9), 9), 1200)
    p.supply(at(d(2026, 2, 9), 15), 28)
    latest = p.anc(at(d(2026, 3, 1), 7, 30, EASTERN), 420)
    pending = p.pending(PENDING_AT, 28)
    return {
        "why": "BEN severe 420 (collected 07:30 US Eastern): interrupt, daily, consult",
        "scenarios": ["ben-severe"],
        "status": status(
            therapy_start="2025-01-13",
            anc=latest,
            value=420,
            category="severe-neutropenia",
            recommendation="interrupt",
            frequency="daily",
            next_due="2026-03-02",
            population="ben",
            repeat_by="2026-03-02T12:30:00Z",
            consult=True,
        ),
        "dispenses": [decision(pending, "not-authorized", ["treatment-interrupted"])],
        "readings": [
            "repeatAncBy is an instant: 2026-03-02T07:30-05:00 = 12:30Z",
            "below the rechallenge level treatment is simply interrupted (rule 2.3(2))",
        ],
    }


def s19_ben_initiation(p: DemoPatient) -> Expected:
    new_patient(p, d(2026, 2, 18), d(1999, 12, 1), "male")
    p.designation_flag(
        "benign-ethnic-neutropenia", "Benign ethnic neutropenia", at(d(2026, 2, 18), 10)
    )
    p.anc(at(d(2026, 2, 20), 9), 1100)
    latest = p.anc(at(d(2026, 2, 27), 9), 1050)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "BEN initiation: two baselines (1100, 1050) >= 1000, first supply awaiting decision",
        "scenarios": ["ben-initiation", "initiation"],
        "status": status(
            therapy_start=None,
            anc=latest,
            value=1050,
            category="normal",
            recommendation="may-initiate",
            frequency="weekly",
            next_due="2026-03-06",
            population="ben",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


# ---------------------------------------------------------------------- timing


def s20_overdue(p: DemoPatient) -> Expected:
    start = d(2025, 6, 30)
    new_patient(p, start - timedelta(days=5), d(1969, 3, 3), "male")
    routine(p, start, d(2026, 2, 6), 2100)
    latest = p.anc(at(d(2026, 2, 10), 9), 2100)
    p.supply(at(d(2026, 2, 10), 15), 14)
    p.supply(at(d(2026, 2, 24), 15), 14)
    # A resolved hospice Condition is no designation: the normal schedule applies.
    p.designation_condition("hospice", "Hospice care", at(d(2025, 8, 1), 10), "resolved")
    pending = p.pending(PENDING_AT, 14)
    return {
        "why": "Overdue: every 2 weeks, last ANC 02-10, due 02-24, grace ended 02-26",
        "scenarios": ["overdue"],
        "status": status(
            therapy_start="2025-06-30",
            anc=latest,
            value=2100,
            category="normal",
            recommendation="continue",
            frequency="every-2-weeks",
            next_due="2026-02-24",
            overdue=True,
        ),
        "dispenses": [decision(pending, "not-authorized", ["anc-not-current"])],
        "readings": ["the resolved hospice Condition is ignored"],
    }


def s21_pharmacist_override(p: DemoPatient) -> Expected:
    start = d(2025, 11, 10)
    new_patient(p, start - timedelta(days=5), d(1980, 8, 21))
    routine(p, start, d(2026, 2, 16), 2200)
    latest = p.anc(at(d(2026, 2, 20), 9), 2200)
    p.supply(at(d(2026, 2, 20), 15), 7)
    p.supply(at(d(2026, 2, 27), 15), 7)
    pending = p.pending(PENDING_AT, 7)
    p.prior_issue(
        f"{p.id}-issue-not-authorized-20260302",
        finding="dispense-not-authorized",
        act_code="NAT",
        severity="high",
        identified=at(d(2026, 3, 2), 11, 5),
        detail="Clozapine dispense not authorized: last ANC 2200/uL on 2026-02-20 is no longer "
        "current (due 2026-02-27, grace 2 days).",
        evidence=[f"Observation/{latest['id']}"],
        implicated=[f"MedicationDispense/{pending['id']}"],
        reasons=("anc-not-current",),
        mitigation={
            "action": {
                "coding": [
                    {
                        "system": V3_ACT_CODE,
                        "code": "EMAUTH",
                        "display": "emergency authorization override",
                    }
                ],
                "text": "Pharmacist override: blood drawn today, result pending",
            },
            "date": "2026-03-02T11:30:00Z",
            "author": {"reference": f"Practitioner/{PHARMACIST}"},
        },
    )
    return {
        "why": "Overdue by one day; the pharmacist EMAUTH override is refused: no current ANC",
        "scenarios": ["overdue", "pharmacist-override"],
        # 02-20 + 7 = 02-27; grace to 03-01; 03-02 is past it.
        "status": status(
            therapy_start="2025-11-10",
            anc=latest,
            value=2200,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-02-27",
            overdue=True,
        ),
        "dispenses": [decision(pending, "not-authorized", ["anc-not-current"])],
        "readings": [
            "a pharmacist may override only with a current ANC (clinical-rules section 3, "
            "section 4 'who may do what follows section 3'); a prescriber's rationale could",
            "the override does not change the patient status (still overdue)",
        ],
    }


def s31_grace_last_day(p: DemoPatient) -> Expected:
    start = d(2025, 11, 8)
    new_patient(p, start - timedelta(days=5), d(1994, 6, 16))
    routine(p, start, d(2026, 2, 21), 2300)
    latest = p.anc(at(d(2026, 2, 21), 9), 2400)
    p.supply(at(d(2026, 2, 21), 15), 7)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Grace boundary: due 02-28, today is the last day of the 2-day grace",
        "scenarios": ["grace-last-day"],
        "status": status(
            therapy_start="2025-11-08",
            anc=latest,
            value=2400,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-02-28",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


# ---------------------------------------------------------------------- lab data quality


def s22_derived(p: DemoPatient) -> Expected:
    start = d(2025, 5, 5)
    new_patient(p, start - timedelta(days=5), d(1983, 10, 29), "male")
    routine(p, start, d(2026, 2, 6), 2200)
    # Same specimen with a direct ANC (2300) and a differential (5.0 x 60% = 3000): direct wins.
    p.derived_anc_panel(at(d(2026, 2, 10), 9), "5.0", 60, None, direct_anc=2300)
    p.supply(at(d(2026, 2, 10), 15), 14)
    panel = p.derived_anc_panel(at(d(2026, 2, 24), 9, 15, EASTERN), "4.5", 52, 3)
    p.supply(at(d(2026, 2, 24), 15), 14)
    pending = p.pending(PENDING_AT, 14)
    wbc = panel[0]
    return {
        "why": "Derived ANC: WBC 4.5 x (52% + 3% bands) = 2475 from one specimen, no direct ANC",
        "scenarios": ["derived-anc"],
        # 10 months -> every-2-weeks; 02-24 + 14 = 03-10.
        "status": status(
            therapy_start="2025-05-05",
            anc=wbc,
            value=2475,
            category="normal",
            recommendation="continue",
            frequency="every-2-weeks",
            next_due="2026-03-10",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "latestAnc.observation of a derived value is the WBC Observation",
            "on 02-10 the direct ANC (2300) is used, not the derivation (3000)",
        ],
    }


def s23_corrected(p: DemoPatient) -> Expected:
    start = d(2025, 10, 6)
    new_patient(p, start - timedelta(days=5), d(1976, 5, 25))
    routine(p, start, d(2026, 2, 20), 2100)
    p.supply(at(d(2026, 2, 23), 15), 7)
    oid = f"{p.id}-anc-20260226-corrected"
    collected = at(d(2026, 2, 26), 9)
    p.anc(collected, 1200, issued=at(d(2026, 2, 26), 12), obs_id=oid)
    latest = p.anc(
        collected,
        2200,
        status="corrected",
        version=2,
        issued=at(d(2026, 2, 27), 9, 30),
        obs_id=oid,
    )
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Corrected result: version 1 said 1200, version 2 (corrected) says 2200",
        "scenarios": ["corrected-result"],
        "status": status(
            therapy_start="2025-10-06",
            anc=latest,
            value=2200,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-05",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the replaced 1200 is not used (no mild finding, no repeat deadline)"],
    }


def s24_entered_in_error(p: DemoPatient) -> Expected:
    start = d(2025, 10, 20)
    new_patient(p, start - timedelta(days=5), d(1989, 1, 1), "male")
    routine(p, start, d(2026, 2, 23), 2100)
    latest = p.anc(at(d(2026, 2, 24), 9), 2100)
    p.supply(at(d(2026, 2, 24), 15), 7)
    oid = f"{p.id}-anc-20260228-error"
    collected = at(d(2026, 2, 28), 9)
    p.anc(collected, 450, issued=at(d(2026, 2, 28), 12), obs_id=oid)
    p.anc(
        collected,
        450,
        status="entered-in-error",
        version=2,
        issued=at(d(2026, 3, 1), 8),
        obs_id=oid,
    )
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "A severe 450 was entered in error (wrong patient); the 02-24 result stands",
        "scenarios": ["entered-in-error"],
        "status": status(
            therapy_start="2025-10-20",
            anc=latest,
            value=2100,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-03",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the withdrawn 450 is not used"],
    }


def s25_out_of_order(p: DemoPatient) -> Expected:
    start = d(2025, 11, 3)
    new_patient(p, start - timedelta(days=5), d(1981, 3, 30))
    last = routine(p, start, d(2026, 2, 13), 2100)
    assert last == d(2026, 2, 9), last
    p.anc(at(d(2026, 2, 13), 9), 2000)
    p.supply(at(d(2026, 2, 13), 15), 7)
    # Collected 02-20 but reported on 03-01, after the newer 02-27 result.
    p.anc(at(d(2026, 2, 20), 9), 1100, issued=at(d(2026, 3, 1), 10))
    p.supply(at(d(2026, 2, 20), 15), 7)
    latest = p.anc(at(d(2026, 2, 27), 9), 1900, issued=at(d(2026, 2, 27), 12))
    p.supply(at(d(2026, 2, 27), 15), 7)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Out of order: a mild 1100 collected 02-20 arrived 03-01, after the 02-27 1900",
        "scenarios": ["out-of-order"],
        "status": status(
            therapy_start="2025-11-03",
            anc=latest,
            value=1900,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-06",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": ["the late 1100 is surfaced as a finding but does not change the status"],
    }


def s26_discharge_limit(p: DemoPatient) -> Expected:
    start = d(2025, 12, 29)
    new_patient(p, start - timedelta(days=5), d(1997, 9, 12), "male")
    last = routine(p, start, d(2026, 2, 23), 2300, category="inpatient")
    assert last == d(2026, 2, 16), last
    p.anc(at(d(2026, 2, 23), 9), 2300)
    p.supply(at(d(2026, 2, 23), 15), 7, "inpatient")
    latest = p.anc(at(d(2026, 3, 2), 6), 2250)
    pending = p.pending(PENDING_AT, 28, "discharge")
    return {
        "why": "Discharge supply of 28 days while monitoring is weekly (limit 7 days)",
        "scenarios": ["discharge-over-limit"],
        "status": status(
            therapy_start="2025-12-29",
            anc=latest,
            value=2250,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-09",
        ),
        "dispenses": [decision(pending, "not-authorized", ["supply-exceeds-limit"])],
        "readings": [],
    }


def s27_unevaluable(p: DemoPatient) -> Expected:
    start = d(2025, 11, 17)
    new_patient(p, start - timedelta(days=5), d(1986, 12, 3))
    last = routine(p, start, d(2026, 2, 22), 2000)
    assert last == d(2026, 2, 16), last
    latest = p.anc(at(d(2026, 2, 22), 9), 2000)
    # 1400 only makes sense per uL; in 10*3/uL it would be 1.4 million per uL.
    p.anc(
        at(d(2026, 3, 1), 9),
        0,
        raw_value={"value": 1400, "unit": "10*3/uL", "system": UCUM, "code": "10*3/uL"},
    )
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Unevaluable: 1400 reported in 10*3/uL is reported, never rescaled or used",
        "scenarios": ["unevaluable"],
        # Latest usable 02-22 + 7 = 03-01; grace to 03-03: current.
        "status": status(
            therapy_start="2025-11-17",
            anc=latest,
            value=2000,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-01",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "an unevaluable result gets an anc-unevaluable finding but neither changes the "
            "status nor blocks the dispense: the latest usable ANC (02-22) is still current",
        ],
    }


# ---------------------------------------------------------------------- people answering


def s28_prescriber_rationale(p: DemoPatient) -> Expected:
    start = d(2024, 3, 4)
    new_patient(p, start - timedelta(days=5), d(1964, 4, 22), "male")
    routine(p, start, d(2026, 1, 29), 2100)
    p.anc(at(d(2026, 2, 2), 9), 2100)
    p.supply(at(d(2026, 2, 2), 15), 28)
    latest = p.anc(at(d(2026, 3, 1), 8), 850)
    pending = p.pending(PENDING_AT, 7)
    p.prior_issue(
        f"{p.id}-issue-moderate-20260301",
        finding="anc-moderate-neutropenia",
        act_code="LAB",
        severity="high",
        identified=at(d(2026, 3, 1), 11),
        detail="ANC 850/uL on 2026-03-01 (moderate neutropenia): interrupt clozapine, daily "
        "ANC, hematology consult recommended.",
        evidence=[f"Observation/{latest['id']}"],
        implicated=[f"MedicationRequest/{p.request_id}"],
        mitigation={
            "action": {
                "text": "Prescriber treatment rationale: benefit outweighs risk after hematology "
                "review; continue clozapine with daily ANC",
            },
            "date": "2026-03-01T16:00:00Z",
            "author": {"reference": f"Practitioner/{p.prescriber}"},
        },
    )
    return {
        "why": "Moderate 850 with the prescriber's documented rationale: authorized-override",
        "scenarios": ["moderate-excursion", "prescriber-rationale"],
        "status": status(
            therapy_start="2024-03-04",
            anc=latest,
            value=850,
            category="moderate-neutropenia",
            recommendation="interrupt",
            frequency="daily",
            next_due="2026-03-02",
            repeat_by="2026-03-02T08:00:00Z",
            consult=True,
        ),
        "dispenses": [decision(pending, "authorized-override", [])],
        "readings": [
            "the status keeps the label recommendation (interrupt); the rationale only turns the "
            "dispense decision into authorized-override",
            "the prescriber is recognised as the requester of the clozapine MedicationRequest",
        ],
    }


def s29_restart(p: DemoPatient) -> Expected:
    start = d(2024, 1, 8)
    new_patient(p, start - timedelta(days=5), d(1973, 8, 15))
    routine(p, start, d(2025, 11, 27), 2100)
    p.anc(at(d(2025, 12, 1), 9), 2000)
    p.supply(at(d(2025, 12, 1), 15), 30)
    # No clozapine from 2025-12-31 to 2026-02-09: 40 days, so the restart is a new patient.
    p.anc(at(d(2026, 2, 7), 9), 1900)
    for day, value in ((d(2026, 2, 16), 2100), (d(2026, 2, 23), 2000)):
        p.anc(at(day, 9), value)
    for day in (d(2026, 2, 9), d(2026, 2, 16), d(2026, 2, 23)):
        p.supply(at(day, 15), 7)
    latest = p.anc(at(d(2026, 3, 2), 8), 2050)
    pending = p.pending(PENDING_AT, 7)
    return {
        "why": "Restart after 40 days without clozapine: weekly again as a new patient",
        "scenarios": ["interruption-restart"],
        "status": status(
            therapy_start="2026-02-09",
            anc=latest,
            value=2050,
            category="normal",
            recommendation="continue",
            frequency="weekly",
            next_due="2026-03-09",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [
            "therapyStart reports the restart (the schedule's start), not the first-ever supply",
            "days without supply = next handover date - (handover date + daysSupply)",
        ],
    }


def s30_short_break(p: DemoPatient) -> Expected:
    start = d(2024, 11, 4)
    new_patient(p, start - timedelta(days=5), d(1978, 2, 28), "male")
    routine(p, start, d(2025, 10, 30), 2200)
    p.anc(at(d(2025, 11, 3), 9), 2100)
    p.supply(at(d(2025, 11, 3), 15), 30)
    # Supply ran out 2025-12-03; next one 2025-12-23: 20 days without clozapine.
    p.anc(at(d(2025, 12, 22), 9), 2000)
    p.supply(at(d(2025, 12, 23), 15), 28)
    p.anc(at(d(2026, 1, 19), 9), 2050)
    p.supply(at(d(2026, 1, 20), 15), 28)
    latest = p.anc(at(d(2026, 2, 16), 9), 2150)
    p.supply(at(d(2026, 2, 17), 15), 28)
    pending = p.pending(PENDING_AT, 28)
    return {
        "why": "A 20-day break in supplies (under 30): the monthly schedule continues",
        "scenarios": ["interruption-under-30-days"],
        "status": status(
            therapy_start="2024-11-04",
            anc=latest,
            value=2150,
            category="normal",
            recommendation="continue",
            frequency="monthly",
            next_due="2026-03-16",
        ),
        "dispenses": [decision(pending, "authorized")],
        "readings": [],
    }


#: Patient number -> scenario. Patient 30 ships as a FHIR Bundle, the others as NDJSON.
SCENARIOS: dict[int, Scenario] = {
    1: s01_initiation,
    2: s02_weekly,
    3: s03_six_months,
    4: s04_every_two_weeks,
    5: s05_twelve_months,
    6: s06_monthly,
    7: s07_hospice,
    8: s08_mild,
    9: s09_mild_recovered,
    10: s10_moderate,
    11: s11_moderate_resuming,
    12: s12_moderate_weekly,
    13: s13_moderate_back,
    14: s14_severe,
    15: s15_severe_rechallenge,
    16: s16_ben_normal,
    17: s17_ben_neutropenia,
    18: s18_ben_severe,
    19: s19_ben_initiation,
    20: s20_overdue,
    21: s21_pharmacist_override,
    22: s22_derived,
    23: s23_corrected,
    24: s24_entered_in_error,
    25: s25_out_of_order,
    26: s26_discharge_limit,
    27: s27_unevaluable,
    28: s28_prescriber_rationale,
    29: s29_restart,
    30: s30_short_break,
    31: s31_grace_last_day,
}
BUNDLE_PATIENTS = frozenset({30})


def staff() -> list[Resource]:
    """Prescribers (NPI) and the pharmacist, with roles so readers can tell them apart."""
    people = [
        (PRESCRIBERS[0], "Demo-Prescriber", "Alex", "199900001", "doctor"),
        (PRESCRIBERS[1], "Demo-Prescriber", "Blake", "199900002", "doctor"),
        (PRESCRIBERS[2], "Demo-Prescriber", "Casey", "199900003", "doctor"),
        (PHARMACIST, "Demo-Pharmacist", "Dana", "199900004", "pharmacist"),
    ]
    resources: list[Resource] = []
    for pid, family, given, base, role in people:
        resources.append(practitioner(pid, family, given, luhn_npi(base), CREATED))
        resources.append(practitioner_role(f"{pid}-role", pid, role, CREATED))
    return resources


def build_patient(number: int) -> tuple[DemoPatient, Expected]:
    patient = DemoPatient(
        number=number, prescriber=PRESCRIBERS[number % len(PRESCRIBERS)], pharmacist=PHARMACIST
    )
    expected = SCENARIOS[number](patient)
    return patient, expected
