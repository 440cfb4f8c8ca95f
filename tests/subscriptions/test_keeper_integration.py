"""The keeper against stock sekmet-fhir 0.1.1: the Subscriptions it makes really notify, in the
shapes the translator reads; one the server disabled is asked for again, then replaced."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from adapter.ehr import FhirClient
from adapter.ehr.subscriptions import SubscriptionKeeper
from adapter.subscriptions.notification import Backport, RestHook, parse
from adapter.subscriptions.resources import SubscriptionPlan, TopicPlan
from tests.fhir_server import SekmetServer
from tests.subscriptions.receiver import Receiver, wait_until

pytestmark = pytest.mark.integration

ANC = "Observation?code=http://loinc.org|751-8"
TOPIC = TopicPlan(
    url="https://rems-adapter.github.io/fhir/SubscriptionTopic/observation",
    resource_type="Observation",
    basic_id="rems-adapter-observation-topic",
)
SECRET = "Authorization: Bearer s3cret-for-tests"


def observation(patient: str = "p1", value: int = 400) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-03-02T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "/uL", "system": "http://unitsofmeasure.org"},
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def client(stock_sekmet: SekmetServer) -> Iterator[FhirClient]:
    with FhirClient(stock_sekmet.base_url) as c:
        yield c


def _status(client: FhirClient, sid: str) -> str:
    return str(client.read("Subscription", sid)["status"])


def test_rest_hook_with_payload_puts_the_resource_with_the_header(
    client: FhirClient, receiver: Receiver
) -> None:
    plan = SubscriptionPlan(
        "rest-hook", "Observation", f"{receiver.url}/notify", criteria=ANC, headers=(SECRET,)
    )
    keeper = SubscriptionKeeper(client, [plan])
    (kept,) = keeper.ensure()
    assert kept.action == "created"
    wait_until(lambda: _status(client, kept.subscription_id) == "active", what="active")
    assert keeper.ensure()[0].action == "kept"  # found again by its tag, not duplicated

    created = client.create(observation())
    (hit,) = receiver.wait_for(lambda r: r.path.endswith(f"/Observation/{created['id']}"))
    assert hit.method == "PUT" and hit.path == f"/notify/Observation/{created['id']}"
    assert hit.headers.get("Authorization") == "Bearer s3cret-for-tests"
    notification = parse(hit.body, resource_type="Observation", resource_id=created["id"])
    assert isinstance(notification, RestHook) and notification.resource is not None
    assert notification.resource["id"] == created["id"]


def test_rest_hook_without_payload_is_an_empty_post(client: FhirClient, receiver: Receiver) -> None:
    plan = SubscriptionPlan(
        "rest-hook", "Observation", f"{receiver.url}/notify", criteria=ANC, content="empty"
    )
    (kept,) = SubscriptionKeeper(client, [plan]).ensure()
    wait_until(lambda: _status(client, kept.subscription_id) == "active", what="active")
    client.create(observation("p2"))
    (hit,) = receiver.wait_for(lambda r: r.method == "POST")
    assert hit.path == "/notify" and hit.body == b""
    assert parse(hit.body) == RestHook()


def test_backport_topic_handshake_event_heartbeat_and_status(
    client: FhirClient, receiver: Receiver
) -> None:
    plan = SubscriptionPlan(
        "backport",
        "Observation",
        f"{receiver.url}/notify",
        criteria=ANC,
        topic=TOPIC.url,
        content="id-only",
        headers=(SECRET,),
        heartbeat_seconds=1,
    )
    keeper = SubscriptionKeeper(client, [plan], [TOPIC])
    assert keeper.ensure_topics() == [TOPIC.url]
    assert keeper.ensure_topics() == []  # already there
    (kept,) = keeper.ensure()
    (handshake,) = receiver.wait_for(lambda r: b'"handshake"' in r.body)
    first = parse(handshake.body)
    assert isinstance(first, Backport) and first.type == "handshake"
    assert first.subscription_id == kept.subscription_id
    assert handshake.headers.get("Authorization") == "Bearer s3cret-for-tests"
    wait_until(lambda: _status(client, kept.subscription_id) == "active", what="active")

    created = client.create(observation("p3"))
    (hit,) = receiver.wait_for(lambda r: b'"event-notification"' in r.body)
    event = parse(hit.body)
    assert isinstance(event, Backport) and event.payload == "id-only"
    assert event.events_since_start == 1 and event.numbers == (1,)
    focus = event.events[0].focus
    assert focus is not None and focus.relative == f"Observation/{created['id']}"
    assert focus.base == client.base_url

    (beat,) = receiver.wait_for(lambda r: b'"heartbeat"' in r.body, timeout=15)
    heartbeat = parse(beat.body)
    assert isinstance(heartbeat, Backport) and heartbeat.events_since_start == 1

    status = keeper.status(kept.subscription_id)
    assert status is not None and status.type == "query-status"
    assert status.events_since_start == 1 and status.status == "active"
    # sekmet 0.1.1 has no $events: the keeper says so and the caller re-queries instead
    assert keeper.events(kept.subscription_id, 1, 1) is None
    assert keeper.events_supported is False


def test_a_subscription_the_server_disabled_is_asked_for_again_then_replaced(
    client: FhirClient, receiver: Receiver
) -> None:
    plan = SubscriptionPlan(
        "rest-hook", "Observation", f"{receiver.url}/notify-failing", criteria=ANC
    )
    keeper = SubscriptionKeeper(client, [plan])
    (kept,) = keeper.ensure()
    sid = kept.subscription_id
    wait_until(lambda: _status(client, sid) == "active", what="active")
    receiver.status = 500  # the subscriber is down: the server gives up and disables it
    client.create(observation("p4"))
    wait_until(lambda: _status(client, sid) == "error", what="error after failed deliveries")

    receiver.status = 200
    (again,) = keeper.ensure()
    assert (again.action, again.subscription_id, again.previous_status) == (
        "reactivated",
        sid,
        "error",
    )
    wait_until(lambda: _status(client, sid) == "active", what="re-activated")
    after = client.create(observation("p5"))
    receiver.wait_for(lambda r: r.path == f"/notify-failing/Observation/{after['id']}")
    assert keeper.ensure()[0].action == "kept"  # seen live again: a new episode may start

    client.update({**client.read("Subscription", sid), "status": "off"})
    assert keeper.ensure()[0].action == "reactivated"  # first asked for again
    client.update({**client.read("Subscription", sid), "status": "off"})
    (replaced,) = keeper.ensure()  # still disabled: replaced, and the old one stays off
    assert replaced.action == "recreated" and replaced.subscription_id != sid
    assert _status(client, sid) == "off"
    wait_until(lambda: _status(client, replaced.subscription_id) == "active", what="new active")
    found = requests.get(
        f"{client.base_url}/Subscription", params={"url": plan.endpoint}, timeout=10
    )
    statuses = sorted(e["resource"]["status"] for e in json.loads(found.content)["entry"])
    assert statuses == ["active", "off"]


def test_a_subscriber_down_for_long_leaves_two_subscriptions_not_one_per_check(
    client: FhirClient, receiver: Receiver
) -> None:
    receiver.status = 500  # down from the start: every handshake fails
    plan = SubscriptionPlan(
        "backport",
        "Observation",
        f"{receiver.url}/notify-down",
        criteria=ANC,
        topic=TOPIC.url,
        content="id-only",
    )
    keeper = SubscriptionKeeper(client, [plan], [TOPIC])
    keeper.ensure_topics()
    actions = []
    for _ in range(5):
        (kept,) = keeper.ensure()
        actions.append(kept.action)
        wait_until(lambda k=kept: _status(client, k.subscription_id) == "error", what="error")
    assert actions == ["created", "reactivated", "recreated", "reactivated", "reactivated"]
    assert len(keeper.find(plan)) == 2
    receiver.status = 200  # back: the next check brings the current one back
    (kept,) = keeper.ensure()
    assert kept.action == "reactivated"
    wait_until(lambda: _status(client, kept.subscription_id) == "active", what="active")
    assert keeper.ensure()[0].action == "kept"
