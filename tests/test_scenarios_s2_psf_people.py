"""S2 PSF (clinical-rules 3, local backend) and people answering through FHIR (section 4).

"A treatment rationale is required when the ANC is below 1000 (general) or 500 (BEN), or when labs
were missed for the period (any ANC due date + grace inside the period passed without a usable
result, even if a later one arrived). A PSF that carries a rationale, a BEN designation or a
hospice designation is accepted only from the certified prescriber [...] The adapter therefore
submits routine PSFs on its own (as a designee) and routes the others to the prescriber".
Issue 8 item 4: psf-prescriber-action-required in the local backend too, saying what is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_kit import (
    anc,
    as_of,
    on_clozapine,
    pending_dispense,
    pharmacist_override,
    prescriber_rationale,
    run_batch,
    with_mitigation,
)


def _psf(r, pid: str, period: str) -> dict:
    rows = [p for p in r.psf if p["patient"] == f"Patient/{pid}" and p["reportingPeriod"] == period]
    assert len(rows) == 1, r.psf
    return rows[0]


def _action_issue(r, pid: str) -> list[dict]:
    return r.issues_where(code="psf-prescriber-action-required", patient=pid)


# Weekly patient (therapy since 2026-01-05). February ANCs on 02-02 and 02-09; the next was due
# 02-16 (+2 grace = 02-18). A result on `late_day` answers it late or in time.
@pytest.mark.parametrize(
    ("late_day", "missed"),
    [
        # Corrected by i8 (issue 8): the first row was ("2026-02-16", False), "in time". But the
        # 02-16 result's own next ANC was due 02-23, + 2 days grace = 02-25, and the next result
        # is 02-26: by clinical-rules 3 labs were missed ("any ANC due date + grace inside the
        # period passed without a usable result, even if a later one arrived"). 02-17 is the
        # in-time case the row meant (due 02-24, + grace 02-26, met by the 02-26 result).
        ("2026-02-16", True),
        ("2026-02-17", False),
        ("2026-02-18", False),  # on the last day of grace: current, not missed
        ("2026-02-19", True),  # a later result arrived, but the due date + grace passed
        ("2026-02-24", True),
    ],
)
def test_psf_missed_labs_need_rationale(tmp_path: Path, late_day: str, missed: bool) -> None:
    res = on_clozapine("p", "2026-01-05", "2026-02-26")
    res += [
        anc("p", "2026-02-02", 1800),
        anc("p", "2026-02-09", 1800),
        anc("p", late_day, 1800, oid="p-late"),
        anc("p", "2026-02-26", 1800),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-27"))
    form = _psf(r, "p", "2026-02")
    assert form["treatmentRationaleRequired"] is missed, form
    if missed:
        assert form["signerRole"] == "prescriber"
        assert form["state"] == "awaiting-prescriber"
        found = _action_issue(r, "p")
        assert len(found) == 1
        assert "rationale" in found[0]["detail"].lower()
    else:
        assert form["signerRole"] == "designee"
        assert not _action_issue(r, "p")


# ANC below 1000 (general) / 500 (BEN) in the period requires a rationale; BEN or hospice always
# routes to the prescriber (designees may not sign them) and the issue says why.
@pytest.mark.parametrize(
    ("desig", "value", "rationale", "needs"),
    [
        ((), 999, True, "rationale"),
        ((), 1000, False, None),
        (("benign-ethnic-neutropenia",), 499, True, "rationale"),
        (("benign-ethnic-neutropenia",), 700, False, "ben"),
        (("hospice",), 1800, False, "hospice"),
    ],
)
def test_psf_routing(tmp_path: Path, desig, value: int, rationale: bool, needs) -> None:
    res = on_clozapine("p", "2024-12-02", "2026-02-26", designations=desig)
    res += [anc("p", "2026-02-02", 1800), anc("p", "2026-02-25", value)]
    r = run_batch(tmp_path, res, as_of("2026-02-26"))
    form = _psf(r, "p", "2026-02")
    assert form["treatmentRationaleRequired"] is rationale, form
    assert form["designations"] == {
        "ben": "benign-ethnic-neutropenia" in desig,
        "hospice": "hospice" in desig,
    }
    found = _action_issue(r, "p")
    if needs is None:
        assert form["signerRole"] == "designee"
        assert not found
        return
    assert form["signerRole"] == "prescriber"
    assert form["state"] == "awaiting-prescriber"
    assert len(found) == 1, [i.get("detail") for i in r.issues]
    detail = found[0]["detail"].lower()
    words = {"rationale": ["rationale"], "ben": ["ben", "benign"], "hospice": ["hospice"]}[needs]
    assert any(w in detail for w in words), detail


# Section 4 / 2.3: a prescriber's rationale recorded after the blocking result turns the
# not-authorized into authorized-override, and the decision cites it.
def _blocked(tmp_path: Path):
    res = on_clozapine("p", "2024-12-02", "2026-02-02")
    res += [
        anc("p", "2026-02-02", 1800),
        anc("p", "2026-02-10", 800, oid="p-low"),
        anc("p", "2026-02-11", 850, oid="p-low2"),
        pending_dispense("p", "2026-02-12", 7, did="p-next"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-12"))
    assert first.authorization_for("p-next")["outcome"] == "not-authorized"
    return res, first


def test_people_prescriber_rationale_authorizes(tmp_path: Path) -> None:
    from tests.scenario_kit import cites_rationale

    res, first = _blocked(tmp_path)
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low2")
    assert len(low) == 1
    answered = prescriber_rationale(low[0], "2026-02-12")
    second = run_batch(tmp_path, [*res, answered], as_of("2026-02-12"))
    auth = second.authorization_for("p-next")
    assert auth["outcome"] == "authorized-override"
    issue = second.dispense_issue("p-next")
    assert cites_rationale(issue, answered)


def test_people_rationale_before_blocking_result_does_not_count(tmp_path: Path) -> None:
    # A rationale answering the 02-10 result does not cover a later, lower blocking result.
    res = on_clozapine("p", "2024-12-02", "2026-02-02")
    res += [anc("p", "2026-02-02", 1800), anc("p", "2026-02-10", 800, oid="p-low")]
    first = run_batch(tmp_path, res, as_of("2026-02-10"))
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low")
    answered = prescriber_rationale(low[0], "2026-02-10")
    res2 = [
        *res,
        answered,
        anc("p", "2026-02-12", 300, oid="p-severe"),
        pending_dispense("p", "2026-02-13", 7, did="p-next"),
    ]
    second = run_batch(tmp_path, res2, as_of("2026-02-13"))
    assert second.authorization_for("p-next")["outcome"] == "not-authorized"


def test_people_mitigation_by_non_prescriber_is_not_a_rationale(tmp_path: Path) -> None:
    res, first = _blocked(tmp_path)
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low2")
    answered = with_mitigation(
        low[0],
        "2026-02-12",
        author="Practitioner/nurse-9",
        action={"text": "benefit outweighs risk"},
    )
    second = run_batch(tmp_path, [*res, answered], as_of("2026-02-12"))
    assert second.authorization_for("p-next")["outcome"] == "not-authorized"


# A pharmacist's EMAUTH on a not-authorized dispense is an override, but it never authorizes what
# the label forbids: an interrupt (moderate) or a missing current ANC stays not authorized
# (section 3: an override needs a current ANC; the brief: never authorize what the label forbids).
def test_people_emauth_cannot_override_interrupt(tmp_path: Path) -> None:
    res, first = _blocked(tmp_path)
    denied = first.dispense_issue("p-next")
    answered = pharmacist_override(denied, "2026-02-12")
    second = run_batch(tmp_path, [*res, answered], as_of("2026-02-12"))
    auth = second.authorization_for("p-next")
    assert auth["outcome"] == "not-authorized"
    assert "treatment-interrupted" in auth["reasons"]


def test_people_emauth_cannot_override_missing_current_anc(tmp_path: Path) -> None:
    res = on_clozapine("p", "2024-12-02", "2026-03-02")
    res += [
        anc("p", "2026-01-20", 1800),
        pending_dispense("p", "2026-03-10", 7, did="p-next"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-03-10"))
    assert first.authorization_for("p-next")["outcome"] == "not-authorized"
    answered = pharmacist_override(first.dispense_issue("p-next"), "2026-03-10")
    second = run_batch(tmp_path, [*res, answered], as_of("2026-03-10"))
    auth = second.authorization_for("p-next")
    assert auth["outcome"] == "not-authorized"
    assert "anc-not-current" in auth["reasons"]


def test_the_psf_action_issue_names_the_prescription_it_concerns(tmp_path: Path) -> None:
    """interfaces.md section 2: every DetectedIssue carries `implicated` (the MedicationDispense
    / MedicationRequest concerned): for a form the prescriber must sign, the clozapine
    prescription, as the ANC findings of that patient name it."""
    from tests.scenario_kit import refs

    res = on_clozapine("p", "2026-01-05", "2026-02-26")
    res += [anc("p", "2026-02-02", 900)]  # below 1000: the form needs a rationale
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    (action,) = _action_issue(r, "p")
    (moderate,) = r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert refs(moderate.get("implicated"))  # what the ANC finding names
    assert refs(action.get("implicated")) == refs(moderate.get("implicated"))
