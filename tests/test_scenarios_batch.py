"""The batch contract (interfaces 2 and 3): files, shapes, determinism, robustness, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k

DAY = "2026-02-16"
STATUS_KEYS = {
    "patient",
    "asOf",
    "population",
    "hospice",
    "therapyStart",
    "latestAnc",
    "category",
    "recommendation",
    "monitoringFrequency",
    "nextAncDue",
    "overdue",
    "repeatAncBy",
    "hematologyConsult",
}
AUTH_KEYS = {
    "dispense",
    "patient",
    "outcome",
    "reasons",
    "backend",
    "authorizationNumber",
    "daysSupply",
    "setting",
}


def cohort() -> list[k.Resource]:
    """Three patients: one with a run of low results, one normal, one not on clozapine; two
    dispenses awaiting a decision."""
    a = [
        *k.on_clozapine("pa", "2026-01-05", DAY),
        k.anc("pa", "2026-02-02", 1200),
        k.anc("pa", "2026-02-05", 800),
        k.anc("pa", "2026-02-06", 400),
        k.anc("pa", "2026-02-10", 1700),
        k.anc("pa", "2026-02-16", 1600),
        k.pending_dispense("pa", DAY, 7, did="pa-pending"),
    ]
    b = [
        *k.on_clozapine("pb", "2025-06-02", DAY),
        k.anc("pb", "2026-02-16", 1900),
        k.pending_dispense("pb", DAY, 14, did="pb-pending", category="discharge"),
    ]
    c = [k.patient("pc"), k.anc("pc", "2026-02-16", 1900)]
    return a + b + c


def test_four_files_and_their_shapes(tmp_path: Path) -> None:
    result = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert result.exit_code == 0
    assert result.messages.strip(), "IF 3: it prints a short human summary"

    # status: one row per patient on clozapine, all keys
    assert sorted(s["patient"] for s in result.status) == ["Patient/pa", "Patient/pb"]
    for row in result.status:
        assert set(row) >= STATUS_KEYS, STATUS_KEYS - set(row)
        assert k.parse_instant(row["asOf"]) == k.parse_instant(k.as_of(DAY))

    # one finding for every usable non-normal ANC, not only the latest (which is normal)
    assert result.anc_findings("pa") == [
        "anc-mild-neutropenia",
        "anc-moderate-neutropenia",
        "anc-severe-neutropenia",
    ]
    for day, code in [
        ("2026-02-02", "anc-mild-neutropenia"),
        ("2026-02-05", "anc-moderate-neutropenia"),
        ("2026-02-06", "anc-severe-neutropenia"),
    ]:
        assert len(result.issues_where(code=code, observation=f"pa-anc-{day}")) == 1
    assert result.anc_findings("pb") == []

    # one authorization per dispense awaiting a decision
    assert sorted(a["dispense"] for a in result.authorizations) == [
        "MedicationDispense/pa-pending",
        "MedicationDispense/pb-pending",
    ]
    for row in result.authorizations:
        assert set(row) >= AUTH_KEYS, AUTH_KEYS - set(row)
        assert row["backend"] == "local"
    assert result.authorization_for("pb-pending")["setting"] == "discharge"


def test_detected_issues_are_r4_and_carry_the_contract_fields(tmp_path: Path) -> None:
    from fhir.resources.R4B.detectedissue import DetectedIssue

    result = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert result.issues
    identifiers = [result.identifier(i) for i in result.issues]
    assert len(identifiers) == len(set(identifiers)), "identifiers must be unique"
    for issue in result.issues:
        DetectedIssue.model_validate(issue)  # R4(B) DetectedIssue, not R5
        assert issue["status"] == "final"
        code = k.finding_code(issue)
        assert code in k.FINDING_SEVERITY, code
        assert issue["severity"] == k.FINDING_SEVERITY[code]
        v3 = [c["code"] for c in issue["code"]["coding"] if c.get("system") == k.V3_ACTCODE]
        # IF 2: "one v3 ActCode (`LAB` for ANC findings, `NAT` for authorization findings,
        # `VALIDAT` for form findings)"; the local backend writes psf findings too (issue 8).
        kind = "NAT" if code.startswith("dispense-") else "LAB"
        assert v3 == (["VALIDAT"] if code.startswith("psf-") else [kind])
        assert issue["patient"]["reference"].startswith("Patient/")
        assert k.same_ref(issue["author"]["reference"], k.AUTHOR_DEVICE)
        assert issue.get("identifiedDateTime")
        assert issue.get("detail")
        if code.startswith("dispense-"):
            assert any(r.startswith("MedicationDispense/") for r in k.refs(issue["implicated"]))
        if code in ("anc-mild-neutropenia", "anc-moderate-neutropenia", "anc-severe-neutropenia"):
            assert any(r.startswith("Observation/") for r in k.evidence_refs(issue))


def test_rerun_into_same_out_is_byte_identical_and_replaces(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "DetectedIssue.ndjson").write_text('{"resourceType": "Junk"}\n')
    first = k.run_batch(tmp_path, cohort(), k.as_of(DAY), out_dir=out)
    assert all(i["resourceType"] == "DetectedIssue" for i in first.issues), "replaces old files"
    second = k.run_batch(tmp_path, cohort(), k.as_of(DAY), out_dir=out)
    assert second.raw == first.raw
    elsewhere = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert elsewhere.raw == first.raw


def _canonical(result: k.Result) -> dict[str, list[str]]:
    return {name: sorted(data.decode().splitlines()) for name, data in result.raw.items()}


@pytest.mark.parametrize("fmt", ["bundle", "folder", "shuffled"])
def test_input_forms_give_the_same_decisions(tmp_path: Path, fmt: str) -> None:
    reference = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    other = k.run_batch(tmp_path, cohort(), k.as_of(DAY), fmt=fmt)
    assert _canonical(other) == _canonical(reference)
    if fmt == "shuffled":  # same resources: "sorted" output, byte-identical
        assert other.raw == reference.raw


def test_several_sources(tmp_path: Path) -> None:
    resources = cohort()
    first_half = k.write_source(tmp_path / "a", resources[:10], "ndjson")
    second_half = k.write_source(tmp_path / "b", resources[10:], "bundle")
    out = tmp_path / "out-multi"
    code, messages = k.invoke(
        [
            "run",
            "--source",
            str(first_half),
            "--source",
            str(second_half),
            "--out",
            str(out),
            "--as-of",
            k.as_of(DAY),
        ]
    )
    assert code == 0, messages
    combined = k.load_outputs(out, code, first_half)
    reference = k.run_batch(tmp_path, resources, k.as_of(DAY))
    assert _canonical(combined) == _canonical(reference)


def test_unknown_resource_types_are_ignored(tmp_path: Path) -> None:
    extra = [
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/pa"},
        },
        {"resourceType": "NotAFhirType", "id": "x1", "whatever": [1, 2]},
        {"resourceType": "Basic", "id": "b1", "code": {"text": "note"}},
    ]
    reference = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    with_extra = k.run_batch(tmp_path, cohort() + extra, k.as_of(DAY))
    assert with_extra.exit_code == 0
    assert with_extra.raw == reference.raw


def test_malformed_line_is_reported_and_the_rest_processed(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in cohort()]
    lines.insert(2, '{"resourceType": "Observation", "id": "broken", ')  # line 3
    source = tmp_path / "feed-with-bad-line.ndjson"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out-bad"
    code, messages = k.invoke(
        ["run", "--source", str(source), "--out", str(out), "--as-of", k.as_of(DAY)]
    )
    assert code == 0, messages
    assert "feed-with-bad-line.ndjson" in messages, messages
    assert "3" in messages.split("feed-with-bad-line.ndjson", 1)[1][:80] or (
        "line 3" in messages
    ), f"the line number should be reported: {messages}"
    result = k.load_outputs(out, code, source, messages)
    reference = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert _canonical(result) == _canonical(reference)


def test_clinical_findings_never_make_the_exit_code_non_zero(tmp_path: Path) -> None:
    pid = "p-severe"
    res = [
        *k.on_clozapine(pid, "2026-01-05", DAY),
        k.anc(pid, DAY, 100),
        k.anc(pid, "2026-02-15", 1.2, code=None, unit="mg/dL"),
        k.pending_dispense(pid, DAY, 7),
    ]
    result = k.run_batch(tmp_path, res, k.as_of(DAY))
    assert result.exit_code == 0
    assert result.authorization_for(f"{pid}-pend-{DAY}")["outcome"] == "not-authorized"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "--out", "OUT"],
        ["run", "--source", "SRC"],
        ["run", "--source", "MISSING", "--out", "OUT"],
        ["run", "--source", "SRC", "--out", "OUT", "--as-of", "not-a-date"],
        ["run", "--source", "SRC", "--out", "OUT", "--no-such-option"],
    ],
    ids=[
        "no-command",
        "no-arguments",
        "no-source",
        "no-out",
        "source-does-not-exist",
        "bad-as-of",
        "unknown-option",
    ],
)
def test_usage_errors_exit_non_zero(tmp_path: Path, argv: list[str]) -> None:
    src = k.write_source(tmp_path / "in", cohort(), "ndjson")
    mapping = {
        "SRC": str(src),
        "OUT": str(tmp_path / "out"),
        "MISSING": str(tmp_path / "does-not-exist.ndjson"),
    }
    code, messages = k.invoke([mapping.get(a, a) for a in argv])
    assert code != 0, f"{argv} should be a usage error; output:\n{messages}"


def test_decision_identifiers_do_not_depend_on_the_clock(tmp_path: Path) -> None:
    """IF 2 "a deterministic identifier (value derived from the inputs that produced it) ... so a
    replay never duplicates": the same ANC gives the same finding identifier on later runs."""
    today = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    tomorrow = k.run_batch(tmp_path, cohort(), k.as_of("2026-02-17"))
    for oid, code in [
        ("pa-anc-2026-02-05", "anc-moderate-neutropenia"),
        ("pa-anc-2026-02-06", "anc-severe-neutropenia"),
    ]:
        (a,) = today.issues_where(code=code, observation=oid)
        (b,) = tomorrow.issues_where(code=code, observation=oid)
        assert today.identifier(a) == tomorrow.identifier(b)


