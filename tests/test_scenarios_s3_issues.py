"""S3: DetectedIssue content (interfaces.md section 2), black box through `rems-adapter run`.

Each row cites the sentence it checks. Written from the spec alone (see tests/SCENARIOS-S3.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scenario_kit import (
    AUTHOR_DEVICE,
    BEN,
    FINDING_SEVERITY,
    Resource,
    anc,
    as_of,
    evidence_codes,
    evidence_refs,
    finding_code,
    on_clozapine,
    patient,
    pending_dispense,
    percent,
    pharmacist_override,
    prescriber_rationale,
    refs,
    run_batch,
    same_ref,
    wbc,
)
from tests.scenario_kit_s2 import long_term, version
from tests.scenario_kit_s3 import (
    by_ident,
    finding_codes,
    ident,
    number_in,
    v3_codes,
    weekly_patient,
)

# ---------------------------------------------------------------------------------------------
# IF 2: "code.coding: one v3 ActCode (LAB for ANC findings, NAT for authorization findings,
# VALIDAT for form findings) and one code from the project's finding CodeSystem"; the severity
# column of the finding table; "status final"; "author (a Device representing the adapter)".


def _mild() -> list[Resource]:
    return [*long_term("p"), anc("p", "2026-02-10", 1400, oid="p-low")]


def _moderate() -> list[Resource]:
    return [*long_term("p"), anc("p", "2026-02-10", 800, oid="p-low")]


def _severe() -> list[Resource]:
    return [*long_term("p"), anc("p", "2026-02-10", 400, oid="p-low")]


def _ben() -> list[Resource]:
    return [*long_term("p", designations=(BEN,)), anc("p", "2026-02-10", 800, oid="p-low")]


def _unevaluable() -> list[Resource]:
    # CR 1: "1400 with unit 10*3/uL ... is unevaluable and is reported as such"
    return [*long_term("p"), anc("p", "2026-02-10", 1400, oid="p-low", code="10*3/uL")]


def _overdue() -> list[Resource]:
    # monthly, last ANC 02-02: due 03-02, + 2 days grace = 03-04; as of 03-06 overdue
    return long_term("p")


def _authorized() -> list[Resource]:
    return [*long_term("p"), pending_dispense("p", "2026-02-05", did="p-pend")]


def _not_authorized() -> list[Resource]:
    return [*_moderate(), pending_dispense("p", "2026-02-11", did="p-pend")]


def _psf_action() -> list[Resource]:
    # CR 3: "A PSF that carries ... a BEN designation ... is accepted only from the certified
    # prescriber"; IF 2 psf-prescriber-action-required "whichever backend"
    return long_term("p", designations=(BEN,))


CODING_ROWS: list[tuple[str, Callable[[], list[Resource]], str, str, str]] = [
    ("anc-mild-neutropenia", _mild, "2026-02-10", "LAB", "moderate"),
    ("anc-moderate-neutropenia", _moderate, "2026-02-10", "LAB", "high"),
    ("anc-ben-neutropenia", _ben, "2026-02-10", "LAB", "moderate"),
    ("anc-severe-neutropenia", _severe, "2026-02-10", "LAB", "high"),
    ("anc-unevaluable", _unevaluable, "2026-02-10", "LAB", "moderate"),
    ("anc-monitoring-overdue", _overdue, "2026-03-06", "LAB", "moderate"),
    ("dispense-authorized", _authorized, "2026-02-05", "NAT", "low"),
    ("dispense-not-authorized", _not_authorized, "2026-02-11", "NAT", "high"),
    ("psf-prescriber-action-required", _psf_action, "2026-02-10", "VALIDAT", "moderate"),
]


@pytest.mark.parametrize(
    ("finding", "build", "day", "v3", "severity"), CODING_ROWS, ids=[r[0] for r in CODING_ROWS]
)
def test_s3_codings_and_severity(
    tmp_path: Path,
    finding: str,
    build: Callable[[], list[Resource]],
    day: str,
    v3: str,
    severity: str,
) -> None:
    r = run_batch(tmp_path, build(), as_of(day))
    found = r.issues_where(code=finding, patient="p")
    assert len(found) == 1, [finding_code(i) for i in r.issues]
    issue = found[0]
    assert v3_codes(issue) == [v3], issue["code"]
    assert finding_codes(issue) == [finding], issue["code"]
    assert issue["severity"] == severity == FINDING_SEVERITY[finding]
    assert issue["status"] == "final"
    assert issue["patient"]["reference"] == "Patient/p"
    assert issue["author"]["reference"].startswith("Device/"), issue["author"]
    assert issue.get("identifiedDateTime")
    assert isinstance(issue.get("detail"), str) and issue["detail"].strip()


# IF 2 row dispense-authorized-override "yes, by override or prescriber rationale" | low; NAT.
def test_s3_override_coding_and_severity(tmp_path: Path) -> None:
    first = run_batch(tmp_path, _not_authorized(), as_of("2026-02-11"))
    low = first.issues_where(code="anc-moderate-neutropenia", patient="p")[0]
    answered = prescriber_rationale(low, "2026-02-11")
    second = run_batch(tmp_path, [*_not_authorized(), answered], as_of("2026-02-11"))
    issue = second.dispense_issue("p-pend")
    assert finding_code(issue) == "dispense-authorized-override"
    assert v3_codes(issue) == ["NAT"]
    assert issue["severity"] == "low"
    assert second.authorization_for("p-pend")["outcome"] == "authorized-override"


# ---------------------------------------------------------------------------------------------
# IF 2: "implicated (the MedicationDispense / MedicationRequest concerned)".


def test_s3_implicated_is_the_dispense_concerned(tmp_path: Path) -> None:
    res = [
        *long_term("p"),
        pending_dispense("p", "2026-02-05", did="p-pend-a"),
        pending_dispense("p", "2026-02-05", did="p-pend-b", days_supply=14),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-05"))
    for did, other in (("p-pend-a", "p-pend-b"), ("p-pend-b", "p-pend-a")):
        issue = r.dispense_issue(did)
        imp = refs(issue.get("implicated"))
        assert any(same_ref(x, f"MedicationDispense/{did}") for x in imp), imp
        assert not any(same_ref(x, f"MedicationDispense/{other}") for x in imp), imp


def test_s3_implicated_names_only_medication_resources(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _not_authorized(), as_of("2026-02-11"))
    for issue in r.issues_where(patient="p"):
        for x in refs(issue.get("implicated")):
            rtype = x.split("/_history/")[0].split("/")[-2]
            assert rtype in ("MedicationDispense", "MedicationRequest"), x


# ---------------------------------------------------------------------------------------------
# IF 2: "evidence.detail (the ANC Observations used)".


def test_s3_evidence_anc_finding_cites_its_observation(tmp_path: Path) -> None:
    res = [*_mild(), anc("p", "2026-02-12", 1300, oid="p-later")]
    r = run_batch(tmp_path, res, as_of("2026-02-12"))
    first = r.issues_where(code="anc-mild-neutropenia", observation="p-low")
    assert len(first) == 1
    assert not any(same_ref(x, "Observation/p-later") for x in evidence_refs(first[0]))


def test_s3_evidence_derived_finding_cites_wbc_and_percent(tmp_path: Path) -> None:
    # CR 1 derived ANC = WBC x neutrophil% / 100: the Observations used are the WBC and the %.
    res = [
        *long_term("p"),
        wbc("p", "2026-02-10", 4.0, oid="p-wbc"),
        percent("p", "2026-02-10", 20, loinc="770-8", oid="p-neut"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    found = r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert len(found) == 1, [finding_code(i) for i in r.issues]
    ev = evidence_refs(found[0])
    assert any(same_ref(x, "Observation/p-wbc") for x in ev), ev
    assert any(same_ref(x, "Observation/p-neut") for x in ev), ev


def test_s3_evidence_authorized_dispense_cites_the_current_anc(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _authorized(), as_of("2026-02-05"))
    ev = evidence_refs(r.dispense_issue("p-pend"))
    assert any(same_ref(x, "Observation/p-anc-2026-02-02") for x in ev), ev


def test_s3_evidence_refused_dispense_cites_the_blocking_anc(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _not_authorized(), as_of("2026-02-11"))
    ev = evidence_refs(r.dispense_issue("p-pend"))
    assert any(same_ref(x, "Observation/p-low") for x in ev), ev


def test_s3_evidence_overdue_cites_the_last_anc(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _overdue(), as_of("2026-03-06"))
    found = r.issues_where(code="anc-monitoring-overdue", patient="p")
    assert len(found) == 1
    ev = evidence_refs(found[0])
    assert any(same_ref(x, "Observation/p-anc-2026-02-02") for x in ev), ev


# ---------------------------------------------------------------------------------------------
# IF 2: "for dispense findings the reasons as evidence.code codings from the same CodeSystem";
# IF 3 authorizations `reasons` (list of reason codes). Both must list the same reasons.


def _no_anc_at_all() -> list[Resource]:
    res = on_clozapine("p", "2025-01-06", "2026-02-02", baseline=None)
    return [*res, pending_dispense("p", "2026-02-05", did="p-pend")]


def _stale() -> list[Resource]:
    return [*long_term("p"), pending_dispense("p", "2026-03-10", did="p-pend")]


def _discharge_over_limit() -> list[Resource]:
    # CR 2.3 rule 4: "at most 7 days under ... weekly"
    return [
        *weekly_patient("p"),
        pending_dispense("p", "2026-02-10", 10, did="p-pend", category="discharge"),
    ]


def _severe_recovered() -> list[Resource]:
    return [
        *long_term("p"),
        anc("p", "2026-02-10", 400, oid="p-sev"),
        anc("p", "2026-02-11", 1100, oid="p-r1"),
        anc("p", "2026-02-13", 1600, oid="p-r2"),
        pending_dispense("p", "2026-02-14", did="p-pend"),
    ]


REASON_ROWS: list[tuple[str, Callable[[], list[Resource]], str, set[str]]] = [
    ("anc-missing", _no_anc_at_all, "2026-02-05", {"anc-missing"}),
    ("anc-not-current", _stale, "2026-03-10", {"anc-not-current"}),
    ("treatment-interrupted", _not_authorized, "2026-02-11", {"treatment-interrupted"}),
    ("supply-exceeds-limit", _discharge_over_limit, "2026-02-10", {"supply-exceeds-limit"}),
    # the spec leaves open whether a recovered severe patient is still "interrupted" or only
    # "a rechallenge awaiting the prescriber": either reason (S1 A2)
    (
        "rechallenge",
        _severe_recovered,
        "2026-02-14",
        {"treatment-interrupted", "rechallenge-requires-prescriber"},
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "day", "expected"), REASON_ROWS, ids=[r[0] for r in REASON_ROWS]
)
def test_s3_reasons_in_evidence_code_match_authorizations(
    tmp_path: Path,
    name: str,
    build: Callable[[], list[Resource]],
    day: str,
    expected: set[str],
) -> None:
    r = run_batch(tmp_path, build(), as_of(day))
    issue = r.dispense_issue("p-pend")
    auth = r.authorization_for("p-pend")
    assert finding_code(issue) == "dispense-not-authorized"
    assert auth["outcome"] == "not-authorized"
    codes = evidence_codes(issue)
    assert codes == set(auth["reasons"]), (codes, auth["reasons"])
    if name == "rechallenge":
        assert codes & expected, codes
    else:
        assert expected <= codes, codes


def test_s3_authorized_dispense_has_no_reason_codes(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _authorized(), as_of("2026-02-05"))
    assert evidence_codes(r.dispense_issue("p-pend")) == set()
    assert r.authorization_for("p-pend")["reasons"] == []


# ---------------------------------------------------------------------------------------------
# IF 2: "detail (one plain sentence a pharmacist understands, with the numbers)".


def _derived_9999() -> list[Resource]:
    # CR 1 "a derived 999.9 is moderate"; WBC 3.333 x 30% = 999.9
    return [
        *long_term("p"),
        wbc("p", "2026-02-10", 3.333, oid="p-wbc"),
        percent("p", "2026-02-10", 30, loinc="770-8", oid="p-neut"),
    ]


DETAIL_ROWS: list[tuple[str, Callable[[], list[Resource]], str, str, list[str]]] = [
    ("mild-1400", _mild, "2026-02-10", "anc-mild-neutropenia", ["1400"]),
    ("moderate-800", _moderate, "2026-02-10", "anc-moderate-neutropenia", ["800"]),
    ("derived-999.9", _derived_9999, "2026-02-10", "anc-moderate-neutropenia", ["999.9"]),
    ("refused-800", _not_authorized, "2026-02-11", "dispense-not-authorized", ["800"]),
    ("limit-10-of-7", _discharge_over_limit, "2026-02-10", "dispense-not-authorized", ["10", "7"]),
]


@pytest.mark.parametrize(
    ("name", "build", "day", "finding", "numbers"), DETAIL_ROWS, ids=[r[0] for r in DETAIL_ROWS]
)
def test_s3_detail_sentence_has_the_numbers(
    tmp_path: Path,
    name: str,
    build: Callable[[], list[Resource]],
    day: str,
    finding: str,
    numbers: list[str],
) -> None:
    r = run_batch(tmp_path, build(), as_of(day))
    found = r.issues_where(code=finding, patient="p")
    assert len(found) == 1
    text = found[0]["detail"]
    assert "\n" not in text and "{" not in text, text
    for n in numbers:
        assert number_in(text, n), (n, text)


# ---------------------------------------------------------------------------------------------
# IF 2: "a deterministic identifier (project system; value derived from the inputs that
# produced it) ... so a replay never duplicates".


def test_s3_identifier_unchanged_by_another_patient(tmp_path: Path) -> None:
    alone = run_batch(tmp_path, _not_authorized(), as_of("2026-02-11"))
    other = [patient("q"), anc("q", "2026-02-10", 900, oid="q-low")]
    both = run_batch(tmp_path, [*_not_authorized(), *other], as_of("2026-02-11"))
    mine = {ident(i) for i in alone.issues}
    assert mine == {ident(i) for i in both.issues_where(patient="p", status=None)}
    assert both.issues_where(patient="q", code="anc-moderate-neutropenia")


def test_s3_identifiers_unique_per_decision(tmp_path: Path) -> None:
    res = [
        *long_term("p"),
        anc("p", "2026-02-09", 1400, oid="p-a"),
        anc("p", "2026-02-10", 1400, oid="p-b"),
        anc("p", "2026-02-11", 1400, oid="p-c"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-11"))
    mild = r.issues_where(code="anc-mild-neutropenia", patient="p")
    assert len(mild) == 3
    idents = [ident(i) for i in r.issues]
    assert len(idents) == len(set(idents)), idents
    ids = [i.get("id") for i in r.issues]
    assert len(ids) == len(set(ids)), ids


def test_s3_identifier_of_a_finding_survives_later_results(tmp_path: Path) -> None:
    # the finding's inputs (the 02-10 result) did not change: same identifier, one finding
    first = run_batch(tmp_path, _mild(), as_of("2026-02-10"))
    later = [*_mild(), anc("p", "2026-02-11", 1700, oid="p-next")]
    second = run_batch(tmp_path, later, as_of("2026-02-12"))
    a = first.issues_where(code="anc-mild-neutropenia", observation="p-low")
    b = second.issues_where(code="anc-mild-neutropenia", observation="p-low")
    assert len(a) == len(b) == 1
    assert ident(a[0]) == ident(b[0])


# ---------------------------------------------------------------------------------------------
# IF 2: "withdrawn decisions are updated to cancelled (data changed) or entered-in-error
# (source entered in error), never deleted"; CR 1 "entered-in-error and cancelled withdraw the
# result: every decision that used it is withdrawn and re-made".


@pytest.mark.parametrize(
    ("new_status", "withdrawn_as"),
    [("entered-in-error", "entered-in-error"), ("cancelled", "cancelled")],
)
def test_s3_withdrawal_status_by_source_status(
    tmp_path: Path, new_status: str, withdrawn_as: str
) -> None:
    low = anc("p", "2026-02-10", 1400, oid="p-low")
    first = run_batch(tmp_path, [*long_term("p"), low], as_of("2026-02-10"))
    old = first.issues_where(code="anc-mild-neutropenia", observation="p-low")[0]
    gone = version(low, "2", status=new_status, updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), gone, *first.issues], as_of("2026-02-11"))
    back = by_ident(second, ident(old))
    assert [i["status"] for i in back] == [withdrawn_as], back
    assert finding_code(back[0]) == "anc-mild-neutropenia"
    assert not second.issues_where(code="anc-mild-neutropenia", patient="p")


def test_s3_correction_cancels_and_remakes_with_new_identifier(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 800, oid="p-low")
    first = run_batch(tmp_path, [*long_term("p"), low], as_of("2026-02-10"))
    old = first.issues_where(code="anc-moderate-neutropenia", observation="p-low")[0]
    fixed = version(low, "2", status="corrected", value=1400, updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), fixed, *first.issues], as_of("2026-02-11"))
    assert [i["status"] for i in by_ident(second, ident(old))] == ["cancelled"]
    new = second.issues_where(code="anc-mild-neutropenia", observation="p-low")
    assert len(new) == 1 and ident(new[0]) != ident(old)


def test_s3_dispense_decision_using_a_withdrawn_result_is_withdrawn_and_remade(
    tmp_path: Path,
) -> None:
    # run 1: the 02-10 ANC (monthly: due 03-10) makes a dispense on 03-08 authorized.
    # run 2: that ANC is entered in error; the decision that used it is withdrawn as
    # entered-in-error and re-made on the 02-02 ANC (due 03-02 + 2): not current.
    newer = anc("p", "2026-02-10", 1600, oid="p-new")
    pend = pending_dispense("p", "2026-03-08", did="p-pend")
    first = run_batch(tmp_path, [*long_term("p"), newer, pend], as_of("2026-03-08"))
    old = first.dispense_issue("p-pend")
    assert finding_code(old) == "dispense-authorized"
    gone = version(newer, "2", status="entered-in-error", updated="2026-03-08")
    second = run_batch(tmp_path, [*long_term("p"), gone, pend, *first.issues], as_of("2026-03-08"))
    assert [i["status"] for i in by_ident(second, ident(old))] == ["entered-in-error"]
    now = second.dispense_issue("p-pend")
    assert finding_code(now) == "dispense-not-authorized"
    assert "anc-not-current" in evidence_codes(now)
    assert ident(now) != ident(old)


def test_s3_emauth_needs_the_issue_of_this_dispense(tmp_path: Path) -> None:
    # CR 4 "a pharmacist's mitigation with action EMAUTH on a not-authorized dispense is ... a
    # recorded override (local backend)": it answers that dispense, not another one.
    res = [
        *weekly_patient("p"),
        pending_dispense("p", "2026-02-10", 10, did="p-pend-a", category="discharge"),
        pending_dispense("p", "2026-02-10", 10, did="p-pend-b", category="discharge"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-10"))
    a = first.dispense_issue("p-pend-a")
    assert finding_code(a) == "dispense-not-authorized"
    second = run_batch(
        tmp_path, [*res, pharmacist_override(a, "2026-02-10"), *first.issues], as_of("2026-02-10")
    )
    assert second.authorization_for("p-pend-a")["outcome"] == "authorized-override"
    assert second.authorization_for("p-pend-b")["outcome"] == "not-authorized"


def test_s3_author_device_is_the_same_everywhere(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _not_authorized(), as_of("2026-02-11"))
    authors = {i["author"]["reference"] for i in r.issues}
    assert len(authors) == 1, authors
    assert AUTHOR_DEVICE.split("/")[0] == next(iter(authors)).split("/")[0]
