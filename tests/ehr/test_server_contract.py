"""Contract test of the sekmet-fhir features the adapter relies on, with plain `requests`.

Independent of adapter.ehr on purpose: when an integration test fails, this says whether the
server or our client changed. Every test works on its own patient, so the order does not matter.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import SmartKey
from tests.fhir_server import SekmetServer

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
STRICT = {"Prefer": "handling=strict"}
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DECISION_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"
TIMEOUT = 10


def post(server: SekmetServer, resource: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(
        f"{server.base_url}/{resource['resourceType']}",
        json=resource,
        headers={"Content-Type": FHIR_JSON, **headers},
        timeout=TIMEOUT,
    )


def create(server: SekmetServer, resource: dict[str, Any]) -> dict[str, Any]:
    response = post(server, resource)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def search(server: SekmetServer, rtype: str, params: Any, strict: bool = True) -> dict[str, Any]:
    response = requests.get(
        f"{server.base_url}/{rtype}",
        params=params,
        headers=STRICT if strict else {},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    }


def new_patient(server: SekmetServer) -> str:
    return str(create(server, {"resourceType": "Patient", "active": True})["id"])


def observation(patient: str, code: str, value: float = 1500) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-01-05T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "/uL"},
    }


def dispense(patient: str, status: str, prescription: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "daysSupply": {"value": 7, "unit": "day"},
    }
    if prescription:
        resource["authorizingPrescription"] = [{"reference": f"MedicationRequest/{prescription}"}]
    return resource


def detected_issue(patient: str, value: str, implicated: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "identifier": [{"system": DECISION_SYSTEM, "value": value}],
        "code": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "LAB"},
                {
                    "system": "https://rems-adapter.github.io/fhir/CodeSystem/finding",
                    "code": "anc-mild-neutropenia",
                },
            ]
        },
        "severity": "moderate",
        "patient": {"reference": f"Patient/{patient}"},
        "identifiedDateTime": "2026-01-05T09:00:00Z",
        "author": {"reference": "Device/rems-adapter"},
    }
    if implicated:
        resource["implicated"] = [{"reference": implicated}]
    return resource


# -- CRUD ---------------------------------------------------------------------------------------


def test_create_read_vread_and_versioned_update(fhir_server: SekmetServer) -> None:
    response = post(fhir_server, {"resourceType": "Patient", "active": True})
    assert response.status_code == 201
    created = response.json()
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"
    assert response.headers["Location"] == f"{fhir_server.base_url}/Patient/{pid}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'

    url = f"{fhir_server.base_url}/Patient/{pid}"
    assert requests.get(url, timeout=TIMEOUT).json()["active"] is True

    changed = {**created, "active": False}
    stale = requests.put(url, json=changed, headers={"If-Match": 'W/"7"'}, timeout=TIMEOUT)
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    updated = requests.put(url, json=changed, headers={"If-Match": 'W/"1"'}, timeout=TIMEOUT)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    again = requests.put(url, json=changed, headers={"If-Match": 'W/"1"'}, timeout=TIMEOUT)
    assert again.status_code == 412  # If-Match on the old version no longer matches

    old = requests.get(f"{url}/_history/1", timeout=TIMEOUT).json()
    assert old["active"] is True and old["meta"]["versionId"] == "1"
    missing = requests.get(f"{fhir_server.base_url}/Patient/{uuid.uuid4()}", timeout=TIMEOUT)
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"


def test_conditional_create_on_detectedissue_identifier(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    value = secrets.token_hex(8)
    condition = f"identifier={DECISION_SYSTEM}|{value}"
    first = post(fhir_server, detected_issue(patient, value), **{"If-None-Exist": condition})
    second = post(fhir_server, detected_issue(patient, value), **{"If-None-Exist": condition})

    assert first.status_code == 201
    assert second.status_code == 200  # already there: returned, not duplicated
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"
    found = search(fhir_server, "DetectedIssue", {"identifier": f"{DECISION_SYSTEM}|{value}"})
    assert found["total"] == 1


# -- search -------------------------------------------------------------------------------------


def test_last_updated_gt_and_ge_with_raw_server_strings(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    first = create(fhir_server, observation(patient, "751-8"))
    time.sleep(0.01)  # lastUpdated has millisecond precision
    second = create(fhir_server, observation(patient, "751-8"))
    raw = first["meta"]["lastUpdated"]
    assert raw.endswith("Z") and len(raw) == len("2026-01-05T08:00:00.000Z")
    assert second["meta"]["lastUpdated"] > raw

    def found(prefix: str) -> set[str]:
        bundle = search(
            fhir_server, "Observation", {"patient": patient, "_lastUpdated": f"{prefix}{raw}"}
        )
        return ids(bundle)

    assert found("gt") == {second["id"]}
    assert found("ge") == {first["id"], second["id"]}

    def ordered(sort: str) -> list[str]:
        bundle = search(fhir_server, "Observation", {"patient": patient, "_sort": sort})
        return [e["resource"]["id"] for e in bundle["entry"]]

    # keyset paging for a watcher: ascending by _lastUpdated, resume with ge<last seen>
    assert ordered("_lastUpdated") == [first["id"], second["id"]]
    assert ordered("-_lastUpdated") == [second["id"], first["id"]]


def test_count_and_next_links_page_through_everything(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    made = {create(fhir_server, observation(patient, "751-8"))["id"] for _ in range(7)}

    seen: list[str] = []
    bundle = search(fhir_server, "Observation", {"patient": patient, "_count": "3"})
    pages = 1
    while True:
        assert bundle["total"] == 7
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(f"{fhir_server.base_url}/Observation?")  # absolute, same base
        response = requests.get(nxt[0], headers=STRICT, timeout=TIMEOUT)
        assert response.status_code == 200
        bundle = response.json()
        pages += 1
        assert pages <= 5
    assert pages == 3
    assert sorted(seen) == sorted(made)  # every one once, no duplicates


def test_offset_paging_is_not_stable_under_concurrent_updates(fhir_server: SekmetServer) -> None:
    """Documents a hazard rather than a feature: sekmet pages by `_offset` over a live query
    ordered by last write, so updating a resource between pages shifts the rest and one resource
    is never returned. A watcher must not trust a multi-page walk to see everything (page by
    `_lastUpdated` keyset instead, or re-poll with an overlap)."""
    patient = new_patient(fhir_server)
    made = [create(fhir_server, observation(patient, "751-8")) for _ in range(6)]
    first = search(fhir_server, "Observation", {"patient": patient, "_count": "3"})
    updated = {**made[0], "status": "amended"}
    url = f"{fhir_server.base_url}/Observation/{made[0]['id']}"
    assert requests.put(url, json=updated, timeout=TIMEOUT).status_code == 200
    (next_url,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    second = requests.get(next_url, headers=STRICT, timeout=TIMEOUT).json()

    seen = ids(first) | ids(second)
    assert {m["id"] for m in made} - seen == {made[3]["id"]}


def test_observation_by_code_token_and_comma_separated_codes(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    anc_auto = create(fhir_server, observation(patient, "751-8"))["id"]
    anc = create(fhir_server, observation(patient, "26499-4"))["id"]
    wbc = create(fhir_server, observation(patient, "6690-2", 6000))["id"]

    one = search(fhir_server, "Observation", {"patient": patient, "code": f"{LOINC}|751-8"})
    assert ids(one) == {anc_auto}
    several = search(
        fhir_server,
        "Observation",
        {"patient": patient, "code": f"{LOINC}|751-8,{LOINC}|26499-4,{LOINC}|753-4"},
    )
    assert ids(several) == {anc_auto, anc}
    other_system = search(fhir_server, "Observation", {"patient": patient, "code": "urn:x|751-8"})
    assert ids(other_system) == set()
    assert wbc not in ids(several)


def test_medicationdispense_search_and_include(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    request = create(
        fhir_server,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
            "subject": {"reference": f"Patient/{patient}"},
        },
    )["id"]
    waiting = create(fhir_server, dispense(patient, "preparation", request))["id"]
    done = create(fhir_server, dispense(patient, "completed", request))["id"]

    by_status = search(
        fhir_server, "MedicationDispense", {"patient": patient, "status": "preparation"}
    )
    assert ids(by_status) == {waiting}
    by_code = search(
        fhir_server, "MedicationDispense", {"patient": patient, "code": f"{RXNORM}|2626"}
    )
    assert ids(by_code) == {waiting, done}

    included = search(
        fhir_server,
        "MedicationDispense",
        [
            ("patient", patient),
            ("status", "preparation"),
            ("_include", "MedicationDispense:subject"),
            ("_include", "MedicationDispense:prescription"),
        ],
    )
    assert ids(included) == {waiting}
    assert ids(included, "include") == {patient, request}
    assert included["total"] == 1  # includes are not counted as matches


def test_detectedissue_search_parameters_are_registered(fhir_server: SekmetServer) -> None:
    patient = new_patient(fhir_server)
    value = secrets.token_hex(8)
    implicated = f"MedicationDispense/{uuid.uuid4()}"
    issue = create(fhir_server, detected_issue(patient, value, implicated))["id"]
    other = create(fhir_server, detected_issue(patient, secrets.token_hex(8)))["id"]

    def found(params: dict[str, str]) -> set[str]:
        return ids(search(fhir_server, "DetectedIssue", params))

    assert found({"identifier": f"{DECISION_SYSTEM}|{value}"}) == {issue}
    assert found({"patient": f"Patient/{patient}"}) == {issue, other}
    assert found({"patient": patient, "code": "anc-mild-neutropenia"}) == {issue, other}
    assert found({"patient": patient, "status": "final"}) == {issue, other}
    assert found({"patient": patient, "status": "cancelled"}) == set()
    assert found({"implicated": implicated}) == {issue}
    assert found({"patient": patient, "author": "Device/rems-adapter"}) == {issue, other}
    capability = requests.get(f"{fhir_server.base_url}/metadata", timeout=TIMEOUT).json()
    (di,) = [r for r in capability["rest"][0]["resource"] if r["type"] == "DetectedIssue"]
    assert {"identifier", "patient", "code", "status", "implicated"} <= {
        p["name"] for p in di["searchParam"]
    }


def test_strict_handling_rejects_unknown_parameters(fhir_server: SekmetServer) -> None:
    url = f"{fhir_server.base_url}/Observation"
    strict = requests.get(url, params={"no-such-param": "x"}, headers=STRICT, timeout=TIMEOUT)
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"
    # without it, sekmet ignores the parameter and answers as if it were absent: the reason the
    # client always sends handling=strict
    lenient = search(fhir_server, "Observation", {"no-such-param": "x"}, strict=False)
    assert [e for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]


# -- SMART Backend Services ---------------------------------------------------------------------


def get_token(
    server: SekmetServer, key: SmartKey, audience: str | None = None
) -> requests.Response:
    config = requests.get(f"{server.base_url}/.well-known/smart-configuration", timeout=TIMEOUT)
    assert config.status_code == 200
    token_endpoint = config.json()["token_endpoint"]
    assert key.algorithm in config.json()["token_endpoint_auth_signing_alg_values_supported"]
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": key.client_id,
            "sub": key.client_id,
            "aud": audience or token_endpoint,
            "exp": now + 300,
            "jti": secrets.token_hex(16),
        },
        key.private_pem,
        algorithm=key.algorithm,
        headers={"kid": key.public_jwk["kid"], "typ": "JWT"},
    )
    return requests.post(
        token_endpoint,
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs system/DetectedIssue.cu",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
def test_smart_backend_token_grants_access(
    smart_fhir_server: SekmetServer, smart_keys: dict[str, SmartKey], algorithm: str
) -> None:
    url = f"{smart_fhir_server.base_url}/Patient"
    anonymous = requests.get(url, timeout=TIMEOUT)
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["WWW-Authenticate"]

    response = get_token(smart_fhir_server, smart_keys[algorithm])
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"].lower() == "bearer" and token["expires_in"] > 0
    assert set(token["scope"].split()) == {"system/*.rs", "system/DetectedIssue.cu"}

    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(url, headers=bearer, timeout=TIMEOUT).status_code == 200
    # granted scopes are enforced: no Patient writes with these scopes
    write = requests.post(url, json={"resourceType": "Patient"}, headers=bearer, timeout=TIMEOUT)
    assert write.status_code == 403


def test_smart_token_endpoint_rejects_a_wrong_audience_and_unknown_keys(
    smart_fhir_server: SekmetServer, smart_keys: dict[str, SmartKey]
) -> None:
    wrong_audience = get_token(smart_fhir_server, smart_keys["ES384"], audience="https://x/token")
    assert wrong_audience.status_code == 401
    assert wrong_audience.json()["error"] == "invalid_client"
    # a key the server does not know, for a known client id: signature does not verify
    stranger = _stranger_key(smart_keys["ES384"])
    refused = get_token(smart_fhir_server, stranger)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert "verification failed" in refused.json()["error_description"]


def _stranger_key(known: SmartKey) -> SmartKey:
    """Same client id and kid as `known`, but a different (unregistered) P-384 key.

    Not the RS384 client's id with an EC key: sekmet 0.1.1 answers that mismatch with a 500
    (PyJWT TypeError escapes its token endpoint) instead of 401 invalid_client."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SmartKey(known.client_id, known.algorithm, pem, known.public_jwk)
