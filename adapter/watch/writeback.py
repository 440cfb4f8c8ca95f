"""Writing decisions back: creates and If-Match updates, in batch Bundles or one by one.

A new DetectedIssue is created in one of two ways, read from the server's CapabilityStatement
(interfaces.md section 4; `EhrFeatures`): where the server allows client-assigned ids
(`rest.resource.updateCreate`), ``PUT DetectedIssue/{deterministic id}`` after a read that finds
it absent (a replay never duplicates it, and never overwrites a later version such as a
withdrawal or a prescriber's mitigation); otherwise a conditional create (``If-None-Exist`` on
the decision identifier). Both are exactly-once on replay.

A failure of the whole request (server unreachable after retries) propagates: the patients stay
marked for decision and the next cycle tries again. A per-entry refusal (412: someone changed the
resource since we read it; 4xx: the server rejected it) is reported in the result instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from adapter.ehr import FhirClient, FhirConflictError, FhirNotFoundError, FhirServerError
from adapter.pipeline.capabilities import (
    CONDITIONAL,
    PUT,
    EhrFeatures,
    ehr_features,
    ensure_author_device,
)


@dataclass(frozen=True)
class Write:
    patient: str
    resource: dict[str, Any]
    #: identifier token (system|value) for a conditional create; None for an update
    condition: str | None = None
    #: versionId the update is conditional on (If-Match)
    if_match: str | None = None

    @property
    def is_create(self) -> bool:
        return self.condition is not None


@dataclass(frozen=True)
class Written:
    write: Write
    status: int
    resource: dict[str, Any] | None  # what the server now holds; None when refused

    @property
    def ok(self) -> bool:
        return self.resource is not None and 200 <= self.status < 300


def _entry(write: Write, create_mode: str = CONDITIONAL) -> dict[str, Any]:
    kind = write.resource["resourceType"]
    if write.condition is not None and create_mode == PUT:
        body = {k: v for k, v in write.resource.items() if k != "meta" or v}
        return {"resource": body, "request": {"method": "PUT", "url": f"{kind}/{body['id']}"}}
    if write.condition is not None:
        body = {k: v for k, v in write.resource.items() if k != "id"}  # the server assigns it
        request = {
            "method": "POST",
            "url": kind,
            "ifNoneExist": urlencode([("identifier", write.condition)]),
        }
        return {"resource": body, "request": request}
    request = {"method": "PUT", "url": f"{kind}/{write.resource['id']}"}
    if write.if_match is not None:
        request["ifMatch"] = f'W/"{write.if_match}"'
    return {"resource": write.resource, "request": request}


def _from_location(write: Write, answer: dict[str, Any]) -> dict[str, Any] | None:
    """The written resource when the server answered with a location but no body."""
    location = str(answer.get("location") or "")
    parts = urlsplit(location).path.strip("/").split("/")
    kind = write.resource["resourceType"]
    if kind not in parts:
        return None
    tail = parts[parts.index(kind) + 1 :]
    if not tail:
        return None
    resource = {**write.resource, "id": tail[0]}
    meta = dict(resource.get("meta") or {})
    if len(tail) >= 3 and tail[1] == "_history":
        meta["versionId"] = tail[2]
    if answer.get("lastModified"):
        meta["lastUpdated"] = answer["lastModified"]
    resource["meta"] = meta
    return resource


def _status(answer: dict[str, Any]) -> int:
    raw = str(answer.get("status") or "").split(" ", 1)[0]
    return int(raw) if raw.isdigit() else 0


def _existing(
    client: FhirClient, writes: Sequence[Write], *, use_bundles: bool, batch_size: int
) -> dict[int, dict[str, Any]]:
    """The creates (by index) whose deterministic id the server already holds."""
    creates = [(i, w) for i, w in enumerate(writes) if w.is_create]
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(creates), batch_size if use_bundles else 1):
        chunk = creates[start : start + (batch_size if use_bundles else 1)]
        if use_bundles:
            entries = [
                {"request": {"method": "GET", "url": f"{kind}/{w.resource['id']}"}}
                for _, w in chunk
                if (kind := w.resource["resourceType"])
            ]
            for (index, write), answer in zip(chunk, client.batch(entries), strict=True):
                resource = answer.get("resource")
                status = _status(answer.get("response") or {})
                if (
                    status == 200
                    and isinstance(resource, dict)
                    and resource.get("resourceType") == write.resource["resourceType"]
                ):
                    found[index] = resource
            continue
        for index, write in chunk:
            with suppress(FhirNotFoundError):
                found[index] = client.read(write.resource["resourceType"], write.resource["id"])
    return found


def send(
    client: FhirClient,
    writes: Sequence[Write],
    *,
    use_bundles: bool,
    batch_size: int,
    create_mode: str = CONDITIONAL,
) -> list[Written]:
    """Write `writes`; the answers in the same order."""
    if create_mode != PUT:
        return _send(client, writes, use_bundles=use_bundles, batch_size=batch_size)
    existing = _existing(client, writes, use_bundles=use_bundles, batch_size=batch_size)
    rest = [w for i, w in enumerate(writes) if i not in existing]
    sent = iter(
        _send(client, rest, use_bundles=use_bundles, batch_size=batch_size, create_mode=PUT)
    )
    return [
        Written(w, 200, existing[i]) if i in existing else next(sent) for i, w in enumerate(writes)
    ]


def _send(
    client: FhirClient,
    writes: Sequence[Write],
    *,
    use_bundles: bool,
    batch_size: int,
    create_mode: str = CONDITIONAL,
) -> list[Written]:
    out: list[Written] = []
    if use_bundles:
        for start in range(0, len(writes), batch_size):
            chunk = writes[start : start + batch_size]
            answers = client.batch([_entry(w, create_mode) for w in chunk])
            for write, answer in zip(chunk, answers, strict=True):
                response = answer.get("response") or {}
                status = _status(response)
                resource = answer.get("resource")
                if (
                    not isinstance(resource, dict)
                    or resource.get("resourceType") != (write.resource["resourceType"])
                ):
                    resource = _from_location(write, response) if 200 <= status < 300 else None
                out.append(Written(write, status, resource if 200 <= status < 300 else None))
        return out
    for write in writes:
        try:
            if write.condition is not None and create_mode == PUT:
                body = _entry(write, PUT)["resource"]
                out.append(Written(write, 201, client.update(body)))
            elif write.condition is not None:
                result = client.create_if_none_exist(
                    _entry(write)["resource"], {"identifier": write.condition}
                )
                out.append(Written(write, 201 if result.created else 200, result.resource))
            else:
                updated = client.update(write.resource, if_match_version=write.if_match)
                out.append(Written(write, 200, updated))
        except FhirConflictError as error:
            out.append(Written(write, error.status or 412, None))
        except FhirServerError as error:
            out.append(Written(write, error.status or 0, None))
    return out


__all__ = [
    "CONDITIONAL",
    "PUT",
    "EhrFeatures",
    "Write",
    "Written",
    "ehr_features",
    "ensure_author_device",
    "send",
]
