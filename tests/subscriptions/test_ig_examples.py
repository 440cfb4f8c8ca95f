"""The official Backport IG example notification Bundles (1.1.0 and 1.2.0), read by the parser.

Each example's expected reading is stated from the IG's own text (the example's title and the
payload rules), not from the parser's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.subscriptions.notification import Backport, Reference, parse

DATA = Path(__file__).parent.parent / "data" / "subscriptions"
ENCOUNTER = Reference(
    "Encounter", "86009987-eabe-42bf-8c02-b112b18cb616", None, "https://example.org/fhir"
)
PATIENT = Reference(
    "Patient", "1599eb66-431a-447c-a3de-6897fe9ae9a1", None, "https://example.org/fhir"
)

#: example name -> (type, status, events-since-start, payload, focus, carries the focus)
EXPECTED = {
    "r4-notification-handshake": ("handshake", "requested", 0, "empty", None, False),
    "r4-notification-heartbeat": ("heartbeat", "active", 2, "empty", None, False),
    "r4-notification-empty": ("event-notification", "active", 2, "empty", None, False),
    "r4-notification-empty-with-auth": ("event-notification", "active", 2, "empty", None, False),
    "r4-notification-id-only": ("event-notification", "active", 2, "id-only", ENCOUNTER, False),
    "r4-notification-id-only-with-auth": (
        "event-notification",
        "active",
        2,
        "id-only",
        ENCOUNTER,
        False,
    ),
    "r4-notification-id-only-with-query": (
        "event-notification",
        "active",
        2,
        "id-only",
        ENCOUNTER,
        False,
    ),
    "r4-notification-full-resource": (
        "event-notification",
        "active",
        2,
        "full-resource",
        ENCOUNTER,
        True,
    ),
    "r4-notification-full-resource-with-query": (
        "event-notification",
        "active",
        2,
        "full-resource",
        ENCOUNTER,
        True,
    ),
    "r4-notification-multi-resource": (
        "event-notification",
        "active",
        2,
        "full-resource",
        ENCOUNTER,
        True,
    ),
    "r4-notification-error": ("query-status", "error", 3, "empty", None, False),
}
FILES = sorted(DATA.glob("ig-*/Bundle-*.json"))


def test_both_ig_versions_are_vendored() -> None:
    versions = {path.parent.name for path in FILES}
    assert versions == {"ig-1.1.0", "ig-1.2.0"}
    assert len([p for p in FILES if p.parent.name == "ig-1.1.0"]) == 7
    assert len([p for p in FILES if p.parent.name == "ig-1.2.0"]) == 11


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_ig_example_is_read_as_the_ig_describes_it(path: Path) -> None:
    name = path.stem.removeprefix("Bundle-")
    kind, status, since, payload, focus, carried = EXPECTED[name]
    notification = parse(path.read_bytes())
    assert isinstance(notification, Backport)
    assert notification.type == kind
    assert notification.status == status
    assert notification.events_since_start == since
    assert notification.subscription == "https://example.org/fhir/Subscription/admission"
    assert notification.subscription_id == "admission"
    assert notification.topic == "http://hl7.org/SubscriptionTopic/admission"
    assert notification.payload == payload
    if kind == "event-notification":
        (event,) = notification.events
        assert event.number == 2
        assert event.timestamp == "2020-05-29T11:44:13.1882432-05:00"
        assert event.focus == focus
        assert (event.resource is not None) == carried
        if carried:
            assert event.resource is not None and event.resource["resourceType"] == "Encounter"
    else:
        assert notification.events == ()


def test_the_multi_resource_example_names_its_patient_as_context() -> None:
    body = (DATA / "ig-1.1.0" / "Bundle-r4-notification-multi-resource.json").read_bytes()
    notification = parse(body)
    assert isinstance(notification, Backport)
    assert notification.events[0].context == (PATIENT,)


def test_the_error_example_reports_its_error_code() -> None:
    body = (DATA / "ig-1.2.0" / "Bundle-r4-notification-error.json").read_bytes()
    notification = parse(body)
    assert isinstance(notification, Backport)
    assert notification.errors == (
        "http://terminology.hl7.org/CodeSystem/subscription-error|no-response",
    )


def test_the_examples_are_what_transcribe_writes() -> None:
    """The committed JSON is the transcription's output (no hand edits drifted in)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("transcribe", DATA / "transcribe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for folder, examples in (
        ("ig-1.1.0", module.examples_110()),
        ("ig-1.2.0", module.examples_120()),
    ):
        for name, resource in examples.items():
            assert json.loads((DATA / folder / f"Bundle-{name}.json").read_text()) == resource
