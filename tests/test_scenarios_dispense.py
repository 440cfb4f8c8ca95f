"""The local dispense decision (clinical-rules 2.3, 4; interfaces 1, 2, 3 authorizations)."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k

R4_CATEGORY = "http://terminology.hl7.org/fhir/CodeSystem/medicationdispense-category"
R4B_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationdispense-admin-location"


def _decide(
    tmp_path: Path,
    resources: list[k.Resource],
    did: str,
    day: str,
) -> tuple[k.Result, dict]:
    result = k.run_batch(tmp_path, resources, k.as_of(day))
    return result, result.authorization_for(did)


def _check_issue(result: k.Result, did: str, pid: str, outcome: str, reasons: list[str]) -> None:
    issue = result.dispense_issue(did)
    code = {
        "authorized": "dispense-authorized",
        "authorized-override": "dispense-authorized-override",
        "not-authorized": "dispense-not-authorized",
    }[outcome]
    assert k.finding_code(issue) == code
    assert issue["severity"] == k.FINDING_SEVERITY[code]
    assert [c["code"] for c in issue["code"]["coding"] if c.get("system") == k.V3_ACTCODE] == [
        "NAT"
    ]
    assert k.same_ref(issue["patient"]["reference"], f"Patient/{pid}")
    if outcome == "not-authorized":
        assert k.evidence_codes(issue) == set(reasons)


# ---- Currency of the latest ANC: weekly, collected 2026-03-02 -> due 03-09, current to 03-11 ---
@pytest.mark.parametrize(
    ("prepared", "outcome", "reasons"),
    [("2026-03-11", "authorized", []), ("2026-03-12", "not-authorized", ["anc-not-current"])],
    ids=["last-day-of-grace", "day-after-grace"],
)
def test_latest_anc_must_be_current(
    tmp_path: Path, prepared: str, outcome: str, reasons: list[str]
) -> None:
    pid = "p-current"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", prepared),
        k.anc(pid, "2026-03-02T10:00:00Z", 1800),
        k.pending_dispense(pid, prepared, 28, did=did),
    ]
    result, auth = _decide(tmp_path, res, did, prepared)
    assert auth["outcome"] == outcome
    assert sorted(auth["reasons"]) == reasons
    assert auth["patient"] == f"Patient/{pid}"
    assert auth["backend"] == "local"
    assert auth["daysSupply"] == 28
    assert auth["setting"] == "outpatient"
    _check_issue(result, did, pid, outcome, reasons)
    # IF 2 "evidence.detail (the ANC Observations used)"
    used = k.evidence_refs(result.dispense_issue(did))
    assert any(k.same_ref(r, f"Observation/{pid}-anc-2026-03-02") for r in used), used


def test_no_anc_at_all(tmp_path: Path) -> None:
    pid = "p-no-anc"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10", baseline=None),
        k.pending_dispense(pid, "2026-03-10", did=did),
    ]
    result, auth = _decide(tmp_path, res, did, "2026-03-10")
    assert auth["outcome"] == "not-authorized"
    assert auth["reasons"] == ["anc-missing"]
    _check_issue(result, did, pid, "not-authorized", ["anc-missing"])


@pytest.mark.parametrize(
    ("value", "outcome", "reasons"),
    [
        (999, "not-authorized", ["treatment-interrupted"]),
        (499, "not-authorized", ["treatment-interrupted"]),
        (1000, "authorized", []),
    ],
    ids=["moderate-interrupts", "severe-interrupts", "mild-continues"],
)
def test_interrupt_blocks(tmp_path: Path, value: int, outcome: str, reasons: list[str]) -> None:
    pid = f"p-interrupt-{value}"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10"),
        k.anc(pid, "2026-03-02", 1800),
        k.anc(pid, "2026-03-10", value),
        k.pending_dispense(pid, "2026-03-10", 7, did=did),
    ]
    result, auth = _decide(tmp_path, res, did, "2026-03-10")
    assert auth["outcome"] == outcome
    assert sorted(auth["reasons"]) == reasons
    _check_issue(result, did, pid, outcome, reasons)


def test_every_reason_is_listed(tmp_path: Path) -> None:
    pid = "p-all-reasons"
    did = f"{pid}-pending"
    # moderate on 03-01 (daily: due 03-02, current to 03-04), discharge of 10 days on 03-10
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10"),
        k.anc(pid, "2026-02-23", 1800),
        k.anc(pid, "2026-03-01", 800),
        k.pending_dispense(pid, "2026-03-10", 10, did=did, category="discharge"),
    ]
    result, auth = _decide(tmp_path, res, did, "2026-03-10")
    expected = ["anc-not-current", "supply-exceeds-limit", "treatment-interrupted"]
    assert auth["outcome"] == "not-authorized"
    assert sorted(auth["reasons"]) == expected
    _check_issue(result, did, pid, "not-authorized", expected)


# ---- First supply: baseline within 30 days meeting the initiation threshold -------------------
def _new_patient(
    pid: str,
    baselines: list[tuple[str, int]],
    ben: bool = False,
) -> list[k.Resource]:
    res = [k.patient(pid), k.practitioner(), k.medication_request(pid, "2026-03-01")]
    if ben:
        res.append(k.designation(pid, k.BEN))
    res += [k.anc(pid, d, v) for d, v in baselines]
    res.append(k.pending_dispense(pid, "2026-03-08", 7, did=f"{pid}-first"))
    return res


FIRST = [
    # (id, population, baselines, outcome, reasons or None when only the outcome is fixed)
    ("general-1500", "general", [("2026-03-05", 1500)], "authorized", []),
    ("general-1499", "general", [("2026-03-05", 1499)], "not-authorized", ["anc-below-threshold"]),
    ("general-none", "general", [], "not-authorized", None),
    ("general-only-31-days-old", "general", [("2026-02-05", 1800)], "not-authorized", None),
    ("ben-two-baselines", "ben", [("2026-03-01", 1000), ("2026-03-05", 1100)], "authorized", []),
    ("ben-one-baseline", "ben", [("2026-03-05", 1100)], "not-authorized", None),
    (
        "ben-a-baseline-999",
        "ben",
        [("2026-03-01", 999), ("2026-03-05", 1100)],
        "not-authorized",
        None,
    ),
    ("ben-1000-is-enough", "ben", [("2026-03-01", 1200), ("2026-03-05", 1000)], "authorized", []),
]


@pytest.mark.parametrize(
    ("population", "baselines", "outcome", "reasons"),
    [f[1:] for f in FIRST],
    ids=[f[0] for f in FIRST],
)
def test_first_supply_needs_baseline(
    tmp_path: Path,
    population: str,
    baselines: list[tuple[str, int]],
    outcome: str,
    reasons: list[str] | None,
) -> None:
    pid = f"p-first-{population}"
    did = f"{pid}-first"
    _, auth = _decide(
        tmp_path, _new_patient(pid, baselines, population == "ben"), did, "2026-03-08"
    )
    assert auth["outcome"] == outcome
    if reasons is not None:
        assert sorted(auth["reasons"]) == reasons
    elif not baselines:
        assert "anc-missing" in auth["reasons"]
    else:
        assert auth["reasons"], "a refusal lists its reasons"
    if population == "ben" and outcome == "not-authorized" and len(baselines) == 2:
        assert "anc-below-threshold" in auth["reasons"]


@pytest.mark.parametrize(
    ("value", "recommendation"), [(1500, "may-initiate"), (1499, "do-not-initiate")]
)
def test_new_patient_status_recommendation(tmp_path: Path, value: int, recommendation: str) -> None:
    pid = "p-initiation"
    result = k.run_batch(
        tmp_path, _new_patient(pid, [("2026-03-05", value)]), k.as_of("2026-03-08")
    )
    status = result.status_for(pid)
    assert status["therapyStart"] is None
    assert status["recommendation"] == recommendation


# ---- Discharge / inpatient supply limits by monitoring frequency ------------------------------
LIMITS = [
    # (id, therapy start, latest ANC, category, days, system, outcome)
    ("weekly-discharge-7", "2026-01-05", 1800, "discharge", 7, None, "authorized"),
    ("weekly-discharge-8", "2026-01-05", 1800, "discharge", 8, None, "not-authorized"),
    ("weekly-inpatient-7", "2026-01-05", 1800, "inpatient", 7, None, "authorized"),
    ("weekly-inpatient-8", "2026-01-05", 1800, "inpatient", 8, None, "not-authorized"),
    ("weekly-outpatient-90", "2026-01-05", 1800, "outpatient", 90, None, "authorized"),
    ("weekly-community-90", "2026-01-05", 1800, "community", 90, None, "authorized"),
    ("weekly-no-category-90", "2026-01-05", 1800, None, 90, None, "authorized"),
    ("2-weeks-discharge-14", "2025-06-02", 1800, "discharge", 14, None, "authorized"),
    ("2-weeks-discharge-15", "2025-06-02", 1800, "discharge", 15, None, "not-authorized"),
    ("monthly-discharge-30", "2024-11-04", 1800, "discharge", 30, None, "authorized"),
    ("monthly-discharge-31", "2024-11-04", 1800, "discharge", 31, None, "not-authorized"),
    ("monthly-inpatient-31", "2024-11-04", 1800, "inpatient", 31, None, "not-authorized"),
    ("mild-3x-weekly-discharge-7", "2024-11-04", 1200, "discharge", 7, None, "authorized"),
    ("mild-3x-weekly-discharge-8", "2024-11-04", 1200, "discharge", 8, None, "not-authorized"),
    ("r4-system-discharge-8", "2026-01-05", 1800, "discharge", 8, R4_CATEGORY, "not-authorized"),
    ("r4b-system-discharge-8", "2026-01-05", 1800, "discharge", 8, R4B_CATEGORY, "not-authorized"),
]


@pytest.mark.parametrize(
    ("start", "value", "category", "days", "system", "outcome"),
    [x[1:] for x in LIMITS],
    ids=[x[0] for x in LIMITS],
)
def test_supply_limit(
    tmp_path: Path,
    start: str,
    value: int,
    category: str | None,
    days: int,
    system: str | None,
    outcome: str,
) -> None:
    pid = "p-limit"
    did = f"{pid}-pending"
    pending = k.pending_dispense(
        pid,
        "2026-03-10",
        days,
        did=did,
        category=category,
        category_system=system or k.DISPENSE_CATEGORY_SYSTEM,
    )
    res = [
        *k.on_clozapine(pid, start, "2026-03-10"),
        k.anc(pid, "2026-03-02", 1800),
        k.anc(pid, "2026-03-09", value),
        pending,
    ]
    result, auth = _decide(tmp_path, res, did, "2026-03-10")
    reasons = [] if outcome == "authorized" else ["supply-exceeds-limit"]
    assert auth["outcome"] == outcome
    assert sorted(auth["reasons"]) == reasons
    assert auth["daysSupply"] == days
    assert auth["setting"] == (category or "outpatient")
    _check_issue(result, did, pid, outcome, reasons)


# ---- Which dispenses are decided ---------------------------------------------------------------
def test_one_authorization_per_dispense_awaiting_decision(tmp_path: Path) -> None:
    pid = "p-which"
    olanzapine = k.pending_dispense(pid, "2026-03-10", did=f"{pid}-olanzapine")
    olanzapine["medicationCodeableConcept"] = {
        "coding": [{"system": k.RXNORM, "code": "61381"}],
        "text": "olanzapine",
    }
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10"),
        k.anc(pid, "2026-03-09", 1800),
        k.pending_dispense(pid, "2026-03-10", did=f"{pid}-prep"),
        k.pending_dispense(pid, "2026-03-10", did=f"{pid}-inprog", status="in-progress"),
        k.pending_dispense(pid, "2026-03-10", did=f"{pid}-cancelled", status="cancelled"),
        k.pending_dispense(pid, "2026-03-10", did=f"{pid}-onhold", status="on-hold"),
        olanzapine,
    ]
    result = k.run_batch(tmp_path, res, k.as_of("2026-03-10"))
    assert sorted(a["dispense"] for a in result.authorizations) == [
        f"MedicationDispense/{pid}-inprog",
        f"MedicationDispense/{pid}-prep",
    ]
    for did in (f"{pid}-prep", f"{pid}-inprog"):
        assert result.authorization_for(did)["outcome"] == "authorized"
        _check_issue(result, did, pid, "authorized", [])


# ---- People answer through mitigations (clinical-rules 4) -------------------------------------
def _moderate(pid: str, until: str) -> list[k.Resource]:
    return [
        *k.on_clozapine(pid, "2026-01-05", until),
        k.anc(pid, "2026-02-02", 1800),
        k.anc(pid, "2026-02-09", 800),
    ]


def test_prescriber_rationale_after_blocking_result_overrides_interrupt(tmp_path: Path) -> None:
    pid = "p-rationale"
    did = f"{pid}-pending"
    res = [*_moderate(pid, "2026-02-10"), k.pending_dispense(pid, "2026-02-10", 7, did=did)]
    first, auth = _decide(tmp_path, res, did, "2026-02-10")
    assert auth["outcome"] == "not-authorized"
    assert "treatment-interrupted" in auth["reasons"]  # the exact set: test_interrupt_blocks

    (moderate,) = first.issues_where(
        code="anc-moderate-neutropenia", observation=f"{pid}-anc-2026-02-09"
    )
    answered = k.prescriber_rationale(moderate, "2026-02-09")
    answered.setdefault("id", "di-moderate-answered")
    others = [i for i in first.issues if i is not moderate]
    second, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-02-10")
    assert auth["outcome"] == "authorized-override"
    _check_issue(second, did, pid, "authorized-override", [])
    assert k.cites_rationale(second.dispense_issue(did), answered)


def test_rationale_recorded_before_the_blocking_result_does_not_count(tmp_path: Path) -> None:
    pid = "p-old-rationale"
    did = f"{pid}-pending"
    early = [
        *k.on_clozapine(pid, "2026-01-05", "2026-02-03"),
        k.anc(pid, "2026-01-26", 1800),
        k.anc(pid, "2026-02-02", 800),
    ]
    first = k.run_batch(tmp_path, early, k.as_of("2026-02-03"))
    (old,) = first.issues_where(
        code="anc-moderate-neutropenia", observation=f"{pid}-anc-2026-02-02"
    )
    answered = k.prescriber_rationale(old, "2026-02-03")
    answered.setdefault("id", "di-old-answered")

    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-02-10"),
        k.anc(pid, "2026-01-26", 1800),
        k.anc(pid, "2026-02-02", 800),
        k.anc(pid, "2026-02-09", 700),  # new blocking result
        k.pending_dispense(pid, "2026-02-10", 7, did=did),
        answered,
    ]
    _, auth = _decide(tmp_path, res, did, "2026-02-10")
    assert auth["outcome"] == "not-authorized"
    assert "treatment-interrupted" in auth["reasons"]  # the exact set: test_interrupt_blocks


def _stale(pid: str) -> list[k.Resource]:
    return [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-12"),
        k.anc(pid, "2026-03-02T10:00:00Z", 1800),
        k.pending_dispense(pid, "2026-03-12", 7, did=f"{pid}-pending"),
    ]


@pytest.mark.parametrize(
    ("who", "outcome"),
    [
        # CR 4 "Who may do what follows section 3": a pharmacist's override needs "a current
        # ANC" (CR 3), so EMAUTH cannot lift anc-not-current (SCENARIOS.md A24).
        ("pharmacist-emauth", "not-authorized"),
        ("pharmacist-without-emauth", "not-authorized"),
        ("prescriber-on-overdue-issue", "authorized-override"),
    ],
)
def test_answers_to_a_stale_anc(tmp_path: Path, who: str, outcome: str) -> None:
    pid = f"p-{who}"
    did = f"{pid}-pending"
    res = _stale(pid)
    first, auth = _decide(tmp_path, res, did, "2026-03-12")
    assert auth["outcome"] == "not-authorized"
    assert auth["reasons"] == ["anc-not-current"]

    if who == "prescriber-on-overdue-issue":
        (target,) = first.issues_where(code="anc-monitoring-overdue", patient=pid)
        answered = k.prescriber_rationale(target, "2026-03-12")
    else:
        target = first.dispense_issue(did)
        if who == "pharmacist-emauth":
            answered = k.pharmacist_override(target, "2026-03-12")
        else:
            answered = k.with_mitigation(
                target,
                "2026-03-12",
                author="Practitioner/pharmacist-1",
                action={"text": "called the ward"},
            )
    answered.setdefault("id", f"di-{who}")
    others = [i for i in first.issues if i is not target]
    second, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-03-12")
    assert auth["outcome"] == outcome
    _check_issue(second, did, pid, outcome, ["anc-not-current"])


PHARMACIST_CASES = [
    # (id, latest ANC, category, days, first-run reasons, outcome after EMAUTH)
    ("discharge-over-limit", 1800, "discharge", 8, ["supply-exceeds-limit"], "authorized-override"),
    ("moderate-interrupt", 800, None, 7, ["treatment-interrupted"], "not-authorized"),
]


@pytest.mark.parametrize(
    ("value", "category", "days", "reason", "outcome"),
    [c[1:] for c in PHARMACIST_CASES],
    ids=[c[0] for c in PHARMACIST_CASES],
)
def test_pharmacist_emauth_override(
    tmp_path: Path, value: int, category: str | None, days: int, reason: list[str], outcome: str
) -> None:
    """CR 4: EMAUTH on a not-authorized dispense is a recorded override (local backend); a low
    ANC / interruption stays the prescriber's decision (CR 2.1, CR 3; SCENARIOS.md A24)."""
    pid = "p-emauth"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10"),
        k.anc(pid, "2026-03-02", 1800),
        k.anc(pid, "2026-03-10", value),
        k.pending_dispense(pid, "2026-03-10", days, did=did, category=category),
    ]
    first, auth = _decide(tmp_path, res, did, "2026-03-10")
    assert auth["outcome"] == "not-authorized"
    assert set(reason) <= set(auth["reasons"])
    target = first.dispense_issue(did)
    answered = k.pharmacist_override(target, "2026-03-10")
    answered.setdefault("id", "di-emauth")
    others = [i for i in first.issues if i is not target]
    second, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-03-10")
    assert auth["outcome"] == outcome
    _check_issue(second, did, pid, outcome, auth["reasons"])


