"""Normal-range schedule, hospice, designations, due dates, grace and overdue, the 24-hour
confirmation and interruption of 30 days (clinical-rules 2.1, 2.2; interfaces 1, 3)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k


# ---- Time on therapy, in calendar months from the first completed supply ----------------------
START = "2025-01-15"
MONTHS = [
    ("5m30d", "2025-07-14", "weekly", "2025-07-21"),
    ("exactly-6-months", "2025-07-15", "every-2-weeks", "2025-07-29"),
    ("11m30d", "2026-01-14", "every-2-weeks", "2026-01-28"),
    # "every 2 weeks from 6 to 12 months; monthly after 12 months": at exactly 12 months the
    # patient is not yet "after 12 months" (SCENARIOS.md, ambiguity A3).
    ("exactly-12-months", "2026-01-15", "every-2-weeks", "2026-01-29"),
    ("12m1d", "2026-01-16", "monthly", "2026-02-16"),
    ("monthly-end-of-month", "2026-01-31", "monthly", "2026-02-28"),
]


def _not_therapy_start(pid: str) -> list[k.Resource]:
    """Earlier dispenses that are not the first completed clozapine supply."""
    cancelled = k.pending_dispense(pid, "2025-01-08", did=f"{pid}-cancelled", status="cancelled")
    other_drug = k.completed_dispense(pid, "2025-01-02", did=f"{pid}-olanzapine")
    other_drug["medicationCodeableConcept"] = {
        "coding": [{"system": k.RXNORM, "code": "61381", "display": "olanzapine"}],
        "text": "olanzapine",
    }
    return [cancelled, other_drug]


@pytest.mark.parametrize(
    ("collected", "frequency", "due"), [m[1:] for m in MONTHS], ids=[m[0] for m in MONTHS]
)
def test_normal_schedule_by_calendar_months(
    tmp_path: Path, collected: str, frequency: str, due: str
) -> None:
    pid = "p-months"
    res = [
        *k.on_clozapine(pid, START, collected),
        *_not_therapy_start(pid),
        k.anc(pid, collected, 1800),
    ]
    result = k.run_batch(tmp_path, res, k.as_of(collected))
    status = result.status_for(pid)
    assert status["therapyStart"] == START
    assert status["category"] == "normal"
    assert status["monitoringFrequency"] == frequency
    assert status["nextAncDue"] == due
    assert status["overdue"] is False
    assert result.authorizations == [], "a cancelled dispense awaits no decision"


# ---- Designations -----------------------------------------------------------------------------
DESIGNATIONS = [
    # (id, resource kind, code, system, active, population, hospice)
    ("hospice-condition", "Condition", k.HOSPICE, None, True, "general", True),
    ("hospice-flag", "Flag", k.HOSPICE, None, True, "general", True),
    ("hospice-finding-system", "Condition", k.HOSPICE, k.FINDING_SYSTEM, True, "general", True),
    ("hospice-resolved", "Condition", k.HOSPICE, None, False, "general", False),
    ("ben-condition", "Condition", k.BEN, None, True, "ben", False),
    ("ben-flag", "Flag", k.BEN, None, True, "ben", False),
    ("ben-finding-system", "Flag", k.BEN, k.FINDING_SYSTEM, True, "ben", False),
    ("ben-inactive-flag", "Flag", k.BEN, None, False, "general", False),
]


def test_ben_and_hospice_together(tmp_path: Path) -> None:
    pid = "p-ben-hospice"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-02-16", designations=(k.BEN, k.HOSPICE)),
        k.anc(pid, "2026-02-16", 1100),
    ]
    status = k.run_batch(tmp_path, res, k.as_of("2026-02-16")).status_for(pid)
    assert (status["population"], status["hospice"], status["category"]) == ("ben", True, "normal")
    assert status["monitoringFrequency"] == "every-6-months"
    assert status["nextAncDue"] == "2026-08-16"


@pytest.mark.parametrize(
    ("kind", "code", "system", "active", "population", "hospice"),
    [d[1:] for d in DESIGNATIONS],
    ids=[d[0] for d in DESIGNATIONS],
)
def test_designations(
    tmp_path: Path,
    kind: str,
    code: str,
    system: str | None,
    active: bool,
    population: str,
    hospice: bool,
) -> None:
    pid = "p-desig"
    collected = "2026-02-16"
    res = [
        *k.on_clozapine(pid, "2026-01-05", collected),
        k.designation(pid, code, kind=kind, system=system, active=active),
        k.anc(pid, collected, 1800),
    ]
    result = k.run_batch(tmp_path, res, k.as_of(collected))
    status = result.status_for(pid)
    assert status["population"] == population
    assert status["hospice"] is hospice
    if hospice:
        assert status["monitoringFrequency"] == "every-6-months"
        assert status["nextAncDue"] == "2026-08-16"
    else:
        assert status["monitoringFrequency"] == "weekly"
        assert status["nextAncDue"] == "2026-02-23"


# ---- Grace and overdue: current while the date <= due + 2 days --------------------------------
OVERDUE = [
    # (id, therapy start, ANC collected, as-of, overdue)
    ("weekly-on-due-date", "2026-01-05", "2026-03-02T10:00:00Z", "2026-03-09T20:00:00Z", False),
    (
        "weekly-last-grace-second",
        "2026-01-05",
        "2026-03-02T10:00:00Z",
        "2026-03-11T23:59:59Z",
        False,
    ),
    (
        "weekly-first-overdue-second",
        "2026-01-05",
        "2026-03-02T10:00:00Z",
        "2026-03-12T00:00:01Z",
        True,
    ),
    ("monthly-last-grace-day", "2024-11-04", "2026-01-31T10:00:00Z", "2026-03-02T23:00:00Z", False),
    ("monthly-overdue", "2024-11-04", "2026-01-31T10:00:00Z", "2026-03-03T01:00:00Z", True),
    # --as-of with an offset: its date is taken in the site time zone (UTC by default)
    (
        "as-of-offset-still-03-11-utc",
        "2026-01-05",
        "2026-03-02T10:00:00Z",
        "2026-03-11T19:59:59-04:00",
        False,
    ),
    (
        "as-of-offset-already-03-12-utc",
        "2026-01-05",
        "2026-03-02T10:00:00Z",
        "2026-03-11T20:00:01-04:00",
        True,
    ),
]


@pytest.mark.parametrize(
    ("start", "collected", "as_of", "overdue"),
    [o[1:] for o in OVERDUE],
    ids=[o[0] for o in OVERDUE],
)
def test_overdue_after_due_plus_grace(
    tmp_path: Path, start: str, collected: str, as_of: str, overdue: bool
) -> None:
    pid = "p-overdue"
    res = [*k.on_clozapine(pid, start, as_of), k.anc(pid, collected, 1800)]
    result = k.run_batch(tmp_path, res, as_of)
    status = result.status_for(pid)
    assert status["overdue"] is overdue
    found = result.issues_where(code="anc-monitoring-overdue", patient=pid)
    if overdue:
        assert len(found) == 1
        assert found[0]["severity"] == "moderate"
    else:
        assert found == []


# ---- 24-hour confirmation --------------------------------------------------------------------
CONFIRM = [
    # (id, population, values in order (the last one evaluated), repeat expected)
    ("general-first-low-after-normal", "general", [1600, 1400], True),
    ("general-second-low", "general", [1600, 1400, 1300], False),
    ("general-normal", "general", [1600, 1700], False),
    ("ben-1400-is-normal", "ben", [1600, 1400], False),
    ("ben-first-below-1000", "ben", [1600, 900], True),
    ("ben-second-below-1000", "ben", [1600, 900, 950], False),
]


@pytest.mark.parametrize(
    ("population", "values", "repeat"), [c[1:] for c in CONFIRM], ids=[c[0] for c in CONFIRM]
)
def test_repeat_within_24_hours_of_collection(
    tmp_path: Path, population: str, values: list[int], repeat: bool
) -> None:
    pid = "p-confirm"
    times = ["2026-02-12T09:00:00Z", "2026-02-16T13:45:00Z", "2026-02-17T11:10:00Z"][-len(values) :]
    res = k.on_clozapine(
        pid, "2026-01-05", "2026-02-17", designations=(k.BEN,) if population == "ben" else ()
    )
    res += [
        k.anc(pid, t, v, oid=f"{pid}-{n}")
        for n, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    result = k.run_batch(tmp_path, res, "2026-02-17T20:00:00Z")
    status = result.status_for(pid)
    if repeat:
        expected = k.parse_instant(times[-1]) + dt.timedelta(hours=24)
        assert status["repeatAncBy"] is not None
        assert k.parse_instant(status["repeatAncBy"]) == expected
    else:
        assert status["repeatAncBy"] is None


# ---- Interruption: >= 30 days without supply restarts as a new patient ------------------------
def _interrupted(pid: str, gap_days: int) -> tuple[list[k.Resource], str]:
    """Monthly patient whose supply ran out and restarts after `gap_days` days without it.
    Returns the resources and the restart date."""
    res = [
        k.patient(pid),
        k.practitioner(),
        k.medication_request(pid, "2025-01-01"),
        k.anc(pid, "2025-01-04", 2000),
    ]
    res += k.supplies(pid, "2025-01-06", "2025-12-08")  # 28-day supplies
    last = max(r["whenHandedOver"][:10] for r in res if r["resourceType"] == "MedicationDispense")
    out_of_supply = k.add_days(last, 28)  # first day without clozapine
    restart = k.add_days(out_of_supply, gap_days)
    return res, restart


@pytest.mark.parametrize(
    ("gap", "frequency", "new_patient"),
    [(29, "monthly", False), (30, "weekly", True), (45, "weekly", True)],
    ids=["29-days-continues", "30-days-restarts", "45-days-restarts"],
)
def test_interruption_restarts_schedule(
    tmp_path: Path, gap: int, frequency: str, new_patient: bool
) -> None:
    pid = f"p-gap-{gap}"
    res, restart = _interrupted(pid, gap)
    res.append(k.completed_dispense(pid, restart, 7))
    collected = k.add_days(restart, 2)
    res.append(k.anc(pid, collected, 1800))
    result = k.run_batch(tmp_path, res, k.as_of(collected))
    status = result.status_for(pid)
    assert status["monitoringFrequency"] == frequency
    if new_patient:
        assert status["nextAncDue"] == k.add_days(collected, 7)
        assert status["therapyStart"] == restart  # SCENARIOS.md, ambiguity A6
    else:
        assert status["therapyStart"] == "2025-01-06"
        assert status["nextAncDue"] == k.add_months(collected, 1)


@pytest.mark.parametrize(
    ("gap", "baseline", "outcome", "reasons"),
    [
        (29, 1400, "authorized", []),  # not a new patient: a mild ANC does not block
        (30, 1400, "not-authorized", ["anc-below-threshold"]),
        (30, 1500, "authorized", []),
    ],
    ids=["29-days-mild-ok", "30-days-restart-low-baseline", "30-days-restart-baseline-1500"],
)
def test_first_supply_of_a_restart_needs_a_baseline(
    tmp_path: Path, gap: int, baseline: int, outcome: str, reasons: list[str]
) -> None:
    pid = f"p-restart-{gap}-{baseline}"
    res, restart = _interrupted(pid, gap)
    res.append(k.anc(pid, k.add_days(restart, -1), baseline))
    res.append(k.pending_dispense(pid, restart, 7, did=f"{pid}-restart"))
    result = k.run_batch(tmp_path, res, k.as_of(restart))
    auth = result.authorization_for(f"{pid}-restart")
    assert auth["outcome"] == outcome
    assert sorted(auth["reasons"]) == reasons


OVERDUE_BY_FREQUENCY = [
    # (id, therapy start, ANC, hospice, ANC collected, as-of, overdue); due + 2 days of grace
    ("daily-last-grace-day", "2026-01-05", 800, False, "2026-03-02", "2026-03-05T23:00:00Z", False),
    ("daily-overdue", "2026-01-05", 800, False, "2026-03-02", "2026-03-06T01:00:00Z", True),
    (
        "3x-weekly-last-grace-day",
        "2026-01-05",
        1200,
        False,
        "2026-03-02",
        "2026-03-07T23:00:00Z",
        False,
    ),
    ("3x-weekly-overdue", "2026-01-05", 1200, False, "2026-03-02", "2026-03-08T01:00:00Z", True),
    (
        "2-weeks-last-grace-day",
        "2025-06-02",
        1800,
        False,
        "2026-03-02",
        "2026-03-18T23:00:00Z",
        False,
    ),
    ("2-weeks-overdue", "2025-06-02", 1800, False, "2026-03-02", "2026-03-19T01:00:00Z", True),
    (
        "hospice-last-grace-day",
        "2026-01-05",
        1800,
        True,
        "2026-03-02",
        "2026-09-04T23:00:00Z",
        False,
    ),
    ("hospice-overdue", "2026-01-05", 1800, True, "2026-03-02", "2026-09-05T01:00:00Z", True),
]


@pytest.mark.parametrize(
    ("start", "value", "hospice", "collected", "as_of", "overdue"),
    [o[1:] for o in OVERDUE_BY_FREQUENCY],
    ids=[o[0] for o in OVERDUE_BY_FREQUENCY],
)
def test_overdue_by_frequency(
    tmp_path: Path,
    start: str,
    value: int,
    hospice: bool,
    collected: str,
    as_of: str,
    overdue: bool,
) -> None:
    pid = "p-overdue-freq"
    res = k.on_clozapine(pid, start, as_of, designations=(k.HOSPICE,) if hospice else ())
    res.append(k.anc(pid, collected, value))
    result = k.run_batch(tmp_path, res, as_of)
    status = result.status_for(pid)
    assert status["overdue"] is overdue
    assert len(result.issues_where(code="anc-monitoring-overdue", patient=pid)) == int(overdue)


def test_supply_handed_over_after_as_of_does_not_start_therapy(tmp_path: Path) -> None:
    pid = "p-future-start"
    res = [
        k.patient(pid),
        k.practitioner(),
        k.medication_request(pid, "2026-03-01"),
        k.anc(pid, "2026-03-05", 1800),
        k.completed_dispense(pid, "2026-03-09", 7),
        k.pending_dispense(pid, "2026-03-08", 7, did=f"{pid}-first"),
    ]
    result = k.run_batch(tmp_path, res, k.as_of("2026-03-08"))
    assert result.status_for(pid)["therapyStart"] is None
    assert result.authorization_for(f"{pid}-first")["outcome"] == "authorized"


# ---- A year and more of on-schedule monitoring ------------------------------------------------
def _on_schedule_dates(start: str, until: str) -> list[tuple[str, str]]:
    """ANC dates that follow the normal-range schedule exactly, with the frequency each one sets:
    weekly below 6 months, every 2 weeks from 6 to 12 months, monthly after 12 months."""
    out = []
    d = start
    while d <= until:
        if d < k.add_months(start, 6):
            freq, nxt = "weekly", k.add_days(d, 7)
        elif d <= k.add_months(start, 12):
            freq, nxt = "every-2-weeks", k.add_days(d, 14)
        else:
            freq, nxt = "monthly", k.add_months(d, 1)
        out.append((d, freq))
        d = nxt
    return out


LONG_START = "2025-01-06"
LONG_HISTORY = _on_schedule_dates(LONG_START, "2026-04-30")
CHECKPOINTS = [1, 10, 25, 26, 30, 39, 40, len(LONG_HISTORY) - 1]


@pytest.mark.parametrize(
    "index", CHECKPOINTS, ids=[f"{LONG_HISTORY[i][0]}-{LONG_HISTORY[i][1]}" for i in CHECKPOINTS]
)
def test_sixteen_months_on_schedule(tmp_path: Path, index: int) -> None:
    """CR 2.2 across months of history: on-schedule ANCs are never overdue, and each sets the
    frequency of its own time on therapy."""
    pid = "p-long"
    collected, frequency = LONG_HISTORY[index]
    res = k.on_clozapine(pid, LONG_START, collected)
    res += [
        k.anc(pid, d, 1700 + 10 * (n % 7)) for n, (d, _) in enumerate(LONG_HISTORY[: index + 1])
    ]
    result = k.run_batch(tmp_path, res, k.as_of(collected))
    status = result.status_for(pid)
    assert status["monitoringFrequency"] == frequency
    step = {"weekly": 7, "every-2-weeks": 14}
    expected_due = (
        k.add_days(collected, step[frequency]) if frequency in step else k.add_months(collected, 1)
    )
    assert status["nextAncDue"] == expected_due
    assert status["overdue"] is False
    assert result.issues_where(patient=pid, code="anc-monitoring-overdue") == []
    assert result.anc_findings(pid) == []
