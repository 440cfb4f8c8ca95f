"""What the adapter writes conforms: official R4 JSON schema, R4B models, our profile and schemas;
and every official R4 Observation / MedicationDispense example goes through batch mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue

from adapter.cli import main
from adapter.mappings_loader import finding_system_url
from tests.r4_artefacts import examples_dir, iter_examples, r4_schema_errors

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
STRUCTURE = json.loads(
    (PROFILES / "StructureDefinition-rems-adapter-detectedissue.json").read_text()
)
CODESYSTEM = json.loads((PROFILES / "CodeSystem-finding.json").read_text())


def _codes(group: str) -> set[str]:
    def prop(concept: dict, name: str) -> str | None:
        for item in concept.get("property", []):
            if item.get("code") == name:
                return item.get("valueCode") or item.get("valueString")
        return None

    return {c["code"] for c in CODESYSTEM["concept"] if prop(c, "group") == group}


@pytest.fixture(scope="module")
def demo_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_detected_issue_is_valid_r4(demo_outputs: Path) -> None:
    issues = _lines(demo_outputs / "DetectedIssue.ndjson")
    assert len(issues) > 30
    findings, reasons = _codes("finding"), _codes("reason")
    statuses = set()
    for issue in issues:
        assert r4_schema_errors(issue) == [], issue["id"]
        DetectedIssue.model_validate(issue)  # R4B models (field-for-field R4 here)
        assert issue["meta"]["profile"] == [STRUCTURE["url"]]
        assert issue["status"] in ("final", "cancelled", "entered-in-error")
        statuses.add(issue["status"])
        systems = [c["system"] for c in issue["code"]["coding"]]
        assert systems == ["http://terminology.hl7.org/CodeSystem/v3-ActCode", finding_system_url()]
        finding = issue["code"]["coding"][1]["code"]
        assert finding in findings
        assert issue["author"]["reference"] == "Device/rems-adapter"
        for evidence in issue.get("evidence", []):
            for concept in evidence.get("code", []):
                assert concept["coding"][0]["code"] in reasons
        for ref in issue.get("implicated", []):
            assert ref["reference"].startswith(("MedicationDispense/", "MedicationRequest/"))
        assert issue["detail"] and "\u00a0" not in issue["detail"]
    assert {"final", "cancelled"} <= statuses


@pytest.mark.parametrize(
    ("file", "schema"),
    [
        ("status.ndjson", "status.schema.json"),
        ("authorizations.ndjson", "authorization.schema.json"),
        ("psf.ndjson", "psf.schema.json"),
    ],
)
def test_output_lines_match_their_json_schema(demo_outputs: Path, file: str, schema: str) -> None:
    validator = jsonschema.Draft202012Validator(json.loads((PROFILES / schema).read_text()))
    lines = _lines(demo_outputs / file)
    assert lines
    for line in lines:
        errors = [e.message for e in validator.iter_errors(line)]
        assert errors == [], line


def test_official_r4_examples_go_through_batch_mode(tmp_path: Path) -> None:
    source = tmp_path / "examples"
    source.mkdir()
    copied = 0
    for kind in ("Observation", "MedicationDispense"):
        for path, _ in iter_examples(kind):
            shutil.copy(path, source / path.name)
            copied += 1
    assert copied > 90
    out = tmp_path / "out"
    assert main(["run", "--source", str(source), "--out", str(out), "--as-of", "2026-01-01"]) == 0
    # None of the examples is clozapine or an ANC in cells/uL: nothing is decided, nothing crashes.
    assert (out / "status.ndjson").read_text() == ""
    assert (out / "authorizations.ndjson").read_text() == ""
    assert examples_dir().is_dir()
