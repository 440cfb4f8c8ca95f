"""Contract test of the sekmet-fhir features the watcher adds to those in tests/ehr: batch
Bundles with conditional creates and If-Match updates, system-only token search on our
identifier, `_include` of a dispense's Medication, the order and bound of `_lastUpdated` polls.
Plain `requests`, so a failure says whether the server or the adapter changed."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

from tests.fhir_server import SekmetServer

pytestmark = pytest.mark.integration

DECISION_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"
TIMEOUT = 10


def issue(value: str) -> dict[str, Any]:
    return {
        "resourceType": "DetectedIssue",
        "status": "final",
        "identifier": [{"system": DECISION_SYSTEM, "value": value}],
        "patient": {"reference": "Patient/contract"},
    }


def batch(server: SekmetServer, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = requests.post(
        server.base_url,
        json={"resourceType": "Bundle", "type": "batch", "entry": entries},
        headers={"Prefer": "return=representation"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert body["type"] == "batch-response" and len(body["entry"]) == len(entries)
    answers: list[dict[str, Any]] = body["entry"]
    return answers


def create_entry(value: str) -> dict[str, Any]:
    return {
        "resource": issue(value),
        "request": {
            "method": "POST",
            "url": "DetectedIssue",
            "ifNoneExist": f"identifier={DECISION_SYSTEM}|{value}",
        },
    }


def test_batch_conditional_create_and_if_match_update(watch_server: SekmetServer) -> None:
    value = secrets.token_hex(8)
    (first,) = batch(watch_server, [create_entry(value)])
    assert first["response"]["status"].startswith("201")
    created = first["resource"]
    assert created["meta"]["versionId"] == "1"

    again, update, stale = batch(
        watch_server,
        [
            create_entry(value),
            {
                "resource": {**created, "status": "cancelled"},
                "request": {
                    "method": "PUT",
                    "url": f"DetectedIssue/{created['id']}",
                    "ifMatch": 'W/"1"',
                },
            },
            {
                "resource": {**created, "status": "entered-in-error"},
                "request": {
                    "method": "PUT",
                    "url": f"DetectedIssue/{created['id']}",
                    "ifMatch": 'W/"1"',  # already moved on by the entry before: refused alone
                },
            },
        ],
    )
    assert again["response"]["status"].startswith("200")  # existed: not duplicated
    assert again["resource"]["id"] == created["id"]
    assert update["response"]["status"].startswith("200")
    assert update["resource"]["meta"]["versionId"] == "2"
    assert stale["response"]["status"].startswith("412")  # a batch entry fails on its own


def test_system_only_token_search_and_last_updated_order(watch_server: SekmetServer) -> None:
    ours = [batch(watch_server, [create_entry(secrets.token_hex(8))])[0] for _ in range(3)]
    foreign = issue("x")
    foreign["identifier"][0]["system"] = "urn:other"
    assert requests.post(f"{watch_server.base_url}/DetectedIssue", json=foreign, timeout=TIMEOUT).ok
    response = requests.get(
        f"{watch_server.base_url}/DetectedIssue",
        params={
            "identifier": f"{DECISION_SYSTEM}|",
            "_sort": "_lastUpdated",
            "_lastUpdated": f"ge{ours[1]['resource']['meta']['lastUpdated']}",
        },
        headers={"Prefer": "handling=strict"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    found = [e["resource"]["id"] for e in response.json()["entry"]]
    assert found == [ours[1]["resource"]["id"], ours[2]["resource"]["id"]]


def test_include_brings_a_dispense_medication(watch_server: SekmetServer) -> None:
    medication = requests.post(
        f"{watch_server.base_url}/Medication",
        json={
            "resourceType": "Medication",
            "code": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2626"}
                ]
            },
        },
        timeout=TIMEOUT,
    ).json()
    dispense = requests.post(
        f"{watch_server.base_url}/MedicationDispense",
        json={
            "resourceType": "MedicationDispense",
            "status": "preparation",
            "medicationReference": {"reference": f"Medication/{medication['id']}"},
            "subject": {"reference": "Patient/contract"},
        },
        timeout=TIMEOUT,
    ).json()
    response = requests.get(
        f"{watch_server.base_url}/MedicationDispense",
        params={"_id": dispense["id"], "_include": "MedicationDispense:medication"},
        headers={"Prefer": "handling=strict"},
        timeout=TIMEOUT,
    )
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in response.json()["entry"]}
    assert modes == {("MedicationDispense", "match"), ("Medication", "include")}
