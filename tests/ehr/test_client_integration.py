"""adapter.ehr.FhirClient against a real FHIR server (sekmet-fhir on 127.0.0.1)."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import pytest
import requests

from adapter.ehr import (
    FhirAuthError,
    FhirClient,
    FhirConflictError,
    FhirNotFoundError,
    FhirServerError,
    RetryPolicy,
    SmartBackendServices,
    Transport,
)
from tests.conftest import SmartKey
from tests.fhir_server import SekmetServer

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DECISION_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"


def quick_transport(session: requests.Session | None = None) -> Transport:
    # bounded so that a misbehaving server fails the test fast instead of backing off for a minute
    return Transport(retry=RetryPolicy(max_attempts=2, max_total_seconds=5), session=session)


@pytest.fixture
def client(fhir_server: SekmetServer) -> FhirClient:
    return FhirClient(fhir_server.base_url, transport=quick_transport())


def new_patient(client: FhirClient) -> str:
    return str(client.create({"resourceType": "Patient", "active": True})["id"])


def anc(patient: str, value: float = 1800) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-01-05T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "/uL"},
    }


def decision(patient: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "DetectedIssue",
        "status": "final",
        "identifier": [{"system": DECISION_SYSTEM, "value": value}],
        "patient": {"reference": f"Patient/{patient}"},
        "author": {"reference": "Device/rems-adapter"},
    }


def test_conditional_create_is_idempotent(client: FhirClient) -> None:
    patient = new_patient(client)
    value = secrets.token_hex(8)
    condition = {"identifier": f"{DECISION_SYSTEM}|{value}"}

    first = client.create_if_none_exist(decision(patient, value), condition)
    second = client.create_if_none_exist(decision(patient, value), condition)

    assert first.created is True
    assert second.created is False
    assert second.resource["id"] == first.resource["id"]
    assert client.search("DetectedIssue", condition).total == 1


def test_paging_through_120_observations_with_count_50(
    fhir_server: SekmetServer, client: FhirClient
) -> None:
    patient = new_patient(client)
    # seeded in one transaction (not through the client under test)
    seed = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": anc(patient, 1000 + n),
                "request": {"method": "POST", "url": "Observation"},
            }
            for n in range(120)
        ],
    }
    response = requests.post(fhir_server.base_url, json=seed, timeout=30)
    assert response.status_code == 200, response.text[:500]
    # location: [base/]Observation/{id}/_history/1
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    seeded = {loc.split("Observation/", 1)[1].split("/")[0] for loc in locations}
    assert len(seeded) == 120

    pages = list(
        client.search_pages("Observation", {"patient": patient, "code": f"{LOINC}|751-8"}, count=50)
    )
    assert [len(p["entry"]) for p in pages] == [50, 50, 20]
    result = client.search("Observation", {"patient": patient}, count=50)
    assert result.pages == 3 and result.total == 120
    found = [r["id"] for r in result.matches]
    assert len(found) == 120 and set(found) == seeded  # each exactly once


def test_last_updated_watermark_with_the_raw_server_string(client: FhirClient) -> None:
    patient = new_patient(client)
    before = client.create(anc(patient))
    time.sleep(0.01)
    after = client.create(anc(patient))
    watermark = before["meta"]["lastUpdated"]  # kept as the server wrote it
    newer = client.search("Observation", {"patient": patient, "_lastUpdated": f"gt{watermark}"})
    assert [r["id"] for r in newer.matches] == [after["id"]]


def test_read_vread_update_with_if_match(client: FhirClient) -> None:
    patient = new_patient(client)
    issue = client.create_if_none_exist(
        decision(patient, secrets.token_hex(8)), {"patient": f"Patient/{patient}"}
    ).resource
    withdrawn = client.update({**issue, "status": "cancelled"})  # If-Match: W/"1"
    assert withdrawn["meta"]["versionId"] == "2"
    assert client.read("DetectedIssue", issue["id"])["status"] == "cancelled"
    assert client.vread("DetectedIssue", issue["id"], "1")["status"] == "final"

    with pytest.raises(FhirConflictError) as caught:
        client.update({**issue, "status": "entered-in-error"})  # still says version 1
    assert caught.value.status == 412
    assert caught.value.issues and caught.value.issues[0].code == "conflict"


def test_include_returns_the_subject(client: FhirClient) -> None:
    patient = new_patient(client)
    dispense = client.create(
        {
            "resourceType": "MedicationDispense",
            "status": "preparation",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
            "subject": {"reference": f"Patient/{patient}"},
        }
    )
    result = client.search(
        "MedicationDispense",
        {"patient": patient, "status": "preparation"},
        include=["MedicationDispense:subject"],
    )
    assert [r["id"] for r in result.matches] == [dispense["id"]]
    assert [(r["resourceType"], r["id"]) for r in result.included] == [("Patient", patient)]


def test_server_errors_carry_the_operation_outcome(client: FhirClient) -> None:
    with pytest.raises(FhirServerError) as caught:
        client.search("Observation", {"no-such-param": "x"})  # strict handling by default
    assert caught.value.status == 400
    assert caught.value.issues[0].code == "not-supported"
    assert "no-such-param" in (caught.value.issues[0].diagnostics or "")

    with pytest.raises(FhirNotFoundError) as missing:
        client.read("Patient", str(uuid.uuid4()))
    assert missing.value.issues[0].code == "not-found"


# -- SMART Backend Services against the server's token endpoint -------------------------------


def smart_client(server: SekmetServer, key: SmartKey) -> tuple[FhirClient, list[str]]:
    calls: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: calls.append(f"{r.request.method} {r.url}"))
    auth = SmartBackendServices(
        client_id=key.client_id,
        private_key_pem=key.private_pem,
        algorithm=key.algorithm,
        key_id=key.public_jwk["kid"],
        scope="system/*.rs system/Patient.c system/DetectedIssue.cru",
    )
    return FhirClient(server.base_url, auth=auth, transport=quick_transport(session)), calls


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
def test_smart_backend_services_discovers_and_caches_the_token(
    smart_fhir_server: SekmetServer, smart_keys: dict[str, SmartKey], algorithm: str
) -> None:
    client, calls = smart_client(smart_fhir_server, smart_keys[algorithm])
    patient = new_patient(client)
    value = secrets.token_hex(8)
    condition = {"identifier": f"{DECISION_SYSTEM}|{value}"}
    assert client.create_if_none_exist(decision(patient, value), condition).created
    assert not client.create_if_none_exist(decision(patient, value), condition).created
    assert client.read("Patient", patient)["id"] == patient

    token_calls = [c for c in calls if c == f"POST {smart_fhir_server.token_url}"]
    discovery = [c for c in calls if "smart-configuration" in c]
    assert len(token_calls) == 1 and len(discovery) == 1  # one token for the whole session


def test_smart_401_gets_a_new_token_from_the_server(
    smart_fhir_server: SekmetServer, smart_keys: dict[str, SmartKey]
) -> None:
    client, calls = smart_client(smart_fhir_server, smart_keys["ES384"])
    patient = new_patient(client)
    # Simulate a token the server no longer accepts (revoked / server restarted with a new key).
    assert isinstance(client.auth, SmartBackendServices)
    token = client.auth._token
    assert token is not None
    token.value = "revoked"

    assert client.read("Patient", patient)["id"] == patient
    assert sum(c == f"POST {smart_fhir_server.token_url}" for c in calls) == 2


def test_smart_scopes_are_enforced(
    smart_fhir_server: SekmetServer, smart_keys: dict[str, SmartKey]
) -> None:
    client, _ = smart_client(smart_fhir_server, smart_keys["RS384"])
    with pytest.raises(FhirAuthError, match="not authorised") as caught:
        client.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert caught.value.status == 403
    assert caught.value.issues[0].code == "forbidden"


def test_debug_logging_over_real_http_has_no_query_values(
    client: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    patient = new_patient(client)
    caplog.set_level("DEBUG")
    client.search("Observation", {"patient": patient, "code": f"{LOINC}|751-8"})
    # urllib3 would log "GET /fhir/Observation?patient=<id>&code=... HTTP/1.1" at DEBUG
    assert patient not in caplog.text
    assert "751-8" not in caplog.text
