"""Property: the report's history (adapter/core/history.py) never decides anything of its own.
Over random results and supplies (gaps, low values, BEN, hospice), it ends in exactly the
decision's state and assessments, its spans are well formed and still open exactly when the
decision says an excursion or an interruption is going on, and its frequency steps are
contiguous and end in the status's frequency."""

from __future__ import annotations

import itertools
from datetime import UTC

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.core.evaluate import Context, evaluate_patient
from adapter.core.history import patient_history
from adapter.core.model import Designations, PatientInputs
from tests.core_kit import PATIENT, anc, at, reference, supply

HORIZON = 150
values = st.one_of(
    st.integers(min_value=0, max_value=3000),
    st.sampled_from([499, 500, 999, 1000, 1499, 1500]),
)
results = st.lists(
    st.tuples(st.integers(min_value=-10, max_value=HORIZON), st.integers(0, 23), values),
    min_size=0,
    max_size=16,
)
supplies = st.lists(
    st.tuples(st.integers(min_value=0, max_value=HORIZON), st.sampled_from([None, 1, 7, 14, 28])),
    min_size=0,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=results,
    given_supplies=supplies,
    ben=st.booleans(),
    hospice=st.booleans(),
    clock_day=st.integers(min_value=0, max_value=HORIZON + 40),
)
def test_the_history_is_the_decisions_over_time(history, given_supplies, ben, hospice, clock_day):
    data = reference()
    labs = tuple(
        anc(day, value, ref=f"Observation/r{index}", hour=hour)
        for index, (day, hour, value) in enumerate(history)
    )
    handed = tuple(
        supply(day, days) for day, days in sorted(given_supplies, key=lambda item: item[0])
    )
    handed = tuple({s.ref: s for s in handed}.values())
    inputs = PatientInputs(
        patient=PATIENT,
        labs=labs,
        supplies=handed,
        designations=Designations(ben=ben, hospice=hospice),
        prescribed=True,
    )
    context = Context(data.protocol, data.units, UTC, at(clock_day, 23))
    evaluation = evaluate_patient(inputs, context)
    view = patient_history(inputs, evaluation, context)

    assert view.state == evaluation.timeline.state
    assert view.assessments == evaluation.timeline.assessments
    for span in view.spans:
        assert span.end is None or span.start <= span.end
    open_excursion = any(s.kind == "excursion" and s.end is None for s in view.spans)
    assert open_excursion == (evaluation.timeline.state.excursion is not None)
    open_interruption = any(s.kind == "interruption" and s.end is None for s in view.spans)
    assert open_interruption == (evaluation.timeline.state.interrupted_on is not None)
    steps = view.frequency
    for before, after in itertools.pairwise(steps):
        assert before.end == after.start and before.frequency != after.frequency
    if evaluation.timeline.assessments:
        assert steps[-1].frequency == evaluation.timeline.assessments[-1].frequency
    assert [c.restart for c in view.courses][:1] in ([], [False])
    assert view.current_until >= view.next_due
