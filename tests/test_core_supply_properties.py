"""Property (issue 8): a supply is not a clinical decision. Over random histories, inserting
clozapine supplies at random times never turns a not-authorized dispense into an authorized one
and never makes a recommendation less restrictive.

The histories keep therapy covered from day 0 (a 7-day supply every 7 days), so an inserted
supply never decides whether a gap of 30 days or more restarts the patient as new: that rule
is the spec's own reason for a supply to matter ("it counts as days on clozapine for the 30-day
rule") and is tested at its boundaries elsewhere. No prescriber answers anything here: with a
prescriber's decision, a supply is the rechallenge it decided on.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.core.model import PendingDispense, Supply
from tests.core_kit import PATIENT, anc, at, evaluate, supply

#: What the label allows: supply (0), only with the prescriber's decision (1), no supply (2).
#: "may-resume" and "continue" both allow a supply; a supply the label allows during
#: "may-resume" resumes treatment, so "continue" after it is the same permission.
RESTRICTION = {
    "continue": 0,
    "may-initiate": 0,
    "may-resume": 0,
    "prescriber-decision-required": 1,
    "interrupt": 2,
    "do-not-initiate": 2,
}
HORIZON = 120

values = st.one_of(
    st.integers(min_value=0, max_value=3000),
    st.sampled_from([499, 500, 999, 1000, 1499, 1500]),
)
results = st.lists(
    st.tuples(st.integers(min_value=1, max_value=HORIZON), st.integers(0, 23), values),
    min_size=1,
    max_size=14,
)
inserted = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=HORIZON),
        st.integers(0, 23),
        st.sampled_from([0, 1, 3, 7, 28]),
    ),
    min_size=1,
    max_size=6,
)
PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _base_supplies() -> list[Supply]:
    return [supply(day, 7) for day in range(0, HORIZON + 8, 7)]


def _run(labs, supplies, dispense_day: int, dispense_hour: int, ben: bool):
    dispense = PendingDispense(
        "MedicationDispense/pending", PATIENT, at(dispense_day, dispense_hour), 7, "outpatient"
    )
    clock = at(dispense_day, dispense_hour) + timedelta(minutes=30)
    return evaluate(labs, supplies, clock, pending_dispenses=(dispense,), ben=ben)


@PROFILE
@given(
    history=results,
    extra=inserted,
    dispense_day=st.integers(min_value=2, max_value=HORIZON),
    dispense_hour=st.integers(0, 23),
    ben=st.booleans(),
)
def test_adding_a_supply_never_authorizes_or_relaxes(
    history, extra, dispense_day, dispense_hour, ben
):
    labs = [anc(-3, 2000, ref="Observation/b1"), anc(-1, 2000, ref="Observation/b2")]
    labs += [
        anc(day, value, hour=hour, ref=f"Observation/r{index}")
        for index, (day, hour, value) in enumerate(history)
    ]
    base = _base_supplies()
    more = [
        Supply(f"MedicationDispense/x{index}", PATIENT, at(day, hour), days, "outpatient")
        for index, (day, hour, days) in enumerate(extra)
    ]
    without = _run(labs, base, dispense_day, dispense_hour, ben)
    with_more = _run(labs, [*base, *more], dispense_day, dispense_hour, ben)

    (before,), (after,) = without.decisions, with_more.decisions
    if before.outcome == "not-authorized":
        assert after.outcome == "not-authorized", (before.reasons, after.reasons)
    assert (
        RESTRICTION[with_more.status.recommendation] >= RESTRICTION[without.status.recommendation]
    )
    for old, new in zip(without.timeline.assessments, with_more.timeline.assessments, strict=True):
        assert RESTRICTION[new.recommendation] >= RESTRICTION[old.recommendation], (
            old.anc.collected,
            old.recommendation,
            new.recommendation,
        )
    # Every inserted supply the label did not allow is surfaced, never silently absorbed.
    surfaced = {d.dispense.ref for d in with_more.surfaced}
    assert all(d.outcome == "not-authorized" for d in with_more.surfaced)
    assert surfaced >= {d.dispense.ref for d in without.surfaced}
