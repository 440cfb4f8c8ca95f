"""Writes the Subscriptions Backport IG's R4 example notification Bundles as JSON (run once; the
output is committed beside this file, see README.md for source and licence).

The IG's examples are authored in FHIR Shorthand (input/fsh/BackportNotificationR4.fsh); the
published JSON renderings are not reachable from the build machines, and SUSHI needs the FHIR
core packages, so each example is transcribed here rule by rule: `status()` is the IG's RuleSet
`AddParameterStatus`, `first_event()` is `AddParameterStatusFirstEvent`, `focus()` is
`AddParameterStatusEventFocus`, `context()` is `AddParameterStatusEventContext`, `error()` is
`AddParameterStatusError`; ids, timestamps, aliases and values are the IG's.

Usage: python tests/data/subscriptions/transcribe.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
# Aliases (input/fsh/Common.fsh)
ADMISSION_TOPIC = "http://hl7.org/SubscriptionTopic/admission"
ADMISSION_SUB = "https://example.org/fhir/Subscription/admission"
ADMISSION_SUB_STATUS = "https://example.org/fhir/Subscription/admission/$status"
PATIENT_URL = "https://example.org/fhir/Patient/1599eb66-431a-447c-a3de-6897fe9ae9a1"
PATIENT_ID = "1599eb66-431a-447c-a3de-6897fe9ae9a1"
ENCOUNTER_URL = "https://example.org/fhir/Encounter/86009987-eabe-42bf-8c02-b112b18cb616"
ENCOUNTER_ID = "86009987-eabe-42bf-8c02-b112b18cb616"
TIMESTAMP = "2020-05-29T11:44:13.1882432-05:00"

PATIENT = {  # Instance BackportNotificationPatient
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "active": True,
    "name": [
        {"use": "usual", "text": "Example Patient", "family": "Patient", "given": ["Example"]}
    ],
}
ENCOUNTER = {  # Instance BackportNotificationEncounter
    "resourceType": "Encounter",
    "id": ENCOUNTER_ID,
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
    "subject": {"reference": PATIENT_URL, "display": "Example Patient"},
}


def bundle(bid: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": bid,
        "meta": {"profile": [f"{BP}/backport-subscription-notification-r4"]},
        "type": "history",
        "timestamp": TIMESTAMP,
        "entry": [],
    }


def status(b: dict[str, Any], sid: str, state: str, kind: str, since: int) -> dict[str, Any]:
    params = {
        "resourceType": "Parameters",
        "id": sid,
        "meta": {"profile": [f"{BP}/backport-subscription-status-r4"]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": ADMISSION_SUB}},
            {"name": "topic", "valueCanonical": ADMISSION_TOPIC},
            {"name": "status", "valueCode": state},
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(since)},
        ],
    }
    b["entry"].append(
        {
            "fullUrl": f"urn:uuid:{sid}",
            "resource": params,
            "request": {"method": "GET", "url": ADMISSION_SUB_STATUS},
            "response": {"status": "200"},
        }
    )
    return b


def _event(b: dict[str, Any]) -> dict[str, Any]:
    params = b["entry"][0]["resource"]["parameter"]
    return next(p for p in params if p["name"] == "notification-event")


def first_event(b: dict[str, Any], number: int) -> dict[str, Any]:
    b["entry"][0]["resource"]["parameter"].append(
        {
            "name": "notification-event",
            "part": [
                {"name": "event-number", "valueString": str(number)},
                {"name": "timestamp", "valueInstant": TIMESTAMP},
            ],
        }
    )
    return b


def focus(b: dict[str, Any], reference: str) -> dict[str, Any]:
    _event(b)["part"].append({"name": "focus", "valueReference": {"reference": reference}})
    return b


def context(b: dict[str, Any], reference: str) -> dict[str, Any]:
    _event(b)["part"].append(
        {"name": "additional-context", "valueReference": {"reference": reference}}
    )
    return b


def error(b: dict[str, Any], system: str, code: str) -> dict[str, Any]:
    b["entry"][0]["resource"]["parameter"].append(
        {"name": "error", "valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}
    )
    return b


def auth(b: dict[str, Any]) -> dict[str, Any]:
    _event(b)["part"] += [
        {
            "name": "authorization-type",
            "valueCoding": {
                "system": "http://example.org/auth",
                "code": "authorization_base",
                "display": "OAuth request token",
            },
        },
        {
            "name": "authorization-value",
            "valueString": "ZGFhNDFjY2MtZGFmMi00YjZkLThiNDYtN2JlZDk1MWEyYzk2",
        },
    ]
    return b


def query(b: dict[str, Any], code: str, display: str, url: str) -> dict[str, Any]:
    _event(b)["part"].append(
        {
            "name": "related-query",
            "part": [
                {
                    "name": "query-type",
                    "valueCoding": {
                        "system": "http://example.org/query-types",
                        "code": code,
                        "display": display,
                    },
                },
                {"name": "query", "valueString": url},
            ],
        }
    )
    return b


def entry(b: dict[str, Any], url: str, resource: dict[str, Any], method: str, req: str, st: str):
    b["entry"].append(
        {
            "fullUrl": url,
            "resource": copy.deepcopy(resource),
            "request": {"method": method, "url": req},
            "response": {"status": st},
        }
    )
    return b


Q1 = ("example", "Example query", f"http://example.org/fhir/$example?patient={PATIENT_ID}")
Q2 = (
    "prescribed",
    "Prescribed medications",
    f"http://example.org/fhir/MedicationRequest?patient={PATIENT_ID}&encounter={ENCOUNTER_ID}",
)


def examples_110() -> dict[str, dict[str, Any]]:
    """The examples of IG 1.1.0 (tag v1.1.0)."""
    ev = "event-notification"
    return {
        "r4-notification-handshake": status(
            bundle("r4-notification-handshake"),
            "63c28e8a-f402-43e4-beb2-75b1c0f6833f",
            "requested",
            "handshake",
            0,
        ),
        "r4-notification-heartbeat": status(
            bundle("r4-notification-heartbeat"),
            "385b23bd-6d03-462e-894d-a0694045d65c",
            "active",
            "heartbeat",
            2,
        ),
        "r4-notification-empty": first_event(
            status(
                bundle("r4-notification-empty"),
                "9e41ff6d-5be6-4e6a-8b85-abd4e7f58400",
                "active",
                ev,
                2,
            ),
            2,
        ),
        "r4-notification-id-only": focus(
            first_event(
                status(
                    bundle("r4-notification-id-only"),
                    "292d3c72-edc1-4d8a-afaa-d85e19c7f563",
                    "active",
                    ev,
                    2,
                ),
                2,
            ),
            ENCOUNTER_URL,
        ),
        "r4-notification-full-resource": entry(
            focus(
                first_event(
                    status(
                        bundle("r4-notification-full-resource"),
                        "2d5afc69-6ef2-420f-a8d1-8500c99eb96c",
                        "active",
                        ev,
                        2,
                    ),
                    2,
                ),
                ENCOUNTER_URL,
            ),
            ENCOUNTER_URL,
            ENCOUNTER,
            "POST",
            "Encounter",
            "201",
        ),
        "r4-notification-multi-resource": entry(
            entry(
                context(
                    focus(
                        first_event(
                            status(
                                bundle("r4-notification-multi-resource"),
                                "7bd91d26-c951-4520-9ac6-67f41bfbe897",
                                "active",
                                ev,
                                2,
                            ),
                            2,
                        ),
                        ENCOUNTER_URL,
                    ),
                    PATIENT_URL,
                ),
                ENCOUNTER_URL,
                ENCOUNTER,
                "POST",
                "Encounter",
                "201",
            ),
            PATIENT_URL,
            PATIENT,
            "GET",
            f"Patient/{PATIENT_ID}",
            "200",
        ),
        "r4-notification-error": error(
            status(
                bundle("r4-notification-error"),
                "7bd91d26-c951-4520-9ac6-67f41bfbe897",
                "error",
                "query-status",
                3,
            ),
            "http://terminology.hl7.org/CodeSystem/subscription-error",
            "no-response",
        ),
    }


def examples_120() -> dict[str, dict[str, Any]]:
    """IG 1.2.0 (1.2.0-ballot source): the 1.1.0 examples plus authorization and related query."""
    ev = "event-notification"
    out = examples_110()
    out["r4-notification-empty-with-auth"] = auth(
        first_event(
            status(
                bundle("r4-notification-empty-with-auth"),
                "7b8ccdfd-b799-480c-84a5-1d1381513edf",
                "active",
                ev,
                2,
            ),
            2,
        )
    )
    out["r4-notification-id-only-with-auth"] = auth(
        focus(
            first_event(
                status(
                    bundle("r4-notification-id-only-with-auth"),
                    "d5359778-3cda-46f0-8193-54bd09ad8309",
                    "active",
                    ev,
                    2,
                ),
                2,
            ),
            ENCOUNTER_URL,
        )
    )
    out["r4-notification-id-only-with-query"] = query(
        focus(
            first_event(
                status(
                    bundle("r4-notification-id-only-with-query"),
                    "20f7e506-69ba-4895-b1f8-044dab538bc4",
                    "active",
                    ev,
                    2,
                ),
                2,
            ),
            ENCOUNTER_URL,
        ),
        *Q1,
    )
    out["r4-notification-full-resource-with-query"] = entry(
        query(
            query(
                focus(
                    first_event(
                        status(
                            bundle("r4-notification-full-resource-with-query"),
                            "919ce5d0-d77c-44a7-a397-d8b2a05fd1bf",
                            "active",
                            ev,
                            2,
                        ),
                        2,
                    ),
                    ENCOUNTER_URL,
                ),
                *Q1,
            ),
            *Q2,
        ),
        ENCOUNTER_URL,
        ENCOUNTER,
        "POST",
        "Encounter",
        "201",
    )
    return out


def main() -> None:
    for folder, examples in (("ig-1.1.0", examples_110()), ("ig-1.2.0", examples_120())):
        target = HERE / folder
        target.mkdir(exist_ok=True)
        for name, resource in sorted(examples.items()):
            text = json.dumps(resource, indent=2, ensure_ascii=False) + "\n"
            (target / f"Bundle-{name}.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
