"""S3: batch outputs (interfaces.md section 3): every status.ndjson field, authorizations and
psf lines, --as-of, determinism. Black box through `rems-adapter run`; each row cites the
sentence it checks (see tests/SCENARIOS-S3.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.scenario_kit import (
    BEN,
    HOSPICE,
    PRESCRIBER,
    Resource,
    anc,
    as_of,
    completed_dispense,
    medication_request,
    on_clozapine,
    patient,
    pending_dispense,
    practitioner,
    prescriber_rationale,
    run_batch,
)
from tests.scenario_kit_s2 import START, long_term, supply_at
from tests.scenario_kit_s3 import (
    AUTH_KEYS,
    CATEGORIES,
    FREQUENCIES,
    PSF_BOXES,
    PSF_KEYS,
    RECOMMENDATIONS,
    STATUS_KEYS,
    run_sources,
    same_instant,
)

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
NY = ("--site-tz", "America/New_York")
LA = ("--site-tz", "America/Los_Angeles")


def _pre_therapy() -> list[Resource]:
    return [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2026-02-07"),
        anc("p", "2026-02-08", 1800),
        pending_dispense("p", "2026-02-10", did="p-pend"),
    ]


def _hospice_long() -> list[Resource]:
    return [
        *on_clozapine("p", START, "2026-02-02", designations=(HOSPICE,)),
        anc("p", "2026-02-02", 1800),
    ]


# ---------------------------------------------------------------------------------------------
# IF 3 "status.ndjson, one object per patient on clozapine (camelCase keys)" and each field's
# type / value set.
STATUS_ROWS: list[tuple[str, Callable[[], list[Resource]], dict[str, object]]] = [
    ("general", lambda: long_term("p"), {"population": "general", "hospice": False}),
    ("ben", lambda: long_term("p", designations=(BEN,)), {"population": "ben"}),
    (
        "hospice",
        _hospice_long,
        {"hospice": True, "monitoringFrequency": "every-6-months"},
    ),
    ("pre-therapy", _pre_therapy, {"therapyStart": None, "recommendation": "may-initiate"}),
    (
        "moderate",
        lambda: [*long_term("p"), anc("p", "2026-02-10", 800)],
        {"category": "moderate-neutropenia", "recommendation": "interrupt"},
    ),
]


@pytest.mark.parametrize(("name", "build", "expect"), STATUS_ROWS, ids=[r[0] for r in STATUS_ROWS])
def test_s3_status_every_field(
    tmp_path: Path, name: str, build: Callable[[], list[Resource]], expect: dict[str, object]
) -> None:
    r = run_batch(tmp_path, build(), as_of("2026-02-10"))
    st = r.status_for("p")
    missing = [k for k in STATUS_KEYS if k not in st]
    assert not missing, (missing, st)
    assert st["patient"] == "Patient/p"
    assert same_instant(st["asOf"], as_of("2026-02-10")), st["asOf"]
    assert st["population"] in ("general", "ben")
    assert isinstance(st["hospice"], bool)
    assert st["therapyStart"] is None or len(st["therapyStart"]) == 10
    la = st["latestAnc"]
    assert la is None or {"valuePerUL", "collected", "observation"} <= set(la), la
    if la is not None:
        assert isinstance(la["valuePerUL"], int | float)
        assert la["observation"].startswith("Observation/")
    assert st["category"] is None or st["category"] in CATEGORIES
    assert st["recommendation"] in RECOMMENDATIONS
    assert st["monitoringFrequency"] in FREQUENCIES
    assert isinstance(st["nextAncDue"], str) and len(st["nextAncDue"]) == 10
    assert isinstance(st["overdue"], bool)
    assert st["repeatAncBy"] is None or isinstance(st["repeatAncBy"], str)
    assert isinstance(st["hematologyConsult"], bool)
    for key, value in expect.items():
        assert st[key] == value, (key, st)
    jsonschema.validate(st, json.loads((PROFILES / "status.schema.json").read_text()))


# IF 3 `asOf`: the clock given with --as-of (any offset) is the same instant in the output.
def test_s3_status_as_of_is_the_clock_instant(tmp_path: Path) -> None:
    r = run_batch(tmp_path, long_term("p"), "2026-02-10T15:00:00-05:00")
    assert same_instant(r.status_for("p")["asOf"], "2026-02-10T20:00:00Z")


# ---------------------------------------------------------------------------------------------
# CR 2.1 "Confirmation: the first result that falls below 1500 (general) or 1000 (BEN) after a
# normal one must be repeated within 24 hours of its collection; report the deadline";
# IF 3 `repeatAncBy` (datetime|null).
REPEAT_ROWS: list[tuple[str, bool, list[tuple[str, int]], str, str | None]] = [
    ("general-first-mild", False, [("2026-02-10", 1400)], "2026-02-10", "2026-02-11T08:00:00Z"),
    ("general-first-moderate", False, [("2026-02-10", 800)], "2026-02-10", "2026-02-11T08:00:00Z"),
    ("ben-first-low", True, [("2026-02-10", 900)], "2026-02-10", "2026-02-11T08:00:00Z"),
    ("ben-normal-1100", True, [("2026-02-10", 1100)], "2026-02-10", None),
    (
        "offset-collection",
        False,
        [("2026-02-10T23:30:00-05:00", 1400)],
        "2026-02-11",
        "2026-02-12T04:30:00Z",
    ),
    # the second low in a row is the repeat, not "the first result that falls below"
    ("second-low", False, [("2026-02-10", 1400), ("2026-02-11", 1300)], "2026-02-11", None),
    (
        "low-normal-low",
        False,
        [("2026-02-09", 1400), ("2026-02-10", 1600), ("2026-02-11", 1450)],
        "2026-02-11",
        "2026-02-12T08:00:00Z",
    ),
    ("normal", False, [("2026-02-10", 1600)], "2026-02-10", None),
    (
        "general-1499-after-1500",
        False,
        [("2026-02-09", 1500), ("2026-02-10", 1499)],
        "2026-02-10",
        "2026-02-11T08:00:00Z",
    ),
    (
        "ben-999-after-1000",
        True,
        [("2026-02-09", 1000), ("2026-02-10", 999)],
        "2026-02-10",
        "2026-02-11T08:00:00Z",
    ),
    ("ben-1000-is-normal", True, [("2026-02-10", 1000)], "2026-02-10", None),
]


@pytest.mark.parametrize(
    ("name", "ben", "results", "day", "expected"), REPEAT_ROWS, ids=[r[0] for r in REPEAT_ROWS]
)
def test_s3_repeat_anc_by(
    tmp_path: Path,
    name: str,
    ben: bool,
    results: list[tuple[str, int]],
    day: str,
    expected: str | None,
) -> None:
    res = long_term("p", designations=(BEN,) if ben else ())
    res += [anc("p", when_, value, oid=f"p-r{n}") for n, (when_, value) in enumerate(results)]
    r = run_batch(tmp_path, res, as_of(day))
    got = r.status_for("p")["repeatAncBy"]
    if expected is None:
        assert got is None, got
    else:
        assert same_instant(got, expected), got


# ---------------------------------------------------------------------------------------------
# CR 2.1 Treatment column: moderate "hematology consult recommended", severe "hematology
# consult", BEN ben-neutropenia "hematology consult recommended"; mild and normal: none.
CONSULT_ROWS = [
    ("normal", False, 1700, False),
    ("mild", False, 1400, False),
    ("moderate", False, 800, True),
    ("severe", False, 300, True),
    ("ben-neutropenia", True, 800, True),
    ("ben-normal", True, 1100, False),
]


@pytest.mark.parametrize(
    ("name", "ben", "value", "consult"), CONSULT_ROWS, ids=[r[0] for r in CONSULT_ROWS]
)
def test_s3_hematology_consult(
    tmp_path: Path, name: str, ben: bool, value: int, consult: bool
) -> None:
    res = [*long_term("p", designations=(BEN,) if ben else ()), anc("p", "2026-02-10", value)]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["hematologyConsult"] is consult


# ---------------------------------------------------------------------------------------------
# CR 2.2 "Time on therapy counts from therapy start (first clozapine supply handed over)";
# CR 1 "Dates are taken in the site's time zone"; IF 3 `therapyStart` (date|null);
# IF 3 --as-of "resources dated after it (... handed over ...) are ignored".
def _first_supply_at_night() -> list[Resource]:
    return [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2026-01-02"),
        anc("p", "2026-01-03", 1800),
        supply_at("p", "2026-01-05T03:00:00Z", did="p-first"),
    ]


@pytest.mark.parametrize(("tz", "expected"), [(NY, "2026-01-04"), ((), "2026-01-05")])
def test_s3_therapy_start_in_site_time_zone(
    tmp_path: Path, tz: tuple[str, ...], expected: str
) -> None:
    r = run_batch(tmp_path, _first_supply_at_night(), as_of("2026-01-06"), extra_args=tz)
    assert r.status_for("p")["therapyStart"] == expected


def test_s3_therapy_start_null_with_only_a_pending_dispense(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _pre_therapy(), as_of("2026-02-10"))
    assert r.status_for("p")["therapyStart"] is None


def test_s3_therapy_start_ignores_a_supply_after_as_of(tmp_path: Path) -> None:
    res = [*_pre_therapy(), completed_dispense("p", "2026-02-12", did="p-later")]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["therapyStart"] is None


# ---------------------------------------------------------------------------------------------
# CR 2.2 "Due dates: next ANC due = collection date + interval (daily 1 day, three times weekly
# 3 days, weekly 7 days, every 2 weeks 14 days, monthly 1 calendar month, every 6 months 6
# calendar months)"; calendar months across month ends and leap years. Reading (spec silent on
# day 31 + 1 month): clamp to the last day of the shorter month (the earlier, safer date).
def _on(start: str, anc_at: str, value: int = 1800, designations: tuple[str, ...] = ()):
    return [
        *on_clozapine("p", start, anc_at[:10], designations=designations),
        anc("p", anc_at, value, oid="p-x"),
    ]


DUE_ROWS: list[tuple[str, Callable[[], list[Resource]], str, tuple[str, ...], str, str]] = [
    (
        "monthly-jan31",
        lambda: _on("2024-11-04", "2026-01-31"),
        "2026-01-31",
        (),
        "monthly",
        "2026-02-28",
    ),
    (
        "monthly-jan31-leap",
        lambda: _on("2026-06-01", "2028-01-31"),
        "2028-01-31",
        (),
        "monthly",
        "2028-02-29",
    ),
    (
        "monthly-feb29",
        lambda: _on("2026-06-01", "2028-02-29"),
        "2028-02-29",
        (),
        "monthly",
        "2028-03-29",
    ),
    (
        "monthly-dec31",
        lambda: _on("2024-11-04", "2026-12-31"),
        "2026-12-31",
        (),
        "monthly",
        "2027-01-31",
    ),
    (
        "weekly-year-end",
        lambda: _on("2026-10-05", "2026-12-28"),
        "2026-12-28",
        (),
        "weekly",
        "2027-01-04",
    ),
    (
        "2-weekly-leap-day",
        lambda: _on("2027-07-05", "2028-02-20"),
        "2028-02-20",
        (),
        "every-2-weeks",
        "2028-03-05",
    ),
    (
        "hospice-aug31",
        lambda: _on("2025-01-06", "2025-08-31", designations=(HOSPICE,)),
        "2025-08-31",
        (),
        "every-6-months",
        "2026-02-28",
    ),
    (
        "hospice-aug31-leap",
        lambda: _on("2027-01-04", "2027-08-31", designations=(HOSPICE,)),
        "2027-08-31",
        (),
        "every-6-months",
        "2028-02-29",
    ),
    (
        "hospice-feb29",
        lambda: _on("2027-06-07", "2028-02-29", designations=(HOSPICE,)),
        "2028-02-29",
        (),
        "every-6-months",
        "2028-08-29",
    ),
    (
        "site-tz-new-york",
        lambda: _on("2024-11-04", "2026-02-01T03:30:00Z"),
        "2026-02-01",
        NY,
        "monthly",
        "2026-02-28",
    ),
    (
        "site-tz-utc",
        lambda: _on("2024-11-04", "2026-02-01T03:30:00Z"),
        "2026-02-01",
        (),
        "monthly",
        "2026-03-01",
    ),
    (
        "three-weekly-feb-end",
        lambda: [*long_term("p"), anc("p", "2026-02-27", 1400, oid="p-x")],
        "2026-02-27",
        (),
        "three-times-weekly",
        "2026-03-02",
    ),
    (
        "daily-leap",
        lambda: [*_on("2027-01-04", "2028-02-21"), anc("p", "2028-02-28", 800, oid="p-y")],
        "2028-02-28",
        (),
        "daily",
        "2028-02-29",
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "day", "tz", "freq", "due"), DUE_ROWS, ids=[r[0] for r in DUE_ROWS]
)
def test_s3_next_anc_due(
    tmp_path: Path,
    name: str,
    build: Callable[[], list[Resource]],
    day: str,
    tz: tuple[str, ...],
    freq: str,
    due: str,
) -> None:
    r = run_batch(tmp_path, build(), as_of(day), extra_args=tz)
    st = r.status_for("p")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == (freq, due), st


# CR 2.2 "An ANC is current at time T while T's date <= due date + grace (default 2 days)";
# T's date in the site's time zone. Weekly ANC 02-02 10:00 Los Angeles: due 02-09, current
# through 02-11 local.
@pytest.mark.parametrize(
    ("clock", "tz", "overdue"),
    [
        ("2026-02-12T06:00:00Z", LA, False),  # 02-11 22:00 local
        ("2026-02-12T09:00:00Z", LA, True),  # 02-12 01:00 local
        ("2026-02-12T06:00:00Z", (), True),  # UTC site: 02-12
    ],
    ids=["la-last-grace-day", "la-next-day", "utc-same-instant"],
)
def test_s3_overdue_in_site_time_zone(
    tmp_path: Path, clock: str, tz: tuple[str, ...], overdue: bool
) -> None:
    res = [*on_clozapine("p", "2026-01-05", "2026-02-02"), anc("p", "2026-02-02T18:00:00Z", 1800)]
    r = run_batch(tmp_path, res, clock, extra_args=tz)
    st = r.status_for("p")
    assert st["nextAncDue"] == "2026-02-09"
    assert st["overdue"] is overdue
    assert bool(r.issues_where(code="anc-monitoring-overdue", patient="p")) is overdue


# ---------------------------------------------------------------------------------------------
# IF 3 "--as-of: ... Every decision is made as of it; resources dated after it (collected,
# handed over or prepared later) are ignored."
def test_s3_as_of_ignores_a_later_collection(tmp_path: Path) -> None:
    res = [*long_term("p"), anc("p", "2026-02-12", 400, oid="p-future")]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["latestAnc"]["observation"].endswith("p-anc-2026-02-02")
    assert not r.issues_where(observation="p-future", status=None)


def test_s3_as_of_ignores_a_later_preparation(tmp_path: Path) -> None:
    res = [*long_term("p"), pending_dispense("p", "2026-02-12", did="p-later")]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert not [a for a in r.authorizations if a["dispense"].endswith("p-later")]
    assert not r.issues_where(dispense="p-later", status=None)


def test_s3_as_of_same_day_collection_before_the_clock_is_used(tmp_path: Path) -> None:
    res = [*long_term("p"), anc("p", "2026-02-10T07:59:00-05:00", 1400, oid="p-morning")]
    r = run_batch(tmp_path, res, "2026-02-10T08:00:00-05:00")
    assert r.status_for("p")["latestAnc"]["observation"].endswith("p-morning")


# Spec silent on mitigations dated after the clock; safer reading: "every decision is made as
# of it", so a rationale recorded later does not exist yet and lifts nothing.
def test_s3_as_of_ignores_a_later_rationale(tmp_path: Path) -> None:
    base = [
        *long_term("p"),
        anc("p", "2026-02-10", 800),
        pending_dispense("p", "2026-02-11", did="p-pend"),
    ]
    first = run_batch(tmp_path, base, as_of("2026-02-11"))
    low = first.issues_where(code="anc-moderate-neutropenia", patient="p")[0]
    later = prescriber_rationale(low, "2026-02-12")
    second = run_batch(tmp_path, [*base, later], as_of("2026-02-11"))
    assert second.authorization_for("p-pend")["outcome"] == "not-authorized"


# ---------------------------------------------------------------------------------------------
# IF 3 "authorizations.ndjson, one object per dispense decided: dispense, patient, outcome,
# reasons, backend (local|rems), authorizationNumber (string|null), daysSupply, setting";
# IF 1 "category (inpatient, outpatient, community, discharge ...) gives the setting; no
# category means outpatient"; "preparation or in-progress is a dispense awaiting a decision".
AUTH_ROWS = [
    (None, "preparation", 28, "outpatient"),
    ("outpatient", "preparation", 28, "outpatient"),
    ("inpatient", "preparation", 28, "inpatient"),
    ("discharge", "preparation", 28, "discharge"),
    ("community", "preparation", 28, "community"),
    (None, "in-progress", 14, "outpatient"),
]


@pytest.mark.parametrize(("category", "status", "days", "setting"), AUTH_ROWS)
def test_s3_authorization_fields(
    tmp_path: Path, category: str | None, status: str, days: int, setting: str
) -> None:
    res = [
        *long_term("p"),
        pending_dispense("p", "2026-02-05", days, did="p-pend", status=status, category=category),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-05"))
    a = r.authorization_for("p-pend")
    assert not [k for k in AUTH_KEYS if k not in a], a
    assert a["patient"] == "Patient/p"
    assert a["outcome"] == "authorized"  # monthly: limit 30 for inpatient/discharge
    assert a["reasons"] == []
    assert a["backend"] == "local"
    assert a["authorizationNumber"] is None or isinstance(a["authorizationNumber"], str)
    assert a["daysSupply"] == days
    assert a["setting"] == setting
    jsonschema.validate(a, json.loads((PROFILES / "authorization.schema.json").read_text()))


# ---------------------------------------------------------------------------------------------
# IF 3 psf.ndjson fields; CR 3 "PSF: due every month ... Content: ... the ANC results of the
# period with collection dates (the most recent required; more allowed), monitoring frequency
# (three times weekly, weekly, every 2 weeks, monthly), treatment status ..., BEN and hospice
# designations, and a treatment rationale when required".
def _psf_for(r, pid: str = "p") -> dict[str, object]:
    rows = [x for x in r.psf if x.get("patient") == f"Patient/{pid}"]
    assert len(rows) == 1, r.psf
    return rows[0]


def test_s3_psf_routine_fields(tmp_path: Path) -> None:
    r = run_batch(tmp_path, long_term("p"), as_of("2026-02-10"))
    f = _psf_for(r)
    assert not [k for k in PSF_KEYS if k not in f], f
    assert f["reportingPeriod"] == "2026-02"
    assert any(
        x["collected"].startswith("2026-02-02") and x["valuePerUL"] == 1800 for x in f["ancResults"]
    )
    assert f["monitoringFrequency"] == "monthly"
    assert f["treatmentStatus"] == "continue"
    assert f["designations"] == {"ben": False, "hospice": False}
    assert f["treatmentRationaleRequired"] is False
    assert f["signerRole"] == "designee"
    assert f["state"] == "prepared"


@pytest.mark.parametrize(("tz", "period"), [(NY, "2026-02"), ((), "2026-03")])
def test_s3_psf_reporting_period_in_site_time_zone(
    tmp_path: Path, tz: tuple[str, ...], period: str
) -> None:
    res = [*long_term("p"), anc("p", "2026-02-27", 1800)]
    r = run_batch(tmp_path, res, "2026-03-01T03:00:00Z", extra_args=tz)
    assert _psf_for(r)["reportingPeriod"] == period


def test_s3_psf_moderate_interrupt_routed_to_prescriber(tmp_path: Path) -> None:
    # CR 3 "A treatment rationale is required when the ANC is below 1000 (general)"; daily
    # monitoring has no box on the form: one of the four boxes is reported.
    res = [*long_term("p"), anc("p", "2026-02-10", 800)]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    f = _psf_for(r)
    assert f["treatmentStatus"] == "interrupt"
    assert f["treatmentRationaleRequired"] is True
    assert f["signerRole"] == "prescriber"
    assert f["state"] == "awaiting-prescriber"
    assert f["monitoringFrequency"] in PSF_BOXES


def test_s3_psf_hospice_designation(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _hospice_long(), as_of("2026-02-10"))
    f = _psf_for(r)
    assert f["designations"] == {"ben": False, "hospice": True}
    assert f["monitoringFrequency"] in PSF_BOXES
    assert f["signerRole"] == "prescriber"


def test_s3_psf_values_in_cells_per_ul(tmp_path: Path) -> None:
    res = [*long_term("p"), anc("p", "2026-02-10", 1.8, code="10*3/uL")]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    got = [x for x in _psf_for(r)["ancResults"] if x["collected"].startswith("2026-02-10")]
    assert len(got) == 1 and got[0]["valuePerUL"] == 1800, got


def test_s3_psf_results_of_the_period(tmp_path: Path) -> None:
    res = [*long_term("p"), anc("p", "2026-02-09", 1700), anc("p", "2026-02-16", 1750)]
    r = run_batch(tmp_path, res, as_of("2026-02-20"))
    items = _psf_for(r)["ancResults"]
    assert any(x["collected"].startswith("2026-02-16") and x["valuePerUL"] == 1750 for x in items)
    assert all(x["collected"].startswith("2026-02") for x in items), items


def test_s3_psf_lines_valid_against_schema(tmp_path: Path) -> None:
    res = [*long_term("g")]
    res += [*long_term("b", designations=(BEN,))]
    res += [*long_term("m"), anc("m", "2026-02-10", 800)]
    res += [
        *on_clozapine("h", START, "2026-02-02", designations=(HOSPICE,)),
        anc("h", "2026-02-02", 1800),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    schema = json.loads((PROFILES / "psf.schema.json").read_text())
    assert {x["patient"] for x in r.psf} >= {"Patient/g", "Patient/b", "Patient/m", "Patient/h"}
    for line in r.psf:
        jsonschema.validate(line, schema)


# ---------------------------------------------------------------------------------------------
# IF 3 "Outputs are deterministic: the same inputs and --as-of give byte-identical files".
def _mixed() -> list[list[Resource]]:
    a = [*long_term("p"), anc("p", "2026-02-10", 800), pending_dispense("p", "2026-02-11")]
    b = [*long_term("q", designations=(BEN,)), anc("q", "2026-02-09", 700)]
    return [a, b]


def test_s3_bytes_identical_whatever_the_source_order(tmp_path: Path) -> None:
    a, b = _mixed()
    one = run_sources(tmp_path, [a, b], as_of("2026-02-11"), name="ab")
    two = run_sources(tmp_path, [b, a], as_of("2026-02-11"), name="ba")
    assert one.raw == two.raw


# Reading: "the same --as-of" is the same instant, whatever offset it is written with.
def test_s3_bytes_identical_for_the_same_instant(tmp_path: Path) -> None:
    a, b = _mixed()
    one = run_sources(tmp_path, [a, b], "2026-02-11T20:00:00Z", name="z")
    two = run_sources(tmp_path, [a, b], "2026-02-11T15:00:00-05:00", name="ny")
    assert one.raw == two.raw
