"""FHIR inputs for the rems backend scenarios, the seeded reference service, and output readers."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import requests
from fhir.resources.R4B.detectedissue import DetectedIssue

from adapter.cli import main
from adapter.decide.rems import DEFAULT_PHARMACY_ID_SYSTEM, DEFAULT_REMS_ID_SYSTEM

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationdispense-category"
FINDING = "https://rems-adapter.github.io/fhir/CodeSystem/finding"
PRESCRIBER_NPI = "1234567893"  # valid check digit
DESIGNEE = "rems-adapter"  # the adapter's default designee id
OUTPATIENT_PHARMACY = "pharm-out"
INPATIENT_PHARMACY = "pharm-in"
HTTP_TIMEOUT = 10
PROFILES = Path(__file__).resolve().parents[2] / "profiles"
PROJECT_REASONS = frozenset(
    json.loads((PROFILES / "authorization.schema.json").read_text())["properties"]["reasons"][
        "items"
    ]["enum"]
)


def seed_document() -> dict[str, Any]:
    assessment = {"passed": True, "completedOn": "2020-01-01"}
    return {
        "prescribers": [{"npi": PRESCRIBER_NPI, "knowledgeAssessment": assessment}],
        "designees": [{"designeeId": DESIGNEE, "prescriberNpi": PRESCRIBER_NPI}],
        "pharmacies": [
            {"pharmacyId": OUTPATIENT_PHARMACY, "setting": "outpatient"},
            {"pharmacyId": INPATIENT_PHARMACY, "setting": "inpatient"},
        ],
    }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class World:
    """One patient's FHIR record, grown by the scenario between runs."""

    patient_id: str = "p1"
    rems_id: str | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.patient_id,
            "name": [{"use": "official", "family": "Doe", "given": ["Alex"]}],
            "gender": "female",
            "birthDate": "1980-05-17",
            "address": [{"use": "home", "postalCode": "02139"}],
        }
        if self.rems_id:
            patient["identifier"] = [{"system": DEFAULT_REMS_ID_SYSTEM, "value": self.rems_id}]
        self.resources += [
            patient,
            {
                "resourceType": "Practitioner",
                "id": "dr",
                "identifier": [{"system": NPI_SYSTEM, "value": PRESCRIBER_NPI}],
            },
            self._pharmacy("org-out", OUTPATIENT_PHARMACY),
            self._pharmacy("org-in", INPATIENT_PHARMACY),
            {
                "resourceType": "MedicationRequest",
                "id": "mr1",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
                "subject": {"reference": self.patient_ref},
                "requester": {"reference": "Practitioner/dr"},
            },
        ]

    @staticmethod
    def _pharmacy(oid: str, pharmacy_id: str) -> dict[str, Any]:
        return {
            "resourceType": "Organization",
            "id": oid,
            "identifier": [{"system": DEFAULT_PHARMACY_ID_SYSTEM, "value": pharmacy_id}],
        }

    @property
    def patient_ref(self) -> str:
        return f"Patient/{self.patient_id}"

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{self.patient_id}-{prefix}{self.counter}"

    def anc(self, collected: datetime, per_ul: int) -> str:
        oid = self._next("anc")
        self.resources.append(
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
                "subject": {"reference": self.patient_ref},
                "effectiveDateTime": iso(collected),
                "valueQuantity": {
                    "value": per_ul,
                    "unit": "/uL",
                    "system": "http://unitsofmeasure.org",
                    "code": "/uL",
                },
            }
        )
        return oid

    def dispense(
        self,
        when: datetime,
        *,
        status: str = "completed",
        days: int = 7,
        setting: str = "outpatient",
        pharmacy: str = "org-out",
        did: str | None = None,
    ) -> str:
        did = did or self._next("md")
        key = "whenHandedOver" if status == "completed" else "whenPrepared"
        self.resources.append(
            {
                "resourceType": "MedicationDispense",
                "id": did,
                "status": status,
                "category": {"coding": [{"system": CATEGORY, "code": setting}]},
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
                "subject": {"reference": self.patient_ref},
                "performer": [{"actor": {"reference": f"Organization/{pharmacy}"}}],
                "authorizingPrescription": [{"reference": "MedicationRequest/mr1"}],
                key: iso(when),
                "daysSupply": {"value": days, "unit": "day"},
            }
        )
        return f"MedicationDispense/{did}"

    def hand_over(self, ref: str, when: datetime) -> None:
        """The pending dispense was supplied: it becomes therapy history."""
        for resource in self.resources:
            if f"MedicationDispense/{resource.get('id')}" == ref:
                resource["status"] = "completed"
                resource.pop("whenPrepared", None)
                resource["whenHandedOver"] = iso(when)

    def designation(self, code: str, onset: datetime) -> None:
        self.resources.append(
            {
                "resourceType": "Condition",
                "id": self._next("cond"),
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": FINDING, "code": code}]},
                "subject": {"reference": self.patient_ref},
                "onsetDateTime": iso(onset),
            }
        )

    def keep_issues(self, outputs: Outputs) -> None:
        """The EHR stores what the adapter wrote (replacing earlier versions)."""
        written = {issue["id"]: issue for issue in outputs.issues}
        self.resources = [
            r
            for r in self.resources
            if not (r["resourceType"] == "DetectedIssue" and r["id"] in written)
        ]
        self.resources += list(written.values())

    def answer(
        self, issue_id: str, author: str, when: datetime, text: str, action: str | None = None
    ) -> None:
        """A person answers one of the adapter's DetectedIssues with a mitigation."""
        for resource in self.resources:
            if resource["resourceType"] == "DetectedIssue" and resource["id"] == issue_id:
                mitigation: dict[str, Any] = {
                    "action": {"text": text},
                    "date": iso(when),
                    "author": {"reference": author},
                }
                if action:
                    mitigation["action"]["coding"] = [{"system": V3, "code": action}]
                resource.setdefault("mitigation", []).append(mitigation)
                return
        raise AssertionError(f"no DetectedIssue {issue_id} in the record")

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "input.ndjson"
        path.write_text("\n".join(json.dumps(r) for r in self.resources) + "\n")
        return path


