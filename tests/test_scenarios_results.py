"""What counts as an ANC: LOINC codes, derived ANC, result status, withdrawal and replacement,
out-of-order arrival, collection time and --as-of (clinical-rules 1; interfaces 2, 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k

START = "2026-01-05"
PREVIOUS = "2026-02-09"  # normal 1800
TESTED = "2026-02-16"
PREV_OBS = "{pid}-anc-" + PREVIOUS


def _base(pid: str, until: str = TESTED) -> list[k.Resource]:
    return [*k.on_clozapine(pid, START, until), k.anc(pid, PREVIOUS, 1800)]


def _assert_previous_is_latest(result: k.Result, pid: str) -> None:
    status = result.status_for(pid)
    assert k.same_ref(status["latestAnc"]["observation"], "Observation/" + PREV_OBS.format(pid=pid))
    assert status["category"] == "normal"


# ---- LOINC ------------------------------------------------------------------------------------
@pytest.mark.parametrize("loinc", ["751-8", "753-4", "26499-4"])
def test_anc_loinc_codes_are_used(tmp_path: Path, loinc: str) -> None:
    pid = "p-loinc"
    res = [*_base(pid), k.anc(pid, TESTED, 1200, loinc=loinc)]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    assert result.status_for(pid)["category"] == "mild-neutropenia"
    assert result.anc_findings(pid) == ["anc-mild-neutropenia"]


@pytest.mark.parametrize("loinc", ["30451-9", "768-2"], ids=["segs-30451-9", "segs-768-2"])
def test_segmented_neutrophil_counts_are_not_an_anc(tmp_path: Path, loinc: str) -> None:
    pid = "p-segs"
    res = [*_base(pid), k.anc(pid, TESTED, 400, loinc=loinc)]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    _assert_previous_is_latest(result, pid)
    assert result.anc_findings(pid) == []


# ---- Derived ANC ------------------------------------------------------------------------------
DERIVED = [
    # (id, wbc loinc, wbc x10^3/uL, neut loinc, neut %, band loinc|None, band %, expected)
    ("770-8", "6690-2", 4.0, "770-8", 30, None, 0, 1200),
    ("23761-0+band-764-1", "804-5", 4.0, "23761-0", 30, "764-1", 5, 1400),
    ("26511-6+band-26508-2", "26464-8", 4.0, "26511-6", 25, "26508-2", 10, 1400),
    ("band-35332-6", "6690-2", 5.0, "770-8", 18, "35332-6", 2, 1000),
    ("normal-1600", "6690-2", 4.0, "770-8", 40, None, 0, 1600),
]


@pytest.mark.parametrize(
    ("wbc_loinc", "wbc_value", "neut_loinc", "neut", "band_loinc", "band", "expected"),
    [d[1:] for d in DERIVED],
    ids=[d[0] for d in DERIVED],
)
def test_derived_anc_from_same_collection(
    tmp_path: Path,
    wbc_loinc: str,
    wbc_value: float,
    neut_loinc: str,
    neut: float,
    band_loinc: str | None,
    band: float,
    expected: float,
) -> None:
    pid = "p-derived"
    res = [
        *_base(pid),
        k.wbc(pid, TESTED, wbc_value, loinc=wbc_loinc),
        k.percent(pid, TESTED, neut, loinc=neut_loinc),
    ]
    if band_loinc:
        res.append(k.percent(pid, TESTED, band, loinc=band_loinc))
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    status = result.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(expected)
    assert k.parse_instant(status["latestAnc"]["collected"]) == k.parse_instant(k.when(TESTED))
    if expected < 1500:
        assert result.anc_findings(pid) == ["anc-mild-neutropenia"]
        (issue,) = result.issues_where(code="anc-mild-neutropenia", patient=pid)
        used = k.evidence_refs(issue)
        assert any(k.same_ref(r, f"Observation/{pid}-wbc-{TESTED}") for r in used), used
    else:
        assert status["category"] == "normal"
        assert result.anc_findings(pid) == []


def test_no_derivation_across_different_collection_times(tmp_path: Path) -> None:
    pid = "p-derived-apart"
    res = [
        *_base(pid),
        k.wbc(pid, k.when(TESTED, "08:00:00"), 4.0),
        k.percent(pid, k.when(TESTED, "11:30:00"), 30, loinc="770-8"),
    ]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    _assert_previous_is_latest(result, pid)
    assert result.anc_findings(pid) == []


def test_direct_anc_of_the_same_collection_wins_over_derived(tmp_path: Path) -> None:
    pid = "p-derived-direct"
    res = [
        *_base(pid),
        k.anc(pid, TESTED, 1600),
        k.wbc(pid, TESTED, 4.0),
        k.percent(pid, TESTED, 30, loinc="770-8"),
    ]  # would derive 1200 (mild)
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    status = result.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(1600)
    assert status["category"] == "normal"
    assert result.anc_findings(pid) == []


# ---- Status -----------------------------------------------------------------------------------
@pytest.mark.parametrize("obs_status", ["preliminary", "registered"])
def test_unusable_status_is_not_used_and_writes_no_finding(tmp_path: Path, obs_status: str) -> None:
    pid = f"p-{obs_status}"
    res = [*_base(pid), k.anc(pid, TESTED, 400, status=obs_status)]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    _assert_previous_is_latest(result, pid)
    assert result.anc_findings(pid) == []


@pytest.mark.parametrize("obs_status", ["final", "amended", "corrected"])
def test_usable_statuses(tmp_path: Path, obs_status: str) -> None:
    pid = f"p-{obs_status}"
    res = [*_base(pid), k.anc(pid, TESTED, 1200, status=obs_status)]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    assert result.status_for(pid)["category"] == "mild-neutropenia"
    assert result.anc_findings(pid) == ["anc-mild-neutropenia"]


def test_entered_in_error_withdraws_result_and_our_prior_decision(tmp_path: Path) -> None:
    pid = "p-eie"
    oid = f"{pid}-anc-{TESTED}"
    first = k.run_batch(tmp_path, [*_base(pid), k.anc(pid, TESTED, 400)], k.as_of(TESTED))
    (severe,) = first.issues_where(code="anc-severe-neutropenia", patient=pid, observation=oid)
    severe_id = first.identifier(severe)

    retracted = k.anc(
        pid,
        TESTED,
        400,
        status="entered-in-error",
        version="2",
        last_updated=k.when("2026-02-17", "09:00:00"),
    )
    second = k.run_batch(
        tmp_path, [*_base(pid, "2026-02-17"), retracted, *first.issues], k.as_of("2026-02-17")
    )
    _assert_previous_is_latest(second, pid)
    withdrawn = [i for i in second.issues if second.identifier(i) == severe_id]
    assert [i["status"] for i in withdrawn] == ["entered-in-error"]
    assert second.issues_where(code="anc-severe-neutropenia", patient=pid) == []


def test_cancelled_result_withdraws_our_prior_decision(tmp_path: Path) -> None:
    """CR 1 "`cancelled` ... withdraw the result"; IF 2: the data changed (it was not entered in
    error), so our decision becomes `cancelled` (SCENARIOS.md A17)."""
    pid = "p-obs-cancelled"
    oid = f"{pid}-anc-{TESTED}"
    first = k.run_batch(tmp_path, [*_base(pid), k.anc(pid, TESTED, 1200)], k.as_of(TESTED))
    (mild,) = first.issues_where(code="anc-mild-neutropenia", patient=pid, observation=oid)
    withdrawn = k.anc(
        pid,
        TESTED,
        1200,
        status="cancelled",
        version="2",
        last_updated=k.when("2026-02-17", "09:00:00"),
    )
    second = k.run_batch(
        tmp_path, [*_base(pid, "2026-02-17"), withdrawn, *first.issues], k.as_of("2026-02-17")
    )
    _assert_previous_is_latest(second, pid)
    old = [i for i in second.issues if second.identifier(i) == first.identifier(mild)]
    assert [i["status"] for i in old] == ["cancelled"]
    assert second.anc_findings(pid) == []


def test_entered_in_error_version_in_same_input_withdraws(tmp_path: Path) -> None:
    pid = "p-eie-same"
    res = [
        *_base(pid),
        k.anc(pid, TESTED, 400),
        k.anc(
            pid,
            TESTED,
            400,
            status="entered-in-error",
            version="2",
            last_updated=k.when(TESTED, "15:00:00"),
        ),
    ]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    _assert_previous_is_latest(result, pid)
    assert result.issues_where(code="anc-severe-neutropenia", patient=pid) == []


@pytest.mark.parametrize(
    ("corrected_value", "new_finding", "replacing_status"),
    [
        (1200, "anc-mild-neutropenia", "corrected"),
        (1600, None, "corrected"),
        (1200, "anc-mild-neutropenia", "amended"),
    ],
    ids=["corrected-to-mild", "corrected-to-normal", "amended-to-mild"],
)
def test_corrected_replaces_and_cancels_old_decision(
    tmp_path: Path, corrected_value: int, new_finding: str | None, replacing_status: str
) -> None:
    pid = "p-corr"
    oid = f"{pid}-anc-{TESTED}"
    first = k.run_batch(tmp_path, [*_base(pid), k.anc(pid, TESTED, 400)], k.as_of(TESTED))
    (severe,) = first.issues_where(code="anc-severe-neutropenia", patient=pid, observation=oid)
    severe_id = first.identifier(severe)

    corrected = k.anc(
        pid,
        TESTED,
        corrected_value,
        status=replacing_status,
        version="2",
        last_updated=k.when("2026-02-17", "09:00:00"),
    )
    second = k.run_batch(
        tmp_path, [*_base(pid, "2026-02-17"), corrected, *first.issues], k.as_of("2026-02-17")
    )
    status = second.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(corrected_value)
    old = [i for i in second.issues if second.identifier(i) == severe_id]
    assert [i["status"] for i in old] == ["cancelled"]
    assert second.issues_where(code="anc-severe-neutropenia", patient=pid) == []
    if new_finding:
        (new,) = second.issues_where(code=new_finding, patient=pid, observation=oid)
        assert second.identifier(new) != severe_id
    else:
        assert second.anc_findings(pid) == []


def test_highest_version_in_same_input_wins(tmp_path: Path) -> None:
    pid = "p-versions"
    v2 = k.anc(
        pid, TESTED, 1600, status="corrected", version="2", last_updated=k.when(TESTED, "15:00:00")
    )
    v1 = k.anc(pid, TESTED, 400)
    result = k.run_batch(tmp_path, [*_base(pid), v2, v1], k.as_of(TESTED))  # v1 arrives last
    status = result.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(1600)
    assert result.anc_findings(pid) == []


def test_late_older_low_result_does_not_change_state_but_is_reported(tmp_path: Path) -> None:
    pid = "p-late"
    newer = k.anc(pid, TESTED, 1700)
    older = k.anc(
        pid,
        "2026-02-12",
        1200,
        issued=k.when("2026-02-17", "07:00:00"),
        last_updated=k.when("2026-02-17", "07:00:00"),
    )
    res = [*_base(pid, "2026-02-17"), newer, older]  # the older one arrives last
    result = k.run_batch(tmp_path, res, k.as_of("2026-02-17"))
    status = result.status_for(pid)
    assert k.same_ref(status["latestAnc"]["observation"], f"Observation/{newer['id']}")
    assert status["category"] == "normal"
    assert status["recommendation"] == "continue"
    assert status["monitoringFrequency"] == "weekly"
    assert status["nextAncDue"] == "2026-02-23"
    assert status["repeatAncBy"] is None
    assert len(result.issues_where(code="anc-mild-neutropenia", observation=older["id"])) == 1


# ---- Time -------------------------------------------------------------------------------------
def test_collection_time_not_issued_sets_due_date(tmp_path: Path) -> None:
    pid = "p-issued"
    late_report = k.anc(
        pid,
        "2026-02-16",
        1800,
        issued=k.when("2026-02-20", "09:00:00"),
        last_updated=k.when("2026-02-20", "09:00:00"),
    )
    res = [*k.on_clozapine(pid, START, "2026-02-20"), late_report]
    result = k.run_batch(tmp_path, res, k.as_of("2026-02-20"))
    status = result.status_for(pid)
    assert k.parse_instant(status["latestAnc"]["collected"]) == k.parse_instant(
        k.when("2026-02-16")
    )
    assert status["nextAncDue"] == "2026-02-23"


def test_effective_period_start_is_the_collection_time(tmp_path: Path) -> None:
    pid = "p-period"
    res = [*_base(pid), k.anc(pid, TESTED, 1200, period=True)]
    result = k.run_batch(tmp_path, res, k.as_of(TESTED))
    status = result.status_for(pid)
    assert k.parse_instant(status["latestAnc"]["collected"]) == k.parse_instant(k.when(TESTED))
    assert status["category"] == "mild-neutropenia"
    assert status["nextAncDue"] == "2026-02-19"


def test_collection_date_taken_in_site_time_zone_utc(tmp_path: Path) -> None:
    pid = "p-tz"
    # 22:30 at UTC-5 on the 16th is 03:30 UTC on the 17th: the site (default UTC) date is the 17th
    res = [*_base(pid, "2026-02-17"), k.anc(pid, "2026-02-16T22:30:00-05:00", 1800)]
    result = k.run_batch(tmp_path, res, k.as_of("2026-02-17"))
    assert result.status_for(pid)["nextAncDue"] == "2026-02-24"


def test_as_of_ignores_later_results_and_dispenses(tmp_path: Path) -> None:
    pid = "p-asof"
    later_low = k.anc(pid, "2026-02-18", 400)
    later_dispense = k.pending_dispense(pid, "2026-02-18")
    res = [*_base(pid), k.anc(pid, TESTED, 1700), later_low, later_dispense]
    result = k.run_batch(tmp_path, res, k.as_of("2026-02-17"))
    status = result.status_for(pid)
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(1700)
    assert status["category"] == "normal"
    assert result.anc_findings(pid) == []
    assert result.authorizations == []
    assert k.parse_instant(status["asOf"]) == k.parse_instant(k.as_of("2026-02-17"))


def test_withdrawn_result_remakes_the_dispense_decision(tmp_path: Path) -> None:
    """CR 1 "every decision that used it is withdrawn and re-made": a dispense refused on a
    moderate ANC that turns out entered in error is re-decided (authorized), and the refusal is
    no longer final (IF 2: `cancelled` or `entered-in-error`, never deleted)."""
    pid = "p-eie-dispense"
    did = f"{pid}-pending"
    pending = k.pending_dispense(pid, TESTED, 7, did=did)
    first = k.run_batch(tmp_path, [*_base(pid), k.anc(pid, TESTED, 800), pending], k.as_of(TESTED))
    assert first.authorization_for(did)["outcome"] == "not-authorized"
    refusal_id = first.identifier(first.dispense_issue(did))

    retracted = k.anc(
        pid,
        TESTED,
        800,
        status="entered-in-error",
        version="2",
        last_updated=k.when(TESTED, "15:00:00"),
    )
    second = k.run_batch(
        tmp_path, [*_base(pid), retracted, pending, *first.issues], k.as_of(TESTED)
    )
    assert second.authorization_for(did)["outcome"] == "authorized"
    assert k.finding_code(second.dispense_issue(did)) == "dispense-authorized"
    old = [i for i in second.issues if second.identifier(i) == refusal_id]
    assert len(old) == 1
    assert old[0]["status"] in ("cancelled", "entered-in-error")
