"""Clinical-rules section 1: what counts as an ANC, units, sanity, status, order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.core_kit import anc, at, evaluate, supply

UNITS = [
    ("10*3/uL", "1.6", 1600),
    ("10*9/L", "1.6", 1600),
    ("/uL", "1600", 1600),
    ("/mm3", "1600", 1600),
    ("{cells}/uL", "1600", 1600),
]
ALIASES = [
    ("K/uL", "1.6", 1600),
    ("x10^3/uL", "1.6", 1600),
    ("10^9/L", "1.6", 1600),
    ("cells/uL", "1600", 1600),
    ("cells/mm3", "1600", 1600),
    ("k/ul", "1.6", 1600),
    ("x10^3 / uL", "1.6", 1600),
]


@pytest.mark.parametrize(("unit", "value", "per_ul"), UNITS)
def test_ucum_codes_normalise(unit, value, per_ul):
    result = evaluate([anc(1, value, unit)])
    assert [a.value_per_ul for a in result.labs.usable] == [Decimal(per_ul)]


@pytest.mark.parametrize(("unit", "value", "per_ul"), ALIASES)
def test_text_aliases_normalise(unit, value, per_ul):
    result = evaluate([anc(1, value, text_unit=unit)])
    assert [a.value_per_ul for a in result.labs.usable] == [Decimal(per_ul)]


def test_ucum_code_wins_over_unit_text():
    lab = anc(1, "1.6", "10*3/uL")
    lab = type(lab)(**{**lab.__dict__, "unit_text": "cells/uL"})
    assert evaluate([lab]).labs.usable[0].value_per_ul == 1600


@pytest.mark.parametrize(
    ("value", "unit", "why"),
    [
        ("1400", "10*3/uL", "outside"),  # only makes sense in /uL
        ("1.4", "/uL", "thousands"),  # only makes sense in 10*3/uL
        ("100001", "/uL", "outside"),
        ("-1", "/uL", "outside"),
        ("1.6", "mmol/L", "not a known count unit"),
    ],
)
def test_implausible_values_are_unevaluable_never_guessed(value, unit, why):
    result = evaluate([anc(1, value, unit)])
    assert result.labs.usable == ()
    assert len(result.labs.unevaluable) == 1
    assert why in result.labs.unevaluable[0].reason
    assert [f.code for f in result.findings] == ["anc-unevaluable"]


def test_boundaries_of_magnitude_sanity_are_usable():
    result = evaluate([anc(1, "0", "/uL"), anc(2, "100000", "/uL"), anc(3, "100", "10*3/uL")])
    assert [a.value_per_ul for a in result.labs.usable] == [0, 100000, 100000]


@pytest.mark.parametrize("status", ["preliminary", "registered", "unknown"])
def test_unusable_statuses_are_not_used(status):
    result = evaluate([anc(1, 2000), anc(2, 400, status=status)], [supply(0)])
    assert result.status.category == "normal"
    assert [f.code for f in result.findings] == []


def test_amended_and_corrected_are_usable():
    result = evaluate([anc(1, 1200, status="amended"), anc(2, 1300, status="corrected")])
    assert len(result.labs.usable) == 2


def test_corrected_version_replaces_the_earlier_one():
    first = anc(2, 800, ref="Observation/x", version="1")
    second = anc(2, 1800, ref="Observation/x", version="2", status="corrected")
    result = evaluate([anc(1, 2000), second, first], [supply(0)])
    assert [a.value_per_ul for a in result.labs.usable] == [2000, 1800]
    assert result.status.category == "normal"


def test_linked_result_by_identifier_replaces_the_earlier_one():
    old = anc(2, 800, ref="Observation/old", identifiers=("lab|A1",), arrival=1)
    new = anc(
        2, 1800, ref="Observation/new", identifiers=("lab|A1",), status="corrected", arrival=2
    )
    result = evaluate([anc(1, 2000), old, new], [supply(0)])
    assert "Observation/old" in result.labs.replaced
    assert [a.observation for a in result.labs.usable][-1] == "Observation/new"


def test_linked_results_rank_by_the_instant_issued_whatever_its_offset():
    """10:00+05:00 (05:00Z) was issued before 06:00Z: as text it would sort after it."""
    east = timezone(timedelta(hours=5))
    early = replace(
        anc(2, 800, ref="Observation/east", identifiers=("lab|A1",), arrival=2),
        issued=datetime(2026, 3, 2, 10, 0, tzinfo=east),
    )
    late = replace(
        anc(2, 1800, ref="Observation/utc", identifiers=("lab|A1",), arrival=1),
        issued=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
    )
    for order in ([early, late], [late, early]):
        result = evaluate([anc(1, 2000), *order], [supply(0)])
        assert "Observation/east" in result.labs.replaced
        assert [a.observation for a in result.labs.usable][-1] == "Observation/utc"
    unissued = replace(early, issued=None)
    result = evaluate([anc(1, 2000), unissued, late], [supply(0)])
    assert "Observation/east" in result.labs.replaced


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_result_is_not_used(status):
    bad = anc(2, 300, ref="Observation/x", version="2", status=status)
    result = evaluate(
        [anc(1, 2000), anc(2, 300, ref="Observation/x", version="1"), bad], [supply(0)]
    )
    assert "Observation/x" in result.labs.withdrawn
    assert result.status.category == "normal"
    assert not [f for f in result.findings if f.code.startswith("anc-")]


def test_out_of_order_older_low_result_does_not_overwrite_newer_state():
    newer = anc(5, 2000, arrival=1)
    older_low = anc(3, 1200, arrival=2)  # arrives later, collected earlier
    result = evaluate([anc(1, 2100), newer, older_low], [supply(0)])
    assert result.status.latest is not None
    assert result.status.latest.anc.value_per_ul == 2000
    assert "anc-mild-neutropenia" in [f.code for f in result.findings]  # still surfaced


def test_results_after_the_clock_are_ignored():
    result = evaluate([anc(1, 2000), anc(5, 300)], [supply(0)], clock=at(3))
    assert result.status.category == "normal"


def test_segmented_neutrophils_alone_are_not_an_anc():
    result = evaluate([anc(1, 1800, role="not-anc")])
    assert result.labs.usable == () and result.labs.unevaluable == ()


def _diff(day, wbc="5.0", neut="40", band=None, specimen=None):
    labs = [
        anc(day, wbc, "10*3/uL", role="wbc", ref=f"Observation/wbc{day}", specimen=specimen),
        anc(day, neut, "%", role="neutrophil-pct", ref=f"Observation/n{day}", specimen=specimen),
    ]
    if band is not None:
        labs.append(anc(day, band, "%", role="band-pct", ref=f"Observation/b{day}"))
    return labs


def test_derived_anc_from_wbc_and_differential():
    result = evaluate(_diff(1, band="5"))
    (derived,) = result.labs.usable
    assert derived.derived and derived.value_per_ul == 2250  # 5000 x 45 / 100
    assert set(derived.sources) == {"Observation/wbc1", "Observation/n1", "Observation/b1"}


def test_no_derivation_when_the_collection_has_a_direct_anc():
    result = evaluate([*_diff(1), anc(1, 1700)])
    assert [a.derived for a in result.labs.usable] == [False]
    assert result.labs.usable[0].value_per_ul == 1700


def test_no_derivation_across_collections():
    labs = [
        anc(1, "5.0", "10*3/uL", role="wbc", ref="Observation/w"),
        anc(2, "40", "%", role="neutrophil-pct", ref="Observation/n"),
    ]
    assert evaluate(labs).labs.usable == ()


def test_derivation_with_bad_differential_is_unevaluable():
    result = evaluate(_diff(1, neut="140"))
    assert result.labs.usable == ()
    assert "differential" in result.labs.unevaluable[0].reason


#: (versions of one result in arrival order as (status, versionId), the status that stands)
RESENDS = [
    ([("final", "1"), ("preliminary", "2")], "final"),  # a preliminary resend: the final stands
    ([("final", "1"), ("registered", "2")], "final"),
    ([("preliminary", "1"), ("final", "2")], "final"),
    ([("final", "1"), ("corrected", "2"), ("preliminary", "3")], "corrected"),
    ([("final", "1"), ("entered-in-error", "2"), ("preliminary", "3")], "entered-in-error"),
    ([("final", "1"), ("entered-in-error", "2"), ("final", "3")], "final"),
    ([("registered", "1"), ("preliminary", "2")], "preliminary"),
    ([("final", "2"), ("amended", "1")], "final"),  # released versions: the later version wins
]


@pytest.mark.parametrize(("versions", "standing"), RESENDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_a_later_unreleased_version_never_displaces_a_released_one(
    versions: list[tuple[str, str]], standing: str, reverse: bool
) -> None:
    from adapter.core.labs import current_versions

    labs = [
        anc(5, 400, ref="Observation/one", status=status, version=version, arrival=n)
        for n, (status, version) in enumerate(versions, start=1)
    ]
    if reverse:  # the order of arrival does not matter once versions are numbered
        labs = [replace(lab, arrival=0) for lab in reversed(labs)]
    assert current_versions(labs)["Observation/one"].status == standing


def test_a_severe_result_resent_as_preliminary_still_interrupts() -> None:
    labs = [
        anc(0, 2000),
        anc(5, 400, ref="Observation/sev", status="final", version="1"),
        anc(5, 1600, ref="Observation/sev", status="preliminary", version="2"),
    ]
    status = evaluate(labs, [supply(0, 28)], clock=at(6)).status
    assert status.category == "severe-neutropenia"


@pytest.mark.parametrize(("versions", "standing"), RESENDS)
def test_a_store_of_one_version_keeps_what_current_versions_keeps(
    versions: list[tuple[str, str]], standing: str
) -> None:
    """Serve and watch hold one version of each result and apply `keeps_release` as the
    versions arrive (in version order): what they hold is what batch mode decides with."""
    from adapter.core.labs import keeps_release

    held: list[str] = []  # the one version the store holds
    for status, _ in sorted(versions, key=lambda v: int(v[1])):
        if not held or not keeps_release(status, lambda: held[0]):
            held[:] = [status]
    assert held == [standing]