#: Who wrote an EMAUTH answer on a not-authorized discharge supply: only a pharmacist (a
#: Practitioner or PractitionerRole who is not the prescriber) records an override (CR 4, 3).
EMAUTH_AUTHORS = [
    ("pharmacist", f"Practitioner/{k.PHARMACIST}", "authorized-override"),
    ("pharmacist-role", "PractitionerRole/pharmacy-shift", "authorized-override"),
    ("patient", "Patient/p-emauth-who", "not-authorized"),
    ("relative", "RelatedPerson/mother", "not-authorized"),
    ("device", "Device/some-robot", "not-authorized"),
    ("no-author", "", "not-authorized"),
    ("the-prescriber", f"Practitioner/{k.PRESCRIBER}", "not-authorized"),
]


@pytest.mark.parametrize(
    ("author", "outcome"), [c[1:] for c in EMAUTH_AUTHORS], ids=[c[0] for c in EMAUTH_AUTHORS]
)
def test_only_a_pharmacist_s_emauth_is_an_override(
    tmp_path: Path, author: str, outcome: str
) -> None:
    pid = "p-emauth-who"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-03-10"),
        k.anc(pid, "2026-03-09", 1800),
        k.pending_dispense(pid, "2026-03-10", 8, did=did, category="discharge"),
    ]
    first, auth = _decide(tmp_path, res, did, "2026-03-10")
    assert (auth["outcome"], auth["reasons"]) == ("not-authorized", ["supply-exceeds-limit"])
    target = first.dispense_issue(did)
    answered = k.pharmacist_override(target, "2026-03-10")
    if author:
        answered["mitigation"][-1]["author"] = {"reference": author}
    else:
        del answered["mitigation"][-1]["author"]
    answered.setdefault("id", "di-emauth-who")
    others = [i for i in first.issues if i is not target]
    _, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-03-10")
    assert auth["outcome"] == outcome
    if outcome == "not-authorized":
        assert auth["reasons"] == ["supply-exceeds-limit"]