def test_feeding_our_own_output_back_does_not_duplicate(tmp_path: Path) -> None:
    """A replay that includes the DetectedIssues we wrote yields the same decisions once each."""
    first = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    second = k.run_batch(tmp_path, cohort() + first.issues, k.as_of(DAY))
    ids = [second.identifier(i) for i in second.issues]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(first.identifier(i) for i in first.issues)
    assert all(i["status"] == "final" for i in second.issues)


def test_patient_without_any_anc_has_null_latest_and_category(tmp_path: Path) -> None:
    pid = "p-never-tested"
    result = k.run_batch(
        tmp_path, k.on_clozapine(pid, "2026-01-05", DAY, baseline=None), k.as_of(DAY)
    )
    status = result.status_for(pid)
    assert status["latestAnc"] is None
    assert status["category"] is None


def test_clozapine_in_a_contained_medication(tmp_path: Path) -> None:
    """IF 1 "Clozapine is recognised by RxNorm": also when the dispense names it through
    medicationReference to a contained Medication (R4 medication[x]; SCENARIOS.md A23)."""
    pid = "p-contained"
    pending = k.pending_dispense(pid, DAY, 7, did=f"{pid}-pending")
    pending["contained"] = [
        {
            "resourceType": "Medication",
            "id": "med",
            "code": pending.pop("medicationCodeableConcept"),
        }
    ]
    pending["medicationReference"] = {"reference": "#med"}
    res = [*k.on_clozapine(pid, "2026-01-05", DAY), k.anc(pid, DAY, 1800), pending]
    result = k.run_batch(tmp_path, res, k.as_of(DAY))
    assert result.authorization_for(f"{pid}-pending")["outcome"] == "authorized"


