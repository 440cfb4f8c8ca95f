"""Clinical-rules section 3 (the PSF) and interfaces.md section 2 ("only open problems stay
final"), in the local backend:

- "A treatment rationale is required ... when labs were missed for the period (any ANC due date
  + grace inside the period passed without a usable result, even if a later one arrived)."
- A PSF that needs the prescriber (rationale, BEN, hospice) gets `psf-prescriber-action-required`
  saying what is needed, whichever backend.
- "an `anc-monitoring-overdue` finding that a later usable result answers is withdrawn as
  `cancelled`".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from adapter.core.model import Mitigation, PriorIssue
from tests.core_kit import PATIENT, anc, evaluate, supply

# A patient started 2025-12-01 (weekly monitoring), supplies every 7 days; the clock in January.
START = date(2025, 12, 1)
CLOCK = datetime(2026, 1, 28, 18, tzinfo=UTC)


def _day(text: str) -> date:
    return date.fromisoformat(text)


def _supplies():
    return [supply(START + timedelta(days=7 * week), 7) for week in range(9)]


def _results(*days: str, value: int = 2000):
    return [anc(-30, 2000), anc(START - timedelta(days=1), 2000)] + [
        anc(_day(d), value) for d in days
    ]


MISSED = [
    # January results (weekly: due + 7, deadline = due + 2 days grace), expected missed deadlines
    pytest.param(
        ("2025-12-29", "2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"), (), id="on-time"
    ),
    pytest.param(
        ("2025-12-29", "2026-01-07", "2026-01-14", "2026-01-21", "2026-01-28"),
        (),
        id="each-on-its-deadline-day",
    ),
    pytest.param(
        ("2025-12-29", "2026-01-08", "2026-01-15", "2026-01-22"),
        ("2026-01-07",),
        id="one-day-late-then-a-later-result-arrived",
    ),
    pytest.param(
        ("2025-12-29", "2026-01-05", "2026-01-20", "2026-01-27"),
        ("2026-01-14",),
        id="a-week-skipped",
    ),
    pytest.param(
        ("2025-12-29", "2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"),
        (),
        id="the-next-deadline-has-not-passed-yet",
    ),
    pytest.param(
        ("2025-12-20", "2026-01-03", "2026-01-10", "2026-01-17", "2026-01-24"),
        (),
        id="missed-in-the-previous-month-only",
    ),
]


@pytest.mark.parametrize(("days", "missed"), MISSED)
def test_labs_missed_for_the_period(days, missed):
    result = evaluate(_results(*days), _supplies(), CLOCK)
    psf = result.psf
    assert psf is not None and psf.reporting_period == "2026-01"
    assert psf.missed_deadlines == tuple(_day(d) for d in missed)
    assert psf.labs_missed is bool(missed)
    assert psf.rationale_required is bool(missed)
    assert psf.signer_role == ("prescriber" if missed else "designee")
    actions = [f for f in result.findings if f.code == "psf-prescriber-action-required"]
    assert len(actions) == (1 if missed else 0)
    if missed:
        assert "labs were missed for the period" in actions[0].detail
        assert all(d in actions[0].detail for d in missed)


def test_an_unusable_result_does_not_meet_a_deadline():
    labs = _results("2025-12-29", "2026-01-12", "2026-01-19", "2026-01-26")
    labs.append(anc(_day("2026-01-05"), "45", "%"))  # unevaluable: a percentage on 751-8
    result = evaluate(labs, _supplies(), CLOCK)
    assert result.psf is not None
    assert result.psf.missed_deadlines == (_day("2026-01-07"),)


def test_overdue_now_is_labs_missed_even_when_the_deadline_was_last_month():
    result = evaluate(_results("2025-12-22"), _supplies(), CLOCK)
    assert result.status.overdue
    assert result.psf is not None and result.psf.labs_missed and result.psf.rationale_required


ON_TIME = ("2025-12-29", "2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26")


@pytest.mark.parametrize(
    ("value", "ben", "hospice", "needs", "words"),
    [
        (2000, False, False, (), ()),
        (900, False, False, ("rationale",), ("a treatment rationale", "ANC 900")),
        (1200, True, False, ("ben",), ("benign ethnic neutropenia designation",)),
        (400, True, False, ("rationale", "ben"), ("a treatment rationale", "benign ethnic")),
        (2000, False, True, ("hospice",), ("the hospice designation",)),
    ],
    ids=["routine", "below-1000", "ben", "ben-below-500", "hospice"],
)
def test_a_psf_waiting_for_the_prescriber_says_what_is_needed(value, ben, hospice, needs, words):
    labs = [*_results(*ON_TIME[:-1]), anc(_day(ON_TIME[-1]), value)]
    result = evaluate(labs, _supplies(), CLOCK, ben=ben, hospice=hospice)
    assert result.psf is not None
    assert result.psf.needs == needs
    actions = [f for f in result.findings if f.code == "psf-prescriber-action-required"]
    if not needs:
        assert actions == []
        return
    (action,) = actions
    assert action.act_code == "VALIDAT" and action.severity == "moderate"
    assert action.topic == f"psf|{PATIENT}|2026-01"
    for word in words:
        assert word in action.detail


def _fed_back(finding, mitigations=(), identified=CLOCK - timedelta(days=3)) -> PriorIssue:
    return PriorIssue(
        ref=f"DetectedIssue/{finding.identifier[:8]}",
        identifier=finding.identifier,
        patient=PATIENT,
        finding=finding.code,
        status="final",
        identified=identified,
        evidence=finding.evidence,
        implicated=finding.implicated,
        mitigations=mitigations,
    )


def test_the_prescribers_answer_signs_the_local_psf():
    labs = [*_results(*ON_TIME[:-1]), anc(_day(ON_TIME[-1]), 900)]
    first = evaluate(labs, _supplies(), CLOCK)
    (action,) = [f for f in first.findings if f.code == "psf-prescriber-action-required"]
    assert not first.psf_signed
    answer = Mitigation("Practitioner/dr", (), CLOCK - timedelta(hours=1), "benefit outweighs risk")
    prior = (_fed_back(action, (answer,)),)
    second = evaluate(
        labs, _supplies(), CLOCK, prior=prior, prescribers=frozenset({"Practitioner/dr"})
    )
    assert second.psf_signed
    by_someone = Mitigation("Practitioner/pharmacist", (), CLOCK - timedelta(hours=1), "ok")
    other = evaluate(
        labs,
        _supplies(),
        CLOCK,
        prior=(_fed_back(action, (by_someone,)),),
        prescribers=frozenset({"Practitioner/dr"}),
    )
    assert not other.psf_signed


def test_a_psf_routing_issue_replaced_by_a_newer_form_is_cancelled():
    labs = [*_results(*ON_TIME[:-1]), anc(_day(ON_TIME[-1]), 900)]
    first = evaluate(labs, _supplies(), CLOCK - timedelta(days=1))
    (action,) = [f for f in first.findings if f.code == "psf-prescriber-action-required"]
    later = evaluate(
        [*labs, anc(_day("2026-01-28"), 800, hour=7)],
        _supplies(),
        CLOCK,
        prior=(_fed_back(action),),
    )
    assert [(w.issue.identifier, w.status) for w in later.withdrawals] == [
        (action.identifier, "cancelled")
    ]


# ---- item 5: an overdue finding answered by a later usable result is cancelled


def _overdue_then(extra, clock=CLOCK):
    labs = _results("2025-12-29", "2026-01-05")
    raised = datetime(2026, 1, 20, 12, tzinfo=UTC)
    first = evaluate(labs, _supplies(), raised)
    (overdue,) = [f for f in first.findings if f.code == "anc-monitoring-overdue"]
    prior = (_fed_back(overdue, identified=raised),)
    return overdue, evaluate([*labs, *extra], _supplies(), clock, prior=prior)


@pytest.mark.parametrize(
    ("extra", "cancelled"),
    [
        ([], False),  # still overdue, same finding: it stays
        ([anc(_day("2026-01-21"), 2000)], True),  # answered by a later usable result
        ([anc(_day("2026-01-21"), 900)], True),  # a low result answers it too (its own finding)
        ([anc(_day("2026-01-21"), "45", "%")], False),  # unevaluable: no answer
        ([anc(_day("2026-01-04"), 2000)], False),  # older than the one it was about
    ],
    ids=["no-new-result", "normal", "low", "unevaluable", "older"],
)
def test_an_answered_overdue_finding_is_cancelled(extra, cancelled):
    overdue, result = _overdue_then(extra, clock=datetime(2026, 1, 21, 18, tzinfo=UTC))
    withdrawn = [(w.issue.identifier, w.status) for w in result.withdrawals]
    assert withdrawn == ([(overdue.identifier, "cancelled")] if cancelled else [])
    if cancelled:
        (reason,) = [w.reason for w in result.withdrawals]
        assert reason.startswith("answered by Observation/")


@pytest.mark.parametrize(
    ("values", "ben", "below"),
    [
        ((400, 800, 1200, 1600), False, True),  # recovered by the month's end: still needed
        ((2000, 1000, 2000, 2000), False, False),  # 1000 is not below 1000
        ((2000, 999, 2000, 2000), False, True),
        ((499, 900, 1200, 1200), True, True),  # BEN: below 500
        ((500, 900, 1200, 1200), True, False),
    ],
)
def test_any_anc_of_the_period_below_the_level_needs_a_rationale(values, ben, below):
    """clinical-rules s.3: a rationale is required when the ANC is below 1000 (BEN 500); the
    safer reading is any ANC the form reports for the period, not only the latest (a designee
    must not sign a month that had a severe result). The excursions also make labs due more
    often (then missed here): `anc_below` says what the values alone require."""
    january = ON_TIME[1:]
    labs = [*_results(ON_TIME[0]), *(anc(_day(d), v) for d, v in zip(january, values, strict=True))]
    result = evaluate(labs, _supplies(), CLOCK, ben=ben)
    psf = result.psf
    assert psf is not None and len(psf.anc_results) == 4
    assert psf.anc_below is below
    if below:
        assert psf.rationale_required and psf.signer_role == "prescriber"
        (action,) = [f for f in result.findings if f.code == "psf-prescriber-action-required"]
        assert f"ANC {min(values)}" in action.detail and "below the level" in action.detail