@pytest.mark.parametrize(
    ("with_request", "author", "outcome"),
    [
        (True, f"Practitioner/{k.PRESCRIBER}", "authorized-override"),
        (True, f"Practitioner/{k.PHARMACIST}", "not-authorized"),
        # No MedicationRequest in view: nobody can be told to be the prescriber.
        (False, f"Practitioner/{k.PRESCRIBER}", "not-authorized"),
        (False, f"Practitioner/{k.PHARMACIST}", "not-authorized"),
    ],
    ids=["requester", "another-practitioner", "no-request-prescriber", "no-request-pharmacist"],
)
def test_a_rationale_counts_only_from_the_prescriber_of_the_request(
    tmp_path: Path, with_request: bool, author: str, outcome: str
) -> None:
    """CR 4: "a prescriber's mitigation (author = the prescriber)": the requester of the
    patient's clozapine MedicationRequest. A note by anyone else never lifts an interruption."""
    pid = "p-rationale-who"
    did = f"{pid}-pending"
    res = [*_moderate(pid, "2026-02-10"), k.pending_dispense(pid, "2026-02-10", 7, did=did)]
    if not with_request:
        res = [r for r in res if r["resourceType"] != "MedicationRequest"]
    first, auth = _decide(tmp_path, res, did, "2026-02-10")
    assert "treatment-interrupted" in auth["reasons"]
    (moderate,) = first.issues_where(code="anc-moderate-neutropenia")
    answered = k.prescriber_rationale(moderate, "2026-02-09")
    answered["mitigation"][-1]["author"] = {"reference": author}
    answered.setdefault("id", "di-rationale-who")
    others = [i for i in first.issues if i is not moderate]
    _, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-02-10")
    assert auth["outcome"] == outcome


