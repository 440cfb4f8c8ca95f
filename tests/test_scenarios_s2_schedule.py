"""S2 schedule and dispense rules: time on therapy, hospice, due dates + grace, the 30-day rule,
initiation baselines and discharge/inpatient limits (clinical-rules 2.1-2.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_kit import (
    add_days,
    anc,
    as_of,
    completed_dispense,
    designation,
    medication_request,
    on_clozapine,
    patient,
    pending_dispense,
    practitioner,
    run_batch,
)

# "Time on therapy counts from therapy start (first clozapine supply handed over), in calendar
# months: weekly while < 6 months; every 2 weeks from 6 to 12 months; monthly after 12 months."
# "Hospice: the normal-range interval is every 6 months." Due = collection date + interval.
SCHEDULE = [
    # therapy start, designations, last ANC, as-of, frequency, next due
    ("2026-01-05", (), "2026-03-02", "2026-03-03", "weekly", "2026-03-09"),
    ("2025-07-07", (), "2026-03-02", "2026-03-03", "every-2-weeks", "2026-03-16"),
    ("2024-12-02", (), "2026-03-02", "2026-03-03", "monthly", "2026-04-02"),
    ("2024-12-02", ("hospice",), "2026-01-10", "2026-06-20", "every-6-months", "2026-07-10"),
]


@pytest.mark.parametrize(("start", "desig", "last", "when_", "freq", "due"), SCHEDULE)
def test_sch_frequency_by_time_on_therapy(tmp_path, start, desig, last, when_, freq, due) -> None:
    res = on_clozapine("p", start, when_, designations=desig)
    res.append(anc("p", last, 1800, oid="p-last"))
    r = run_batch(tmp_path, res, as_of(when_))
    st = r.status_for("p")
    assert st["therapyStart"] == start
    assert st["monitoringFrequency"] == freq
    assert st["nextAncDue"] == due
    assert st["overdue"] is False
    assert st["hospice"] is bool(desig)


# "An ANC is current at time T while T's date <= due date + grace (default 2 days)."
# Weekly patient, ANC 2026-03-02, due 2026-03-09: current through 2026-03-11, overdue from 03-12.
@pytest.mark.parametrize(("when_", "overdue"), [("2026-03-11", False), ("2026-03-12", True)])
def test_sch_grace_boundary(tmp_path: Path, when_: str, overdue: bool) -> None:
    res = on_clozapine("p", "2026-01-05", when_)
    res += [
        anc("p", "2026-03-02", 1800, oid="p-last"),
        pending_dispense("p", when_, 7, did="p-next"),
    ]
    r = run_batch(tmp_path, res, as_of(when_))
    st = r.status_for("p")
    assert st["overdue"] is overdue
    auth = r.authorization_for("p-next")
    if overdue:
        assert auth["outcome"] == "not-authorized"
        assert "anc-not-current" in auth["reasons"]
        assert r.issues_where(code="anc-monitoring-overdue", patient="p")
    else:
        assert auth["outcome"] == "authorized"
        assert not r.issues_where(code="anc-monitoring-overdue", patient="p")


# The 30-day rule: >= 30 days without clozapine restarts as a new patient (rule 3 baseline within
# 30 days meeting the initiation threshold); a short gap continues the schedule as before.
# Patient on therapy since 2024; last supply 2026-01-01 (28 days: covered to 2026-01-28).
@pytest.mark.parametrize(
    ("pending", "anc_day", "value", "outcome", "reason"),
    [
        ("2026-02-10", "2026-02-09", 1400, "authorized", None),  # 12-day gap: mild continues
        ("2026-03-10", "2026-03-09", 1400, "not-authorized", "anc-below-threshold"),  # 40 days
        ("2026-03-10", "2026-03-09", 1600, "authorized", None),  # restart with a good baseline
    ],
)
def test_sch_thirty_day_rule(tmp_path, pending, anc_day, value, outcome, reason) -> None:
    res = on_clozapine("p", "2024-12-02", "2026-01-01")
    res += [
        anc("p", add_days(anc_day, -7), 1800),
        anc("p", anc_day, value, oid="p-last"),
        pending_dispense("p", pending, 7, did="p-next"),
    ]
    r = run_batch(tmp_path, res, as_of(pending))
    auth = r.authorization_for("p-next")
    assert auth["outcome"] == outcome, auth
    if reason:
        assert reason in auth["reasons"]


# After a restart (>= 30 days gap) the schedule is weekly from the restart.
def test_sch_restart_is_weekly(tmp_path: Path) -> None:
    res = on_clozapine("p", "2024-12-02", "2026-01-01")
    res += [
        anc("p", "2026-03-08", 1800),
        completed_dispense("p", "2026-03-10", 28, did="p-restart"),
        anc("p", "2026-03-16", 1900, oid="p-last"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-03-17"))
    st = r.status_for("p")
    assert st["monitoringFrequency"] == "weekly"
    assert st["nextAncDue"] == "2026-03-23"


# A restart as a new patient puts the schedule back to weekly from the restart (2.2), also for
# the result collected before it (the restart's baseline, assessed under the old course: monthly).
RESTART_AFTER_RESULT = [
    # (id, last supply of the old course, as of, frequency, next due, overdue)
    ("long-gap-within-grace", "2026-01-01", "2026-03-10", "weekly", "2026-03-08", False),
    ("long-gap-overdue", "2026-01-01", "2026-03-11", "weekly", "2026-03-08", True),
    ("short-gap-keeps-monthly", "2026-02-05", "2026-03-11", "monthly", "2026-04-01", False),
]


@pytest.mark.parametrize(
    ("last_supply", "day", "frequency", "due", "overdue"),
    [c[1:] for c in RESTART_AFTER_RESULT],
    ids=[c[0] for c in RESTART_AFTER_RESULT],
)
def test_sch_a_restart_after_the_latest_result_is_weekly_from_it(
    tmp_path: Path, last_supply: str, day: str, frequency: str, due: str, overdue: bool
) -> None:
    res = on_clozapine("p", "2024-12-02", last_supply)
    res += [
        anc("p", "2026-03-01", 1800),  # > 12 months into the old course: monthly
        completed_dispense("p", "2026-03-04", 7, did="p-restart"),
    ]
    st = run_batch(tmp_path, res, as_of(day)).status_for("p")
    assert (st["monitoringFrequency"], st["nextAncDue"], st["overdue"]) == (frequency, due, overdue)


def test_sch_a_restart_after_the_latest_result_limits_and_dates_the_next_supply(
    tmp_path: Path,
) -> None:
    """Weekly again: a discharge supply is limited to 7 days, and the restart's baseline is due
    a week after its collection (2.3 rules 1 and 4)."""
    res = on_clozapine("p", "2024-12-02", "2026-01-01")
    res += [
        anc("p", "2026-03-01", 1800),
        completed_dispense("p", "2026-03-04", 7, did="p-restart"),
        pending_dispense("p", "2026-03-14", 30, did="p-next", category="discharge"),
    ]
    auth = run_batch(tmp_path, res, as_of("2026-03-14")).authorization_for("p-next")
    assert (auth["outcome"], auth["reasons"]) == (
        "not-authorized",
        ["anc-not-current", "supply-exceeds-limit"],
    )


# A supply handed over while treatment is interrupted never stands in for the restart (2.2): an
# interruption of 30 days or more before it still makes the next allowed supply a new patient's
# (general population: a baseline >= 1500, here 1100 is below it).
UNSANCTIONED_AFTER_GAP = [
    # (days from the interruption to the supply handed over during it, outcome, reasons)
    (29, "authorized", []),
    (30, "not-authorized", ["anc-below-threshold"]),
    (35, "not-authorized", ["anc-below-threshold"]),
]


@pytest.mark.parametrize(("gap", "outcome", "reasons"), UNSANCTIONED_AFTER_GAP)
def test_sch_a_supply_during_an_interruption_does_not_erase_its_gap(
    tmp_path: Path, gap: int, outcome: str, reasons: list[str]
) -> None:
    interrupted = "2026-02-10"  # the moderate result; the supply covers up to 2026-02-12
    res = [
        patient("u"),
        practitioner(),
        medication_request("u", "2025-12-20"),
        anc("u", "2025-12-30", 2000),
        completed_dispense("u", "2026-01-01", 28),
        completed_dispense("u", "2026-01-29", 14),
        anc("u", "2026-02-05", 2000),
        anc("u", interrupted, 800),
        completed_dispense("u", add_days(interrupted, gap), 7, did="u-during"),
        anc("u", add_days(interrupted, 38), 1100),  # may resume (>= 1000)
        pending_dispense("u", add_days(interrupted, 40), 7, did="u-next"),
    ]
    r = run_batch(tmp_path, res, as_of(add_days(interrupted, 40)))
    auth = r.authorization_for("u-next")
    assert (auth["outcome"], auth["reasons"]) == (outcome, reasons)
    (during,) = [  # the supply handed over during the interruption is surfaced
        i for i in r.issues if {"reference": "MedicationDispense/u-during"} in i["implicated"]
    ]
    assert "dispense-not-authorized" in str(during["code"])


# Initiation (2.1, 2.3 rule 3): a first supply needs a baseline collected within the 30 days
# before it that meets the threshold (general >= 1500; BEN >= 1000, two baselines).
def _new_patient(pid: str, baselines: list[tuple[str, float]], ben: bool = False) -> list:
    res = [patient(pid), practitioner(), medication_request(pid, "2026-02-01")]
    if ben:
        res.append(designation(pid, "benign-ethnic-neutropenia"))
    res += [anc(pid, d, v, oid=f"{pid}-base-{n}") for n, (d, v) in enumerate(baselines)]
    res.append(pending_dispense(pid, "2026-03-01", 7, did=f"{pid}-first"))
    return res


INITIATION = [
    ([("2026-02-27", 1500)], False, "authorized", None),
    ([("2026-02-27", 1499)], False, "not-authorized", "anc-below-threshold"),
    ([("2026-01-29", 1800)], False, "not-authorized", None),  # 31 days before: too old
    ([("2026-02-20", 1000), ("2026-02-27", 1100)], True, "authorized", None),
    ([("2026-02-20", 1200), ("2026-02-27", 999)], True, "not-authorized", "anc-below-threshold"),
    ([("2026-02-27", 1300)], False, "not-authorized", "anc-below-threshold"),
]


@pytest.mark.parametrize(("baselines", "ben", "outcome", "reason"), INITIATION)
def test_sch_initiation(tmp_path: Path, baselines, ben: bool, outcome: str, reason) -> None:
    r = run_batch(tmp_path, _new_patient("n", baselines, ben), as_of("2026-03-01"))
    auth = r.authorization_for("n-first")
    assert auth["outcome"] == outcome, auth
    if reason:
        assert reason in auth["reasons"]
    if outcome == "not-authorized":
        issue = r.dispense_issue("n-first")
        assert issue["severity"] == "high"


# Rule 4: a discharge or inpatient supply runs at most 7 days under weekly (or more frequent)
# monitoring, 14 under every-2-weeks, 30 under monthly; outpatient/community have no limit.
LIMITS = [
    ("2026-01-05", "discharge", 7, "authorized"),
    ("2026-01-05", "discharge", 8, "not-authorized"),
    ("2026-01-05", "inpatient", 8, "not-authorized"),
    ("2025-07-07", "discharge", 14, "authorized"),
    ("2025-07-07", "discharge", 15, "not-authorized"),
    ("2024-12-02", "discharge", 30, "authorized"),
    ("2024-12-02", "inpatient", 31, "not-authorized"),
    ("2026-01-05", "outpatient", 90, "authorized"),
    ("2026-01-05", "community", 60, "authorized"),
]


@pytest.mark.parametrize(("start", "setting", "days", "outcome"), LIMITS)
def test_sch_supply_limits(tmp_path, start: str, setting: str, days: int, outcome: str) -> None:
    res = on_clozapine("p", start, "2026-03-02")
    res += [
        anc("p", "2026-03-02", 1800, oid="p-last"),
        pending_dispense("p", "2026-03-03", days, did="p-next", category=setting),
    ]
    r = run_batch(tmp_path, res, as_of("2026-03-03"))
    auth = r.authorization_for("p-next")
    assert auth["outcome"] == outcome, auth
    assert auth["setting"] == setting
    assert auth["daysSupply"] == days
    if outcome == "not-authorized":
        assert auth["reasons"] == ["supply-exceeds-limit"]
        assert "supply-exceeds-limit" in _codes(r.dispense_issue("p-next"))


# Discharge under daily monitoring (moderate): 7-day cap applies, and every reason is listed.
def test_sch_every_reason_listed(tmp_path: Path) -> None:
    res = on_clozapine("p", "2026-01-05", "2026-03-02")
    res += [
        anc("p", "2026-02-20", 1800),
        pending_dispense("p", "2026-03-10", 10, did="p-next", category="discharge"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-03-10"))
    auth = r.authorization_for("p-next")
    assert auth["outcome"] == "not-authorized"
    assert {"anc-not-current", "supply-exceeds-limit"} <= set(auth["reasons"])


def _codes(issue: dict) -> set[str]:
    from tests.scenario_kit import evidence_codes

    return evidence_codes(issue)