@pytest.mark.parametrize(
    "bad_line",
    [
        '{"resourceType": "Observation", "id": "bad", "status": 12, "code": "x"}',
        '["not", "a", "resource"]',
        '{"id": "no-resource-type"}',
    ],
    ids=["invalid-fhir-observation", "json-array", "no-resourceType"],
)
def test_invalid_resource_line_is_reported_and_the_rest_processed(
    tmp_path: Path, bad_line: str
) -> None:
    lines = [json.dumps(r) for r in cohort()]
    lines.insert(4, bad_line)  # line 5
    source = tmp_path / "feed-invalid.ndjson"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out-invalid"
    code, messages = k.invoke(
        ["run", "--source", str(source), "--out", str(out), "--as-of", k.as_of(DAY)]
    )
    assert code == 0, messages
    assert "feed-invalid.ndjson" in messages, messages
    after = messages.split("feed-invalid.ndjson", 1)[1][:80]
    assert "5" in after or "line 5" in messages, f"the line number should be reported: {messages}"
    result = k.load_outputs(out, code, source, messages)
    reference = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert _canonical(result) == _canonical(reference)


def test_folder_with_ndjson_and_bundle_files(tmp_path: Path) -> None:
    """IF 3 "--source: FHIR Bundle JSON files, NDJSON files, or folders of them"."""
    resources = cohort()
    folder = tmp_path / "mixed"
    k.write_source(folder / "part-a", resources[:12], "ndjson").rename(folder / "a.ndjson")
    k.write_source(folder / "part-b", resources[12:], "bundle").rename(folder / "b.json")
    for part in ("part-a", "part-b"):
        (folder / part).rmdir()
    out = tmp_path / "out-mixed"
    code, messages = k.invoke(
        ["run", "--source", str(folder), "--out", str(out), "--as-of", k.as_of(DAY)]
    )
    assert code == 0, messages
    reference = k.run_batch(tmp_path, resources, k.as_of(DAY))
    assert _canonical(k.load_outputs(out, code, folder, messages)) == _canonical(reference)


def test_explicit_local_backend_is_the_default(tmp_path: Path) -> None:
    default = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    explicit = k.run_batch(tmp_path, cohort(), k.as_of(DAY), extra_args=["--rems", "local"])
    assert explicit.raw == default.raw
