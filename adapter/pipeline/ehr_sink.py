"""The EHR sink: DetectedIssue writes (interfaces.md s.4), the only pipeline code that writes.

- A new DetectedIssue is created once: where the server allows client-assigned ids
  (CapabilityStatement `updateCreate`), it is read by its deterministic id and PUT under it
  when absent; otherwise conditional create (`If-None-Exist` on the decision identifier).
- A withdrawal is a PUT conditional on the version we read (If-Match): a 412 means someone
  changed it since, and the patient is decided again on the EHR's version (`Conflict`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from adapter.ehr import (
    FhirAuthError,
    FhirClient,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
    FhirResponseError,
    FhirServerError,
    FhirTransientError,
)
from adapter.fhir.read import decision_identifier
from adapter.pipeline.effects import ISSUE_CREATE, ISSUE_UPDATE, read_body
from adapter.pipeline.outbox import Conflict, GiveUp, Performed, Retry, Sink
from adapter.store import Effect

log = logging.getLogger(__name__)


def allows_client_ids(capabilities: dict[str, Any], resource_type: str) -> bool:
    """Whether `update` may create `resource_type` under a client-assigned id, as the
    CapabilityStatement says: its own `updateCreate` when the type is listed; when it is not
    (stock servers list only the types they index), what every listed type that says so says."""
    declared: list[bool] = []
    for rest in capabilities.get("rest") or []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or []:
            if not isinstance(resource, dict):
                continue
            interactions = {
                i.get("code") for i in resource.get("interaction") or [] if isinstance(i, dict)
            }
            allowed = resource.get("updateCreate") is True and "update" in interactions
            if resource.get("type") == resource_type:
                return allowed
            if "updateCreate" in resource:
                declared.append(allowed)
    return bool(declared) and all(declared)


class EhrSink(Sink):
    kinds = (ISSUE_CREATE, ISSUE_UPDATE)

    def __init__(self, client: FhirClient, *, use_put: bool | None = None) -> None:
        self.client = client
        self._use_put = use_put
        self._lock = threading.Lock()

    def use_put(self) -> bool:
        """PUT under the deterministic id (read from the CapabilityStatement once)."""
        with self._lock:
            if self._use_put is None:
                try:
                    self._use_put = allows_client_ids(self.client.capabilities(), "DetectedIssue")
                except FhirError as error:
                    raise _retry_or_give_up(error) from error
            return self._use_put

    def perform(self, effect: Effect) -> Performed:
        body = read_body(effect.body)
        resource: dict[str, Any] = body["resource"]
        try:
            if effect.kind == ISSUE_CREATE:
                return self._create(resource, str(body["condition"]))
            if effect.kind == ISSUE_UPDATE:
                return self._update(resource, body.get("if_match"))
        except FhirConflictError as error:
            current = self._current(resource)
            raise Conflict(f"the EHR's copy changed (HTTP {error.status})", current) from error
        except FhirError as error:
            raise _retry_or_give_up(error) from error
        raise GiveUp(f"the EHR sink does not perform {effect.kind}")

    def _create(self, resource: dict[str, Any], condition: str) -> Performed:
        identifier = decision_identifier(resource)
        if self.use_put():
            rid = str(resource["id"])
            try:
                held = self.client.read("DetectedIssue", rid)
                return Performed(
                    {"id": rid, "created": False}, held, decision_identifier(held), True
                )
            except FhirNotFoundError:
                pass
            written = self.client.update(resource)
            return Performed({"id": written.get("id"), "created": True}, written, identifier, True)
        body = {k: v for k, v in resource.items() if k != "id"}  # the server assigns it
        result = self.client.create_if_none_exist(body, {"identifier": condition})
        written = result.resource
        return Performed(
            {"id": written.get("id"), "created": result.created}, written, identifier, True
        )

    def _update(self, resource: dict[str, Any], if_match: str | None) -> Performed:
        written = self.client.update(resource, if_match_version=if_match)
        return Performed(
            {"id": written.get("id"), "status": written.get("status")},
            written,
            decision_identifier(written),
        )

    def _current(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.client.read(str(resource["resourceType"]), str(resource["id"]))
        except FhirError:
            return None


def _retry_or_give_up(error: FhirError) -> Exception:
    """Transient (unavailable, timed out, 5xx, 429) and authentication failures are retried;
    a refusal (4xx) is final."""
    described = f"{error.method} {error.url.split('?', 1)[0]}" + (
        f" -> HTTP {error.status}" if error.status else ""
    )
    if isinstance(error, FhirTransientError | FhirAuthError | FhirResponseError):
        return Retry(f"{described}: {error.message}", system="ehr", after=_after(error))
    if isinstance(error, FhirServerError) and error.status is not None and error.status < 500:
        return GiveUp(f"{described}: the EHR refused it")
    return Retry(f"{described}: {error.message}", system="ehr")


def _after(error: FhirError) -> float | None:
    return error.retry_after if isinstance(error, FhirTransientError) else None