@dataclass
class Outputs:
    issues: list[dict[str, Any]]
    authorizations: list[dict[str, Any]]
    forms: list[dict[str, Any]]

    def findings(self, code: str) -> list[dict[str, Any]]:
        return [
            i
            for i in self.issues
            if i["code"]["coding"][1]["code"] == code and i["status"] == "final"
        ]

    def withdrawn(self) -> list[dict[str, Any]]:
        return [i for i in self.issues if i["status"] != "final"]

    def authorization(self, dispense: str) -> dict[str, Any]:
        found = [a for a in self.authorizations if a["dispense"] == dispense]
        assert len(found) == 1, f"{dispense}: {self.authorizations}"
        return found[0]

    def form(self) -> dict[str, Any]:
        assert len(self.forms) == 1, self.forms
        return self.forms[0]


def run(world: World, folder: Path, as_of: datetime, rems: str, *extra: str) -> Outputs:
    source = world.write(folder / "in")
    out = folder / "out"
    argv = ["run", "--source", str(source), "--out", str(out), "--as-of", iso(as_of)]
    assert main([*argv, "--rems", rems, *extra]) == 0
    read = {
        name: [json.loads(line) for line in (out / name).read_text().splitlines()]
        for name in ("DetectedIssue.ndjson", "authorizations.ndjson", "psf.ndjson")
    }
    outputs = Outputs(
        read["DetectedIssue.ndjson"], read["authorizations.ndjson"], read["psf.ndjson"]
    )
    check_contracts(outputs)
    return outputs


def check_contracts(outputs: Outputs) -> None:
    """Every line of every run: its JSON Schema (interfaces.md section 3), and R4B DetectedIssues
    with the project's codes only in evidence.code."""
    for records, schema in (
        (outputs.authorizations, "authorization.schema.json"),
        (outputs.forms, "psf.schema.json"),
    ):
        validator = jsonschema.Draft202012Validator(json.loads((PROFILES / schema).read_text()))
        for record in records:
            assert [e.message for e in validator.iter_errors(record)] == [], record
    for issue in outputs.issues:
        DetectedIssue.model_validate(issue)
        assert issue["author"]["reference"] == "Device/rems-adapter"
        for evidence in issue.get("evidence", []):
            for concept in evidence.get("code", []):
                assert concept["coding"][0]["code"] in PROJECT_REASONS, issue["detail"]
        assert all(a["backend"] == "rems" for a in outputs.authorizations)


def enroll_directly(
    base_url: str, at: datetime, *, ben: bool = False, hospice: bool = False
) -> str:
    """The prescriber enrolled the patient in the REMS at `at` (outside the adapter)."""
    body = {
        "patient": {
            "name": {"family": "Doe", "given": "Alex"},
            "birthDate": "1980-05-17",
            "sex": "female",
            "postalCode": "02139",
        },
        "prescriberNpi": PRESCRIBER_NPI,
        "signer": {"role": "prescriber", "id": PRESCRIBER_NPI},
        "ancResults": [{"valuePerUL": 2000, "collected": iso(at - timedelta(days=1))}],
        "designations": {"ben": ben, "hospice": hospice},
    }
    response = requests.post(
        f"{base_url}/patients/enrollments",
        json=body,
        params={"asOf": iso(at)},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["remsId"])


def patient_status(base_url: str, rems_id: str, as_of: datetime) -> dict[str, Any]:
    response = requests.get(
        f"{base_url}/patients/{rems_id}", params={"asOf": iso(as_of)}, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def rows(db: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    """Read the service's own database: what it recorded, not what it answered."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))