@pytest.mark.parametrize(
    ("issued", "outcome"),
    [
        ("2026-02-09T16:00:00Z", "not-authorized"),  # reported after the 14:00 answer
        ("2026-02-09T13:59:59Z", "authorized-override"),  # reported just before it
        ("2026-02-09T14:00:00Z", "authorized-override"),  # at the same instant
    ],
)
def test_a_rationale_counts_only_once_the_blocking_result_was_reported(
    tmp_path: Path, issued: str, outcome: str
) -> None:
    """CR 2.3: "recorded after the blocking result": an answer written before the result was
    reported (its `issued`) cannot be about it, even if written after its collection."""
    pid = "p-rationale-reported"
    did = f"{pid}-pending"
    res = [
        *k.on_clozapine(pid, "2026-01-05", "2026-02-10"),
        k.anc(pid, "2026-01-26", 1800),
        k.anc(pid, "2026-02-02", 1200),  # mild: the issue the prescriber answers
        k.anc(pid, "2026-02-09", 800, issued=issued),  # collected 08:00: the blocking result
        k.pending_dispense(pid, "2026-02-10", 7, did=did),
    ]
    first, auth = _decide(tmp_path, res, did, "2026-02-10")
    assert "treatment-interrupted" in auth["reasons"]
    (mild,) = first.issues_where(code="anc-mild-neutropenia")
    answered = k.prescriber_rationale(mild, "2026-02-09")  # 14:00
    answered.setdefault("id", "di-rationale-reported")
    others = [i for i in first.issues if i is not mild]
    _, auth = _decide(tmp_path, [*res, *others, answered], did, "2026-02-10")
    assert auth["outcome"] == outcome


