"""The state store contract (adapter.store.base), run against every implementation."""

from __future__ import annotations

import threading

import pytest

from adapter.errors import EXIT_CONFIG, Kind
from adapter.store import (
    AuditRecord,
    ForeignStateError,
    NewEffect,
    NewItem,
    StateError,
    Store,
)
from adapter.store.base import (
    INBOX_DONE,
    INBOX_PARKED,
    INBOX_PENDING,
    OUTBOX_DEAD,
    OUTBOX_DONE,
    OUTBOX_PENDING,
)
from adapter.store.sql import SqlStore, migrations

T0 = 1_800_000_000.0


def item(key: str, patient: str | None = "Patient/1", source: str = "push") -> NewItem:
    return NewItem(key, source, patient, '{"resourceType":"Observation"}', T0)


def effect(key: str, patient: str | None = "Patient/1", kind: str = "fhir-write") -> NewEffect:
    return NewEffect(key, kind, patient, '{"x":1}', received_at=T0)


# ------------------------------------------------------------------ schema and binding


def test_a_new_store_has_the_newest_schema_and_reopening_applies_nothing_twice(open_store):
    store = open_store()
    newest = migrations()[-1][0]
    assert store.schema_version() == newest
    store.put_items([item("a")])
    again = open_store()
    assert again.schema_version() == newest
    assert again.item("a") is not None


def test_a_schema_newer_than_the_code_is_refused(open_store):
    store = open_store()
    assert isinstance(store, SqlStore)
    with store.transaction():
        store._set_meta("schema_version", "999")
    with pytest.raises(StateError, match="version 999"):
        open_store()


def test_the_state_binds_to_one_ehr(open_store):
    store = open_store()
    assert store.ehr_base() is None
    store.bind_ehr("http://127.0.0.1:1/fhir/")
    assert store.ehr_base() == "http://127.0.0.1:1/fhir"
    store.bind_ehr("http://127.0.0.1:1/fhir")  # the same EHR again: fine
    with pytest.raises(ForeignStateError) as caught:
        open_store().bind_ehr("http://127.0.0.1:2/fhir")
    assert caught.value.kind is Kind.CONFIGURATION
    assert caught.value.exit_code == EXIT_CONFIG
    assert "127.0.0.1:1/fhir" in str(caught.value)
    assert open_store().ehr_base() == "http://127.0.0.1:1/fhir"


def test_ping_answers(store: Store):
    store.ping()


# ------------------------------------------------------------------ inbox


def test_put_items_deduplicates_on_the_key_and_keeps_the_first(store: Store):
    assert store.put_items([item("k1"), item("k2")]) == [True, True]
    assert store.put_items([item("k1", patient="Patient/2"), item("k3")]) == [False, True]
    first = store.item("k1")
    assert first is not None and first.patient == "Patient/1" and first.state == INBOX_PENDING
    assert store.inbox_depth() == 3


def test_put_items_answers_a_key_repeated_in_one_call_as_one_item(store: Store):
    store.put_items([item("old")])
    answers = store.put_items(
        [item("n1"), item("old"), item("n1", patient="Patient/2"), item("n2")]
    )
    assert answers == [True, False, False, True]
    repeated = store.item("n1")
    assert repeated is not None and repeated.patient == "Patient/1"  # the first one was kept
    assert store.inbox_depth() == 3


def test_put_items_takes_many_items_in_arrival_order(store: Store):
    keys = [f"m{n:03d}" for n in range(150)]  # more than one statement's worth of rows
    answers = store.put_items([item(key, patient=None) for key in keys[:100]] + [item("m000")])
    assert answers == [True] * 100 + [False]
    assert store.put_items([item(key, patient=None) for key in keys]) == [False] * 100 + [True] * 50
    parked = store.parked_items(1000)
    assert [p.key for p in parked] == keys  # ids follow the order of arrival
    assert [p.id for p in parked] == sorted(p.id for p in parked)


def test_put_items_inside_a_transaction_is_part_of_it(store: Store):
    with pytest.raises(RuntimeError), store.transaction():
        assert store.put_items([item("t1"), item("t2")]) == [True, True]
        raise RuntimeError("rolled back")
    assert store.item("t1") is None and store.item("t2") is None


def test_put_items_is_durable_once_it_returns(open_store):
    open_store().put_items([item("k1")])
    assert open_store().item("k1") is not None


