"""`watch` keeps going on a real FHIR server holding absurd but valid resources and the fuzzer's
classes of damage: they are quarantined or reported, and other patients still get their
DetectedIssues (issue: bad input, item 2)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.cli import main
from tests.fhir_server import SekmetServer
from tests.watch.conftest import AS_OF, Harness, by_status, seed
from tests.watch.seeding import History
from tests.watch.test_watch_integration import PENDING_ON, mild, moderate, patient_of

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _post(server: SekmetServer, resource: dict[str, Any]) -> str:
    response = requests.post(
        f"{server.base_url}/{resource['resourceType']}", json=resource, timeout=30
    )
    assert response.status_code in (200, 201), response.text[:300]
    return f"{resource['resourceType']}/{response.json()['id']}"


def _anc(patient: str, when: Any, value: Any = 800) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "/uL"},
    }


def _supply(patient: str, days: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2626"}]},
        "subject": {"reference": patient},
        "whenHandedOver": "2025-08-01T10:00:00Z",
        "daysSupply": {"value": days, "system": "http://unitsofmeasure.org", "code": "d"},
    }


def test_absurd_resources_cost_one_finding_never_the_cycle(
    watch_server: SekmetServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [mild(), moderate()]
    odd = [History(anc=[2000] * 10 + [1200], pending_on=PENDING_ON) for _ in range(4)]
    ids = seed(watch_server, [*good, *odd])
    supplied, old, leap, typed = (patient_of(ids, h) for h in odd)
    # absurd but valid FHIR: a billion days' supply; a collection in year 1 with an offset
    _post(watch_server, _supply(supplied, 1e9))
    _post(watch_server, _anc(old, "0001-01-01T00:00:00+14:00"))
    # a leap second (valid FHIR, not a time Python holds); a number no clinic reports
    _post(watch_server, _anc(leap, "2016-12-31T23:59:60Z"))
    _post(watch_server, _anc(typed, "2025-08-11T08:00:00Z", value="1e999999"))

    harness = Harness(watch_server, tmp_path / "state.sqlite")
    with caplog.at_level(logging.WARNING, logger="adapter"):
        report = harness.cycle()
        again = harness.cycle()
    harness.close()

    assert report.complete and report.patient_errors == 0
    assert report.input_problems >= 4
    assert "quarantined" in report.summary() and "patients failed" in report.summary()
    assert by_status(watch_server, patient_of(ids, good[0])) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }
    assert by_status(watch_server, patient_of(ids, good[1])) == {
        # below 1000 the month's PSF needs the prescriber's rationale (issue 8 item 4)
        "final": [
            "anc-moderate-neutropenia",
            "dispense-not-authorized",
            "psf-prescriber-action-required",
        ]
    }
    # the patient with the absurd supply is decided on the rest of the history
    assert "anc-mild-neutropenia" in by_status(watch_server, supplied)["final"]
    # the ANCs that cannot be read are said to be unevaluable, for their patients
    for patient in (old, leap, typed):
        assert "anc-unevaluable" in by_status(watch_server, patient)["final"], patient
    # a replay writes nothing more and keeps going
    assert again.issues_created == 0 and again.patient_errors == 0
    for ref in ids.values():
        assert ref.split("/")[1] not in caplog.text  # never a patient in the log


def test_one_patient_failing_is_contained_and_retried(
    watch_server: SekmetServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad = mild(), moderate()
    ids = seed(watch_server, [good, bad])
    victim = patient_of(ids, bad)
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    original = harness.watcher._evaluate

    def failing(patient: str, *args: Any) -> Any:
        if patient == victim:
            raise ZeroDivisionError("a value 812 of the patient")
        return original(patient, *args)

    monkeypatch.setattr(harness.watcher, "_evaluate", failing)
    with caplog.at_level(logging.ERROR, logger="adapter"):
        report = harness.cycle()
    assert report.patient_errors == 1
    assert "1 patients failed (retried next cycle)" in report.summary()
    assert "ZeroDivisionError" in caplog.text and "812" not in caplog.text
    assert by_status(watch_server, patient_of(ids, good)) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }
    assert by_status(watch_server, victim) == {}
    # the failure is gone (a fix deployed): the next cycle decides the patient
    monkeypatch.setattr(harness.watcher, "_evaluate", original)
    retried = harness.cycle()
    harness.close()
    assert retried.patient_errors == 0 and retried.patients_decided == 1
    assert by_status(watch_server, victim) == {
        # below 1000 the month's PSF needs the prescriber's rationale (issue 8 item 4)
        "final": [
            "anc-moderate-neutropenia",
            "dispense-not-authorized",
            "psf-prescriber-action-required",
        ]
    }


def test_fuzz_classes_on_the_server_leave_other_patients_decided(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    good = mild()
    victims = [moderate() for _ in range(6)]
    ids = seed(watch_server, [good, *victims])
    refs = [patient_of(ids, h) for h in victims]
    damaged = [
        {**_anc(refs[0], "2025-08-11T08:00:00Z"), "identifier": {"value": "not a list"}},
        {**_anc(refs[1], "2016-12-31T23:59:60Z")},
        {**_anc(refs[2], "2025-08-11T08:00:00Z", value=10**30)},
        {**_anc(refs[3], "2025-08"), "issued": "9999-12-31T23:59:59-14:00"},
        {**_supply(refs[4], -5)},
        {**_anc(refs[5], "2025-08-11T08:00:00Z"), "meta": {"tag": [{"code": "x" * 5000}]}},
    ]
    accepted = 0
    for resource in damaged:
        response = requests.post(
            f"{watch_server.base_url}/{resource['resourceType']}",
            json=copy.deepcopy(resource),
            timeout=30,
        )
        accepted += response.status_code in (200, 201)  # a validating server may refuse some
    assert accepted >= 3
    state = tmp_path / "state.sqlite"
    argv = ["watch", "--fhir-base", watch_server.base_url, "--once", "--state", str(state)]
    assert main([*argv, "--as-of", AS_OF.isoformat()]) == 0
    assert by_status(watch_server, patient_of(ids, good)) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }
    for ref in refs:  # every damaged patient is still decided on what can be read
        assert "anc-moderate-neutropenia" in by_status(watch_server, ref)["final"], ref


def test_a_resource_the_state_cannot_hold_is_quarantined_and_its_patient_decided(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    # A server that does not validate may serve what sekmet refuses to store (nesting deeper
    # than the state file's serialiser holds): fed to the watcher as a polled page.
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    deep: dict[str, Any] = {"url": "urn:x", "valueString": "x"}
    for _ in range(300):
        deep = {"url": "urn:x", "extension": [deep]}
    resource = {**_anc(patient, "2025-08-11T20:00:00Z", value=700), "id": "deep-1"}
    resource["extension"] = [deep]
    resource["meta"] = {"versionId": "1", "lastUpdated": "2025-08-11T20:00:00Z"}
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    report = harness.cycle()
    page = {"resourceType": "Bundle", "entry": [{"resource": resource, "search": "match"}]}
    harness.watcher._take_page(harness.watcher.queries[0], page, None, report)
    assert report.quarantined == 1
    again = harness.cycle()
    harness.close()
    assert again.patient_errors == 0
    # held without the element it could not keep, and decided: the 700 is a moderate finding
    assert "anc-moderate-neutropenia" in by_status(watch_server, patient)["final"]


def test_a_quarantined_version_is_remembered_not_quarantined_again_at_every_poll(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    deep: dict[str, Any] = {"url": "urn:x", "valueString": "x"}
    for _ in range(300):
        deep = {"url": "urn:x", "extension": [deep]}
    resource = {**_anc(patient, "2025-08-11T20:00:00Z", value=700), "id": "deep-2"}
    resource["extension"] = [deep]
    resource["meta"] = {"versionId": "1", "lastUpdated": "2025-08-11T20:00:00Z"}
    page = {"resourceType": "Bundle", "entry": [{"resource": resource, "search": "match"}]}
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    report = harness.cycle()
    query = harness.watcher.queries[0]
    harness.watcher._take_page(query, page, None, report)
    assert report.quarantined == 1
    for _ in range(3):  # the same version polled again (overlap window, restarts)
        again = harness.cycle()
        harness.watcher._take_page(query, page, None, again)
        assert again.quarantined == 0 and again.duplicates >= 1
    # a new version of it is new input: read (and quarantined) again
    resource["meta"] = {"versionId": "2", "lastUpdated": "2025-08-11T21:00:00Z"}
    newer = harness.cycle()
    harness.watcher._take_page(query, page, None, newer)
    assert newer.quarantined == 1
    harness.close()