# ---- Recommendation gates (CR 2.3 rule 2) across excursions ------------------------------------
GATES = [
    # (id, population, ANC history (date, value), outcome, reasons)
    (
        "moderate-recovered-1000-may-resume",
        "general",
        [("2026-03-02", 1800), ("2026-03-05", 800), ("2026-03-10", 1000)],
        "authorized",
        [],
    ),
    (
        "severe-recovered-1200-still-interrupted",
        "general",
        [("2026-03-02", 1800), ("2026-03-05", 400), ("2026-03-10", 1200)],
        "not-authorized",
        ["treatment-interrupted"],
    ),
    (
        "ben-neutropenia-700-continues",
        "ben",
        [("2026-03-02", 1200), ("2026-03-10", 700)],
        "authorized",
        [],
    ),
    (
        "ben-severe-recovered-600-still-interrupted",
        "ben",
        [("2026-03-02", 1200), ("2026-03-05", 400), ("2026-03-10", 600)],
        "not-authorized",
        ["treatment-interrupted"],
    ),
]


@pytest.mark.parametrize(
    ("population", "history", "outcome", "reasons"),
    [g[1:] for g in GATES],
    ids=[g[0] for g in GATES],
)
def test_recommendation_gates_the_supply(
    tmp_path: Path,
    population: str,
    history: list[tuple[str, int]],
    outcome: str,
    reasons: list[str],
) -> None:
    pid = "p-gate"
    did = f"{pid}-pending"
    res = k.on_clozapine(
        pid, "2026-01-05", "2026-03-10", designations=(k.BEN,) if population == "ben" else ()
    )
    res += [k.anc(pid, d, v) for d, v in history]
    res.append(k.pending_dispense(pid, "2026-03-10", 7, did=did))
    result, auth = _decide(tmp_path, res, did, "2026-03-10")
    assert auth["outcome"] == outcome
    assert sorted(auth["reasons"]) == reasons
    _check_issue(result, did, pid, outcome, reasons)