def test_items_without_a_patient_are_parked_until_assigned(store: Store):
    store.put_items([item("p1", patient=None), item("k1")])
    parked = store.parked_items()
    assert [p.key for p in parked] == ["p1"] and parked[0].state == INBOX_PARKED
    assert store.inbox_depth() == 1  # parked items are not counted
    store.assign_parked([parked[0].id], "Patient/9")
    assert store.parked_items() == []
    assigned = store.item("p1")
    assert assigned is not None and assigned.patient == "Patient/9"
    assert assigned.state == INBOX_PENDING
    assert store.inbox_depth() == 2


def test_a_claimed_patient_is_exclusive_until_its_lease_expires(store: Store):
    store.put_items([item("a1", "Patient/A"), item("b1", "Patient/B"), item("a2", "Patient/A")])
    first = store.claim_patient("w1", T0, 30)
    assert first is not None and first.patient == "Patient/A"
    assert [i.key for i in first.items] == ["a1", "a2"]
    second = store.claim_patient("w2", T0, 30)
    assert second is not None and second.patient == "Patient/B"
    assert store.claim_patient("w3", T0 + 1, 30) is None  # both leased
    # w1 dies: after its lease expires another worker takes the patient over
    late = store.claim_patient("w3", T0 + 31, 30)
    assert late is not None and late.patient == "Patient/A"


def test_completing_items_leaves_later_arrivals_pending(store: Store):
    store.put_items([item("a1", "Patient/A")])
    claim = store.claim_patient("w1", T0, 30)
    assert claim is not None
    store.put_items([item("a2", "Patient/A")])  # arrives while the patient is decided
    with store.transaction():
        store.complete_items(claim, [i.id for i in claim.items], T0 + 1)
        store.release_lease(claim.lease, "w1")
    done = store.item("a1")
    assert done is not None and done.state == INBOX_DONE
    assert store.inbox_depth() == 1
    again = store.claim_patient("w2", T0 + 2, 30)
    assert again is not None and [i.key for i in again.items] == ["a2"]


def test_claim_a_named_patient(store: Store):
    store.put_items([item("a1", "Patient/A"), item("b1", "Patient/B")])
    claim = store.claim_patient("w1", T0, 30, patient="Patient/B")
    assert claim is not None and claim.patient == "Patient/B"
    assert store.claim_patient("w2", T0, 30, patient="Patient/B") is None
    assert store.claim_patient("w2", T0, 30, patient="Patient/none") is None
    assert store.lease_holder("patient:Patient/none", T0) is None


