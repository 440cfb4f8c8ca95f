"""The worker on a real store without an EHR: decides, enqueues each effect once, audits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.decide import LocalBackend
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import Arrival, Intake, Worker, WorkerSettings
from adapter.store.sqlite import SqliteStore
from tests.serve.kit import recent_history
from tests.watch.seeding import bundle


def resources_with_ids(histories) -> list[dict]:
    """The seeding transaction's resources with ids, references resolved (what an EHR holds)."""
    request = bundle(histories)
    ids = {}
    for n, entry in enumerate(request["entry"]):
        ids[entry["fullUrl"]] = f"{entry['resource']['resourceType']}/r{n}"
    text = json.dumps([e["resource"] for e in request["entry"]])
    for urn, ref in ids.items():
        text = text.replace(urn, ref)
    out = json.loads(text)
    for n, resource in enumerate(out):
        resource["id"] = f"r{n}"
        resource["meta"] = {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z"}
    return out


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "s.sqlite")
    yield s
    s.close()


def test_a_patient_is_decided_once_and_a_replay_enqueues_nothing(store):
    resources = resources_with_ids([recent_history([2000, 1900, 1200])])
    patient = next(f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient")
    intake = Intake(store)
    intake.receive([Arrival(r, "files") for r in resources])
    worker = Worker(store, load_reference_data(), LocalBackend(), WorkerSettings(), ehr=None)
    assert worker.drain() == 1
    assert store.inbox_depth() == 0
    effects = store.effects("pending")
    assert {e.kind for e in effects} == {"issue-create"}
    written = [json.loads(e.body)["resource"] for e in effects]
    assert "anc-mild-neutropenia" in [r["code"]["coding"][1]["code"] for r in written]
    assert {r["patient"]["reference"] for r in written} == {patient}
    [record] = store.audit(patient)
    assert record.backend == "local" and any("anc-mild-neutropenia" in o for o in record.outcome)
    assert any(i.startswith("Observation/") and "/_history/1" in i for i in record.inputs)
    # the same content again, and a decision without new content: no new effect
    intake.receive([Arrival(r, "files") for r in resources])
    intake.decide_again([patient], "recheck", "today")
    assert worker.drain() == 1
    assert len(store.effects("pending")) == len(effects)
    assert len(store.audit(patient)) == 2
    assert store.patient_state(patient)["hydrated"] is True


def test_a_result_about_no_patient_is_parked_until_assigned(store):
    resources = resources_with_ids([recent_history([2000, 1200])])
    patient = next(f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient")
    intake = Intake(store)
    others = [r for r in resources if r["resourceType"] != "Observation"]
    results = [r for r in resources if r["resourceType"] == "Observation"]
    orphan = {k: v for k, v in results[-1].items() if k != "subject"}
    intake.receive([Arrival(r, "files") for r in [*others, *results[:-1]]])
    [receipt] = intake.receive([Arrival(orphan, "mllp", key="mllp:MSG1")])
    assert receipt.patient is None
    worker = Worker(store, load_reference_data(), LocalBackend(), WorkerSettings(), ehr=None)
    worker.drain()
    before = {
        json.loads(e.body)["resource"]["code"]["coding"][1]["code"]
        for e in store.effects("pending")
    }
    assert "anc-mild-neutropenia" not in before  # 2000 is normal; the orphan waits
    intake.assign(["mllp:MSG1"], patient)
    worker.drain()
    after = {
        json.loads(e.body)["resource"]["code"]["coding"][1]["code"]
        for e in store.effects("pending")
    }
    assert "anc-mild-neutropenia" in after


def test_a_decision_is_withdrawn_when_its_dispense_is_entered_in_error(store):
    """Service mode, as batch mode (interfaces.md section 2): the pharmacy's dispense decided
    while it awaited a decision, then entered in error on the EHR: the worker updates the
    decision's DetectedIssue (the EHR's copy) to entered-in-error, and decides nothing anew."""
    from datetime import date, timedelta

    history = recent_history([2000, 1900, 1800])
    history.pending_on = date.today() - timedelta(days=1)
    resources = resources_with_ids([history])
    patient = next(f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient")
    dispense = next(
        r
        for r in resources
        if r["resourceType"] == "MedicationDispense" and r["status"] != "completed"
    )
    intake = Intake(store)
    intake.receive([Arrival(r, "files") for r in resources])
    worker = Worker(store, load_reference_data(), LocalBackend(), WorkerSettings(), ehr=None)
    worker.drain()
    created = [json.loads(e.body)["resource"] for e in store.effects("pending")]
    (decision,) = [
        r
        for r in created
        if {"reference": f"MedicationDispense/{dispense['id']}"} in r.get("implicated", [])
    ]
    assert decision["code"]["coding"][1]["code"] == "dispense-authorized"
    # the EHR's copy of the decision comes back, then the dispense's new version
    on_ehr = {
        **decision,
        "id": "di1",
        "meta": {"versionId": "1", "lastUpdated": "2026-01-02T00:00:00Z"},
    }
    in_error = {
        **dispense,
        "status": "entered-in-error",
        "meta": {"versionId": "2", "lastUpdated": "2026-01-03T00:00:00Z"},
    }
    intake.receive([Arrival(on_ehr, "poll"), Arrival(in_error, "poll")])
    worker.drain()
    updates = [json.loads(e.body) for e in store.effects("pending") if e.kind == "issue-update"]
    assert [(u["resource"]["id"], u["resource"]["status"]) for u in updates] == [
        ("di1", "entered-in-error")
    ]
    assert updates[0]["if_match"] == "1"
    assert {e.patient for e in store.effects("pending")} == {patient}


@pytest.mark.parametrize(
    ("later", "stands"),
    [
        ("preliminary", "final"),  # a resend not yet released: the severe result stands
        ("registered", "final"),
        ("corrected", "corrected"),  # a released version replaces it, as ever
    ],
)
def test_a_later_unreleased_version_never_displaces_the_held_release(store, later, stands):
    """The store holds one version of each result, so the rule batch mode applies over every
    version (adapter.core.labs.current_versions) is applied as versions arrive: a severe final
    result resent as preliminary with a normal value keeps interrupting; its finding is not
    withdrawn."""
    resources = resources_with_ids([recent_history([2000, 1900, 300])])
    patient = next(f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient")
    severe = [r for r in resources if r["resourceType"] == "Observation"][-1]
    intake = Intake(store)
    intake.receive([Arrival(r, "poll") for r in resources])
    worker = Worker(store, load_reference_data(), LocalBackend(), WorkerSettings(), ehr=None)
    worker.drain()
    created = [json.loads(e.body)["resource"] for e in store.effects("pending")]
    assert "anc-severe-neutropenia" in [r["code"]["coding"][1]["code"] for r in created]
    resend = {
        **severe,
        "status": later,
        "valueQuantity": {**severe["valueQuantity"], "value": 2500},
        "meta": {"versionId": "2", "lastUpdated": "2026-01-02T00:00:00.000Z"},
    }
    intake.receive([Arrival(resend, "poll")])
    worker.drain()
    assert store.resource("Observation", severe["id"])["status"] == stands
    latest = store.audit(patient)[-1]
    severe_now = any("anc-severe-neutropenia" in outcome for outcome in latest.outcome)
    assert severe_now is (stands == "final")
    assert not [e for e in store.effects("pending") if e.kind == "issue-update"]
