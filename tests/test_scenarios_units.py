"""Unit normalisation, magnitude sanity, unevaluable results (clinical-rules 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k

START = "2026-01-05"
PREVIOUS = "2026-02-09"  # a normal 1800, the fallback when the tested result is not usable
TESTED = "2026-02-16"


def _run(tmp_path: Path, pid: str, tested: k.Resource) -> k.Result:
    res = k.on_clozapine(pid, START, TESTED)
    res.append(k.anc(pid, PREVIOUS, 1800))
    res.append(tested)
    return k.run_batch(tmp_path, res, k.as_of(TESTED))


# (id, value, UCUM code or None, unit text or None, expected cells/uL)
UNIT_CASES: list[tuple[str, Any, str | None, str | None, float]] = [
    ("ucum-10*3/uL", 1.2, "10*3/uL", None, 1200),
    ("ucum-10*9/L", 1.2, "10*9/L", None, 1200),
    ("ucum-/uL", 1200, "/uL", None, 1200),
    ("ucum-/mm3", 1200, "/mm3", None, 1200),
    ("ucum-{cells}/uL", 1200, "{cells}/uL", None, 1200),
    ("ucum-10*3/uL-with-K/uL-text", 1.2, "10*3/uL", "K/uL", 1200),
    ("alias-K/uL", 1.2, None, "K/uL", 1200),
    ("alias-x10^3/uL", 1.2, None, "x10^3/uL", 1200),
    ("alias-10^9/L", 1.2, None, "10^9/L", 1200),
    ("alias-cells/uL", 1200, None, "cells/uL", 1200),
    ("alias-cells/mm3", 1200, None, "cells/mm3", 1200),
    # "match on the UCUM code first and the unit text second": the code wins over the text.
    ("code-/uL-beats-text-K/uL", 1200, "/uL", "K/uL", 1200),
    ("code-10*3/uL-beats-text-cells/uL", 1.2, "10*3/uL", "cells/uL", 1200),
]


@pytest.mark.parametrize(
    ("value", "code", "unit", "expected"),
    [c[1:] for c in UNIT_CASES],
    ids=[c[0] for c in UNIT_CASES],
)
def test_unit_normalised_to_cells_per_ul(
    tmp_path: Path, value: Any, code: str | None, unit: str | None, expected: float
) -> None:
    pid = "p-unit"
    tested = k.anc(pid, TESTED, value, code=code, unit=unit)
    result = _run(tmp_path, pid, tested)
    status = result.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(expected)
    assert k.same_ref(status["latestAnc"]["observation"], f"Observation/{tested['id']}")
    assert status["category"] == "mild-neutropenia"
    assert result.anc_findings(pid) == ["anc-mild-neutropenia"]


# Boundaries reached through a scaled unit (1.499 x 1000 must still be 1499, not 1498.999..).
SCALED = [
    (1.5, "normal"),
    (1.499, "mild-neutropenia"),
    (1.0, "mild-neutropenia"),
    (0.999, "moderate-neutropenia"),
    (0.5, "moderate-neutropenia"),
    (0.499, "severe-neutropenia"),
]


@pytest.mark.parametrize(("value", "category"), SCALED, ids=[f"{v}x10^3" for v, _ in SCALED])
def test_boundaries_through_thousands_unit(tmp_path: Path, value: float, category: str) -> None:
    pid = "p-scaled"
    result = _run(tmp_path, pid, k.anc(pid, TESTED, value, code="10*3/uL"))
    status = result.status_for(pid)
    assert status["category"] == category
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(value * 1000)


def _value_string(pid: str) -> k.Resource:
    obs = k.anc(pid, TESTED, 0)
    del obs["valueQuantity"]
    obs["valueString"] = "see comment"
    return obs


def _no_collection_time(pid: str) -> k.Resource:
    """CR 1 "Time of an ANC = specimen collection ... never the report time (issued)": without a
    collection time the result cannot be placed, so it is unevaluable (SCENARIOS.md A12)."""
    return k.observation(
        pid,
        f"{pid}-anc-undated",
        "751-8",
        None,
        k.quantity(1200),
        issued=k.when(TESTED, "12:00:00"),
    )


UNEVALUABLE = [
    ("unknown-unit-text-mg/dL", k.anc("p-uneval", TESTED, 1.2, code=None, unit="mg/dL")),
    ("unknown-ucum-code-mmol/L", k.anc("p-uneval", TESTED, 1.2, code="mmol/L")),
    ("no-unit-at-all", k.anc("p-uneval", TESTED, 1200, code=None, unit=None)),
    ("1400-with-10*3/uL", k.anc("p-uneval", TESTED, 1400, code="10*3/uL")),
    ("150-with-10*3/uL-over-100000", k.anc("p-uneval", TESTED, 150, code="10*3/uL")),
    ("200000-per-uL-over-range", k.anc("p-uneval", TESTED, 200000)),
    ("negative", k.anc("p-uneval", TESTED, -5)),
    ("1.4-per-uL-only-makes-sense-as-thousands", k.anc("p-uneval", TESTED, 1.4)),
    ("no-valueQuantity", _value_string("p-uneval")),
    ("no-collection-time", _no_collection_time("p-uneval")),
]


@pytest.mark.parametrize("tested", [c[1] for c in UNEVALUABLE], ids=[c[0] for c in UNEVALUABLE])
def test_unevaluable_is_reported_and_not_used(tmp_path: Path, tested: k.Resource) -> None:
    pid = "p-uneval"
    result = _run(tmp_path, pid, tested)
    status = result.status_for(pid)
    # not guessed: the decision still stands on the previous usable result
    assert k.same_ref(status["latestAnc"]["observation"], f"Observation/{pid}-anc-{PREVIOUS}")
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(1800)
    assert status["category"] == "normal"
    assert result.anc_findings(pid) == ["anc-unevaluable"]
    (issue,) = result.issues_where(code="anc-unevaluable", patient=pid, observation=tested["id"])
    assert issue["severity"] == "moderate"


@pytest.mark.parametrize(
    ("value", "code", "usable"),
    [(100, "10*3/uL", True), (100000, "/uL", True), (100001, "/uL", False), (0, "/uL", True)],
    ids=["100x10^3-is-100000", "100000-per-uL", "100001-per-uL", "zero"],
)
def test_magnitude_range_edges(tmp_path: Path, value: float, code: str, usable: bool) -> None:
    """CR 1 "a normalised value outside 0..100000 cells/uL ... is unevaluable"."""
    pid = "p-range"
    tested = k.anc(pid, TESTED, value, code=code)
    result = _run(tmp_path, pid, tested)
    latest = result.status_for(pid)["latestAnc"]
    if usable:
        assert k.same_ref(latest["observation"], f"Observation/{tested['id']}")
        assert "anc-unevaluable" not in result.anc_findings(pid)
    else:
        assert result.anc_findings(pid) == ["anc-unevaluable"]
        assert latest["valuePerUL"] == pytest.approx(1800)
