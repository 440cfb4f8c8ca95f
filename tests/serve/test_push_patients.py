"""Pushed results that name their patient by identifier (stock sekmet-fhir): a transaction
Bundle's Patient entry without an id, or a logical reference. Stored, answered 202, parked,
then filed under the EHR's Patient that carries the identifier and decided; never guessed. A
subject that names no Patient at all is refused by its path instead of waiting for ever."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import requests

from adapter.pipeline.matching import MatchingSettings
from adapter.serve.matching import MatchingExtension
from tests.serve.kit import codes, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.999.2"  # the seeded Patients' identifiers (kit)


def _matching() -> list[Any]:
    return [MatchingExtension(MatchingSettings(interval=0.5, delay=0.05))]


def _seeded(base_url: str) -> tuple[str, str]:
    """A Patient on the EHR with recent normal results: (Patient/id, its MRN)."""
    ids = seed(base_url, [recent_history([2100, 2000, 1900])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    body = requests.get(f"{base_url}/{patient}", timeout=10).json()
    mrn = next(i["value"] for i in body["identifier"] if i["system"] == MRN_SYSTEM)
    return patient, mrn


def _post(serve: Any, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{serve.url}{path}",
        data=json.dumps(body),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )


def _wait_for_codes(base_url: str, patient: str, expected: list[str]) -> list[str]:
    deadline = time.monotonic() + 30
    found: list[str] = []
    while time.monotonic() < deadline:
        found = codes(issues(base_url, patient))
        if found == expected:
            return found
        time.sleep(0.1)
    return found


def _transaction(patient_entry: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    urn = f"urn:uuid:{uuid.uuid4()}"
    result = {**result, "subject": {"reference": urn}}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": patient_entry,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": result,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def test_a_bundle_patient_without_an_id_is_matched_by_its_identifier(serve_factory, stock_server):
    patient, mrn = _seeded(stock_server.base_url)
    serve = serve_factory(extensions=_matching())
    entry = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": "Lab-side copy"}],
    }
    answer = _post(serve, "/fhir", _transaction(entry, lab_result("Patient/x", 1200)))
    assert answer.status_code == 202, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["202 Accepted", "202 Accepted"]
    assert _wait_for_codes(stock_server.base_url, patient, ["anc-mild-neutropenia"]) == [
        "anc-mild-neutropenia"
    ]
    serve.settle()


def test_a_logical_reference_by_identifier_is_matched(serve_factory, stock_server):
    patient, mrn = _seeded(stock_server.base_url)
    serve = serve_factory(extensions=_matching())
    result = lab_result("Patient/x", 1300)
    result["subject"] = {"identifier": {"system": MRN_SYSTEM, "value": mrn}}
    answer = _post(serve, "/fhir/Observation", result)
    assert answer.status_code == 202, answer.text
    assert _wait_for_codes(stock_server.base_url, patient, ["anc-mild-neutropenia"]) == [
        "anc-mild-neutropenia"
    ]


def test_an_identifier_no_ehr_patient_carries_stays_parked_never_guessed(
    serve_factory, stock_server
):
    _seeded(stock_server.base_url)  # a Patient exists, but not this one
    serve = serve_factory(extensions=_matching())
    result = lab_result("Patient/x", 400)
    result["subject"] = {"identifier": {"system": MRN_SYSTEM, "value": "MRN-NOBODY"}}
    assert _post(serve, "/fhir/Observation", result).status_code == 202
    time.sleep(1.5)  # three matching passes
    assert serve.store is not None
    assert [item.source for item in serve.store.parked_items(10)] == ["push"]
    assert not [i for i in issues(stock_server.base_url) if "anc-severe" in json.dumps(i)]


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ({"reference": "Group/ward-3"}, "a Group"),
        ({"reference": "urn:uuid:0b9e3c1e-0000-4000-8000-000000000000"}, "no such entry"),
        ({"identifier": {"value": "MRN1"}}, "an identifier without a system"),
    ],
)
def test_a_subject_that_names_no_patient_is_refused_by_its_path(
    serve_factory, subject: dict[str, Any], why: str
):
    serve = serve_factory()
    result = {**lab_result("Patient/x", 1200), "subject": subject}
    answer = _post(serve, "/fhir/Observation", result)
    assert answer.status_code == 422, (why, answer.text)
    assert answer.json()["issue"][0]["expression"] == ["Observation.subject"]
    assert serve.store is not None and serve.store.parked_items(10) == []


def test_a_bundle_patient_with_neither_id_nor_identifier_is_named(serve_factory):
    serve = serve_factory()
    entry = {"resourceType": "Patient", "name": [{"family": "Nobody"}]}
    answer = _post(serve, "/fhir", _transaction(entry, lab_result("Patient/x", 1200)))
    assert answer.status_code == 422, answer.text
    issues_ = answer.json()["issue"]
    assert [i.get("expression") for i in issues_] == [["Bundle.entry[1].resource.subject"]]
