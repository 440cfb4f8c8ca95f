"""The keeper's HTTP edges that stock sekmet cannot show: a server offering $events, and servers
answering $status / $events with something unusable (unit tests of the client, `responses`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import responses

from adapter.ehr import FhirClient, FhirResponseError, FhirServerError
from adapter.ehr.subscriptions import SubscriptionKeeper
from adapter.subscriptions.resources import TAG_SYSTEM, SubscriptionPlan, subscription

BASE = "http://ehr.test/fhir"
PLAN = SubscriptionPlan(
    "backport",
    "Observation",
    "http://127.0.0.1:8770/notify",
    criteria="Observation?code=http://loinc.org|751-8",
    topic="https://example.org/topic/anc",
    content="id-only",
)


def _status(kind: str, since: int, events: tuple[int, ...] = ()) -> dict[str, Any]:
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
                    {"name": "focus", "valueReference": {"reference": f"Observation/o{n}"}},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": parameters}


@pytest.fixture
def keeper() -> SubscriptionKeeper:
    return SubscriptionKeeper(FhirClient(BASE), [PLAN])


@responses.activate
def test_events_where_the_server_offers_it(keeper: SubscriptionKeeper) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": _status("query-event", 5, (3, 4))}],
    }
    responses.get(f"{BASE}/Subscription/s1/$events", json=bundle)
    answer = keeper.events("s1", 3, 4)
    assert answer is not None and answer.numbers == (3, 4)
    assert [e.focus.relative for e in answer.events if e.focus] == [
        "Observation/o3",
        "Observation/o4",
    ]
    assert keeper.events_supported is True
    sent = responses.calls[0].request
    assert "eventsSinceNumber=3" in sent.url and "eventsUntilNumber=4" in sent.url


@pytest.mark.parametrize("status", [400, 404, 405, 501])
@responses.activate
def test_a_server_without_events_is_remembered(keeper: SubscriptionKeeper, status: int) -> None:
    responses.get(f"{BASE}/Subscription/s1/$events", status=status, json={})
    assert keeper.events("s1", 1, 2) is None
    assert keeper.events("s1", 3, 4) is None
    assert len(responses.calls) == 1  # not asked again
    assert keeper.events_supported is False


@responses.activate
def test_a_server_failing_events_otherwise_is_an_upstream_error(keeper: SubscriptionKeeper) -> None:
    responses.get(f"{BASE}/Subscription/s1/$events", status=422, json={})
    with pytest.raises(FhirServerError):
        keeper.events("s1", 1, 2)


@responses.activate
def test_an_unusable_status_answer_is_an_upstream_error(keeper: SubscriptionKeeper) -> None:
    broken = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "type", "valueCode": "nonsense"}],
                }
            }
        ],
    }
    responses.get(f"{BASE}/Subscription/s1/$status", json=broken)
    with pytest.raises(FhirResponseError) as caught:
        keeper.status("s1")
    assert caught.value.kind.value == "upstream"
    responses.replace(
        responses.GET,
        f"{BASE}/Subscription/s1/$status",
        json={"resourceType": "Bundle", "type": "searchset"},
    )
    with pytest.raises(FhirResponseError):
        keeper.status("s1")


@responses.activate
def test_a_rotated_secret_updates_the_subscription_in_place() -> None:
    old = replace(PLAN, headers=("Authorization: Bearer one",))
    new = replace(PLAN, headers=("Authorization: Bearer two",))
    assert old.key == new.key  # the tag does not depend on the secret's value
    existing = {**subscription(old, "active"), "id": "s1"}
    responses.get(
        f"{BASE}/Subscription",
        json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": existing}]},
    )
    responses.put(f"{BASE}/Subscription/s1", json={**subscription(new), "id": "s1"})
    (kept,) = SubscriptionKeeper(FhirClient(BASE), [new]).ensure()
    assert kept.action == "updated"
    sent = json.loads(responses.calls[1].request.body)
    assert sent["channel"]["header"] == ["Authorization: Bearer two"]
    assert sent["meta"]["tag"][0]["system"] == TAG_SYSTEM


@responses.activate
def test_someone_elses_subscription_on_the_same_endpoint_is_left_alone() -> None:
    other = {**subscription(PLAN, "error"), "id": "theirs", "meta": {"tag": []}}
    responses.get(
        f"{BASE}/Subscription",
        json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": other}]},
    )
    responses.post(f"{BASE}/Subscription", json={**subscription(PLAN), "id": "ours"}, status=201)
    (kept,) = SubscriptionKeeper(FhirClient(BASE), [PLAN]).ensure()
    assert (kept.action, kept.subscription_id) == ("created", "ours")
    assert [c.request.method for c in responses.calls] == ["GET", "POST"]