def test_rechallenge_restarts_as_a_new_patient(tmp_path: Path) -> None:
    """CR 2.1 severe: "a rechallenge restarts as a new patient once >= 1500" -> weekly again for
    a patient who was on the monthly schedule (therapyStart: SCENARIOS.md A6)."""
    pid = "p-rechallenged"
    history = [
        ("2026-02-02", 1800),
        ("2026-02-09", 400),
        ("2026-02-10", 1100),
        ("2026-02-12", 1600),
    ]
    base = [
        *k.on_clozapine(pid, "2024-11-04", "2026-01-27"),
        *[k.anc(pid, d, v) for d, v in history],
    ]
    first = k.run_batch(tmp_path, base, k.as_of("2026-02-12"))
    assert first.status_for(pid)["recommendation"] == "prescriber-decision-required"
    (severe,) = first.issues_where(
        code="anc-severe-neutropenia", observation=f"{pid}-anc-2026-02-09"
    )
    answered = k.prescriber_rationale(severe, "2026-02-12")
    answered.setdefault("id", "di-rechallenge-answered")
    res = [
        *base,
        answered,
        k.completed_dispense(pid, "2026-02-13", 7),
        k.anc(pid, "2026-02-16", 1700),
    ]
    second = k.run_batch(tmp_path, res, k.as_of("2026-02-16"))
    status = second.status_for(pid)
    assert status["recommendation"] == "continue"
    assert status["monitoringFrequency"] == "weekly"
    assert status["nextAncDue"] == "2026-02-23"
    assert status["therapyStart"] == "2026-02-13"
