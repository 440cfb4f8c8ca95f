"""The effects the worker enqueues and the outbox performs (kind, key, JSON body).

    issue-create    one new DetectedIssue (deterministic id and identifier): created once
    issue-update    an earlier DetectedIssue of ours, withdrawn (If-Match on its version)
    dispense-link   a MedicationDispense pointed at its new decision (`detectedIssue`; after
                    the issue-create of that decision, with `watch.link_dispense`)

Keys make an effect once: a decision replayed (a crash before the inbox item was marked done,
the same result pushed twice) enqueues nothing new.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM
from adapter.store import NewEffect

ISSUE_CREATE = "issue-create"
ISSUE_UPDATE = "issue-update"
DISPENSE_LINK = "dispense-link"


def issue_create(
    patient: str, resource: dict[str, Any], identifier: str, received_at: float | None
) -> NewEffect:
    body = {"resource": resource, "condition": f"{DECISION_IDENTIFIER_SYSTEM}|{identifier}"}
    return NewEffect(
        key=issue_create_key(identifier),
        kind=ISSUE_CREATE,
        patient=patient,
        body=orjson.dumps(body).decode(),
        received_at=received_at,
    )


def issue_update(
    patient: str, resource: dict[str, Any], if_match: str | None, received_at: float | None
) -> NewEffect:
    status = resource.get("status")
    key = f"{ISSUE_UPDATE}:{resource.get('id')}:{status}:{if_match or ''}"
    body = {"resource": resource, "if_match": if_match}
    return NewEffect(
        key=key,
        kind=ISSUE_UPDATE,
        patient=patient,
        body=orjson.dumps(body).decode(),
        received_at=received_at,
    )


def issue_create_key(identifier: str) -> str:
    return f"{ISSUE_CREATE}:{identifier}"


def dispense_link(patient: str, dispense: str, identifier: str) -> NewEffect:
    """Link `dispense` ("MedicationDispense/id") to the decision `identifier` (its
    issue-create effect, enqueued before this one, runs first)."""
    body = {"dispense": dispense, "identifier": identifier}
    return NewEffect(
        key=f"{DISPENSE_LINK}:{identifier}:{dispense}",
        kind=DISPENSE_LINK,
        patient=patient,
        body=orjson.dumps(body).decode(),
        received_at=None,
    )


def read_body(body: str) -> dict[str, Any]:
    value = orjson.loads(body)
    if not isinstance(value, dict):  # pragma: no cover - we wrote it
        raise ValueError("an effect body is a JSON object")
    return value