def test_a_failed_transaction_leaves_nothing(store: Store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put_items([item("k1")])
        store.put_effects([effect("e1")], T0)
        raise RuntimeError("boom")
    assert store.item("k1") is None
    assert store.effect_by_key("e1") is None
    assert store.inbox_depth() == 0 and store.outbox_depth() == 0


def test_nested_transactions_commit_with_the_outer_one(store: Store):
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            store.put_items([item("k1")])
        raise RuntimeError("outer fails")
    assert store.item("k1") is None
    with store.transaction(), store.transaction():
        store.put_items([item("k2")])
    assert store.item("k2") is not None


def test_concurrent_claims_never_share_a_patient(open_store):
    seed = open_store()
    patients = [f"Patient/{n}" for n in range(40)]
    seed.put_items([item(f"k{n}", patient) for n, patient in enumerate(patients)])
    stores = [open_store() for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in stores]

    def work(index: int) -> None:
        store = stores[index]
        for _ in range(40):
            claim = store.claim_patient(f"w{index}", T0, 300)
            if claim is None:
                return
            claimed[index].append(claim.patient)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [p for part in claimed for p in part]
    assert sorted(everything) == sorted(patients)  # each exactly once


# ------------------------------------------------------------------ leases


def test_leases_expire_and_renew(store: Store):
    assert store.acquire_lease("poll", "a", T0, 10)
    assert not store.acquire_lease("poll", "b", T0 + 5, 10)
    assert store.acquire_lease("poll", "a", T0 + 5, 10)  # renewal: now until T0 + 15
    assert not store.acquire_lease("poll", "b", T0 + 14, 10)
    assert store.lease_holder("poll", T0 + 14) == "a"
    assert store.acquire_lease("poll", "b", T0 + 15, 10)
    store.release_lease("poll", "a")  # not a's any more: nothing happens
    assert store.lease_holder("poll", T0 + 16) == "b"
    store.release_lease("poll", "b")
    assert store.lease_holder("poll", T0 + 16) is None


# ------------------------------------------------------------------ outbox


def test_put_effects_deduplicates(store: Store):
    assert store.put_effects([effect("e1"), effect("e2", "Patient/2")], T0) == [True, True]
    assert store.put_effects([effect("e1")], T0 + 1) == [False]
    assert store.outbox_depth() == 2
    held = store.effect_by_key("e1")
    assert held is not None and held.state == OUTBOX_PENDING and held.attempts == 0
    assert held.received_at == T0 and held.created_at == T0


def test_effects_of_a_patient_run_in_order_and_others_in_parallel(store: Store):
    store.put_effects([effect("a1", "Patient/A"), effect("a2", "Patient/A")], T0)
    store.put_effects([effect("b1", "Patient/B")], T0)
    claimed = store.claim_effects("w1", T0, 30, 10)
    assert [e.key for e in claimed] == ["a1", "b1"]  # a2 waits behind a1
    assert store.claim_effects("w2", T0, 30, 10) == []  # leased, and a2 still behind a1
    store.complete_effect(claimed[0].id, T0 + 1, '{"id":"x"}')
    nxt = store.claim_effects("w2", T0 + 1, 30, 10)
    assert [e.key for e in nxt] == ["a2"]
    done = store.effect(claimed[0].id)
    assert done is not None and done.state == OUTBOX_DONE and done.result == '{"id":"x"}'
    assert done.done_at == T0 + 1


def test_a_retried_effect_waits_for_its_time_and_keeps_its_error(store: Store):
    store.put_effects([effect("e1")], T0)
    [claimed] = store.claim_effects("w1", T0, 30, 10)
    store.retry_effect(claimed.id, "EHR answered 503", T0 + 8)
    assert store.claim_effects("w1", T0 + 7, 30, 10) == []
    [again] = store.claim_effects("w2", T0 + 8, 30, 10)
    assert again.attempts == 1 and again.last_error == "EHR answered 503"
    assert store.outbox_depth() == 1


def test_an_abandoned_effect_is_claimed_again_after_its_lease(store: Store):
    store.put_effects([effect("e1")], T0)
    [first] = store.claim_effects("w1", T0, 30, 10)
    assert not first.reclaimed
    assert store.claim_effects("w2", T0 + 29, 30, 10) == []
    [again] = store.claim_effects("w2", T0 + 30, 30, 10)
    assert again.key == "e1" and again.reclaimed  # w1 may have performed it before dying
    store.retry_effect(again.id, "503", T0 + 31)
    [third] = store.claim_effects("w3", T0 + 31, 30, 10)
    assert not third.reclaimed and third.attempts == 1


def test_relaxed_durability_is_per_thread_and_keeps_working(store: Store):
    import threading

    def background() -> None:
        store.relax_durability_for_this_thread()
        store.put_effects([effect("bg")], T0)

    thread = threading.Thread(target=background)
    thread.start()
    thread.join(30)
    store.put_items([item("fg")])
    assert store.effect_by_key("bg") is not None and store.item("fg") is not None


def test_dead_letters_are_listed_replayed_and_do_not_block_their_patient(store: Store):
    store.put_effects([effect("a1", "Patient/A"), effect("a2", "Patient/A")], T0)
    [first] = store.claim_effects("w1", T0, 30, 10)
    store.dead_letter(first.id, "EHR refused (HTTP 422)", T0 + 1)
    assert store.dead_letters() == 1 and store.outbox_depth() == 1
    [dead] = store.effects(OUTBOX_DEAD)
    assert dead.key == "a1" and dead.last_error == "EHR refused (HTTP 422)"
    assert dead.attempts == 1
    assert [e.key for e in store.claim_effects("w1", T0 + 1, 30, 10)] == ["a2"]
    assert store.replay_effect(first.id, T0 + 2)
    assert not store.replay_effect(first.id, T0 + 2)  # pending now, not dead
    replayed = store.effect(first.id)
    assert replayed is not None and replayed.state == OUTBOX_PENDING and replayed.attempts == 0
    assert store.dead_letters() == 0 and store.outbox_depth() == 2
    assert store.effect(10_000) is None
    assert [e.key for e in store.effects(OUTBOX_PENDING, after=first.id)] == ["a2"]


def test_concurrent_effect_claims_never_share_an_effect(open_store):
    seed = open_store()
    seed.put_effects([effect(f"e{n}", f"Patient/{n}") for n in range(60)], T0)
    stores = [open_store() for _ in range(3)]
    claimed: list[list[str]] = [[] for _ in stores]

    def work(index: int) -> None:
        for _ in range(60):
            batch = stores[index].claim_effects(f"w{index}", T0, 300, 5)
            if not batch:
                return
            claimed[index].extend(e.key for e in batch)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [k for part in claimed for k in part]
    assert sorted(everything) == sorted(f"e{n}" for n in range(60))


# ------------------------------------------------------------------ resources


def _obs(rid: str, version: str, patient: str = "Patient/1") -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"versionId": version, "lastUpdated": "2026-01-01T00:00:00.123+00:00"},
        "subject": {"reference": patient},
    }


