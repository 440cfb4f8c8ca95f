"""S3: edge scenarios (second batch, written after the first 125 all passed): WBC units in
derivation, identifier stability of overdue findings, a REMS that cannot be reached, supply
limits the spec does not list, medicationReference, --as-of given as a date, withdrawals fed
back twice, correction of a result a dispense decision used. Each test cites its sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_kit import (
    BEN,
    FINDING_SEVERITY,
    HOSPICE,
    PRESCRIBER,
    Resource,
    anc,
    as_of,
    completed_dispense,
    evidence_codes,
    finding_code,
    medication_request,
    observation,
    on_clozapine,
    patient,
    pending_dispense,
    percent,
    practitioner,
    quantity,
    run_batch,
)
from tests.scenario_kit_s2 import START, long_term, version
from tests.scenario_kit_s3 import by_ident, ident, v3_codes

NY = ("--site-tz", "America/New_York")


# CR 1 "Units are normalised to cells/uL: 10*3/uL = 10*9/L = x1000; /uL ... = x1" applies to
# the WBC used for a derived ANC: WBC 4.0 x10^9/L or 4000 /uL with 20 % neutrophils = 800.
@pytest.mark.parametrize(("value", "unit"), [(4.0, "10*9/L"), (4000, "/uL"), (4.0, "10*3/uL")])
def test_s3_derived_wbc_units(tmp_path: Path, value: float, unit: str) -> None:
    res = [
        *long_term("p"),
        observation("p", "p-wbc", "6690-2", "2026-02-10", quantity(value, unit)),
        percent("p", "2026-02-10", 20, loinc="770-8", oid="p-neut"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["category"] == "moderate-neutropenia", st
    assert st["latestAnc"]["valuePerUL"] == 800


# IF 2 "a deterministic identifier ... value derived from the inputs that produced it ... so a
# replay never duplicates": the same overdue state (same last ANC) seen by two daily runs is
# one finding, not one a day.
def test_s3_overdue_identifier_stable_across_days(tmp_path: Path) -> None:
    one = run_batch(tmp_path, long_term("p"), as_of("2026-03-06"))
    two = run_batch(tmp_path, long_term("p"), as_of("2026-03-07"))
    a = one.issues_where(code="anc-monitoring-overdue", patient="p")
    b = two.issues_where(code="anc-monitoring-overdue", patient="p")
    assert len(a) == len(b) == 1
    assert ident(a[0]) == ident(b[0])


# IF 2 `dispense-authorization-pending` "the backend could not be reached; retrying" |
# moderate; CR 0 "When it cannot decide (... REMS unreachable), it says so in a DetectedIssue
# instead of silently authorizing or silently blocking"; IF 3 outcome `pending`, backend `rems`.
# CR 3 enrollment needs "patient identity (name, date of birth, sex, postal code ...),
# prescriber NPI": the first-run row lacked them (misread input, see SCENARIOS-S3.md); with
# them the REMS is asked and cannot be reached; without them the adapter knows the patient is
# not enrolled and says so.
def _rems_ready(pid: str) -> list[Resource]:
    res = long_term(pid)
    for r in res:
        if r["resourceType"] == "Patient":
            r["address"] = [{"postalCode": "02139"}]
        if r["resourceType"] == "Practitioner":
            r["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]
    return res


@pytest.mark.parametrize(
    ("complete", "outcome", "finding"),
    [
        (True, "pending", "dispense-authorization-pending"),
        (False, "not-authorized", "dispense-not-authorized"),
    ],
    ids=["enrollable", "not-enrollable"],
)
def test_s3_unreachable_rems(tmp_path: Path, complete: bool, outcome: str, finding: str) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = _rems_ready("p") if complete else long_term("p")
    res = [*base, pending_dispense("p", "2026-02-05", did="p-pend")]
    args = ["--rems", f"http://127.0.0.1:{port}", "--rems-attempts", "1", "--rems-timeout", "2"]
    r = run_batch(tmp_path, res, as_of("2026-02-05"), extra_args=args)
    a = r.authorization_for("p-pend")
    assert (a["outcome"], a["backend"]) == (outcome, "rems")
    issue = r.dispense_issue("p-pend")
    assert finding_code(issue) == finding
    assert issue["severity"] == FINDING_SEVERITY[finding] and v3_codes(issue) == ["NAT"]
    if not complete:
        assert a["reasons"] == ["patient-not-enrolled"]


# CR 2.3 rule 4 lists no limit for every-6-months; the safer reading is the monthly one (30).
@pytest.mark.parametrize(("days", "outcome"), [(30, "authorized"), (31, "not-authorized")])
def test_s3_hospice_discharge_limit(tmp_path: Path, days: int, outcome: str) -> None:
    res = [
        *on_clozapine("h", START, "2026-02-02", designations=(HOSPICE,)),
        anc("h", "2026-02-02", 1800),
        pending_dispense("h", "2026-02-05", days, did="h-pend", category="discharge"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-05"))
    a = r.authorization_for("h-pend")
    assert a["outcome"] == outcome
    if outcome == "not-authorized":
        assert a["reasons"] == ["supply-exceeds-limit"]


# CR 2.3 rule 4 "a discharge or inpatient supply does not run past what the monitoring
# allows": without daysSupply it cannot be shown not to (safer reading: not authorized).
def test_s3_inpatient_supply_without_days_supply(tmp_path: Path) -> None:
    pend = pending_dispense("p", "2026-02-05", did="p-pend", category="inpatient")
    del pend["daysSupply"]
    r = run_batch(tmp_path, [*long_term("p"), pend], as_of("2026-02-05"))
    assert r.authorization_for("p-pend")["outcome"] == "not-authorized"
    assert "supply-exceeds-limit" in r.authorization_for("p-pend")["reasons"]


# IF 1 "Clozapine is recognised by RxNorm (ingredient and product codes)": a dispense whose
# medicationReference names a Medication resource of the same input.
def test_s3_medication_reference_to_a_medication_resource(tmp_path: Path) -> None:
    med = {
        "resourceType": "Medication",
        "id": "med-cloz",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2626"}]
        },
    }
    pend = pending_dispense("p", "2026-02-05", did="p-pend")
    del pend["medicationCodeableConcept"]
    pend["medicationReference"] = {"reference": "Medication/med-cloz"}
    r = run_batch(tmp_path, [*long_term("p"), med, pend], as_of("2026-02-05"))
    assert r.authorization_for("p-pend")["outcome"] == "authorized"


# README run: "A date alone means the end of that day in the site's time zone".
@pytest.mark.parametrize(
    ("collected", "tz", "used"),
    [
        ("2026-02-10T22:00:00Z", (), True),
        ("2026-02-11T03:00:00Z", NY, True),  # 02-10 22:00 in New York
        ("2026-02-11T03:00:00Z", (), False),
    ],
    ids=["utc-late-evening", "ny-late-evening", "utc-next-day"],
)
def test_s3_as_of_date_alone_is_end_of_day(
    tmp_path: Path, collected: str, tz: tuple[str, ...], used: bool
) -> None:
    res = [*long_term("p"), anc("p", collected, 1400, oid="p-late")]
    r = run_batch(tmp_path, res, "2026-02-10", extra_args=tz)
    assert r.status_for("p")["latestAnc"]["observation"].endswith("p-late") is used


# IF 2 "withdrawn decisions are updated to ... entered-in-error ..., never deleted": fed back a
# second time the withdrawn decision stays withdrawn (one line, same identifier, same status).
def test_s3_withdrawn_decision_stays_withdrawn_on_replay(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 1400, oid="p-low")
    first = run_batch(tmp_path, [*long_term("p"), low], as_of("2026-02-10"))
    old = ident(first.issues_where(code="anc-mild-neutropenia", observation="p-low")[0])
    gone = version(low, "2", status="entered-in-error", updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), gone, *first.issues], as_of("2026-02-11"))
    third = run_batch(tmp_path, [*long_term("p"), gone, *second.issues], as_of("2026-02-12"))
    for r in (second, third):
        assert [i["status"] for i in by_ident(r, old)] == ["entered-in-error"]


# CR 1 "Out-of-order arrival: decisions use results ordered by collection time, not arrival":
# an older normal result arriving after a newer moderate one changes nothing.
def test_s3_late_older_normal_does_not_clear_a_newer_low(tmp_path: Path) -> None:
    newer = anc("p", "2026-02-10", 800, oid="p-low")
    older = anc("p", "2026-02-08", 1800, oid="p-old", issued="2026-02-11T12:00:00Z")
    r = run_batch(tmp_path, [*long_term("p"), newer, older], as_of("2026-02-11"))
    st = r.status_for("p")
    assert st["category"] == "moderate-neutropenia"
    assert st["latestAnc"]["observation"].endswith("p-low")


# CR 1 "A corrected/amended version replaces the earlier one ... and decisions are re-made";
# IF 2 "withdrawn ... cancelled (data changed)": the dispense decision that used the result.
def test_s3_correction_withdraws_the_dispense_decision_as_cancelled(tmp_path: Path) -> None:
    newer = anc("p", "2026-02-10", 1600, oid="p-new")
    pend = pending_dispense("p", "2026-02-11", did="p-pend")
    first = run_batch(tmp_path, [*long_term("p"), newer, pend], as_of("2026-02-11"))
    old = first.dispense_issue("p-pend")
    assert finding_code(old) == "dispense-authorized"
    fixed = version(newer, "2", status="corrected", value=800, updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), fixed, pend, *first.issues], as_of("2026-02-11"))
    assert [i["status"] for i in by_ident(second, ident(old))] == ["cancelled"]
    now = second.dispense_issue("p-pend")
    assert finding_code(now) == "dispense-not-authorized"
    assert "treatment-interrupted" in evidence_codes(now)


# IF 3 status "one object per patient on clozapine"; CR 2.1 "Initiation: general population
# needs a baseline ANC >= 1500": an active prescription and no ANC at all.
def test_s3_prescription_only_without_any_anc(tmp_path: Path) -> None:
    res: list[Resource] = [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2026-02-01"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["latestAnc"] is None and st["category"] is None and st["therapyStart"] is None
    assert st["recommendation"] == "do-not-initiate"
    assert isinstance(st["nextAncDue"], str) and len(st["nextAncDue"]) == 10


# ---------------------------------------------------------------------------------------------
# CR 2.1 monitoring and treatment columns at their boundaries ("Boundaries are inclusive on the
# lower edge"). General: moderate "daily until >= 1000, then three times weekly until >= 1500,
# then weekly for 4 weeks"; "may resume once >= 1000"; severe "daily until >= 1000, then three
# times weekly until >= 1500", "no rechallenge unless the prescriber decides"; mild "three times
# weekly until >= 1500, then back". BEN: severe "daily until >= 500, then three times weekly
# until >= the baseline", rechallenge "once >= 1000 or at baseline"; ben-neutropenia "three
# times weekly until >= 1000 ..., then weekly for 4 weeks". BEN patients here have no ANC
# before therapy: baseline 1000.
def _ben_long(pid: str) -> list[Resource]:
    return [
        *on_clozapine(pid, START, "2026-02-02", baseline=None, designations=(BEN,)),
        anc(pid, "2026-02-02", 1300),
    ]


EXCURSION_ROWS: list[tuple[str, bool, list[int], str, set[str], str | None]] = [
    ("moderate-999", False, [800, 999], "moderate-neutropenia", {"interrupt"}, "daily"),
    ("moderate-1000", False, [800, 1000], "mild-neutropenia", {"may-resume"}, "three-times-weekly"),
    (
        "moderate-1499",
        False,
        [800, 1000, 1499],
        "mild-neutropenia",
        {"may-resume"},
        "three-times-weekly",
    ),
    ("moderate-1500", False, [800, 1000, 1500], "normal", {"may-resume", "continue"}, "weekly"),
    ("severe-999", False, [400, 999], "moderate-neutropenia", {"interrupt"}, "daily"),
    ("severe-1000", False, [400, 1000], "mild-neutropenia", {"interrupt"}, "three-times-weekly"),
    ("severe-1500", False, [400, 1000, 1500], "normal", {"prescriber-decision-required"}, None),
    ("mild-1499", False, [1400, 1499], "mild-neutropenia", {"continue"}, "three-times-weekly"),
    ("mild-1500", False, [1400, 1500], "normal", {"continue"}, "monthly"),
    ("ben-severe-499", True, [450, 499], "severe-neutropenia", {"interrupt"}, "daily"),
    ("ben-severe-500", True, [450, 500], "ben-neutropenia", {"interrupt"}, "three-times-weekly"),
    (
        "ben-severe-999",
        True,
        [450, 500, 999],
        "ben-neutropenia",
        {"interrupt"},
        "three-times-weekly",
    ),
    ("ben-severe-1000", True, [450, 500, 1000], "normal", {"prescriber-decision-required"}, None),
    ("ben-999", True, [800, 999], "ben-neutropenia", {"continue"}, "three-times-weekly"),
    ("ben-1000", True, [800, 1000], "normal", {"continue"}, "weekly"),
]


@pytest.mark.parametrize(
    ("name", "ben", "values", "category", "recommendations", "frequency"),
    EXCURSION_ROWS,
    ids=[r[0] for r in EXCURSION_ROWS],
)
def test_s3_excursion_boundaries(
    tmp_path: Path,
    name: str,
    ben: bool,
    values: list[int],
    category: str,
    recommendations: set[str],
    frequency: str | None,
) -> None:
    res = _ben_long("p") if ben else long_term("p")
    days = ["2026-02-10", "2026-02-11", "2026-02-13"]
    res += [
        anc("p", d, v, oid=f"p-e{n}") for n, (d, v) in enumerate(zip(days, values, strict=False))
    ]
    r = run_batch(tmp_path, res, as_of(days[len(values) - 1]))
    st = r.status_for("p")
    assert st["category"] == category, st
    assert st["recommendation"] in recommendations, st
    if frequency is not None:
        assert st["monitoringFrequency"] == frequency, st


# CR 0 "When it cannot decide (bad unit ...), it says so"; IF 3 latestAnc / category null;
# CR 2.3 rule 1 "the latest usable ANC is current": the only ANC is unevaluable.
def test_s3_only_an_unevaluable_anc(tmp_path: Path) -> None:
    res = on_clozapine("p", START, "2026-02-02", baseline=None)
    res += [
        anc("p", "2026-02-02", 1.8, code="%"),
        pending_dispense("p", "2026-02-05", did="p-pend"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-05"))
    st = r.status_for("p")
    assert st["latestAnc"] is None and st["category"] is None
    assert r.issues_where(code="anc-unevaluable", patient="p")
    a = r.authorization_for("p-pend")
    assert a["outcome"] == "not-authorized" and "anc-missing" in a["reasons"]


# CR 1 "ANC = WBC x (neutrophil% [+ band%]) / 100": band % is only added to a neutrophil %;
# a WBC with a band % alone gives no ANC.
def test_s3_band_percent_alone_is_no_anc(tmp_path: Path) -> None:
    res = [
        *long_term("p"),
        observation("p", "p-wbc", "6690-2", "2026-02-10", quantity(4.0, "10*3/uL")),
        percent("p", "2026-02-10", 5, loinc="764-1", oid="p-band"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert st["latestAnc"]["collected"].startswith("2026-02-02"), st
    assert not r.issues_where(code="anc-severe-neutropenia", patient="p")


# CR 2.1 "Confirmation: ... must be repeated within 24 hours of its collection; report the
# deadline"; IF 2 detail "with the numbers": the pharmacist's sentence carries the deadline,
# and the overdue finding carries the due date.
def test_s3_detail_reports_the_repeat_deadline(tmp_path: Path) -> None:
    r = run_batch(tmp_path, [*long_term("p"), anc("p", "2026-02-10", 1400)], as_of("2026-02-10"))
    (issue,) = r.issues_where(code="anc-mild-neutropenia", patient="p")
    assert "2026-02-11" in issue["detail"], issue["detail"]


def test_s3_detail_of_overdue_names_the_due_date(tmp_path: Path) -> None:
    r = run_batch(tmp_path, long_term("p"), as_of("2026-03-06"))
    (issue,) = r.issues_where(code="anc-monitoring-overdue", patient="p")
    assert "2026-03-02" in issue["detail"], issue["detail"]


# CR 3 PSF "the ANC results of the period with collection dates (the most recent required;
# more allowed)": in a month without a result, the most recent one is still on the form.
def test_s3_psf_month_without_a_result_lists_the_latest(tmp_path: Path) -> None:
    r = run_batch(tmp_path, long_term("p"), as_of("2026-03-01"))
    (form,) = [x for x in r.psf if x["patient"] == "Patient/p"]
    assert form["reportingPeriod"] == "2026-03"
    assert [x["collected"][:10] for x in form["ancResults"]] == ["2026-02-02"]


# CR 1 "A corrected/amended version replaces the earlier one (same Observation id ...)":
# version 10 is later than version 9 (a count, not text order).
def test_s3_version_ten_replaces_version_nine(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 800, oid="p-low", version="9")
    fixed = version(low, "10", status="corrected", value=1800, updated="2026-02-11")
    r = run_batch(tmp_path, [*long_term("p"), fixed, low], as_of("2026-02-11"))
    assert r.status_for("p")["latestAnc"]["valuePerUL"] == 1800
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


# IF 2 "so a replay never duplicates": the same Observation twice in one export is one result.
def test_s3_duplicate_lines_are_one_result(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 800, oid="p-low")
    once = run_batch(tmp_path, [*long_term("p"), low], as_of("2026-02-10"))
    twice = run_batch(tmp_path, [*long_term("p"), low, low], as_of("2026-02-10"))
    assert len(twice.issues_where(code="anc-moderate-neutropenia", patient="p")) == 1
    assert once.raw == twice.raw


# CR 4 "a prescriber's mitigation (author = the prescriber)"; CR 4 "Who may do what follows
# section 3": a Practitioner who is not the requester of the clozapine prescription is not
# "the prescriber".
def test_s3_rationale_by_another_practitioner_is_no_rationale(tmp_path: Path) -> None:
    from tests.scenario_kit import prescriber_rationale

    res = [
        *long_term("p"),
        practitioner("prescriber-2"),
        anc("p", "2026-02-10", 800, oid="p-low"),
        pending_dispense("p", "2026-02-11", did="p-pend"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-11"))
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low")[0]
    other = prescriber_rationale(low, "2026-02-10", prescriber="prescriber-2")
    second = run_batch(tmp_path, [*res, other], as_of("2026-02-11"))
    assert second.authorization_for("p-pend")["outcome"] == "not-authorized"


# CR 2.2 "An interruption of 30 days or more ... restarts the schedule as a new patient (weekly
# from the restart)" and "Time on therapy counts from therapy start": 6 months after a restart
# the schedule is every 2 weeks, although the first course began 20 months earlier.
def test_s3_time_on_therapy_counts_from_the_restart(tmp_path: Path) -> None:
    from tests.scenario_kit import supplies

    res: list[Resource] = [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2024-05-30"),
    ]
    res += [anc("p", "2024-06-01", 1800), *supplies("p", "2024-06-03", "2025-05-05")]
    res += [anc("p", "2025-07-18", 1800), *supplies("p", "2025-07-20", "2026-02-02")]
    res.append(anc("p", "2026-02-02", 1800))
    r = run_batch(tmp_path, res, as_of("2026-02-02"))
    st = r.status_for("p")
    assert st["therapyStart"] == "2025-07-20"
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("every-2-weeks", "2026-02-16")


# IF 1 designations: BEN and hospice together; CR 2.1 BEN table (">= 1000 normal") and CR 2.2
# hospice interval.
def test_s3_ben_and_hospice_together(tmp_path: Path) -> None:
    res = [
        *on_clozapine("p", START, "2026-02-02", designations=(BEN, HOSPICE)),
        anc("p", "2026-02-10", 1100),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    assert (st["population"], st["hospice"], st["category"]) == ("ben", True, "normal")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("every-6-months", "2026-08-10")


# README run: "FHIR Bundle JSON files (collection, transaction, batch, searchset; urn:uuid
# references between entries are resolved)".
def test_s3_bundle_urn_uuid_references(tmp_path: Path) -> None:
    import json as _json

    from tests.scenario_kit import invoke, load_outputs

    pat_url = "urn:uuid:0b9e5a4c-1a7e-4a53-9d0f-5b8f8d2c0001"
    res = [*long_term("p"), anc("p", "2026-02-10", 800, oid="p-low")]
    entries = []
    for r_ in res:
        r_ = _json.loads(_json.dumps(r_))
        if r_["resourceType"] == "Patient":
            entries.append(
                {
                    "fullUrl": pat_url,
                    "resource": r_,
                    "request": {"method": "POST", "url": "Patient"},
                }
            )
            continue
        for key in ("subject", "patient"):
            if r_.get(key, {}).get("reference") == "Patient/p":
                r_[key] = {"reference": pat_url}
        entries.append(
            {
                "fullUrl": f"urn:uuid:{r_['resourceType']}-{r_['id']}",
                "resource": r_,
                "request": {"method": "POST", "url": r_["resourceType"]},
            }
        )
    src = tmp_path / "tx.json"
    src.write_text(_json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    out = tmp_path / "out"
    code, text = invoke(
        ["run", "--source", str(src), "--out", str(out), "--as-of", as_of("2026-02-10")]
    )
    assert code == 0, text
    r = load_outputs(out, code, src, text)
    assert r.status_for("p")["category"] == "moderate-neutropenia"
    assert r.issues_where(code="anc-moderate-neutropenia", patient="p", observation="p-low")


# CR 2.3 rule 4 "at most 7 days under daily, three-times-weekly or weekly monitoring": a monthly
# patient whose mild result moved them to three times weekly.
@pytest.mark.parametrize(("days", "outcome"), [(7, "authorized"), (8, "not-authorized")])
def test_s3_discharge_limit_follows_the_excursion_frequency(
    tmp_path: Path, days: int, outcome: str
) -> None:
    res = [
        *long_term("p"),
        anc("p", "2026-02-10", 1400),
        pending_dispense("p", "2026-02-11", days, did="p-pend", category="discharge"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-11"))
    a = r.authorization_for("p-pend")
    assert a["outcome"] == outcome, a
    if outcome == "not-authorized":
        assert a["reasons"] == ["supply-exceeds-limit"]


# CR 2.2 due dates and grace; CR 2.3 rule 1: after a mild result (three times weekly, due
# 02-13, grace 2 days) the monthly patient's ANC is current through 02-15 only.
@pytest.mark.parametrize(
    ("prepared", "outcome"), [("2026-02-15", "authorized"), ("2026-02-16", "not-authorized")]
)
def test_s3_currency_follows_the_excursion_frequency(
    tmp_path: Path, prepared: str, outcome: str
) -> None:
    res = [
        *long_term("p"),
        anc("p", "2026-02-10", 1400),
        pending_dispense("p", prepared, did="p-pend"),
    ]
    r = run_batch(tmp_path, res, as_of(prepared))
    a = r.authorization_for("p-pend")
    assert a["outcome"] == outcome, a
    if outcome == "not-authorized":
        assert a["reasons"] == ["anc-not-current"]


# CR 2.3 rule 3 "a first supply ... has a baseline ANC collected within the 30 days before it
# that meets the initiation threshold". Spec silent on an older good baseline followed by a
# newer low one; safer reading: the latest baseline decides.
def test_s3_first_supply_latest_baseline_decides(tmp_path: Path) -> None:
    res: list[Resource] = [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2026-01-15"),
        anc("p", "2026-01-20", 1600),
        anc("p", "2026-02-08", 1400),
        pending_dispense("p", "2026-02-10", did="p-first"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["recommendation"] == "do-not-initiate"
    a = r.authorization_for("p-first")
    assert a["outcome"] == "not-authorized" and "anc-below-threshold" in a["reasons"]


# IF 2 "Only open problems stay final: ... as is a pending-authorization finding once the
# dispense is decided": run 1 cannot reach the REMS (pending); run 2 decides the dispense (local
# backend) with run 1's DetectedIssues fed back: the pending finding comes back cancelled.
def test_s3_pending_finding_cancelled_once_decided(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = [*_rems_ready("p"), pending_dispense("p", "2026-02-05", did="p-pend")]
    args = ["--rems", f"http://127.0.0.1:{port}", "--rems-attempts", "1", "--rems-timeout", "2"]
    first = run_batch(tmp_path, res, as_of("2026-02-05"), extra_args=args)
    pend = first.dispense_issue("p-pend")
    assert finding_code(pend) == "dispense-authorization-pending"
    second = run_batch(tmp_path, [*res, *first.issues], as_of("2026-02-05"))
    assert [i["status"] for i in by_ident(second, ident(pend))] == ["cancelled"]
    assert finding_code(second.dispense_issue("p-pend")) == "dispense-authorized"


# IF 2 the same once the pharmacy handed the dispense over without a decision (the REMS still
# unreachable): the dispense no longer awaits one, so the pending finding is no longer an open
# problem and comes back cancelled; it is not left final on the EHR for good.
def test_s3_pending_finding_cancelled_once_the_dispense_is_handed_over(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = _rems_ready("p")
    res = [*base, pending_dispense("p", "2026-02-05", did="p-pend")]
    args = ["--rems", f"http://127.0.0.1:{port}", "--rems-attempts", "1", "--rems-timeout", "2"]
    first = run_batch(tmp_path, res, as_of("2026-02-05"), extra_args=args)
    pend = first.dispense_issue("p-pend")
    assert finding_code(pend) == "dispense-authorization-pending"
    handed = completed_dispense("p", "2026-02-05T10:00:00Z", 28, did="p-pend")
    handed["meta"] = {"versionId": "2", "lastUpdated": "2026-02-05T10:00:00Z"}
    second = run_batch(tmp_path, [*base, handed, *first.issues], as_of("2026-02-06"))
    assert [i["status"] for i in by_ident(second, ident(pend))] == ["cancelled"]
    assert second.authorizations == []  # nothing awaits a decision any more


# CR 3 "A PSF that carries ... a BEN designation ... is accepted only from the certified
# prescriber"; CR 4 people answer through FHIR mitigations: the prescriber's answer on the
# psf-prescriber-action-required issue signs the form (signerRole prescriber, no longer
# awaiting the prescriber).
def test_s3_prescriber_answer_signs_the_psf(tmp_path: Path) -> None:
    from tests.scenario_kit import prescriber_rationale

    res = long_term("p", designations=(BEN,))
    first = run_batch(tmp_path, res, as_of("2026-02-10"))
    (action,) = first.issues_where(code="psf-prescriber-action-required", patient="p")
    (form,) = first.psf
    assert form["state"] == "awaiting-prescriber"
    signed = prescriber_rationale(action, "2026-02-10")
    second = run_batch(tmp_path, [*res, signed], as_of("2026-02-10"))
    (form,) = second.psf
    assert form["signerRole"] == "prescriber"
    assert form["state"] != "awaiting-prescriber"


# IF 3 "resources dated after it ... are ignored": dated exactly at the clock is not after it.
def test_s3_as_of_includes_resources_dated_at_the_clock(tmp_path: Path) -> None:
    from tests.scenario_kit_s2 import supply_at

    clock = "2026-01-05T10:00:00Z"
    res: list[Resource] = [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2026-01-01"),
        anc("p", "2026-01-03", 1800),
        anc("p", clock, 1700, oid="p-at-clock"),
        supply_at("p", clock, did="p-first"),
    ]
    r = run_batch(tmp_path, res, clock)
    st = r.status_for("p")
    assert st["therapyStart"] == "2026-01-05"
    assert st["latestAnc"]["observation"].endswith("p-at-clock")


# CR 1 derived "only from the same specimen/collection time": the same instant but two
# different specimens is not one collection.
def test_s3_derived_needs_the_same_specimen(tmp_path: Path) -> None:
    res = [
        *long_term("p"),
        observation(
            "p", "p-wbc", "6690-2", "2026-02-10", quantity(4.0, "10*3/uL"), specimen="sp-a"
        ),
        percent("p", "2026-02-10", 20, loinc="770-8", oid="p-neut", specimen="sp-b"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-02")
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


# IF 2 "withdrawn ... cancelled (data changed)": an overdue finding answered and fed back twice
# stays cancelled (same reading as the entered-in-error replay above).
def test_s3_answered_overdue_stays_cancelled_on_replay(tmp_path: Path) -> None:
    first = run_batch(tmp_path, long_term("p"), as_of("2026-03-06"))
    (over,) = first.issues_where(code="anc-monitoring-overdue", patient="p")
    answered = [*long_term("p"), anc("p", "2026-03-07", 1800)]
    second = run_batch(tmp_path, [*answered, *first.issues], as_of("2026-03-07"))
    assert [i["status"] for i in by_ident(second, ident(over))] == ["cancelled"]
    third = run_batch(tmp_path, [*answered, *second.issues], as_of("2026-03-08"))
    assert [i["status"] for i in by_ident(third, ident(over))] == ["cancelled"]


# CR 2.2 "in calendar months: ... every 2 weeks from 6 to 12 months; monthly after 12 months";
# CR 1 "Dates are taken in the site's time zone". First supply 2025-02-17 03:00 UTC is
# 2025-02-16 in New York; an ANC on 2026-02-17 08:00 UTC is after the New York anniversary
# (monthly) but on the UTC one (S1 A3: exactly 12 months is not yet after: every 2 weeks).
@pytest.mark.parametrize(
    ("tz", "frequency", "due"),
    [(NY, "monthly", "2026-03-17"), ((), "every-2-weeks", "2026-03-03")],
    ids=["new-york", "utc"],
)
def test_s3_anniversary_in_site_time_zone(
    tmp_path: Path, tz: tuple[str, ...], frequency: str, due: str
) -> None:
    from tests.scenario_kit import supplies
    from tests.scenario_kit_s2 import supply_at

    res: list[Resource] = [
        patient("p"),
        practitioner(PRESCRIBER),
        medication_request("p", "2025-02-10"),
    ]
    res += [anc("p", "2025-02-14", 1800), supply_at("p", "2025-02-17T03:00:00Z", did="p-first")]
    res += supplies("p", "2025-03-17", "2026-02-16")
    res.append(anc("p", "2026-02-17T08:00:00Z", 1800, oid="p-x"))
    r = run_batch(tmp_path, res, as_of("2026-02-17"), extra_args=tz)
    st = r.status_for("p")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == (frequency, due), st


# CR 1 "A corrected/amended version replaces the earlier one (same Observation id ...) and
# decisions are re-made"; IF 2 "withdrawn decisions are updated to cancelled (data changed)";
# "Only open problems stay final". Found by the replay property (S3 D1): an overdue alert about
# a result corrected in place was neither re-made nor withdrawn, so it stayed final (and a
# still-low correction gave a second final overdue alert next to it).
@pytest.mark.parametrize(("corrected", "overdue_now"), [(1800, False), (900, True)])
def test_s3_overdue_about_a_corrected_result(
    tmp_path: Path, corrected: int, overdue_now: bool
) -> None:
    # moderate 800 on 02-05: daily, due 02-06 + 2 days grace; overdue as of 02-11
    low = anc("p", "2026-02-05", 800, oid="p-low")
    first = run_batch(tmp_path, [*long_term("p"), low], as_of("2026-02-11"))
    (alert,) = first.issues_where(code="anc-monitoring-overdue", patient="p")
    fixed = version(low, "2", status="corrected", value=corrected, updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), fixed, *first.issues], as_of("2026-02-11"))
    assert [i["status"] for i in by_ident(second, ident(alert))] == ["cancelled"]
    still = second.issues_where(code="anc-monitoring-overdue", patient="p")
    assert len(still) == (1 if overdue_now else 0), still
    assert second.status_for("p")["overdue"] is overdue_now


# CR 1 "entered-in-error ... withdraw the result: every decision that used it is withdrawn and
# re-made"; CR 2.2 the surfaced supply; IF 2 "evidence.detail (the ANC Observations used)".
# Found by a wider run of the replay property (S3 D2, fixed, see SCENARIOS-S3.md): severe
# 300 on 01-20, 1800 on 02-02 (rechallenge level, the prescriber has not decided), the 02-02
# supply is handed over: it is surfaced as not authorized, citing only the 1800. When the 300 is
# entered in error, that surfaced finding is neither withdrawn nor made again, so the EHR keeps
# a final "handed over although NOT authorized" that rests on a result that never existed.
def test_s3_surfaced_supply_withdrawn_with_its_severe_result(tmp_path: Path) -> None:
    severe = anc("p", "2026-01-20", 300, oid="p-sev")
    first = run_batch(tmp_path, [*long_term("p"), severe], as_of("2026-02-20"))
    surfaced = first.dispense_issue("p-disp-2026-02-02")
    assert "rechallenge-requires-prescriber" in evidence_codes(surfaced)
    gone = version(severe, "2", status="entered-in-error", updated="2026-02-11")
    second = run_batch(tmp_path, [*long_term("p"), gone, *first.issues], as_of("2026-02-20"))
    assert [i["status"] for i in by_ident(second, ident(surfaced))] == ["entered-in-error"]


# IF 2 "withdrawn decisions are updated to cancelled (data changed) or entered-in-error (source
# entered in error)" and "Only open problems stay final": a dispense decided while it awaited a
# decision, later cancelled, declined or stopped by the pharmacy (it will not be handed over),
# or entered in error: its decision comes back withdrawn, and nothing is decided again. On hold
# it may still go ahead: its decision stands (not written again).
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("cancelled", ["cancelled"]),
        ("declined", ["cancelled"]),
        ("stopped", ["cancelled"]),
        ("entered-in-error", ["entered-in-error"]),
        ("on-hold", []),
    ],
)
def test_s3_decision_withdrawn_with_its_dispense(
    tmp_path: Path, status: str, expected: list[str]
) -> None:
    base = long_term("p")
    pend = pending_dispense("p", "2026-02-05", did="p-pend")
    first = run_batch(tmp_path, [*base, pend], as_of("2026-02-05"))
    decided = first.dispense_issue("p-pend")
    assert finding_code(decided) == "dispense-authorized"
    later = version(pend, "2", status=status, updated="2026-02-06")
    second = run_batch(tmp_path, [*base, later, *first.issues], as_of("2026-02-06"))
    assert [i["status"] for i in by_ident(second, ident(decided))] == expected
    assert second.authorizations == []


# The same for a not-authorized decision (the open problem the pharmacist was shown): the
# cancelled dispense closes it; the patient's ANC findings are untouched.
def test_s3_not_authorized_closed_when_its_dispense_is_cancelled(tmp_path: Path) -> None:
    base = [*long_term("p"), anc("p", "2026-02-19", 800)]
    pend = pending_dispense("p", "2026-02-20", did="p-pend")
    first = run_batch(tmp_path, [*base, pend], as_of("2026-02-20"))
    refused = first.dispense_issue("p-pend")
    assert finding_code(refused) == "dispense-not-authorized"
    later = version(pend, "2", status="cancelled", updated="2026-02-20")
    second = run_batch(tmp_path, [*base, later, *first.issues], as_of("2026-02-20"))
    assert [i["status"] for i in by_ident(second, ident(refused))] == ["cancelled"]
    withdrawn = [i for i in second.issues if i["status"] != "final"]
    assert [ident(i) for i in withdrawn] == [ident(refused)]


# CR 2.2 "that completed dispense gets a dispense-not-authorized finding": a supply handed over
# while treatment was interrupted, later entered in error (it never happened): the finding is
# withdrawn as entered-in-error, and the supply no longer counts.
def test_s3_surfaced_supply_entered_in_error(tmp_path: Path) -> None:
    base = [*long_term("p"), anc("p", "2026-02-09", 800)]
    supply = completed_dispense("p", "2026-02-10", 7, did="p-late")
    first = run_batch(tmp_path, [*base, supply], as_of("2026-02-11"))
    surfaced = first.dispense_issue("p-late")
    assert finding_code(surfaced) == "dispense-not-authorized"
    later = version(supply, "2", status="entered-in-error", updated="2026-02-11")
    second = run_batch(tmp_path, [*base, later, *first.issues], as_of("2026-02-11"))
    assert [i["status"] for i in by_ident(second, ident(surfaced))] == ["entered-in-error"]
