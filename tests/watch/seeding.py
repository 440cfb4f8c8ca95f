"""Synthetic clozapine histories as FHIR transaction Bundles (tests and the watch benchmark).

Every person here is made up. A history is weekly ANC results with a weekly 7-day clozapine supply
handed over the day after each result, one active prescription, optionally a dispense awaiting a
decision at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UTC_TIME = time(8, 0)


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _instant(day: date, at: time = UTC_TIME) -> str:
    return datetime.combine(day, at).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class History:
    anc: Sequence[float]
    start: date = date(2025, 6, 2)
    pending_on: date | None = None
    pending_days: int = 7
    #: entries (resourceType -> urn) filled in by `bundle()`, so tests can find what they seeded
    urns: dict[str, list[str]] = field(default_factory=dict)

    def result_day(self, index: int) -> date:
        return self.start + timedelta(weeks=index)


def _entry(urn: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": urn,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def bundle(histories: Sequence[History]) -> dict[str, Any]:
    """One transaction Bundle creating every history (patients, prescriber, prescriptions...)."""
    entries: list[dict[str, Any]] = []
    for history in histories:
        patient, prescriber, request = _urn(), _urn(), _urn()
        history.urns = {"Patient": [patient], "Practitioner": [prescriber]}
        entries.append(_entry(patient, {"resourceType": "Patient", "active": True}))
        entries.append(_entry(prescriber, {"resourceType": "Practitioner", "active": True}))
        entries.append(
            _entry(
                request,
                {
                    "resourceType": "MedicationRequest",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "coding": [{"system": RXNORM, "code": "2626", "display": "clozapine"}]
                    },
                    "subject": {"reference": patient},
                    "requester": {"reference": prescriber},
                    "authoredOn": _instant(history.start - timedelta(days=1)),
                },
            )
        )
        for index, value in enumerate(history.anc):
            day = history.result_day(index)
            observation = _urn()
            history.urns.setdefault("Observation", []).append(observation)
            entries.append(
                _entry(
                    observation,
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/"
                                        "observation-category",
                                        "code": "laboratory",
                                    }
                                ]
                            }
                        ],
                        "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
                        "subject": {"reference": patient},
                        "effectiveDateTime": _instant(day),
                        "valueQuantity": {
                            "value": value,
                            "unit": "/uL",
                            "system": "http://unitsofmeasure.org",
                            "code": "/uL",
                        },
                    },
                )
            )
            if history.pending_on is not None and index == len(history.anc) - 1:
                # The dispense after the last result is the pending one: a supply handed over
                # after a low result would be one the label forbids (clinical-rules 2.2).
                continue
            entries.append(
                _entry(_urn(), _dispense(patient, request, "completed", day + timedelta(days=1)))
            )
        if history.pending_on is not None:
            pending = _urn()
            history.urns["MedicationDispense"] = [pending]
            resource = _dispense(patient, request, "preparation", history.pending_on)
            resource["daysSupply"]["value"] = history.pending_days
            entries.append(_entry(pending, resource))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _dispense(patient: str, request: str, status: str, day: date) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "status": status,
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "2626", "display": "clozapine"}]
        },
        "subject": {"reference": patient},
        "authorizingPrescription": [{"reference": request}],
        "daysSupply": {
            "value": 7,
            "unit": "day",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        },
        "category": {"coding": [{"code": "outpatient"}]},
    }
    if status == "completed":
        resource["whenHandedOver"] = _instant(day, time(10, 0))
    else:
        resource["whenPrepared"] = _instant(day, time(9, 0))
    return resource


def created_ids(response: dict[str, Any], request: dict[str, Any]) -> dict[str, str]:
    """urn -> "Type/id" from a transaction-response (entries answer in request order)."""
    out = {}
    for sent, answer in zip(request["entry"], response["entry"], strict=True):
        location = answer["response"]["location"]
        kind, rid = location.split("/_history/")[0].rstrip("/").split("/")[-2:]
        out[sent["fullUrl"]] = f"{kind}/{rid}"
    return out
