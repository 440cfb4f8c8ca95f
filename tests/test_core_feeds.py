"""Clinical-rules section 1 as real feeds send it: unit spellings, and a unit of the wrong kind
for the code ("a percentage on a count code, a count on a percentage code") is unevaluable."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.core_kit import anc, evaluate, supply

# Spellings named in clinical-rules section 1 (and their cousins), sent as unit text only.
SPELLINGS = [
    ("x10E3/uL", "1.2", 1200),
    ("10E3/uL", "1.2", 1200),
    ("Thousand/uL", "1.2", 1200),
    ("thousand/uL", "1.2", 1200),
    ("10^3/mm3", "1.2", 1200),
    ("10^9/L", "1.2", 1200),
    ("10\\S\\9/L", "1.2", 1200),  # HL7 v2 escape of 10^9/L
    ("K/uL", "1.2", 1200),
    ("x10^3/uL", "1.2", 1200),
    ("x10*9/L", "1.2", 1200),
    ("10*3/UL", "1.2", 1200),
    ("/mm^3", "1200", 1200),
    ("cells/mm^3", "1200", 1200),
    ("cells/uL", "1200", 1200),
    ("cells/mm3", "1200", 1200),
]


@pytest.mark.parametrize(("unit", "value", "per_ul"), SPELLINGS)
def test_feed_unit_spellings_normalise(unit, value, per_ul):
    result = evaluate([anc(1, value, text_unit=unit)])
    assert [a.value_per_ul for a in result.labs.usable] == [Decimal(per_ul)]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("%", None),  # a percentage on a count code
        ("%", "10*3/uL"),  # the UCUM code decides, not the text
        (None, "%"),
        (None, "percent"),
    ],
)
def test_percentage_on_an_anc_code_is_unevaluable(code, text):
    lab = anc(1, "45", code or "%")
    lab = type(lab)(**{**lab.__dict__, "unit_code": code, "unit_text": text})
    result = evaluate([lab])
    assert result.labs.usable == ()
    (item,) = result.labs.unevaluable
    assert "percent" in item.reason or "not a known count unit" in item.reason


def _cbc(
    neutrophil_unit: str | None, neutrophil_text: str | None = None, loinc_role="neutrophil-pct"
):
    wbc = anc(1, "5", "10*3/uL", role="wbc", ref="Observation/wbc")
    neutrophils = anc(1, "45", neutrophil_unit or "%", role=loinc_role, ref="Observation/neut")
    neutrophils = type(neutrophils)(
        **{**neutrophils.__dict__, "unit_code": neutrophil_unit, "unit_text": neutrophil_text}
    )
    return evaluate([wbc, neutrophils], [supply(0)])


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("10*3/uL", None),  # 770-8 with a count unit is not a percentage
        ("/uL", None),
        ("10*3/uL", "%"),  # the code decides
        (None, "K/uL"),
    ],
)
def test_count_on_a_percentage_code_is_unevaluable(code, text):
    result = _cbc(code, text)
    assert result.labs.usable == ()
    (item,) = result.labs.unevaluable
    assert "is a count, not a percentage" in item.reason


@pytest.mark.parametrize(("code", "text"), [("%", None), (None, "%"), (None, "percent")])
def test_percentage_on_a_percentage_code_derives(code, text):
    result = _cbc(code, text)
    (derived,) = result.labs.usable
    assert derived.derived and derived.value_per_ul == 2250


def test_percentage_on_a_wbc_code_is_unevaluable():
    wbc = anc(1, "5", "%", role="wbc", ref="Observation/wbc")
    neutrophils = anc(1, "45", "%", role="neutrophil-pct", ref="Observation/neut")
    result = evaluate([wbc, neutrophils], [supply(0)])
    assert result.labs.usable == ()
    (item,) = result.labs.unevaluable
    assert "WBC" in item.reason and "percentage" in item.reason
