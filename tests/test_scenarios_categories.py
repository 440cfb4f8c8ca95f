"""Categories at every boundary, both populations (clinical-rules 2.1; interfaces 2 and 3).

Each case: a patient one month into therapy (weekly schedule) with a normal ANC a week earlier,
then one ANC at the value under test, evaluated the same evening.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from tests import scenario_kit as k
except ImportError:  # tests/ is not a package
    import scenario_kit as k

START = "2026-01-05"  # first supply; 2026-02-16 is ~1 month on therapy -> weekly
PREVIOUS = "2026-02-09"
TESTED = "2026-02-16"

# (population, ANC, category, recommendation, frequency, consult, finding, nextAncDue, repeat)
# repeat: the first result below 1500 (general) / 1000 (BEN) after a normal one -> +24h.
CASES = [
    ("general", 2500, "normal", "continue", "weekly", False, None, "2026-02-23", False),
    ("general", 1500, "normal", "continue", "weekly", False, None, "2026-02-23", False),
    (
        "general",
        1499,
        "mild-neutropenia",
        "continue",
        "three-times-weekly",
        False,
        "anc-mild-neutropenia",
        "2026-02-19",
        True,
    ),
    (
        "general",
        1000,
        "mild-neutropenia",
        "continue",
        "three-times-weekly",
        False,
        "anc-mild-neutropenia",
        "2026-02-19",
        True,
    ),
    (
        "general",
        999,
        "moderate-neutropenia",
        "interrupt",
        "daily",
        True,
        "anc-moderate-neutropenia",
        "2026-02-17",
        True,
    ),
    (
        "general",
        500,
        "moderate-neutropenia",
        "interrupt",
        "daily",
        True,
        "anc-moderate-neutropenia",
        "2026-02-17",
        True,
    ),
    (
        "general",
        499,
        "severe-neutropenia",
        "interrupt",
        "daily",
        True,
        "anc-severe-neutropenia",
        "2026-02-17",
        True,
    ),
    (
        "general",
        0,
        "severe-neutropenia",
        "interrupt",
        "daily",
        True,
        "anc-severe-neutropenia",
        "2026-02-17",
        True,
    ),
    ("ben", 1499, "normal", "continue", "weekly", False, None, "2026-02-23", False),
    ("ben", 1000, "normal", "continue", "weekly", False, None, "2026-02-23", False),
    (
        "ben",
        999,
        "ben-neutropenia",
        "continue",
        "three-times-weekly",
        True,
        "anc-ben-neutropenia",
        "2026-02-19",
        True,
    ),
    (
        "ben",
        500,
        "ben-neutropenia",
        "continue",
        "three-times-weekly",
        True,
        "anc-ben-neutropenia",
        "2026-02-19",
        True,
    ),
    (
        "ben",
        499,
        "severe-neutropenia",
        "interrupt",
        "daily",
        True,
        "anc-severe-neutropenia",
        "2026-02-17",
        True,
    ),
]


def _resources(pid: str, population: str, value: float) -> list[k.Resource]:
    designations = (k.BEN,) if population == "ben" else ()
    res = k.on_clozapine(pid, START, TESTED, designations=designations)
    res.append(k.anc(pid, PREVIOUS, 1800))
    res.append(k.anc(pid, TESTED, value))
    return res


@pytest.mark.parametrize(
    (
        "population",
        "value",
        "category",
        "recommendation",
        "frequency",
        "consult",
        "finding",
        "due",
        "repeat",
    ),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES],
)
def test_category_boundary(
    tmp_path: Path,
    population: str,
    value: int,
    category: str,
    recommendation: str,
    frequency: str,
    consult: bool,
    finding: str | None,
    due: str,
    repeat: bool,
) -> None:
    pid = f"p-{population}-{value}"
    result = k.run_batch(tmp_path, _resources(pid, population, value), k.as_of(TESTED))
    status = result.status_for(pid)
    obs_id = f"{pid}-anc-{TESTED}"

    assert status["population"] == population
    assert status["hospice"] is False
    assert status["therapyStart"] == START
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(value)
    assert k.parse_instant(status["latestAnc"]["collected"]) == k.parse_instant(k.when(TESTED))
    assert k.same_ref(status["latestAnc"]["observation"], f"Observation/{obs_id}")
    assert status["category"] == category
    assert status["recommendation"] == recommendation
    assert status["monitoringFrequency"] == frequency
    assert status["hematologyConsult"] is consult
    assert status["nextAncDue"] == due
    assert status["overdue"] is False
    if repeat:
        assert status["repeatAncBy"] is not None, "first low result after a normal one"
        assert k.parse_instant(status["repeatAncBy"]) == k.parse_instant(k.when("2026-02-17"))
    else:
        assert status["repeatAncBy"] is None

    # interfaces 2: one finding per usable non-normal ANC; a normal ANC writes no ANC finding.
    if finding is None:
        assert result.anc_findings(pid) == []
    else:
        assert result.anc_findings(pid) == [finding]
        (issue,) = result.issues_where(code=finding, patient=pid, observation=obs_id)
        assert issue["severity"] == k.FINDING_SEVERITY[finding]
        v3 = [c["code"] for c in issue["code"]["coding"] if c.get("system") == k.V3_ACTCODE]
        assert v3 == ["LAB"]
        assert k.same_ref(issue["author"]["reference"], k.AUTHOR_DEVICE)
        assert issue["status"] == "final"
        assert issue.get("identifiedDateTime")
        detail = issue.get("detail", "")
        assert str(value) in detail or f"{value:,}" in detail, (
            f"detail should state the ANC {value}: {detail!r}"
        )


def _category_reference(value: int, population: str) -> str:
    """The spec's tables, written out once more for the property below."""
    if population == "ben":
        return (
            "normal"
            if value >= 1000
            else "ben-neutropenia"
            if value >= 500
            else ("severe-neutropenia")
        )
    if value >= 1500:
        return "normal"
    if value >= 1000:
        return "mild-neutropenia"
    return "moderate-neutropenia" if value >= 500 else "severe-neutropenia"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.integers(min_value=0, max_value=4000),
    population=st.sampled_from(["general", "ben"]),
    thousands=st.booleans(),
)
def test_category_property_any_value_and_unit_scale(
    value: int, population: str, thousands: bool
) -> None:
    """Any ANC, sent in cells/uL or as 10*3/uL, lands in the spec's category."""
    pid = "p-prop"
    res = k.on_clozapine(pid, START, TESTED, designations=(k.BEN,) if population == "ben" else ())
    res.append(k.anc(pid, PREVIOUS, 1800))
    if thousands:
        res.append(k.anc(pid, TESTED, f"{value / 1000:.3f}", code="10*3/uL"))
        res[-1]["valueQuantity"]["value"] = float(f"{value / 1000:.3f}")
    else:
        res.append(k.anc(pid, TESTED, value))
    with tempfile.TemporaryDirectory() as tmp:
        result = k.run_batch(Path(tmp), res, k.as_of(TESTED))
    status = result.status_for(pid)
    assert status["category"] == _category_reference(value, population)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(value)
