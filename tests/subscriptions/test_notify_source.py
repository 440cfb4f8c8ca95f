"""The notify source against an EHR that offers ``$events`` (sekmet does not: `responses`), on a
real SQLite state store: a gap is recovered through ``$events`` without a re-query; a replayed
notification has one effect; a focus on another server is never read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from adapter.ehr import FhirClient
from adapter.pipeline.intake import Intake
from adapter.pipeline.metrics import Metrics
from adapter.pipeline.notify import NotifyConfig, NotifySource, version_key
from adapter.store.sqlite import SqliteStore
from adapter.subscriptions.notification import parse
from adapter.subscriptions.resources import SubscriptionPlan

BASE = "http://ehr.test/fhir"
PLAN = SubscriptionPlan(
    "backport",
    "Observation",
    "http://127.0.0.1:8770/notify",
    criteria="Observation?code=http://loinc.org|751-8",
    topic="https://example.org/topic/anc",
    content="id-only",
)


def observation(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "meta": {"versionId": "1", "lastUpdated": f"2026-03-02T08:00:0{n}.000Z"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": f"Patient/p{n}"},
    }


def notification(kind: str, since: int, events: tuple[int, ...], base: str = BASE) -> bytes:
    import json

    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since)},
    ]
    for n in events:
        parameters.append(
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(n)},
                    {"name": "focus", "valueReference": {"reference": f"{base}/Observation/o{n}"}},
                ],
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": {"resourceType": "Parameters", "parameter": parameters}}],
    }
    return json.dumps(bundle).encode()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[NotifySource]:
    store = SqliteStore(tmp_path / "state.sqlite")
    store.bind_ehr(BASE)
    metrics = Metrics(store)
    made = NotifySource(
        Intake(store, metrics),
        store,
        lambda: FhirClient(BASE),
        metrics,
        NotifyConfig(plans=(PLAN,), manage=False, gap_grace_seconds=0),
    )
    try:
        yield made
    finally:
        made.close()
        store.close()


def _keys(source: NotifySource) -> set[str]:
    return {
        k
        for n in range(1, 6)
        if source.store.item(
            k := f"notify:Observation/o{n}/_history/1|{observation(n)['meta']['lastUpdated']}"
        )
    }


@responses.activate
def test_a_gap_is_recovered_through_events(source: NotifySource) -> None:
    for n in (1, 2, 3):
        responses.get(f"{BASE}/Observation/o{n}", json=observation(n))
    status = notification("query-event", 3, (2,))
    import json

    events_bundle = json.loads(status)
    responses.get(f"{BASE}/Subscription/s1/$events", json=events_bundle)

    first = source.accept(parse(notification("event-notification", 1, (1,))))
    assert (first.stored, first.missing, first.requery) == (1, 0, False)
    third = source.accept(parse(notification("event-notification", 3, (3,))))
    assert (third.stored, third.missing, third.requery) == (2, 1, False)  # o3, and o2 recovered
    assert _keys(source) == {
        f"notify:Observation/o{n}/_history/1|2026-03-02T08:00:0{n}.000Z" for n in (1, 2, 3)
    }
    assert not source.requery_pending()
    sent = [c.request.url for c in responses.calls if "$events" in c.request.url]
    assert len(sent) == 1 and "eventsSinceNumber=2" in sent[0] and "eventsUntilNumber=2" in sent[0]
    assert source.events_supported is True


@responses.activate
def test_without_events_a_gap_asks_for_a_requery(source: NotifySource) -> None:
    for n in (1, 3):
        responses.get(f"{BASE}/Observation/o{n}", json=observation(n))
    responses.get(f"{BASE}/Subscription/s1/$events", status=404, json={})
    source.accept(parse(notification("event-notification", 1, (1,))))
    third = source.accept(parse(notification("event-notification", 3, (3,))))
    assert third.requery and third.missing == 1
    assert source.requery_pending()
    # the re-query: the plan's criteria from the watermark; what it finds goes to the inbox
    responses.get(
        f"{BASE}/Observation",
        json={
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": observation(n)} for n in (1, 2, 3)],
        },
    )
    assert source.requery() == 1  # o2: o1 and o3 were already in the inbox
    assert not source.requery_pending()
    assert source.store.watermark(f"notify:since:{PLAN.key}") == "2026-03-02T08:00:03.000Z"
    search = next(
        c.request for c in responses.calls if c.request.url.startswith(f"{BASE}/Observation?")
    )
    assert "code=http%3A%2F%2Floinc.org%7C751-8" in search.url


@responses.activate
def test_a_replay_has_one_effect_and_a_foreign_focus_is_not_read(source: NotifySource) -> None:
    responses.get(f"{BASE}/Observation/o1", json=observation(1))
    hook = parse(b"", resource_type="Observation", resource_id="o1")
    assert source.accept(hook).stored == 1
    assert source.accept(hook).stored == 0  # the same version again: no new item
    assert (
        version_key(observation(1)) == "notify:Observation/o1/_history/1|2026-03-02T08:00:01.000Z"
    )
    foreign = source.accept(
        parse(notification("event-notification", 2, (2,), base="http://elsewhere.test/fhir"))
    )
    assert foreign.requery and foreign.stored == 0
    assert not any("elsewhere" in c.request.url for c in responses.calls)


@responses.activate
def test_with_a_grace_a_late_event_cancels_its_recovery(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite")
    store.bind_ehr(BASE)
    metrics = Metrics(store)
    now = [1000.0]
    source = NotifySource(
        Intake(store, metrics),
        store,
        lambda: FhirClient(BASE),
        metrics,
        NotifyConfig(plans=(PLAN,), manage=False, gap_grace_seconds=5.0),
        clock=lambda: now[0],
    )
    try:
        for n in (1, 2, 3, 4, 5):
            responses.get(f"{BASE}/Observation/o{n}", json=observation(n))
        responses.get(f"{BASE}/Subscription/s1/$events", status=404, json={})
        source.accept(parse(notification("event-notification", 1, (1,))))
        third = source.accept(parse(notification("event-notification", 3, (3,))))
        assert third.missing == 1 and not third.requery  # 2 may still be on its way
        source.accept(parse(notification("event-notification", 2, (2,))))  # it was
        fifth = source.accept(parse(notification("event-notification", 5, (5,))))
        assert fifth.missing == 1  # 4 this time
        now[0] += 4.9
        assert source.recover_due() == 0 and not source.requery_pending()
        now[0] += 0.2
        assert source.recover_due() == 1  # only 4: nothing asked about 2
        assert source.requery_pending()  # sekmet-like: no $events, so a re-query
        assert [c.request.url for c in responses.calls if "$events" in c.request.url] == [
            f"{BASE}/Subscription/s1/$events?eventsSinceNumber=4&eventsUntilNumber=4"
        ]
        # what waits survives a restart of the source (it is in the state store)
        again = NotifySource(
            Intake(store, metrics),
            store,
            lambda: FhirClient(BASE),
            Metrics(store),
            NotifyConfig(plans=(PLAN,), manage=False, gap_grace_seconds=5.0),
            clock=lambda: now[0],
        )
        seventh = again.accept(parse(notification("event-notification", 7, (7,))))
        assert seventh.missing == 1  # 6: the mark (5) was kept
        again.close()
    finally:
        source.close()
        store.close()


@responses.activate
def test_status_reveals_the_last_events_lost(source: NotifySource) -> None:
    import json

    responses.get(f"{BASE}/Observation/o1", json=observation(1))
    source.accept(parse(notification("event-notification", 1, (1,))))
    status = json.loads(notification("query-status", 3, ()))["entry"][0]["resource"]
    responses.get(
        f"{BASE}/Subscription/s1/$status",
        json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": status}]},
    )
    responses.get(f"{BASE}/Subscription/s1/$events", status=404, json={})
    answer = source.check_status("s1")
    assert answer is not None and answer.missing == 2 and answer.requery  # 2 and 3
    assert source.requery_pending()
    exposition = source.metrics.exposition().decode()
    assert 'rems_adapter_notifications_total{kind="query-status"}' not in exposition
