"""Properties over generated histories: monotone in the ANC, and never a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.core.evaluate import Context, evaluate_patient
from adapter.core.labs import current_versions
from adapter.core.model import LabObservation, PatientInputs
from adapter.core.protocol import FREQUENCIES
from tests.core_kit import PATIENT, anc, at, evaluate, pending, reference, supply

CATEGORY_RANK = {
    "normal": 0,
    "mild-neutropenia": 1,
    "ben-neutropenia": 1,
    "moderate-neutropenia": 2,
    "severe-neutropenia": 3,
}
RECOMMENDATION_RANK = {
    "continue": 0,
    "may-initiate": 0,
    "may-resume": 1,
    "prescriber-decision-required": 2,
    "do-not-initiate": 3,
    "interrupt": 3,
}
OUTCOME_RANK = {"authorized": 0, "authorized-override": 1, "not-authorized": 2}

values = st.integers(min_value=0, max_value=4000)
history = st.lists(
    st.tuples(st.integers(min_value=-20, max_value=200), values), min_size=0, max_size=12
)
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _final_state(past, supply_days, value, ben, hospice):
    labs = [anc(day, v, ref=f"Observation/h{i}") for i, (day, v) in enumerate(sorted(past))]
    last_day = max([day for day, _ in past] + supply_days + [0]) + 1
    labs.append(anc(last_day, value, ref="Observation/last"))
    supplies = [supply(day, 28) for day in sorted(set(supply_days))]
    dispense = pending(last_day, 7, "discharge")
    return evaluate(labs, supplies, pending_dispenses=(dispense,), ben=ben, hospice=hospice)


@PROFILE
@given(
    past=history,
    supply_days=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    low=values,
    high=values,
    ben=st.booleans(),
    hospice=st.booleans(),
)
def test_a_lower_anc_is_never_less_restrictive(past, supply_days, low, high, ben, hospice):
    low, high = min(low, high), max(low, high)
    lower = _final_state(past, supply_days, low, ben, hospice)
    higher = _final_state(past, supply_days, high, ben, hospice)
    assert CATEGORY_RANK[lower.status.category] >= CATEGORY_RANK[higher.status.category]
    assert (
        RECOMMENDATION_RANK[lower.status.recommendation]
        >= RECOMMENDATION_RANK[higher.status.recommendation]
    )
    assert FREQUENCIES.index(lower.status.frequency) <= FREQUENCIES.index(higher.status.frequency)
    assert OUTCOME_RANK[lower.decisions[0].outcome] >= OUTCOME_RANK[higher.decisions[0].outcome]


units = st.sampled_from(["10*3/uL", "/uL", "/mm3", "K/uL", "%", "mg/dL", "", "10*9/L"])
numbers = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-1e7, max_value=1e7, places=3),
    st.none(),
)
statuses = st.sampled_from(
    ["final", "amended", "corrected", "preliminary", "registered", "entered-in-error", "cancelled"]
)
roles = st.sampled_from(["anc", "wbc", "neutrophil-pct", "segs-pct", "band-pct"])


@st.composite
def lab(draw):
    day = draw(st.integers(min_value=-40, max_value=120))
    moment = draw(st.one_of(st.none(), st.just(at(day, draw(st.integers(0, 23))))))
    return LabObservation(
        ref=f"Observation/{draw(st.integers(0, 15))}",
        patient=PATIENT,
        role=draw(roles),
        status=draw(statuses),
        collected=moment,
        value=draw(numbers),
        unit_code=draw(st.one_of(st.none(), units)),
        unit_system=draw(st.sampled_from([None, "http://unitsofmeasure.org", "urn:local"])),
        unit_text=draw(st.one_of(st.none(), units)),
        version=draw(st.sampled_from(["", "1", "2", "x"])),
        specimen=draw(st.sampled_from([None, "Specimen/a", "Specimen/b"])),
        identifiers=draw(st.sampled_from([(), ("lab|1",), ("lab|2",)])),
        arrival=draw(st.integers(0, 100)),
        problem=draw(st.sampled_from([None, "Observation.valueString: not a Quantity"])),
    )


@PROFILE
@given(
    labs=st.lists(lab(), max_size=15),
    supply_days=st.lists(st.integers(min_value=-10, max_value=120), max_size=6),
    ben=st.booleans(),
    clock_day=st.integers(min_value=-5, max_value=150),
)
def test_any_input_gives_a_decision_or_unevaluable_never_a_crash(labs, supply_days, ben, clock_day):
    data = reference()
    inputs = PatientInputs(
        patient=PATIENT,
        labs=tuple(labs),
        supplies=tuple(supply(day, 14) for day in supply_days),
        pending=(pending(clock_day - 1, 10, "discharge"),),
        prescribed=True,
    )
    clock = datetime(2025, 1, 6, 12, tzinfo=UTC) + timedelta(days=clock_day)
    result = evaluate_patient(inputs, Context(data.protocol, data.units, UTC, clock))
    assert len(result.decisions) == 1
    used = {anc.observation for anc in result.labs.usable}
    for item in result.labs.usable:
        assert Decimal(0) <= item.value_per_ul <= Decimal(100000)
        assert item.collected <= clock
    for finding in result.findings:
        assert finding.identifier and finding.detail
    # Every ANC-coded, usable-status result that stands is either used or reported.
    reported = {u.observation for u in result.labs.unevaluable}
    for lab_item in current_versions(labs).values():
        if lab_item.role != "anc" or lab_item.collected is None or lab_item.collected > clock:
            continue
        if lab_item.status in ("final", "amended", "corrected") and (
            lab_item.ref not in result.labs.replaced
        ):
            assert lab_item.ref in used | reported
