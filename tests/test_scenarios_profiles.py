"""The conformance artefacts that the outputs point to (interfaces 2 and 3): the finding
CodeSystem holds every code we write, the DetectedIssue profile exists, psf.ndjson validates
against the PSF JSON Schema in profiles/."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

try:
    from tests import scenario_kit as k
    from tests.test_scenarios_batch import DAY, cohort
except ImportError:
    import scenario_kit as k
    from test_scenarios_batch import DAY, cohort

DI_PROFILE = "https://rems-adapter.github.io/fhir/StructureDefinition/rems-adapter-detectedissue"
REASON_CODES = {
    "anc-missing", "anc-not-current", "anc-below-threshold", "treatment-interrupted",
    "rechallenge-requires-prescriber", "supply-exceeds-limit", "patient-not-enrolled",
    "prescriber-not-certified", "pharmacy-not-certified", "psf-overdue", "override-limit-reached",
}  # fmt: skip
DESIGNATION_CODES = {"benign-ethnic-neutropenia", "hospice"}
PSF_KEYS = {"patient", "reportingPeriod", "ancResults", "monitoringFrequency", "treatmentStatus",
            "designations", "treatmentRationaleRequired", "signerRole", "state"}  # fmt: skip


def _profiles() -> list[dict[str, Any]]:
    root = importlib.resources.files("adapter.profiles")
    found = []
    for entry in root.iterdir():
        if entry.name.endswith(".json"):
            found.append(json.loads(entry.read_text(encoding="utf-8")))
    return found


def _codes(concepts: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for c in concepts:
        out.add(c["code"])
        out |= _codes(c.get("concept", []))
    return out


def _finding_codesystem() -> dict[str, Any]:
    matches = [
        p
        for p in _profiles()
        if p.get("resourceType") == "CodeSystem" and p.get("url") == k.FINDING_SYSTEM
    ]
    assert len(matches) == 1, f"profiles/ should hold one CodeSystem {k.FINDING_SYSTEM}"
    return matches[0]


def test_finding_codesystem_lists_every_code() -> None:
    from fhir.resources.R4B.codesystem import CodeSystem

    cs = _finding_codesystem()
    CodeSystem.model_validate(cs)
    codes = _codes(cs.get("concept", []))
    expected = set(k.FINDING_SEVERITY) | REASON_CODES | DESIGNATION_CODES
    assert expected <= codes, f"missing from the finding CodeSystem: {sorted(expected - codes)}"


def test_detectedissue_profile_is_shipped() -> None:
    matches = [
        p
        for p in _profiles()
        if p.get("resourceType") == "StructureDefinition" and p.get("url") == DI_PROFILE
    ]
    assert len(matches) == 1, f"profiles/ should hold the StructureDefinition {DI_PROFILE}"
    assert matches[0].get("type") == "DetectedIssue"


def test_every_code_written_is_in_the_codesystem(tmp_path: Path) -> None:
    codes = _codes(_finding_codesystem().get("concept", []))
    result = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    written = {k.finding_code(i) for i in result.issues}
    for issue in result.issues:
        written |= k.evidence_codes(issue)
    assert written - {None} <= codes, sorted(written - {None} - codes)


def test_psf_rows_follow_the_contract_and_the_schema(tmp_path: Path) -> None:
    result = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    assert result.psf, "a PSF is prepared for enrolled outpatients (CR 3, IF 3)"
    schemas = [p for p in _profiles() if "$schema" in p]
    psf_schemas = [s for s in schemas if "reportingPeriod" in json.dumps(s)]
    assert len(psf_schemas) == 1, "profiles/ should hold the PSF JSON Schema"
    for row in result.psf:
        assert set(row) >= PSF_KEYS, sorted(PSF_KEYS - set(row))
        assert re.fullmatch(r"\d{4}-\d{2}", row["reportingPeriod"])
        assert row["treatmentStatus"] in ("continue", "interrupt", "discontinue", "resume")
        assert row["signerRole"] in ("designee", "prescriber")
        assert row["state"] in (
            "prepared",
            "submitted",
            "accepted",
            "rejected",
            "awaiting-prescriber",
        )
        jsonschema.validate(row, psf_schemas[0])


def _schema_with(marker: str) -> dict[str, Any]:
    found = [p for p in _profiles() if "$schema" in p and marker in json.dumps(p)]
    assert len(found) == 1, f"profiles/ should hold one JSON Schema mentioning {marker!r}"
    return found[0]


def test_status_and_authorization_rows_validate_against_their_schemas(tmp_path: Path) -> None:
    """IF 3 field lists, checked through the schemas the project ships for them."""
    result = k.run_batch(tmp_path, cohort(), k.as_of(DAY))
    status_schema = _schema_with("nextAncDue")
    auth_schema = _schema_with("authorizationNumber")
    assert result.status and result.authorizations
    for row in result.status:
        jsonschema.validate(row, status_schema)
    for row in result.authorizations:
        jsonschema.validate(row, auth_schema)
