"""Clinical-rules 2.2: a supply is not a clinical decision.

"A supply handed over while treatment is interrupted, or after severe neutropenia before the
prescriber's rechallenge decision (section 4), never ends the interruption, never stands in for
that decision and never makes an ANC current. It counts as days on clozapine for the 30-day
rule, and it is surfaced: that completed dispense gets a `dispense-not-authorized` finding with
the reasons that held when it was handed over."
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from adapter.core.model import PriorIssue, Supply
from tests.core_kit import PATIENT, START, anc, at, evaluate, issue, pending, supply

DR = "Practitioner/dr"
PRESCRIBERS = frozenset({DR})


def _supply_at(day: int, hour: int, days: int = 7) -> Supply:
    return Supply(f"MedicationDispense/s-{day}-{hour}", PATIENT, at(day, hour), days, "outpatient")


def _weekly(first: int, last: int) -> list[Supply]:
    return [supply(day, 7) for day in range(first, last + 1, 7)]


BASE = [anc(-1, 2000), anc(5, 2000)]

# Histories in which a supply is handed over while the label does not allow one, with the
# recommendation that must hold afterwards and the reasons its surfaced finding carries.
UNSANCTIONED = [
    pytest.param(
        [*BASE, anc(10, 800)],
        supply(11, 7),
        "interrupt",
        ("treatment-interrupted",),
        id="during-a-moderate-interruption",
    ),
    pytest.param(
        [*BASE, anc(10, 400), anc(11, 1200)],
        supply(11, 7),
        "interrupt",
        ("treatment-interrupted",),
        id="after-severe-below-the-rechallenge-level",
    ),
    pytest.param(
        [*BASE, anc(10, 400), anc(11, 800), anc(12, 1600)],
        supply(12, 7),
        "prescriber-decision-required",
        ("rechallenge-requires-prescriber",),
        id="after-severe-recovered-before-the-prescriber-decided",
    ),
    pytest.param(
        [*BASE, anc(10, 800, hour=14)],
        _supply_at(10, 14),
        "interrupt",
        ("treatment-interrupted",),
        id="a-refill-at-the-instant-of-a-low-result",
    ),
]


@pytest.mark.parametrize(("labs", "given", "recommendation", "reasons"), UNSANCTIONED)
def test_a_supply_the_label_forbids_changes_nothing_and_is_surfaced(
    labs, given, recommendation, reasons
):
    supplies = [supply(0, 7), supply(7, 7), given]
    clock = given.handed_over + timedelta(hours=1)
    result = evaluate(labs, supplies, clock)
    assert result.status.recommendation == recommendation
    assert result.status.therapy_start == START  # no restart, no rechallenge
    (surfaced,) = result.surfaced
    assert surfaced.dispense.ref == given.ref
    assert surfaced.outcome == "not-authorized"
    assert surfaced.reasons == reasons
    (finding,) = [f for f in result.findings if f.implicated == (given.ref,)]
    assert finding.code == "dispense-not-authorized"
    assert finding.reasons == reasons
    assert "was handed over" in finding.detail
    assert result.decisions == ()  # nothing pending: no authorization line


@pytest.mark.parametrize(("labs", "given", "recommendation", "reasons"), UNSANCTIONED)
def test_the_next_pending_dispense_is_still_not_authorized(labs, given, recommendation, reasons):
    later = given.handed_over + timedelta(hours=2)
    dispense = pending(0)
    dispense = type(dispense)(dispense.ref, PATIENT, later, 7, "outpatient")
    result = evaluate(labs, [supply(0, 7), supply(7, 7), given], pending_dispenses=(dispense,))
    (decision,) = result.decisions
    assert decision.outcome == "not-authorized"
    assert set(reasons) - {"anc-not-current"} <= set(decision.reasons)


def test_a_supply_just_before_the_low_result_is_not_surfaced():
    labs = [*BASE, anc(10, 800, hour=14)]
    result = evaluate(labs, [supply(0, 7), supply(7, 7), _supply_at(10, 13)])
    assert result.surfaced == ()
    assert result.status.recommendation == "interrupt"


def test_a_supply_after_severe_never_counts_as_the_rechallenge():
    labs = [*BASE, anc(10, 400), anc(12, 1600)]
    supplies = [supply(0, 7), supply(7, 7), supply(13, 7)]
    # Later results in the normal range: the rechallenge still waits for the prescriber.
    result = evaluate(
        [*labs, anc(15, 1800), anc(20, 1900)], supplies, pending_dispenses=(pending(21),)
    )
    assert [a.recommendation for a in result.timeline.assessments[-3:]] == [
        "prescriber-decision-required"
    ] * 3
    assert result.status.recommendation == "prescriber-decision-required"
    assert result.status.therapy_start == START
    (decision,) = result.decisions
    assert decision.outcome == "not-authorized"
    assert "rechallenge-requires-prescriber" in decision.reasons


def test_a_supply_during_a_moderate_interruption_does_not_resume_treatment():
    # 800 interrupts; the supply on day 11 is not a resumption, so 1100 means "may resume".
    labs = [*BASE, anc(10, 800), anc(12, 1100)]
    result = evaluate(labs, [supply(0, 7), supply(7, 7), supply(11, 7)])
    assert result.status.recommendation == "may-resume"
    assert len(result.surfaced) == 1
    # The next supply is allowed (may resume) and really resumes treatment.
    resumed = evaluate(labs, [supply(0, 7), supply(7, 7), supply(11, 7), supply(13, 7)])
    assert resumed.status.recommendation == "continue"
    assert [d.dispense.ref for d in resumed.surfaced] == [supply(11).ref]


def test_a_supply_never_makes_an_anc_current():
    # Moderate on day 10: daily monitoring, current until day 13. Supplies on day 11 and 18 do not
    # change that: on day 20 the patient is overdue and a dispense lacks a current ANC.
    labs = [*BASE, anc(10, 800)]
    supplies = [supply(0, 7), supply(7, 7), supply(11, 7), supply(18, 7)]
    result = evaluate(labs, supplies, clock=20, pending_dispenses=(pending(20),))
    assert result.status.overdue
    (decision,) = result.decisions
    assert {"anc-not-current", "treatment-interrupted"} <= set(decision.reasons)
    assert [d.dispense.ref for d in result.surfaced] == [supply(11).ref, supply(18).ref]


@pytest.mark.parametrize(
    ("extra", "restarts"),
    [
        ([], True),  # 40 days without clozapine since the interrupt: a new patient
        ([supply(20, 28)], False),  # supplied during the interruption: days on clozapine
    ],
    ids=["no-supply-in-the-gap", "supply-during-the-interruption"],
)
def test_supplies_during_an_interruption_count_as_days_on_clozapine(extra, restarts):
    labs = [*BASE, anc(10, 800), anc(48, 1600)]
    supplies = [supply(0, 7), supply(7, 7), *extra]
    result = evaluate(labs, supplies, pending_dispenses=(pending(50),))
    (decision,) = result.decisions
    assert decision.first_supply is restarts


def test_first_supply_on_a_baseline_that_interrupts_does_not_authorize_the_next():
    # Baseline 800 (moderate): the first supply is handed over anyway and starts therapy; the
    # next dispense is not authorized (treatment interrupted); both supplies are surfaced.
    labs = [anc(-1, 800)]
    result = evaluate(labs, [supply(0, 3), supply(3, 3)], pending_dispenses=(pending(4),))
    assert result.status.recommendation == "interrupt"
    (decision,) = result.decisions
    assert "treatment-interrupted" in decision.reasons
    assert [d.dispense.ref for d in result.surfaced] == [supply(0).ref, supply(3).ref]
    first, refill = result.surfaced
    assert first.reasons == ("anc-below-threshold",)  # it started therapy: no baseline met
    assert "treatment-interrupted" in refill.reasons


@pytest.mark.parametrize(
    ("baseline", "surfaced"),
    [
        (499, True),  # severe: interrupt, no rechallenge without the prescriber
        (500, True),  # moderate
        (999, True),
        (1000, False),  # mild: continue (a first supply on it is judged when it is pending)
        (1500, False),
    ],
)
def test_a_completed_first_supply_after_a_baseline_that_interrupts_is_surfaced(
    baseline: int, surfaced: bool
) -> None:
    """clinical-rules 2.2: a supply handed over while the label says interrupt gets a
    dispense-not-authorized finding with the reasons that held, a first supply too."""
    result = evaluate([anc(-1, baseline)], [supply(0)], 2)
    assert result.status.therapy_start is not None  # it started therapy all the same
    assert [d.dispense.ref for d in result.surfaced] == ([supply(0).ref] if surfaced else [])
    codes = [f.code for f in result.findings]
    assert ("dispense-not-authorized" in codes) is surfaced


def test_a_prescriber_rationale_before_the_supply_sanctions_it():
    labs = [*BASE, anc(10, 800)]
    answer = issue("anc-moderate-neutropenia", author=DR, when=at(10, 12), evidence=(labs[-1].ref,))
    result = evaluate(
        labs, [supply(0, 7), supply(7, 7), supply(11, 7)], prior=(answer,), prescribers=PRESCRIBERS
    )
    assert result.surfaced == ()


def test_a_rationale_recorded_after_the_supply_does_not_sanction_it():
    labs = [*BASE, anc(10, 800)]
    answer = issue("anc-moderate-neutropenia", author=DR, when=at(12), evidence=(labs[-1].ref,))
    result = evaluate(
        labs, [supply(0, 7), supply(7, 7), supply(11, 7)], prior=(answer,), prescribers=PRESCRIBERS
    )
    assert [d.dispense.ref for d in result.surfaced] == [supply(11).ref]


def test_the_prescribers_rechallenge_decision_then_a_supply_restarts_as_a_new_patient():
    labs = [*BASE, anc(10, 400), anc(12, 1600)]
    answer = issue("anc-severe-neutropenia", author=DR, when=at(12, 12), evidence=(labs[2].ref,))
    decided = evaluate(
        labs, [supply(0, 7), supply(7, 7)], clock=12, prior=(answer,), prescribers=PRESCRIBERS
    )
    assert decided.status.recommendation == "may-resume"
    result = evaluate(
        [*labs, anc(16, 1700)],
        [supply(0, 7), supply(7, 7), supply(13, 7)],
        prior=(answer,),
        prescribers=PRESCRIBERS,
    )
    assert result.surfaced == ()
    assert result.status.therapy_start == START + timedelta(days=13)
    assert result.status.recommendation == "continue"
    assert result.status.frequency == "weekly"


def test_a_supply_that_the_label_allows_is_not_surfaced():
    labs = [anc(-1, 2000), *[anc(day, 2000) for day in range(5, 60, 7)]]
    result = evaluate(labs, _weekly(0, 56))
    assert result.surfaced == ()
    assert not [f for f in result.findings if f.code.startswith("dispense-")]


def _as_prior(finding, when) -> PriorIssue:
    """A finding as the EHR holds it after it was written (final, no answer)."""
    return PriorIssue(
        ref=f"DetectedIssue/{finding.identifier[:12]}",
        identifier=finding.identifier,
        patient=PATIENT,
        finding=finding.code,
        status="final",
        identified=when,
        evidence=finding.evidence,
        implicated=finding.implicated,
        mitigations=(),
        reasons=finding.reasons,
    )


# Clinical-rules 1: "entered-in-error ... withdraw the result: every decision that used it is
# withdrawn and re-made"; interfaces 2 `evidence.detail` (the ANC Observations used). A supply
# refused because an earlier severe result still blocks (below the rechallenge level: interrupt;
# at it: the prescriber must decide) used that result; one a result blocks by its own band did
# not use the results before it. Rows: the history, then which of its results are cited.
CITED = [
    pytest.param([*BASE, anc(10, 400), anc(11, 1200)], (2, 3), id="below-the-rechallenge-level"),
    pytest.param(
        [*BASE, anc(10, 1400), anc(11, 400), anc(12, 800), anc(13, 1600)],
        (3, 5),
        id="at-the-rechallenge-level-after-mild-and-moderate",
    ),
    pytest.param([*BASE, anc(10, 400), anc(12, 800)], (3,), id="moderate-blocks-by-itself"),
    pytest.param([*BASE, anc(10, 700), anc(11, 800)], (3,), id="moderate-after-moderate"),
]


@pytest.mark.parametrize(("labs", "cited"), CITED)
def test_a_refusal_cites_the_result_it_rests_on_and_goes_with_it(labs, cited):
    latest = labs[-1]
    given = supply(latest.collected.date(), 7)  # handed over the afternoon of the latest result
    later = type(pending(0))("MedicationDispense/next", PATIENT, given.handed_over, 7, "outpatient")
    supplies = [supply(0, 7), supply(7, 7), given]
    clock = given.handed_over + timedelta(hours=1)
    result = evaluate(labs, supplies, clock, pending_dispenses=(later,))
    refusals = [f for f in result.findings if f.code == "dispense-not-authorized"]
    assert sorted(f.implicated for f in refusals) == sorted([(given.ref,), (later.ref,)])
    for finding in refusals:
        assert set(finding.evidence) == {labs[i].ref for i in cited}, finding
        for i in cited:
            assert f"ANC {int(labs[i].value):,} cells/uL" in finding.detail
    # Enter the oldest cited result in error: every refusal that used it is withdrawn as
    # entered-in-error and none made again rests on it.
    gone = labs[cited[0]]
    corrected = [replace(lab, status="entered-in-error") if lab is gone else lab for lab in labs]
    prior = tuple(_as_prior(f, clock) for f in refusals)
    again = evaluate(corrected, supplies, clock, pending_dispenses=(later,), prior=prior)
    assert all(gone.ref not in f.evidence for f in again.findings)
    withdrawn = {w.issue.identifier: w.status for w in again.withdrawals}
    assert {f.identifier: withdrawn.get(f.identifier) for f in refusals} == {
        f.identifier: "entered-in-error" for f in refusals
    }