def test_resources_are_kept_per_patient_and_replaced_by_type_and_id(store: Store):
    store.upsert_resource(_obs("o1", "1"), "Patient/1")
    store.upsert_resource(_obs("o2", "1", "Patient/2"), "Patient/2")
    store.upsert_resource(_obs("o1", "2"), "Patient/1")
    assert store.held_version("Observation", "o1") == ("2", "2026-01-01T00:00:00.123+00:00")
    assert [r["id"] for r in store.patient_resources("Patient/1")] == ["o1"]
    assert store.resource_count() == 2 and store.resource_count("Observation") == 2
    assert store.resource("Observation", "missing") is None
    store.delete_resource("Observation", "o2")
    assert store.resource_count() == 1


def test_our_own_edit_reads_as_the_version_it_was_made_from(store: Store):
    dispense = {"resourceType": "MedicationDispense", "id": "d1", "meta": {"versionId": "5"}}
    store.upsert_resource(dispense, "Patient/1", None, "4")
    [held] = store.patient_resources("Patient/1")
    assert held["meta"]["versionId"] == "4"
    assert store.base_version("MedicationDispense", "d1") == "4"
    assert store.resource("MedicationDispense", "d1") == dispense


def test_decision_identifiers_are_found(store: Store):
    issue = {"resourceType": "DetectedIssue", "id": "i1"}
    store.upsert_resource(issue, "Patient/1", "abc")
    assert store.has_identifier("abc") and not store.has_identifier("abd")


# ------------------------------------------------------------------ patients, watermarks, audit


def test_patient_state_and_rechecks(store: Store):
    assert store.patient_state("Patient/1") is None
    store.set_patient_state("Patient/1", {"hydrated": True}, T0)
    store.set_recheck("Patient/2", "2026-03-01")
    store.set_recheck("Patient/3", "2026-03-05")
    assert store.patient_state("Patient/1") == {"hydrated": True}
    assert store.due_rechecks("2026-03-01") == ["Patient/2"]
    assert store.due_rechecks("2026-03-05") == ["Patient/2", "Patient/3"]
    store.set_recheck("Patient/2", None)
    assert store.due_rechecks("2026-03-05") == ["Patient/3"]
    store.set_patient_state("Patient/3", {"hydrated": False}, T0)  # keeps its recheck
    assert store.due_rechecks("2026-03-05") == ["Patient/3"]
    assert store.patients() == ["Patient/1", "Patient/2", "Patient/3"]


def test_watermarks(store: Store):
    assert store.watermark("q") is None
    store.set_watermark("q", "2026-01-01T00:00:00.1+00:00")
    store.set_watermark("q", "2026-01-02T00:00:00.1+00:00")
    assert store.watermark("q") == "2026-01-02T00:00:00.1+00:00"


def test_audit_records_read_back_in_order(store: Store):
    first = AuditRecord(
        patient="Patient/1",
        at=T0,
        backend="local",
        rules_version="0.1.0",
        mappings_version="m1",
        inputs=("Observation/o1/_history/2",),
        outcome=("anc-mild-neutropenia:abc",),
        extra={"source": "push"},
    )
    second = AuditRecord("Patient/1", T0 + 1, "rems", "0.1.0", "m1", (), ("no-finding",))
    store.append_audit(first)
    store.append_audit(AuditRecord("Patient/2", T0, "local", "0.1.0", "m1", (), ()))
    store.append_audit(second)
    records = store.audit("Patient/1")
    assert [r.at for r in records] == [T0, T0 + 1]
    assert records[0].inputs == first.inputs and records[0].outcome == first.outcome
    assert records[0].extra == {"source": "push"} and records[0].id is not None
    assert records[1].backend == "rems"
    assert store.audit("Patient/none") == []


def test_depths_count_the_whole_store_shared_by_all_holders(open_store):
    one, two = open_store(), open_store()
    one.put_items([item("k1", "Patient/A")])
    two.put_items([item("k2", "Patient/B")])
    one.put_effects([effect("e1")], T0)
    assert two.inbox_depth() == 2 and one.outbox_depth() == 1
    assert INBOX_PENDING != INBOX_DONE
