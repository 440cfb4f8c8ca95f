"""The notification translator: R4 rest-hook, Backport variants (camelCase, integers, both id-only
shapes), and every non-conformance named by its FHIR path (=> a 4xx OperationOutcome)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.errors import AdapterError, Kind
from adapter.subscriptions.notification import (
    Backport,
    Reference,
    RestHook,
    parse,
    parse_reference,
    parse_status_bundle,
)

OBS = {"resourceType": "Observation", "id": "anc-1", "status": "final"}
BASE = "http://127.0.0.1:9/fhir"


def _bytes(document: Any) -> bytes:
    return json.dumps(document).encode()


def status_parameters(
    kind: str = "event-notification",
    since: Any = ("valueString", "3"),
    events: list[list[dict[str, Any]]] | None = None,
    camel: bool = False,
    status: str = "active",
) -> dict[str, Any]:
    def name(kebab: str, camel_name: str) -> str:
        return camel_name if camel else kebab

    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "topic", "valueCanonical": "https://example.org/topic/anc"},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
    ]
    if since is not None:
        parameters.append(
            {
                "name": name("events-since-subscription-start", "eventsSinceSubscriptionStart"),
                since[0]: since[1],
            }
        )
    for parts in events or []:
        parameters.append({"name": name("notification-event", "notificationEvent"), "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def event_parts(number: Any = ("valueString", "3"), focus: str | None = None, camel: bool = False):
    parts: list[dict[str, Any]] = [
        {"name": "eventNumber" if camel else "event-number", number[0]: number[1]}
    ]
    if focus is not None:
        parts.append({"name": "focus", "valueReference": {"reference": focus}})
    return parts


def history(status: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": status}, *entries],
    }


# ------------------------------------------------------------------ R4 rest-hook


def test_an_empty_post_is_a_ping() -> None:
    assert parse(b"") == RestHook()
    assert parse(b"  \n").is_ping  # type: ignore[union-attr]


def test_a_put_with_the_resource_names_it() -> None:
    hook = parse(_bytes(OBS), resource_type="Observation", resource_id="anc-1")
    assert isinstance(hook, RestHook)
    assert (hook.resource_type, hook.resource_id, hook.resource) == ("Observation", "anc-1", OBS)
    assert not hook.is_ping


def test_a_put_without_a_body_names_the_resource_to_read() -> None:
    hook = parse(b"", resource_type="Observation", resource_id="anc-1")
    assert hook == RestHook("Observation", "anc-1", None)
    assert not hook.is_ping  # type: ignore[union-attr]


def test_a_post_of_the_resource_itself_is_a_rest_hook_with_payload() -> None:
    hook = parse(_bytes(OBS))
    assert isinstance(hook, RestHook) and hook.resource_id == "anc-1"


# ------------------------------------------------------------------ Backport variants


@pytest.mark.parametrize("camel", [False, True], ids=["kebab", "camel"])
@pytest.mark.parametrize(
    "since",
    [("valueString", "3"), ("valueInteger", 3), ("valueUnsignedInt", 3)],
    ids=["string", "integer", "unsignedInt"],
)
def test_camel_and_kebab_names_and_string_or_integer_counters(camel: bool, since: Any) -> None:
    number = ("valueString", "3") if since[0] == "valueString" else ("valueInteger", 3)
    body = history(
        status_parameters(since=since, events=[event_parts(number, camel=camel)], camel=camel)
    )
    notification = parse(_bytes(body))
    assert isinstance(notification, Backport)
    assert notification.events_since_start == 3
    assert notification.numbers == (3,)
    assert notification.subscription_id == "s1"


def test_id_only_with_the_focus_only_in_the_status() -> None:
    body = history(status_parameters(events=[event_parts(focus=f"{BASE}/Observation/anc-1")]))
    notification = parse(_bytes(body))
    assert isinstance(notification, Backport)
    assert notification.payload == "id-only"
    assert notification.events[0].focus == Reference("Observation", "anc-1", None, BASE)
    assert notification.events[0].resource is None


def test_id_only_with_the_focus_also_listed_as_an_entry_without_resource() -> None:
    listed = {
        "fullUrl": f"{BASE}/Observation/anc-1",
        "request": {"method": "PUT", "url": "Observation/anc-1"},
        "response": {"status": "200"},
    }
    body = history(status_parameters(events=[event_parts(focus="Observation/anc-1")]), listed)
    notification = parse(_bytes(body))
    assert isinstance(notification, Backport)
    assert notification.payload == "id-only"
    assert notification.events[0].focus == Reference("Observation", "anc-1")


def test_full_resource_carries_the_focus_resource() -> None:
    body = history(
        status_parameters(events=[event_parts(focus=f"{BASE}/Observation/anc-1")]),
        {"fullUrl": f"{BASE}/Observation/anc-1", "resource": OBS},
    )
    notification = parse(_bytes(body))
    assert isinstance(notification, Backport)
    assert notification.payload == "full-resource"
    assert notification.events[0].resource == OBS


def test_a_versioned_focus_keeps_its_version() -> None:
    assert parse_reference("Observation/a/_history/7") == Reference("Observation", "a", "7")
    assert parse_reference("urn:uuid:0c3d") is None
    assert parse_reference("https://x.example/fhir/r4/Observation/a") == Reference(
        "Observation", "a", None, "https://x.example/fhir/r4"
    )


def test_a_non_fhir_focus_is_an_event_without_focus() -> None:
    body = history(status_parameters(events=[event_parts(focus="urn:uuid:0c3d")]))
    notification = parse(_bytes(body))
    assert isinstance(notification, Backport)
    assert notification.events[0].focus is None and notification.payload == "empty"


def test_several_events_in_one_notification() -> None:
    events = [event_parts(("valueString", str(n)), f"Observation/o{n}") for n in (2, 3)]
    notification = parse(_bytes(history(status_parameters(events=events))))
    assert isinstance(notification, Backport)
    assert notification.numbers == (2, 3)


def test_a_status_bundle_from_status_operation() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": status_parameters(kind="query-status", since=("valueString", "9"))}],
    }
    (status,) = parse_status_bundle(bundle)
    assert (status.type, status.events_since_start, status.subscription_id) == (
        "query-status",
        9,
        "s1",
    )


# ------------------------------------------------------------------ not conformant: 4xx + path


def _fails(body: bytes, **path: str) -> AdapterError:
    with pytest.raises(AdapterError) as caught:
        parse(body, **path)
    error = caught.value
    assert 400 <= error.http_status < 500
    outcome = error.operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    return error


def _params(status: dict[str, Any]) -> list[dict[str, Any]]:
    return status["parameter"]  # type: ignore[no-any-return]


P0 = "Bundle.entry[0].resource"

BAD: list[tuple[str, Any, str]] = [
    ("not a resource", [1, 2], "resourceType"),
    ("a Bundle not of type history", {"resourceType": "Bundle", "type": "batch"}, "Bundle.type"),
    ("history without entries", {"resourceType": "Bundle", "type": "history"}, "Bundle.entry"),
    (
        "first entry not Parameters",
        {"resourceType": "Bundle", "type": "history", "entry": [{"resource": OBS}]},
        f"{P0}",
    ),
    ("no id on a pushed resource", {"resourceType": "Observation"}, "Observation.id"),
]


@pytest.mark.parametrize(("what", "document", "path"), BAD, ids=[b[0] for b in BAD])
def test_structural_problems_name_the_path(what: str, document: Any, path: str) -> None:
    error = _fails(_bytes(document))
    assert error.kind is Kind.UNPROCESSABLE
    assert path in error.expression


def _mutated(change: str) -> tuple[dict[str, Any], str]:
    status = status_parameters(events=[event_parts()])
    parameters = _params(status)
    if change == "no subscription":
        del parameters[0]
        return status, f"{P0}.parameter"
    if change == "unknown type":
        parameters[3]["valueCode"] = "ping"
        return status, f"{P0}.parameter[3].valueCode"
    if change == "unknown status":
        parameters[2]["valueCode"] = "paused"
        return status, f"{P0}.parameter[2].valueCode"
    if change == "negative counter":
        parameters[4]["valueString"] = "-1"
        return status, f"{P0}.parameter[4].valueString"
    if change == "counter is a decimal":
        parameters[4]["valueString"] = "2.5"
        return status, f"{P0}.parameter[4].valueString"
    if change == "counter is a boolean":
        parameters[4] = {"name": "events-since-subscription-start", "valueInteger": True}
        return status, f"{P0}.parameter[4].valueInteger"
    if change == "event without number":
        parameters[5]["part"] = [{"name": "timestamp", "valueInstant": "2026-01-01T00:00:00Z"}]
        return status, f"{P0}.parameter[5].part"
    if change == "event number zero":
        parameters[5]["part"][0]["valueString"] = "0"
        return status, f"{P0}.parameter[5].part[0]"
    if change == "event above the count":
        parameters[5]["part"][0]["valueString"] = "4"
        return status, f"{P0}.parameter"
    if change == "duplicated type":
        parameters.append({"name": "type", "valueCode": "heartbeat"})
        return status, f"{P0}.parameter[6].name"
    if change == "focus without reference":
        parameters[5]["part"].append({"name": "focus", "valueReference": {}})
        return status, f"{P0}.parameter[5].part[1].valueReference.reference"
    raise AssertionError(change)


CHANGES = [
    "no subscription",
    "unknown type",
    "unknown status",
    "negative counter",
    "counter is a decimal",
    "counter is a boolean",
    "event without number",
    "event number zero",
    "event above the count",
    "duplicated type",
    "focus without reference",
]


@pytest.mark.parametrize("change", CHANGES)
def test_non_conformant_status_is_422_naming_the_parameter(change: str) -> None:
    status, path = _mutated(change)
    error = _fails(_bytes(history(status)))
    assert error.kind is Kind.UNPROCESSABLE and error.http_status == 422
    assert path in error.expression
    assert error.operation_outcome()["issue"][0]["expression"] == list(error.expression)


def test_a_body_that_is_not_json_is_400() -> None:
    error = _fails(b"{not json")
    assert error.http_status == 400


def test_deeply_nested_json_is_400_not_a_crash() -> None:
    error = _fails(b"[" * 100_000 + b"]" * 100_000)
    assert error.http_status == 400


def test_a_put_whose_body_is_another_resource_is_refused() -> None:
    error = _fails(_bytes(OBS), resource_type="Observation", resource_id="other")
    assert error.expression == ("Observation.id",)
    error = _fails(_bytes(OBS), resource_type="Patient", resource_id="anc-1")
    assert error.expression == ("Observation.resourceType",)


def test_a_bad_path_is_refused() -> None:
    error = _fails(b"", resource_type="observation", resource_id="x")
    assert error.where == "path"
    error = _fails(b"", resource_type="Observation", resource_id="a/b")
    assert error.where == "path"


def test_messages_never_quote_values() -> None:
    secret = "Jane-Doe-1970"
    status = status_parameters(events=[event_parts(("valueString", secret))])
    error = _fails(_bytes(history(status)))
    assert secret not in str(error) and secret not in json.dumps(error.operation_outcome())
