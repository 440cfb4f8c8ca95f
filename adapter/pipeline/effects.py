"""The effects the worker enqueues and the outbox performs (kind, key, JSON body).

    issue-create    one new DetectedIssue (deterministic id and identifier): created once
    issue-update    an earlier DetectedIssue of ours, withdrawn (If-Match on its version)

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


def issue_create(
    patient: str, resource: dict[str, Any], identifier: str, received_at: float | None
) -> NewEffect:
    body = {"resource": resource, "condition": f"{DECISION_IDENTIFIER_SYSTEM}|{identifier}"}
    return NewEffect(
        key=f"{ISSUE_CREATE}:{identifier}",
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


def read_body(body: str) -> dict[str, Any]:
    value = orjson.loads(body)
    if not isinstance(value, dict):  # pragma: no cover - we wrote it
        raise ValueError("an effect body is a JSON object")
    return value
