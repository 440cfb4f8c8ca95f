"""What the EHR allows, read from its CapabilityStatement, and the author Device made once.

Used by every writer of DetectedIssues (the pipeline's EHR sink, watch). Moved here from
`adapter.watch.writeback`, which re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.ehr import FhirClient, FhirNotFoundError, FhirServerError
from adapter.fhir.write import AUTHOR_DEVICE, DEVICE_IDENTIFIER_SYSTEM, author_device

#: The two ways a new DetectedIssue is created.
PUT = "put"
CONDITIONAL = "conditional-create"


@dataclass(frozen=True)
class EhrFeatures:
    """What the EHR's CapabilityStatement says the write-back and the poll can use."""

    #: how new DetectedIssues are created: PUT (client-assigned ids) or CONDITIONAL
    create_mode: str = CONDITIONAL
    #: the server declares DetectedIssue `identifier` search (else the poll filters locally)
    issue_identifier_search: bool = True


def _declared(capabilities: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rests = capabilities.get("rest")
    for rest in rests if isinstance(rests, list) else []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        resources = rest.get("resource")
        for item in resources if isinstance(resources, list) else []:
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                out[item["type"]] = item
    return out


def ehr_features(capabilities: dict[str, Any]) -> EhrFeatures:
    """Read `rest.resource.updateCreate` (and the DetectedIssue search parameters). A server
    that does not list DetectedIssue at all (stock sekmet-fhir) is judged by what it declares
    for the resources it does list: update-as-create when every one that says allows it."""
    declared = _declared(capabilities)
    issue = declared.get("DetectedIssue")
    if issue is not None:
        put = issue.get("updateCreate") is True
        params = issue.get("searchParam")
        listed = params if isinstance(params, list) else []
        names = {p.get("name") for p in listed if isinstance(p, dict)}
        return EhrFeatures(PUT if put else CONDITIONAL, "identifier" in names)
    says = [item.get("updateCreate") for item in declared.values() if "updateCreate" in item]
    put = bool(says) and all(value is True for value in says)
    return EhrFeatures(PUT if put else CONDITIONAL, False)


def ensure_author_device(client: FhirClient, version: str, create_mode: str = PUT) -> str:
    """Create the Device our DetectedIssues name as author, once, and return its reference.

    Read `Device/rems-adapter`; when absent, PUT it under that fixed id (update-as-create) or,
    where the server assigns ids, create it conditionally on its identifier (then its reference
    is the server's id). A replay finds it and changes nothing."""
    device = author_device(version)
    try:
        client.read(device["resourceType"], device["id"])
        return AUTHOR_DEVICE
    except FhirNotFoundError:
        pass
    if create_mode == PUT:
        try:
            client.update(device)
            return AUTHOR_DEVICE
        except FhirServerError:
            pass  # no client-assigned ids after all: create it by its identifier
    body = {k: v for k, v in device.items() if k != "id"}
    token = f"{DEVICE_IDENTIFIER_SYSTEM}|{device['id']}"
    created = client.create_if_none_exist(body, {"identifier": token})
    return f"Device/{created.resource['id']}"
