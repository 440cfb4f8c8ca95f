"""State that cannot mislead, and write-back on a STOCK sekmet-fhir (issue 9 item 3, issue 11
item 4, interfaces.md section 4).

The stock server has no DetectedIssue search parameters at all (no search-parameter patch): the
adapter reads from its CapabilityStatement that it allows client-assigned ids and writes
``PUT DetectedIssue/{deterministic id}``; the conditional-create mode runs on the server that
does declare DetectedIssue `identifier` search (the patched one), since a conditional create on
the identifier needs that search.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.cli import main
from adapter.ehr import FhirClient
from adapter.watch.state import StateStore
from adapter.watch.writeback import (
    CONDITIONAL,
    PUT,
    EhrFeatures,
    ehr_features,
    ensure_author_device,
)
from tests.fhir_server import SekmetServer
from tests.watch.conftest import AS_OF, DECISION_SYSTEM, Harness, finding, put, read, seed
from tests.watch.test_watch_integration import last_result, mild, patient_of

pytestmark = pytest.mark.integration


def ours(server: SekmetServer, patient: str | None = None) -> list[dict[str, Any]]:
    """Our DetectedIssues on a server that cannot search them: read all, filter here."""
    response = requests.get(
        f"{server.base_url}/DetectedIssue", params={"_count": "500"}, timeout=10
    )
    assert response.status_code == 200, response.text[:300]
    out = []
    for entry in response.json().get("entry", []):
        issue = entry["resource"]
        if not any(i.get("system") == DECISION_SYSTEM for i in issue.get("identifier", [])):
            continue
        if patient is None or issue["patient"]["reference"] == patient:
            out.append(issue)
    return out


def argv(server: SekmetServer, state: Path, *more: str) -> list[str]:
    return [
        "watch",
        "--fhir-base",
        server.base_url,
        "--state",
        str(state),
        "--once",
        "--as-of",
        AS_OF.isoformat(),
        *more,
    ]


def test_the_stock_server_is_stock_and_allows_client_ids(stock_server: SekmetServer) -> None:
    search = requests.get(
        f"{stock_server.base_url}/DetectedIssue",
        params={"identifier": f"{DECISION_SYSTEM}|x"},
        headers={"Prefer": "handling=strict"},
        timeout=10,
    )
    assert search.status_code >= 400  # no DetectedIssue identifier search: not patched
    with FhirClient(stock_server.base_url) as client:
        assert ehr_features(client.capabilities()) == EhrFeatures(PUT, False)


def test_stock_server_put_with_deterministic_ids_exactly_once(
    stock_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(stock_server, [history])
    patient = patient_of(ids, history)
    state = tmp_path / "state.sqlite"
    assert main(argv(stock_server, state)) == 0
    first = {i["id"]: i for i in ours(stock_server, patient)}
    assert sorted(finding(i) for i in first.values()) == [
        "anc-mild-neutropenia",
        "dispense-authorized",
    ]
    for issue in first.values():  # the deterministic id: derived from the decision identifier
        assert issue["id"] == "ra-" + issue["identifier"][0]["value"]
        assert issue["author"]["reference"] == "Device/rems-adapter"
    device = read(stock_server, "Device/rems-adapter")

    assert main(argv(stock_server, state)) == 0  # a replay with the state
    assert main(argv(stock_server, tmp_path / "lost.sqlite")) == 0  # and with the state lost
    again = {i["id"]: i for i in ours(stock_server, patient)}
    assert again.keys() == first.keys()
    assert {k: i["meta"]["versionId"] for k, i in again.items()} == {
        k: i["meta"]["versionId"] for k, i in first.items()
    }  # never rewritten, never duplicated
    assert read(stock_server, "Device/rems-adapter")["meta"] == device["meta"]  # created once


def test_stock_server_withdrawal_then_replay(stock_server: SekmetServer, tmp_path: Path) -> None:
    history = mild()
    ids = seed(stock_server, [history])
    patient = patient_of(ids, history)
    harness = Harness(stock_server, tmp_path / "state.sqlite", discover=True)
    harness.cycle()
    before = {i["id"] for i in ours(stock_server, patient)}
    result = read(stock_server, last_result(ids, history))
    result["status"] = "entered-in-error"
    put(stock_server, result)
    report = harness.cycle()
    assert report.withdrawn == 2
    now = {i["id"]: i for i in ours(stock_server, patient)}
    assert {now[k]["status"] for k in before} == {"entered-in-error"}
    harness.close()
    # replayed from scratch: the withdrawn decisions are found, not written over as final
    replay = Harness(stock_server, tmp_path / "lost.sqlite", discover=True)
    replay.cycle()
    replay.close()
    after = {i["id"]: i for i in ours(stock_server, patient)}
    assert {after[k]["status"] for k in before} == {"entered-in-error"}
    assert len(after) == len(now)


def test_conditional_create_mode_exactly_once_and_withdrawal(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    mode = EhrFeatures(CONDITIONAL, True)
    harness = Harness(watch_server, tmp_path / "state.sqlite", features=mode)
    assert harness.cycle().issues_created == 2
    first = {i["id"] for i in ours(watch_server, patient)}
    assert not any(k.startswith("ra-") for k in first)  # server-assigned ids
    harness.close()
    replay = Harness(watch_server, tmp_path / "lost.sqlite", features=mode)
    # the lost state polls our DetectedIssues back: recognised, nothing created again
    assert replay.cycle().issues_created == 0
    assert {i["id"] for i in ours(watch_server, patient)} == first
    result = read(watch_server, last_result(ids, history))
    result["status"] = "entered-in-error"
    put(watch_server, result)
    assert replay.cycle().withdrawn == 2
    replay.close()
    issues = {i["id"]: i for i in ours(watch_server, patient)}
    assert first <= issues.keys()  # the withdrawn ones updated in place, not duplicated
    assert {issues[k]["status"] for k in first} == {"entered-in-error"}
    assert all(i["status"] == "final" for k, i in issues.items() if k not in first)


def test_author_device_without_client_ids_is_created_once_by_identifier(
    stock_server: SekmetServer,
) -> None:
    with FhirClient(stock_server.base_url) as client:
        first = ensure_author_device(client, "1.0", CONDITIONAL)
        second = ensure_author_device(client, "1.0", CONDITIONAL)
    assert first == second and first != "Device/rems-adapter"
    devices = requests.get(f"{stock_server.base_url}/Device", timeout=10).json()
    assert len(devices.get("entry", [])) == 1


def test_another_ehr_is_refused_with_exit_3(
    stock_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.sqlite"
    assert main(argv(stock_server, state)) == 0
    capsys.readouterr()
    other = ["watch", "--fhir-base", "http://127.0.0.1:9/other/fhir", "--state", str(state)]
    assert main([*other, "--once"]) == 3
    err = capsys.readouterr().err
    assert "belongs to the EHR at" in err and stock_server.base_url in err and str(state) in err
    assert "Traceback" not in err
    assert main(argv(stock_server, state)) == 0  # its own EHR still works


@pytest.mark.parametrize("damage", ["garbage", "row"])
def test_a_corrupt_state_file_gives_exit_5_naming_it(
    stock_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    seed(stock_server, [mild()])
    state = tmp_path / "state.sqlite"
    if damage == "garbage":
        state.write_bytes(b"this is not a database\n" * 100)
    else:
        assert main(argv(stock_server, state)) == 0
        db = sqlite3.connect(state)
        db.execute("UPDATE resources SET body = x'00ff' WHERE type = 'Observation'")
        db.execute(
            "INSERT INTO dirty SELECT DISTINCT patient FROM resources WHERE patient NOT NULL"
        )
        db.commit()
        db.close()
    capsys.readouterr()
    assert main(argv(stock_server, state)) == 5
    err = capsys.readouterr().err
    assert str(state) in err and "Traceback" not in err


def test_changed_settings_redecide_every_patient(
    stock_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(stock_server, [mild(), mild()])
    state = tmp_path / "state.sqlite"
    assert main(argv(stock_server, state)) == 0
    assert main(argv(stock_server, state)) == 0
    out = capsys.readouterr().out
    assert "0 patients decided" in out.splitlines()[-1]
    assert main(argv(stock_server, state, "--no-derive-anc")) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "2 patients decided" in last and "every patient re-decided" in last
    assert main(argv(stock_server, state, "--no-derive-anc")) == 0
    assert "0 patients decided" in capsys.readouterr().out.splitlines()[-1]


def test_deleted_or_changed_detected_issues_are_restored(
    stock_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(stock_server, [history])
    patient = patient_of(ids, history)
    state = tmp_path / "state.sqlite"
    harness = Harness(stock_server, state, discover=True)
    harness.cycle()
    decided = {i["id"]: i for i in ours(stock_server, patient)}
    gone, changed = sorted(decided)
    requests.delete(f"{stock_server.base_url}/DetectedIssue/{gone}", timeout=10)
    edited = {**decided[changed], "status": "entered-in-error", "detail": "edited by hand"}
    edited["reference"] = "https://example.org/kept"  # not ours: kept as the server holds it
    put(stock_server, edited)

    # the edit arrives with the poll: its patient is decided, and reconciled
    report = harness.cycle()
    assert report.restored == 2
    now = {i["id"]: i for i in ours(stock_server, patient)}
    assert now.keys() == decided.keys()
    for key in decided:
        for element in ("status", "detail", "code", "evidence", "identifier"):
            assert now[key].get(element) == decided[key].get(element), (key, element)
    assert now[changed]["reference"] == "https://example.org/kept"
    assert harness.cycle().restored == 0  # nothing to restore: nothing written
    harness.close()

    # deleted while no poll can see it: `watch --reconcile` restores it
    requests.delete(f"{stock_server.base_url}/DetectedIssue/{gone}", timeout=10)
    assert main(argv(stock_server, state)) == 0
    assert gone not in {i["id"] for i in ours(stock_server, patient)}
    assert main(argv(stock_server, state, "--reconcile")) == 0
    assert gone in {i["id"] for i in ours(stock_server, patient)}
    assert read(stock_server, f"DetectedIssue/{gone}")["status"] == "final"


def test_state_records_its_ehr(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    issue = {"resourceType": "DetectedIssue", "id": "ra-1", "status": "final"}
    with store.step():  # as a state file from before the decisions record holds it
        store.upsert(issue, "Patient/p", "1")
    assert store.bind("http://127.0.0.1:1/fhir/", "f1") is False
    assert store.base_url() == "http://127.0.0.1:1/fhir"
    assert store.bind("http://127.0.0.1:1/fhir", "f1") is False
    assert store.bind("http://127.0.0.1:1/fhir", "f2") is True
    assert store.dirty() == ["Patient/p"]  # a changed fingerprint: every patient again
    assert store.decisions_of(["Patient/p"]) == [("1", "Patient/p", issue)]
    store.close()


def test_per_patient_mode_on_a_stock_server(stock_server: SekmetServer, tmp_path: Path) -> None:
    watched, other = mild(), mild()
    ids = seed(stock_server, [watched, other])
    patient = patient_of(ids, watched)
    harness = Harness(stock_server, tmp_path / "state.sqlite", discover=True, patients=(patient,))
    report = harness.cycle()
    harness.close()
    assert report.write_errors == 0
    assert sorted(finding(i) for i in ours(stock_server, patient)) == [
        "anc-mild-neutropenia",
        "dispense-authorized",
    ]
    assert ours(stock_server, patient_of(ids, other)) == []


def test_state_errors_are_in_the_error_tree() -> None:
    from adapter.errors import EXIT_CONFIG, EXIT_UPSTREAM, AdapterError, Kind
    from adapter.watch.state import ForeignStateError, StateError

    assert issubclass(StateError, AdapterError) and issubclass(ForeignStateError, AdapterError)
    assert StateError("x").kind is Kind.STATE and StateError("x").exit_code == EXIT_UPSTREAM
    assert ForeignStateError("x").exit_code == EXIT_CONFIG


def test_reconcile_in_conditional_create_mode(watch_server: SekmetServer, tmp_path: Path) -> None:
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    mode = EhrFeatures(CONDITIONAL, True)
    state = tmp_path / "state.sqlite"
    harness = Harness(watch_server, state, features=mode)
    harness.cycle()
    harness.close()
    before = {i["identifier"][0]["value"]: i["id"] for i in ours(watch_server, patient)}
    gone = sorted(before.values())[0]
    requests.delete(f"{watch_server.base_url}/DetectedIssue/{gone}", timeout=10)
    again = Harness(watch_server, state, features=mode, reconcile_all=True)
    assert again.cycle().restored == 1
    again.close()
    after = {i["identifier"][0]["value"]: i["id"] for i in ours(watch_server, patient)}
    assert after.keys() == before.keys()  # the same decisions, each once
    assert gone not in after.values()  # the deleted one created again, under a new server id
    replay = Harness(watch_server, state, features=mode, reconcile_all=True)
    assert replay.cycle().restored == 0
    replay.close()


def test_link_dispense_through_the_pipeline_on_a_stock_server(
    stock_server: SekmetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`watch.link_dispense`: after the dispense decision is on the EHR, the outbox points the
    MedicationDispense at it (If-Match); a replay neither links again nor decides again."""
    history = mild()
    ids = seed(stock_server, [history])
    patient = patient_of(ids, history)
    dispense_ref = ids[history.urns["MedicationDispense"][0]]
    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("REMS_ADAPTER_WATCH_LINK_DISPENSE", "true")

    assert main(argv(stock_server, state)) == 0
    (decision,) = [i for i in ours(stock_server, patient) if finding(i) == "dispense-authorized"]
    dispense = read(stock_server, dispense_ref)
    assert dispense["detectedIssue"] == [{"reference": f"DetectedIssue/{decision['id']}"}]
    assert dispense["meta"]["versionId"] == "2"

    # our own edit comes back from the poll: not new input, nothing decided or written again
    assert main(argv(stock_server, state)) == 0
    assert read(stock_server, dispense_ref)["meta"]["versionId"] == "2"
    assert len(ours(stock_server, patient)) == 2
    assert read(stock_server, f"DetectedIssue/{decision['id']}")["meta"] == decision["meta"]


