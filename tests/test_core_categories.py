"""Every row and boundary of the label's ANC tables, for both populations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core_kit import anc, evaluate, supply

GENERAL = [
    # value, category, recommendation, frequency, hematology consult
    (100000, "normal", "continue", "weekly", False),
    (1500, "normal", "continue", "weekly", False),
    (1499, "mild-neutropenia", "continue", "three-times-weekly", False),
    (1000, "mild-neutropenia", "continue", "three-times-weekly", False),
    (999, "moderate-neutropenia", "interrupt", "daily", True),
    (500, "moderate-neutropenia", "interrupt", "daily", True),
    (499, "severe-neutropenia", "interrupt", "daily", True),
    (0, "severe-neutropenia", "interrupt", "daily", True),
]
BEN = [
    (1000, "normal", "continue", "weekly", False),
    (999, "ben-neutropenia", "continue", "three-times-weekly", True),
    (500, "ben-neutropenia", "continue", "three-times-weekly", True),
    (499, "severe-neutropenia", "interrupt", "daily", True),
    (0, "severe-neutropenia", "interrupt", "daily", True),
]
FINDING_SEVERITY = {
    "mild-neutropenia": "moderate",
    "moderate-neutropenia": "high",
    "ben-neutropenia": "moderate",
    "severe-neutropenia": "high",
}


def _on_therapy(value: int, ben: bool):
    baselines = [anc(-3, 2000), anc(-1, 2000)]
    return evaluate([*baselines, anc(3, value)], [supply(0)], ben=ben)


@pytest.mark.parametrize(
    ("population", "value", "category", "recommendation", "frequency", "consult"),
    [("general", *row) for row in GENERAL] + [("ben", *row) for row in BEN],
    ids=lambda v: str(v),
)
def test_table_row(population, value, category, recommendation, frequency, consult):
    result = _on_therapy(value, ben=population == "ben")
    status = result.status
    assert status.population == population
    assert status.category == category
    assert status.recommendation == recommendation
    assert status.frequency == frequency
    assert status.hematology_consult is consult
    codes = [f.code for f in result.findings if f.code.startswith("anc-")]
    if category == "normal":
        assert codes == []
    else:
        assert codes == [f"anc-{category}"]
        assert result.findings[0].severity == FINDING_SEVERITY[category]


@pytest.mark.parametrize(
    ("population", "value", "repeat"),
    [
        ("general", 1500, False),
        ("general", 1499, True),
        ("general", 400, True),
        ("ben", 1000, False),
        ("ben", 999, True),
    ],
)
def test_first_low_after_normal_must_be_repeated_within_24_hours(population, value, repeat):
    result = _on_therapy(value, ben=population == "ben")
    latest = result.status.latest
    assert latest is not None
    if repeat:
        assert result.status.repeat_by == latest.anc.collected + timedelta(hours=24)
    else:
        assert result.status.repeat_by is None


def test_second_low_result_needs_no_confirmation_deadline():
    result = evaluate([anc(-1, 2000), anc(3, 1400), anc(4, 1300)], [supply(0)])
    assert result.timeline.assessments[1].repeat_by is not None
    assert result.status.repeat_by is None


@pytest.mark.parametrize(
    ("values", "ben", "recommendation"),
    [
        ((1500,), False, "may-initiate"),
        ((1499,), False, "do-not-initiate"),
        ((1000,), True, "do-not-initiate"),  # BEN needs two baselines
        ((1000, 1000), True, "may-initiate"),
        ((1200, 999), True, "do-not-initiate"),
        ((999, 1200), True, "do-not-initiate"),  # both baselines must reach 1000
    ],
)
def test_initiation_threshold_and_baselines(values, ben, recommendation):
    labs = [anc(day, value) for day, value in enumerate(values)]
    result = evaluate(labs, [], ben=ben)
    assert result.status.therapy_start is None
    assert result.status.recommendation == recommendation
    assert result.status.overdue is False
