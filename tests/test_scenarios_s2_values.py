"""S2 values: categories at every boundary without rounding, derived ANC, units, magnitude,
wrong-kind units (clinical-rules 1 and 2.1)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.scenario_kit import (
    anc,
    as_of,
    evidence_refs,
    observation,
    pending_dispense,
    percent,
    quantity,
    run_batch,
    same_ref,
    wbc,
)
from tests.scenario_kit_s2 import long_term

FINDING_FOR = {
    "normal": None,
    "mild-neutropenia": "anc-mild-neutropenia",
    "moderate-neutropenia": "anc-moderate-neutropenia",
    "ben-neutropenia": "anc-ben-neutropenia",
    "severe-neutropenia": "anc-severe-neutropenia",
}


def _check_category(r, pid: str, oid: str, category: str) -> None:
    st = r.status_for(pid)
    assert st["category"] == category, st
    assert same_ref(st["latestAnc"]["observation"], f"Observation/{oid}") or st["latestAnc"][
        "observation"
    ].endswith(oid), st
    expected = FINDING_FOR[category]
    written = {
        c
        for c in r.anc_findings(pid)
        if c in set(FINDING_FOR.values()) - {None}
        and r.issues_where(code=c, patient=pid, observation=oid)
    }
    assert written == ({expected} if expected else set()), written


# "Boundaries are inclusive on the lower edge: 1500 is normal, 1000 is mild, 999 is moderate,
# 500 is moderate (BEN: 500 is ben-neutropenia), 499 is severe." and "No value is rounded before
# it is categorised".
GENERAL = [
    (1500, "normal"),
    (1499, "mild-neutropenia"),
    ("1499.9", "mild-neutropenia"),
    (1000, "mild-neutropenia"),
    (999, "moderate-neutropenia"),
    ("999.95", "moderate-neutropenia"),
    (500, "moderate-neutropenia"),
    (499, "severe-neutropenia"),
    ("499.6", "severe-neutropenia"),
]


@pytest.mark.parametrize(("value", "category"), GENERAL)
def test_val_general_boundaries(tmp_path: Path, value, category: str) -> None:
    res = long_term("p")
    v = float(value) if isinstance(value, str) else value
    res.append(anc("p", "2026-02-10", v, oid="p-x"))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    _check_category(r, "p", "p-x", category)
    assert Decimal(str(r.status_for("p")["latestAnc"]["valuePerUL"])) == Decimal(str(value))


BEN_ROWS = [
    (1000, "normal"),
    (999, "ben-neutropenia"),
    ("999.5", "ben-neutropenia"),
    (500, "ben-neutropenia"),
    (499, "severe-neutropenia"),
    ("499.9", "severe-neutropenia"),
]


@pytest.mark.parametrize(("value", "category"), BEN_ROWS)
def test_val_ben_boundaries(tmp_path: Path, value, category: str) -> None:
    res = long_term("b", designations=("benign-ethnic-neutropenia",))
    v = float(value) if isinstance(value, str) else value
    res.append(anc("b", "2026-02-10", v, oid="b-x"))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("b")["population"] == "ben"
    _check_category(r, "b", "b-x", category)


# "a derived 999.9 is moderate, a derived 1499.85 mild"; derived = WBC x (neut% [+ band%]) / 100
# from the same collection when it has no direct ANC.
DERIVED = [
    # wbc (10*3/uL), neut %, band % or None, category
    (3.333, 30, None, "moderate-neutropenia"),  # 999.9
    (4.545, 33, None, "mild-neutropenia"),  # 1499.85
    (3.0, 30, 3.33, "moderate-neutropenia"),  # 999.9 with bands
    (5.0, 30, None, "normal"),  # 1500.0
    (2.5, 19.98, None, "severe-neutropenia"),  # 499.5
]


@pytest.mark.parametrize(("wbc_k", "neut", "band", "category"), DERIVED)
def test_val_derived_no_rounding(tmp_path: Path, wbc_k, neut, band, category: str) -> None:
    res = long_term("p")
    res += [
        wbc("p", "2026-02-10", wbc_k, oid="p-wbc"),
        percent("p", "2026-02-10", neut, loinc="770-8", oid="p-neut"),
    ]
    if band is not None:
        res.append(percent("p", "2026-02-10", band, loinc="764-1", oid="p-band"))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["category"] == category, st
    expected = Decimal(str(wbc_k)) * (Decimal(str(neut)) + Decimal(str(band or 0))) * 10
    assert abs(Decimal(str(st["latestAnc"]["valuePerUL"])) - expected) < Decimal("0.01")
    assert st["latestAnc"]["collected"].startswith("2026-02-10")
    if FINDING_FOR[category]:
        assert r.issues_where(code=FINDING_FOR[category], patient="p")


# A derived 999.9 interrupts: the next dispense is not authorized.
def test_val_derived_9999_blocks_dispense(tmp_path: Path) -> None:
    res = long_term("p")
    res += [
        wbc("p", "2026-02-10", 3.333, oid="p-wbc"),
        percent("p", "2026-02-10", 30, loinc="770-8", oid="p-neut"),
        pending_dispense("p", "2026-02-11", 7, did="p-next"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-11"))
    assert r.status_for("p")["recommendation"] == "interrupt"
    assert r.authorization_for("p-next")["outcome"] == "not-authorized"


# Derived only when the collection has no direct ANC: the direct count wins.
def test_val_direct_anc_wins_over_derivation(tmp_path: Path) -> None:
    res = long_term("p")
    res += [
        wbc("p", "2026-02-10", 3.0, oid="p-wbc"),
        percent("p", "2026-02-10", 30, loinc="770-8", oid="p-neut"),  # would be 900
        anc("p", "2026-02-10", 1600, oid="p-direct"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["category"] == "normal"
    assert st["latestAnc"]["observation"].endswith("p-direct")
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


# Derived only from the same collection time: WBC and % from different draws give no ANC.
def test_val_no_derivation_across_collections(tmp_path: Path) -> None:
    res = long_term("p")
    res += [
        wbc("p", "2026-02-10", 3.0, oid="p-wbc"),
        percent("p", "2026-02-11", 30, loinc="770-8", oid="p-neut"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-11"))
    st = r.status_for("p")
    assert st["latestAnc"]["collected"].startswith("2026-02-02")
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


# Units seen in real feeds (section 1): map the aliases; match UCUM code first, unit text second.
UNITS = [
    # value, code (None: text only), unit text, expected cells/uL
    (1.2, None, "x10E3/uL", 1200),
    (1.2, None, "10E3/uL", 1200),
    (1.2, None, "Thousand/uL", 1200),
    (1.2, None, "10^3/mm3", 1200),
    (1200, None, "/mm^3", 1200),
    (1.2, None, "10^9/L", 1200),
    (1.2, None, "K/uL", 1200),
    (1200, None, "cells/mm3", 1200),
    (1.2, None, "x10^3/uL", 1200),
    (1200, None, "cells/uL", 1200),
    (1200, "{cells}/uL", None, 1200),
    (1.2, "10*9/L", None, 1200),
    (1200, "/mm3", None, 1200),
    (1.2, "10*3/uL", "cells/uL", 1200),  # the UCUM code wins over contradicting text
]


@pytest.mark.parametrize(("value", "code", "unit", "per_ul"), UNITS)
def test_val_unit_spellings(tmp_path: Path, value, code, unit, per_ul) -> None:
    res = long_term("p")
    res.append(anc("p", "2026-02-10", value, oid="p-x", code=code, unit=unit))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["latestAnc"]["observation"].endswith("p-x"), st
    assert Decimal(str(st["latestAnc"]["valuePerUL"])) == per_ul
    assert st["category"] == "mild-neutropenia"
    assert not r.issues_where(code="anc-unevaluable", patient="p")


def _unevaluable(r, pid: str, oid: str) -> None:
    found = [
        i
        for i in r.issues_where(code="anc-unevaluable", patient=pid)
        if any(same_ref(x, f"Observation/{oid}") for x in evidence_refs(i))
    ]
    assert len(found) == 1, [i.get("detail") for i in r.issues]
    assert not r.status_for(pid)["latestAnc"]["observation"].endswith(oid)


# Magnitude sanity and wrong-kind units are unevaluable, reported as such, never guessed.
BAD = [
    ("751-8", quantity(1400, "10*3/uL"), "count only sensible as /uL"),
    ("751-8", quantity(150000, "/uL"), "above 100000 cells/uL"),
    ("751-8", quantity(-5, "/uL"), "negative"),
    ("751-8", quantity(45, "%"), "a percentage on a count code"),
    ("26499-4", quantity(45, "%"), "a percentage on a count code"),
    ("751-8", quantity(1.2, None, "mg/dL"), "not a count unit at all"),
]


@pytest.mark.parametrize(("loinc", "vq", "why"), BAD)
def test_val_unevaluable(tmp_path: Path, loinc: str, vq: dict, why: str) -> None:
    res = long_term("p")
    res.append(observation("p", "p-bad", loinc, "2026-02-10", vq))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    _unevaluable(r, "p", "p-bad")


# "LOINC 770-8 with a count unit is not a percentage" (a count on a percentage code): never read
# as WBC x 0.9 / 100 = 36 cells/uL (severe), never guessed as 900.
def test_val_count_unit_on_percent_code(tmp_path: Path) -> None:
    res = long_term("p")
    res += [
        wbc("p", "2026-02-10", 4.0, oid="p-wbc"),
        observation("p", "p-neut", "770-8", "2026-02-10", quantity(0.9, "10*3/uL")),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["latestAnc"]["collected"].startswith("2026-02-02"), st
    assert not r.issues_where(code="anc-severe-neutropenia", patient="p")
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert r.issues_where(code="anc-unevaluable", patient="p")


# Segmented neutrophils only (30451-9, 768-2) are not an ANC.
@pytest.mark.parametrize("loinc", ["30451-9", "768-2"])
def test_val_segs_only_not_anc(tmp_path: Path, loinc: str) -> None:
    res = long_term("p")
    res.append(observation("p", "p-seg", loinc, "2026-02-10", quantity(300, "/uL")))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["latestAnc"]["collected"].startswith("2026-02-02")
    assert not r.issues_where(code="anc-severe-neutropenia", patient="p")


# Zero is inside 0..100000: a real (severe) result, not unevaluable.
def test_val_zero_is_severe(tmp_path: Path) -> None:
    res = long_term("p")
    res.append(anc("p", "2026-02-10", 0, oid="p-zero"))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    _check_category(r, "p", "p-zero", "severe-neutropenia")
