"""The EHR sink: DetectedIssue writes (interfaces.md s.4), the only pipeline code that writes.

- A new DetectedIssue is created once, the way `ehr_features` reads from the
  CapabilityStatement (shared with watch): where the server allows client-assigned ids
  (`updateCreate`), PUT under its deterministic id (read first when an earlier attempt may
  have written it); otherwise conditional create (`If-None-Exist` on the decision identifier).
- A withdrawal is a PUT conditional on the version we read (If-Match): a 412 means someone
  changed it since, and the patient is decided again on the EHR's version (`Conflict`).
- A dispense link (`watch.link_dispense`) points the MedicationDispense's `detectedIssue` at
  the decision just written (ours replaced, everyone else's kept): a PUT with If-Match on the
  dispense's version; a 412 re-reads it and tries again (`LINK_ATTEMPTS` times, then a retry
  of the effect). Already linked: nothing is written (never a duplicate link).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

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
from adapter.fhir.read import decision_identifier, reference
from adapter.pipeline.capabilities import PUT, EhrFeatures, ehr_features
from adapter.pipeline.effects import (
    DISPENSE_LINK,
    ISSUE_CREATE,
    ISSUE_UPDATE,
    issue_create_key,
    read_body,
)
from adapter.pipeline.outbox import Conflict, GiveUp, Performed, Retry, Sink
from adapter.store import Effect, Store
from adapter.store.base import OUTBOX_DEAD, OUTBOX_DONE
from adapter.store.sql import version_of

log = logging.getLogger(__name__)

#: Writes of one dispense link within one attempt of its effect (each 412 re-reads it).
LINK_ATTEMPTS = 3


class EhrSink(Sink):
    kinds = (ISSUE_CREATE, ISSUE_UPDATE, DISPENSE_LINK)

    def __init__(
        self,
        client: FhirClient,
        *,
        features: EhrFeatures | None = None,
        store: Store | None = None,
    ) -> None:
        """`store`: where the decisions written are held (dispense links need it)."""
        self.client = client
        self._features = features
        self.store = store
        self._lock = threading.Lock()

    def use_put(self) -> bool:
        """PUT under the deterministic id (`ehr_features`, read from the CapabilityStatement
        once unless given)."""
        with self._lock:
            if self._features is None:
                try:
                    self._features = ehr_features(self.client.capabilities())
                except FhirError as error:
                    raise _retry_or_give_up(error) from error
            return self._features.create_mode == PUT

    def perform(self, effect: Effect) -> Performed:
        body = read_body(effect.body)
        if effect.kind == DISPENSE_LINK:
            try:
                return self._link(str(body["dispense"]), str(body["identifier"]))
            except FhirError as error:
                raise _retry_or_give_up(error) from error
        resource: dict[str, Any] = body["resource"]
        try:
            if effect.kind == ISSUE_CREATE:
                tried = effect.attempts > 0 or effect.last_error is not None or effect.reclaimed
                return self._create(resource, str(body["condition"]), tried)
            if effect.kind == ISSUE_UPDATE:
                return self._update(resource, body.get("if_match"))
        except FhirConflictError as error:
            current = self._current(resource)
            raise Conflict(f"the EHR's copy changed (HTTP {error.status})", current) from error
        except FhirError as error:
            raise _retry_or_give_up(error) from error
        raise GiveUp(f"the EHR sink does not perform {effect.kind}")

    def _create(self, resource: dict[str, Any], condition: str, tried: bool) -> Performed:
        """`tried`: an earlier attempt may have written it (then read first, so a replay never
        overwrites what happened to it since). A first attempt PUTs at once: the effects of a
        patient run in order, so nothing can have changed the DetectedIssue before it exists."""
        identifier = decision_identifier(resource)
        if self.use_put():
            rid = str(resource["id"])
            if tried:
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

    def _link(self, dispense: str, identifier: str) -> Performed:
        if self.store is None:
            raise GiveUp("dispense links need the store")
        created = self.store.effect_by_key(issue_create_key(identifier))
        if created is None or created.state == OUTBOX_DEAD:
            raise GiveUp("the decision to link was not written (replay its effect first)")
        if created.state != OUTBOX_DONE:
            raise Retry("the decision to link is not written yet", system="ehr")
        issue = orjson.loads(created.result or "{}").get("id")
        if not isinstance(issue, str) or not issue:
            raise GiveUp("the decision to link has no id")
        own = f"DetectedIssue/{issue}"
        rid = dispense.removeprefix("MedicationDispense/")
        held = self.store.resource("MedicationDispense", rid)
        current = held if held is not None else self.client.read("MedicationDispense", rid)
        for attempt in range(LINK_ATTEMPTS):
            if attempt:
                current = self.client.read("MedicationDispense", rid)  # after a 412
            existing = current.get("detectedIssue") or []
            if any(reference(item) == own for item in existing):
                return Performed({"id": rid, "linked": own, "written": False})
            others = [item for item in existing if not self._is_ours(reference(item))]
            updated = {**current, "detectedIssue": [*others, {"reference": own}]}
            version = version_of(current)[0] or None
            try:
                written = self.client.update(updated, if_match_version=version)
            except FhirConflictError:
                continue
            base = self.store.base_version("MedicationDispense", rid) or version
            return Performed(
                {"id": rid, "linked": own, "written": True}, written, base_version=base
            )
        raise Retry(f"the dispense changed {LINK_ATTEMPTS} times while linking it", system="ehr")

    def _is_ours(self, ref: str | None) -> bool:
        """One of our decisions (held with its decision identifier): replaced by the new one."""
        if self.store is None or not ref or not ref.startswith("DetectedIssue/"):
            return False
        held = self.store.resource("DetectedIssue", ref.removeprefix("DetectedIssue/"))
        return held is not None and decision_identifier(held) is not None

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
