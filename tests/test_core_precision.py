"""Clinical-rules section 1: "No value is rounded before it is categorised: a derived 999.9 is
moderate, a derived 1499.85 mild (display may round; decisions never do)."

Direct and derived ANCs keep their exact Decimal value through every comparison, whatever the
unit scale and however many digits the source wrote.
"""

from __future__ import annotations

from decimal import MAX_PREC, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.core.findings import cells
from tests.core_kit import anc, evaluate, pending, reference, supply

BASELINES = [anc(-1, 2000)]


def _derived(wbc: str, neutrophils: str, bands: str | None = None, ben: bool = False):
    labs = [
        *BASELINES,
        anc(3, wbc, "10*3/uL", role="wbc", ref="Observation/wbc"),
        anc(3, neutrophils, "%", role="neutrophil-pct", ref="Observation/neut"),
    ]
    if bands is not None:
        labs.append(anc(3, bands, "%", role="band-pct", ref="Observation/band"))
    return evaluate(labs, [supply(0)], ben=ben)


DERIVED = [
    # WBC (10*3/uL), neutrophil %, band %, exact ANC, category
    ("3.333", "30", None, "999.9", "moderate-neutropenia"),
    ("3.3333", "30", None, "999.99", "moderate-neutropenia"),
    ("2.9997", "50", None, "1499.85", "mild-neutropenia"),
    ("2.9999", "50", None, "1499.95", "mild-neutropenia"),
    ("3", "50", None, "1500", "normal"),
    ("1.6665", "30", None, "499.95", "severe-neutropenia"),
    ("1", "50", None, "500", "moderate-neutropenia"),
    ("2.9997", "45", "5", "1499.85", "mild-neutropenia"),
    # more digits than a float or the default Decimal context (28) would keep
    ("2.99999999999999999999999999999999", "50", None, None, "mild-neutropenia"),
    ("3.33333333333333333333333333333333", "30", None, None, "moderate-neutropenia"),
]


@pytest.mark.parametrize(("wbc", "neutrophils", "bands", "exact", "category"), DERIVED)
def test_derived_anc_is_never_rounded(wbc, neutrophils, bands, exact, category):
    result = _derived(wbc, neutrophils, bands)
    latest = result.timeline.assessments[-1]
    assert latest.anc.derived
    if exact is not None:
        assert latest.anc.value_per_ul == Decimal(exact)
    else:  # every digit kept: the product of the exact inputs
        with localcontext(prec=MAX_PREC):
            assert latest.anc.value_per_ul == Decimal(wbc) * 1000 * Decimal(neutrophils) / 100
    assert latest.category == category


DIRECT = [
    # value, unit, category (general population)
    ("1499.99", "/uL", "mild-neutropenia"),
    ("1.49999", "10*3/uL", "mild-neutropenia"),
    ("0.9999", "10*9/L", "moderate-neutropenia"),
    ("0.99999999999999999999999999999999", "10*3/uL", "moderate-neutropenia"),
    ("0.4999999999999999999999999999999", "10*3/uL", "severe-neutropenia"),
    ("1.5", "10*3/uL", "normal"),
    ("1.50000000000000000000000000000001", "10*3/uL", "normal"),
]


@pytest.mark.parametrize(("value", "unit", "category"), DIRECT)
def test_direct_anc_is_never_rounded(value, unit, category):
    result = evaluate([*BASELINES, anc(3, value, unit)], [supply(0)])
    assert result.timeline.assessments[-1].category == category


def test_ben_boundary_is_exact_too():
    labs = [anc(-3, 2000), anc(-1, 2000), anc(3, "0.49999", "10*3/uL")]
    result = evaluate(labs, [supply(0)], ben=True)
    assert result.timeline.assessments[-1].category == "severe-neutropenia"


def test_the_dispense_decision_uses_the_exact_value():
    # A derived 999.9 interrupts: a dispense the next day is not authorized.
    labs = [
        *BASELINES,
        anc(3, "3.333", "10*3/uL", role="wbc", ref="Observation/wbc"),
        anc(3, "30", "%", role="neutrophil-pct", ref="Observation/neut"),
    ]
    result = evaluate(labs, [supply(0)], pending_dispenses=(pending(4),))
    (decision,) = result.decisions
    assert decision.outcome == "not-authorized"
    assert "treatment-interrupted" in decision.reasons


def test_the_finding_shows_the_value_decided_on():
    result = _derived("3.333", "30")
    (finding,) = [f for f in result.findings if f.code == "anc-moderate-neutropenia"]
    assert "999.9 cells/uL" in finding.detail
    assert "1,000" not in finding.detail


@pytest.mark.parametrize(
    ("value", "shown"), [("1500", "1,500"), ("1499.850", "1,499.85"), ("1200.0", "1,200")]
)
def test_cells_display(value, shown):
    assert cells(Decimal(value)) == shown


@settings(max_examples=60, deadline=None)
@given(
    st.decimals(min_value=0, max_value=3000, places=4, allow_nan=False, allow_infinity=False),
)
def test_category_of_any_exact_value_follows_the_table(value: Decimal):
    """Whatever the digits, the category is that of the exact value against the bands."""
    result = evaluate([*BASELINES, anc(3, str(value), "/uL")], [supply(0)])
    usable = result.timeline.assessments[-1:] if result.labs.usable[-1:] else ()
    if value != value.to_integral_value() and value < 100:
        return  # a fractional count per uL below 100 is unevaluable (thousands-scale)
    (latest,) = usable
    bands = reference().protocol.general.bands
    expected = next(band.category for band in bands if value >= band.min)
    assert latest.category == expected
