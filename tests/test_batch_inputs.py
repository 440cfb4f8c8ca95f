"""Batch input forms: Bundles (transaction with urn:uuid links), NDJSON, folders, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.cli import main

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _anc(oid: str, patient_ref: str, when: str, value: float, unit: str = "10*3/uL") -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit},
    }


def _dispense(did: str, patient_ref: str, status: str, when: str, days: int = 7) -> dict:
    key = "whenHandedOver" if status == "completed" else "whenPrepared"
    return {
        "resourceType": "MedicationDispense",
        "id": did,
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
        "subject": {"reference": patient_ref},
        key: when,
        "daysSupply": {"value": days},
    }


def _run(tmp_path: Path, *sources: Path, as_of: str = "2026-02-10T12:00:00Z") -> dict[str, list]:
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                *[a for s in sources for a in ("--source", str(s))],
                "--out",
                str(out),
                "--as-of",
                as_of,
            ]
        )
        == 0
    )
    return {
        name: [json.loads(line) for line in (out / name).read_text().splitlines()]
        for name in ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson")
    }


def test_transaction_bundle_with_urn_uuid_links(tmp_path: Path) -> None:
    patient_url = "urn:uuid:2b8e6c3e-0000-4000-8000-000000000001"
    entries = [
        {
            "fullUrl": patient_url,
            "resource": {"resourceType": "Patient"},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": "urn:uuid:2b8e6c3e-0000-4000-8000-000000000002",
            "resource": _anc("a1", patient_url, "2026-02-01T08:00:00Z", 0.8),
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "fullUrl": "urn:uuid:2b8e6c3e-0000-4000-8000-000000000003",
            "resource": _dispense("d1", patient_url, "completed", "2026-01-20T10:00:00Z", 28),
            "request": {"method": "POST", "url": "MedicationDispense"},
        },
        {"request": {"method": "DELETE", "url": "Observation/old"}},
    ]
    path = tmp_path / "tx.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    result = _run(tmp_path, path)
    (status,) = result["status.ndjson"]
    assert status["patient"] == "Patient/2b8e6c3e-0000-4000-8000-000000000001"
    assert status["category"] == "moderate-neutropenia"


def test_absolute_references_are_read_as_type_and_id(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    lines = [
        _anc("a1", "https://ehr.example.org/fhir/Patient/p9", "2026-02-01T08:00:00Z", 1.2),
        _dispense(
            "d1",
            "https://ehr.example.org/fhir/Patient/p9/_history/3",
            "completed",
            "2026-01-20T10:00:00Z",
            28,
        ),
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (status,) = _run(tmp_path, path)["status.ndjson"]
    assert status["patient"] == "Patient/p9"


def test_malformed_lines_are_reported_and_the_rest_is_processed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.ndjson"
    good = _anc("a1", "Patient/p1", "2026-02-01T08:00:00Z", 0.4)
    bad_subject = {**_anc("a2", "Group/g", "2026-02-01T08:00:00Z", 2.0)}
    path.write_text(
        json.dumps(good)
        + "\n{not json\n"
        + json.dumps({"no": "type"})
        + "\n"
        + json.dumps(bad_subject)
        + "\n"
        + json.dumps({"resourceType": "Basic", "id": "x"})
        + "\n"
    )
    result = _run(tmp_path, path)
    err = capsys.readouterr().err
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:3: not a FHIR resource" in err
    assert f"{path}:4: Observation: Observation.subject" in err
    assert "Basic" not in err  # unknown resource types are ignored, not errors
    codes = [i["code"]["coding"][1]["code"] for i in result["DetectedIssue.ndjson"]]
    assert codes == ["anc-severe-neutropenia"]


def test_problem_messages_never_quote_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.ndjson"
    broken = _anc("a1", "Patient/p1", "2026-02-01T08:00:00Z", 1.0)
    broken["issued"] = "Jane-Doe-1970-01-01"
    broken["effectiveDateTime"] = "Jane-Doe-1970"
    dispense = _dispense("d1", "Patient/p1", "completed", "Jane-Doe-1970")
    path.write_text(json.dumps(broken) + "\n" + json.dumps(dispense) + "\n")
    _run(tmp_path, path)
    err = capsys.readouterr().err
    assert "MedicationDispense.whenHandedOver" in err
    assert "Jane" not in err and "1970" not in err


def test_unreadable_source_is_an_error_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--source", str(tmp_path / "missing.ndjson"), "--out", str(tmp_path / "o")])
    assert code == 4
    assert "missing.ndjson" in capsys.readouterr().err


@pytest.mark.parametrize("as_of", ["yesterday", "2026-13-01"])
def test_bad_as_of_is_a_usage_error(tmp_path: Path, as_of: str) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text("")
    assert main(["run", "--source", str(path), "--out", str(tmp_path / "o"), "--as-of", as_of]) == 2


def test_bad_mappings_folder_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text("")
    (tmp_path / "maps").mkdir()
    code = main(
        [
            "run",
            "--source",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--mappings",
            str(tmp_path / "maps"),
        ]
    )
    assert code == 3


def test_bundle_ndjson_and_folder_give_the_same_outputs(tmp_path: Path) -> None:
    resources = [
        _anc("a1", "Patient/p1", "2026-01-19T08:00:00Z", 2.0),
        _dispense("d1", "Patient/p1", "completed", "2026-01-20T10:00:00Z", 14),
        _anc("a2", "Patient/p1", "2026-02-03T08:00:00Z", 1.1),
        _dispense("d2", "Patient/p1", "preparation", "2026-02-04T10:00:00Z", 7),
    ]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.ndjson").write_text("\n".join(json.dumps(r) for r in resources[:2]) + "\n")
    (folder / "b.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in resources[2:]],
            }
        )
    )
    single = tmp_path / "all.ndjson"
    single.write_text("\n".join(json.dumps(r) for r in reversed(resources)) + "\n")
    outputs = []
    for name, source in (("x", folder), ("y", single)):
        out = tmp_path / name
        assert (
            main(
                [
                    "run",
                    "--source",
                    str(source),
                    "--out",
                    str(out),
                    "--as-of",
                    "2026-02-05T00:00:00Z",
                ]
            )
            == 0
        )
        outputs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outputs[0] == outputs[1]


def test_rerun_into_the_same_folder_replaces(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text(json.dumps(_anc("a1", "Patient/p1", "2026-02-01T08:00:00Z", 0.4)) + "\n")
    first = _run(tmp_path, path)
    second = _run(tmp_path, path)
    assert first == second
    assert len(second["DetectedIssue.ndjson"]) == 1


def test_structurally_invalid_observation_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text('{"resourceType": "Observation", "id": "bad", "status": 12, "code": "x"}\n')
    _run(tmp_path, path)
    assert f"{path}:1: Observation: Observation.code" in capsys.readouterr().err


def test_r5_style_admin_location_category_still_limits_discharge(tmp_path: Path) -> None:
    dispense = _dispense("d2", "Patient/p1", "preparation", "2026-02-04T10:00:00Z", 28)
    dispense["category"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/medicationdispense-admin-location",
                "code": "discharge",
            }
        ]
    }
    path = tmp_path / "in.ndjson"
    resources = [_anc("a1", "Patient/p1", "2026-02-03T08:00:00Z", 2.0), dispense]
    path.write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    (auth,) = _run(tmp_path, path)["authorizations.ndjson"]
    assert auth["setting"] == "discharge"
    assert auth["reasons"] == ["supply-exceeds-limit"]
