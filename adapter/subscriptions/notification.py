"""What arrives at ``/notify``, read into frozen values (pure: bytes in, values or an error out).

Two families of notification reach the subscriber endpoint:

- **R4 rest-hook** (FHIR R4 `Subscription` with criteria): an empty ``POST`` (payload not set:
  "something matching changed, go and look"), or the matched resource itself, sent as
  ``PUT {endpoint}/{type}/{id}`` (what sekmet-fhir and the R4 spec's examples do) or ``POST
  {endpoint}``. -> :class:`RestHook`.
- **Subscriptions R5 Backport IG** (topic-based, on R4): a ``history`` Bundle whose first entry
  is a ``Parameters`` resource (the backported ``SubscriptionStatus``) -> :class:`Backport`:
  ``handshake``, ``heartbeat``, ``event-notification``, ``query-status`` (and ``query-event``,
  the answer of ``$events``), with ``empty``, ``id-only`` or ``full-resource`` content.

Accepted variants, all seen in the IG's versions or in servers: parameter names in kebab-case
(``events-since-subscription-start``, ``notification-event``, ``event-number``: IG 1.1.0 and
1.2.0) or camelCase (``eventsSinceSubscriptionStart``: the R5 element names, used by some
servers); counters as ``valueString`` (the IG) or an integer type; ``id-only`` focus given only in
the status (``notification-event.focus``) or also as Bundle entries with ``fullUrl`` and
``request`` but no ``resource`` (both allowed by the IG's payload rules); a ``full-resource``
entry without its resource (the IG lets a server omit it; the focus is then read from the EHR).

Anything else is not conformant and raises from the one error tree, naming the FHIR path at
fault (``Bundle.entry[0].resource.parameter[2].valueCode``): the HTTP edge answers 4xx with that
OperationOutcome. Messages never quote values (they may be tied to a person); they name paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from adapter.errors import UnprocessableError, UnreadableInputError

NotificationType = Literal[
    "handshake", "heartbeat", "event-notification", "query-status", "query-event"
]
NOTIFICATION_TYPES: tuple[str, ...] = (
    "handshake",
    "heartbeat",
    "event-notification",
    "query-status",
    "query-event",
)
#: http://hl7.org/fhir/ValueSet/subscription-status (R4 codes, plus R5's entered-in-error)
SUBSCRIPTION_STATUSES: tuple[str, ...] = ("requested", "active", "error", "off", "entered-in-error")
Payload = Literal["empty", "id-only", "full-resource"]

#: Bound on the events one notification may carry (every loop is bounded).
MAX_EVENTS = 10_000
#: Bound on the entries of one notification Bundle.
MAX_ENTRIES = 10_000
#: Event numbers and counters are read as non-negative integers of at most this many digits.
_COUNTER_RE = re.compile(r"[0-9]{1,18}")
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: ``[base/]Type/id[/_history/vid]``: a literal reference to a FHIR resource.
_REFERENCE_RE = re.compile(
    r"^(?:(?P<base>https?://[^?#\s]+?)/)?(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)

_KEBAB = {
    "eventsSinceSubscriptionStart": "events-since-subscription-start",
    "notificationEvent": "notification-event",
    "eventNumber": "event-number",
    "additionalContext": "additional-context",
    "relatedQuery": "related-query",
}
_SINGLE = ("subscription", "topic", "status", "type", "events-since-subscription-start")
_COUNTER_VALUES = ("valueString", "valueInteger", "valueUnsignedInt", "valuePositiveInt")


@dataclass(frozen=True)
class Reference:
    """A literal reference to a FHIR resource: ``Type/id``, optionally on an absolute `base` and
    at a `version`."""

    resource_type: str
    id: str
    version: str | None = None
    base: str | None = None

    @property
    def relative(self) -> str:
        return f"{self.resource_type}/{self.id}"


def parse_reference(text: str) -> Reference | None:
    """`text` as a :class:`Reference`, or None when it is not a FHIR resource URL (the IG allows a
    focus that is not a FHIR object, e.g. ``urn:uuid:...``)."""
    match = _REFERENCE_RE.match(text.strip())
    if match is None:
        return None
    return Reference(match["type"], match["id"], match["version"], match["base"])


@dataclass(frozen=True)
class RestHook:
    """An R4 rest-hook notification. `resource` None: an empty ping ("go and look"), or a PUT
    naming `resource_type`/`resource_id` without a body (read it from the EHR)."""

    resource_type: str | None = None
    resource_id: str | None = None
    resource: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def is_ping(self) -> bool:
        return self.resource is None and self.resource_type is None


@dataclass(frozen=True)
class Event:
    """One ``notification-event``: its number, and what it is about when the payload says.

    `focus` is None for ``empty`` content or a non-FHIR focus; `resource` is the focus as carried
    by a ``full-resource`` Bundle (None: read it from the EHR, or go and look)."""

    number: int
    timestamp: str | None = None
    focus: Reference | None = None
    context: tuple[Reference, ...] = ()
    resource: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Backport:
    """A Subscriptions Backport notification (the Bundle's ``Parameters`` status and entries)."""

    type: NotificationType
    subscription: str  # the reference as sent (absolute or relative)
    status: str
    topic: str | None = None
    events_since_start: int | None = None
    events: tuple[Event, ...] = ()
    errors: tuple[str, ...] = ()  # ``error`` codes (system|code), e.g. subscription-error
    bundle_id: str | None = None

    @property
    def subscription_id(self) -> str | None:
        """The Subscription's logical id, from its reference."""
        ref = parse_reference(self.subscription)
        return ref.id if ref is not None and ref.resource_type == "Subscription" else None

    @property
    def payload(self) -> Payload:
        """The content level the notification shows (the IG's payload types)."""
        if any(event.resource is not None for event in self.events):
            return "full-resource"
        if any(event.focus is not None for event in self.events):
            return "id-only"
        return "empty"

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(event.number for event in self.events)


Notification = RestHook | Backport


# ------------------------------------------------------------------ entry point


def parse(
    body: bytes,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> Notification:
    """Read what ``POST /notify`` (no path) or ``PUT /notify/{type}/{id}`` received.

    Raises `UnreadableInputError` (400) for a body that is not JSON, `UnprocessableError` (422,
    with the FHIR path) for JSON that is not a conformant notification."""
    if (resource_type is None) != (resource_id is None):
        raise UnprocessableError("a resource path needs both a type and an id", where="path")
    if (
        resource_type is not None
        and resource_id is not None
        and (not _TYPE_RE.fullmatch(resource_type) or not _ID_RE.fullmatch(resource_id))
    ):
        raise UnprocessableError(
            "the path is not /notify/{type}/{id} with a FHIR type and id", where="path"
        )
    if not body.strip():
        return RestHook(resource_type, resource_id, None)
    document = _json(body)
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise UnprocessableError(
            "the body is not a FHIR resource (no resourceType)", expression=["resourceType"]
        )
    kind = document["resourceType"]
    if resource_type is not None:
        if kind != resource_type:
            raise UnprocessableError(
                f"the body is a {_safe_type(kind)}, the path names a {resource_type}",
                expression=[f"{_safe_type(kind)}.resourceType"],
            )
        if document.get("id") != resource_id:
            raise UnprocessableError(
                "the body's id is not the id in the path", expression=[f"{resource_type}.id"]
            )
        return RestHook(resource_type, resource_id, document)
    if kind == "Bundle" and document.get("type") == "history":
        return parse_backport(document)
    if kind == "Bundle":
        raise UnprocessableError(
            "a notification Bundle must be of type history (Subscriptions Backport)",
            expression=["Bundle.type"],
        )
    if not _TYPE_RE.fullmatch(kind):
        raise UnprocessableError("resourceType is not a FHIR type", expression=["resourceType"])
    rid = document.get("id")
    if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
        raise UnprocessableError(
            "the notified resource has no usable id", expression=[f"{kind}.id"]
        )
    return RestHook(kind, rid, document)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UnreadableInputError("the notification body is not JSON", where="body") from exc


def _safe_type(kind: str) -> str:
    return kind if _TYPE_RE.fullmatch(kind) else "resource"


# ------------------------------------------------------------------ Backport Bundles


def parse_backport(bundle: Mapping[str, Any]) -> Backport:
    """A Backport notification Bundle (``history``; also the entries of a ``$status`` searchset
    through :func:`parse_status_parameters`)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise UnprocessableError(
            "a notification Bundle needs its status as the first entry", expression=["Bundle.entry"]
        )
    if len(entries) > MAX_ENTRIES:
        raise UnprocessableError(
            f"more than {MAX_ENTRIES} entries in one notification", expression=["Bundle.entry"]
        )
    first = entries[0]
    status = first.get("resource") if isinstance(first, dict) else None
    if not isinstance(status, dict) or status.get("resourceType") != "Parameters":
        raise UnprocessableError(
            "the first entry of an R4 Backport notification must be a Parameters resource",
            expression=["Bundle.entry[0].resource"],
        )
    notification = parse_status_parameters(status, "Bundle.entry[0].resource")
    carried = _carried(entries[1:])
    events = tuple(_resolve(event, carried) for event in notification.events)
    bundle_id = bundle.get("id") if isinstance(bundle.get("id"), str) else None
    return Backport(
        type=notification.type,
        subscription=notification.subscription,
        status=notification.status,
        topic=notification.topic,
        events_since_start=notification.events_since_start,
        events=events,
        errors=notification.errors,
        bundle_id=bundle_id,
    )


def parse_status_parameters(status: Mapping[str, Any], at: str = "Parameters") -> Backport:
    """The backported ``SubscriptionStatus`` (a ``Parameters`` resource) at FHIR path `at`."""
    parameters = status.get("parameter")
    if not isinstance(parameters, list):
        raise UnprocessableError("the status has no parameters", expression=[f"{at}.parameter"])
    single: dict[str, tuple[int, Mapping[str, Any]]] = {}
    events: list[Event] = []
    errors: list[str] = []
    for index, parameter in enumerate(parameters):
        path = f"{at}.parameter[{index}]"
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise UnprocessableError("a parameter without a name", expression=[f"{path}.name"])
        name = _KEBAB.get(parameter["name"], parameter["name"])
        if name in _SINGLE:
            if name in single:
                raise UnprocessableError(
                    f"parameter {name} appears more than once", expression=[f"{path}.name"]
                )
            single[name] = (index, parameter)
        elif name == "notification-event":
            if len(events) >= MAX_EVENTS:
                raise UnprocessableError(
                    f"more than {MAX_EVENTS} events in one notification", expression=[path]
                )
            events.append(_event(parameter, path))
        elif name == "error":
            errors.extend(_codes(parameter.get("valueCodeableConcept")))
        # other parameters (extensions of later IG versions) are ignored

    def need(name: str) -> tuple[str, Mapping[str, Any]]:
        if name not in single:
            raise UnprocessableError(
                f"the status has no {name} parameter", expression=[f"{at}.parameter"]
            )
        index, parameter = single[name]
        return f"{at}.parameter[{index}]", parameter

    path, parameter = need("subscription")
    subscription = _reference_text(parameter, path)
    path, parameter = need("type")
    kind = _code(parameter, path, NOTIFICATION_TYPES)
    path, parameter = need("status")
    state = _code(parameter, path, SUBSCRIPTION_STATUSES)
    topic: str | None = None
    if "topic" in single:
        index, parameter = single["topic"]
        value = _first_value(parameter, ("valueCanonical", "valueUri", "valueString"))
        if value is not None and not isinstance(value, str):
            raise UnprocessableError(
                "topic is not a canonical URL", expression=[f"{at}.parameter[{index}]"]
            )
        topic = value
    since: int | None = None
    if "events-since-subscription-start" in single:
        index, parameter = single["events-since-subscription-start"]
        since = _counter(parameter, f"{at}.parameter[{index}]")
    numbers = [event.number for event in events]
    if len(set(numbers)) != len(numbers):
        raise UnprocessableError(
            "an event number appears twice in one notification", expression=[f"{at}.parameter"]
        )
    if kind == "event-notification" and since is not None and numbers and max(numbers) > since:
        raise UnprocessableError(
            "an event number is above events-since-subscription-start",
            expression=[f"{at}.parameter"],
        )
    return Backport(
        type=kind,  # type: ignore[arg-type]  # checked against NOTIFICATION_TYPES
        subscription=subscription,
        status=state,
        topic=topic,
        events_since_start=since,
        events=tuple(events),
        errors=tuple(errors),
    )


def _event(parameter: Mapping[str, Any], path: str) -> Event:
    parts = parameter.get("part")
    if not isinstance(parts, list):
        raise UnprocessableError("a notification-event without parts", expression=[f"{path}.part"])
    number: int | None = None
    timestamp: str | None = None
    focus: Reference | None = None
    context: list[Reference] = []
    for index, part in enumerate(parts):
        here = f"{path}.part[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise UnprocessableError("a part without a name", expression=[f"{here}.name"])
        name = _KEBAB.get(part["name"], part["name"])
        if name == "event-number":
            if number is not None:
                raise UnprocessableError("two event numbers", expression=[f"{here}.name"])
            number = _counter(part, here)
            if number < 1:
                raise UnprocessableError("event numbers start at 1", expression=[here])
        elif name == "timestamp":
            value = part.get("valueInstant")
            timestamp = value if isinstance(value, str) else None
        elif name == "focus":
            focus = parse_reference(_reference_text(part, here))
        elif name == "additional-context":
            ref = parse_reference(_reference_text(part, here))
            if ref is not None:
                context.append(ref)
    if number is None:
        raise UnprocessableError(
            "a notification-event without an event-number", expression=[f"{path}.part"]
        )
    return Event(number, timestamp, focus, tuple(context))


def _first_value(parameter: Mapping[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        if name in parameter:
            return parameter[name]
    return None


def _counter(parameter: Mapping[str, Any], path: str) -> int:
    for name in _COUNTER_VALUES:
        if name not in parameter:
            continue
        value = parameter[name]
        if isinstance(value, str) and _COUNTER_RE.fullmatch(value.strip()):
            return int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
            return value
        raise UnprocessableError("not a non-negative integer", expression=[f"{path}.{name}"])
    raise UnprocessableError(
        "no value (valueString or an integer)", expression=[f"{path}.value[x]"]
    )


def _code(parameter: Mapping[str, Any], path: str, allowed: Sequence[str]) -> str:
    value = parameter.get("valueCode")
    if not isinstance(value, str):
        raise UnprocessableError("no valueCode", expression=[f"{path}.valueCode"])
    if value not in allowed:
        raise UnprocessableError(
            f"not one of {', '.join(allowed)}", expression=[f"{path}.valueCode"]
        )
    return value


def _reference_text(parameter: Mapping[str, Any], path: str) -> str:
    value = parameter.get("valueReference")
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not reference.strip():
        raise UnprocessableError(
            "no valueReference.reference", expression=[f"{path}.valueReference.reference"]
        )
    return reference.strip()


def _codes(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    out = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            system = coding.get("system") if isinstance(coding.get("system"), str) else ""
            out.append(f"{system}|{coding['code']}")
    return out


def _carried(entries: Sequence[Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The resources the Bundle carries, by type and id. An entry with only ``fullUrl`` and
    ``request`` (the ``id-only`` shape that lists the focus) carries nothing: the focus named in
    the status is read from the EHR either way."""
    carried: dict[tuple[str, str], Mapping[str, Any]] = {}
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise UnprocessableError(
                "an entry is not an object", expression=[f"Bundle.entry[{index}]"]
            )
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict):
            raise UnprocessableError(
                "an entry's resource is not an object",
                expression=[f"Bundle.entry[{index}].resource"],
            )
        kind, rid = resource.get("resourceType"), resource.get("id")
        if isinstance(kind, str) and isinstance(rid, str):
            carried[(kind, rid)] = resource
    return carried


def _resolve(event: Event, carried: Mapping[tuple[str, str], Mapping[str, Any]]) -> Event:
    if event.focus is None:
        return event
    resource = carried.get((event.focus.resource_type, event.focus.id))
    if resource is None:
        return event  # id-only, or full-resource without the resource: read from the EHR
    return Event(event.number, event.timestamp, event.focus, event.context, resource)


def parse_status_bundle(bundle: Mapping[str, Any]) -> tuple[Backport, ...]:
    """The answer of ``Subscription/$status``: a ``searchset`` Bundle of backported statuses
    (``Parameters``), one per Subscription asked about."""
    if bundle.get("resourceType") != "Bundle":
        raise UnprocessableError("$status did not answer a Bundle", expression=["Bundle"])
    out = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
            out.append(parse_status_parameters(resource, f"Bundle.entry[{index}].resource"))
        if index >= MAX_ENTRIES:
            break
    return tuple(out)