def test_without_link_dispense_the_dispense_is_left_alone(
    stock_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(stock_server, [history])
    dispense_ref = ids[history.urns["MedicationDispense"][0]]
    assert main(argv(stock_server, tmp_path / "state.sqlite")) == 0
    dispense = read(stock_server, dispense_ref)
    assert "detectedIssue" not in dispense and dispense["meta"]["versionId"] == "1"


def test_a_dispense_link_after_a_412_rereads_keeps_others_links_and_never_duplicates(
    stock_server: SekmetServer, tmp_path: Path
) -> None:
    from adapter.pipeline.effects import dispense_link, issue_create
    from adapter.pipeline.ehr_sink import EhrSink
    from adapter.pipeline.outbox import Outbox
    from adapter.store import open_store

    history = mild()
    ids = seed(stock_server, [history])
    patient = patient_of(ids, history)
    dispense_ref = ids[history.urns["MedicationDispense"][0]]
    store = open_store(str(tmp_path / "pipeline.sqlite"))
    stale = read(stock_server, dispense_ref)
    store.upsert_resource(stale, patient)  # the version the decision was made on
    # someone else edits the dispense meanwhile (the held copy is now stale: a 412 first)
    theirs = {"reference": "DetectedIssue/someone-elses"}
    put(stock_server, {**stale, "detectedIssue": [theirs]})
    issue = {"resourceType": "DetectedIssue", "id": "ra-x", "status": "final"}
    store.put_effects(
        [issue_create(patient, issue, "x", None), dispense_link(patient, dispense_ref, "x")], 0
    )
    created = store.effect_by_key("issue-create:x")
    assert created is not None
    store.complete_effect(created.id, 0, '{"id": "ra-x", "created": true}')
    with FhirClient(stock_server.base_url) as client:
        outbox = Outbox(store, {"dispense-link": EhrSink(client, store=store)})
        assert outbox.drain() == 1
        linked = read(stock_server, dispense_ref)
        assert linked["detectedIssue"] == [theirs, {"reference": "DetectedIssue/ra-x"}]
        assert linked["meta"]["versionId"] == "3"
        # held as our own edit of version 2: never new input
        assert store.base_version("MedicationDispense", dispense_ref.split("/")[1]) == "2"
        # performed again (a crash before it was recorded): already linked, nothing written
        link = store.effect_by_key(f"dispense-link:x:{dispense_ref}")
        assert link is not None
        EhrSink(client, store=store).perform(link)
        assert read(stock_server, dispense_ref)["meta"]["versionId"] == "3"
    store.close()
