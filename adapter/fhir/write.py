"""The core's decisions -> FHIR R4 DetectedIssue JSON, and withdrawals of earlier ones."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapter.core.evaluate import Withdrawal
from adapter.core.findings import Finding
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM, V3_ACT_CODE
from adapter.fhir.records import instant

PROFILE_URL = "https://rems-adapter.github.io/fhir/StructureDefinition/rems-adapter-detectedissue"
AUTHOR_DEVICE = "Device/rems-adapter"
DEVICE_IDENTIFIER_SYSTEM = "https://rems-adapter.github.io/fhir/sid/device"


def author_device(version: str) -> dict[str, Any]:
    """The R4 Device every DetectedIssue names as `author` (AUTHOR_DEVICE)."""
    kind, device_id = AUTHOR_DEVICE.split("/")
    return {
        "resourceType": kind,
        "id": device_id,
        "identifier": [{"system": DEVICE_IDENTIFIER_SYSTEM, "value": device_id}],
        "status": "active",
        "manufacturer": "rems-adapter project",
        "deviceName": [{"name": "rems-adapter", "type": "manufacturer-name"}],
        "version": [{"value": version}],
        "type": {"text": "Clozapine REMS monitoring and dispense decision software"},
    }


_ACT_DISPLAY = {
    "LAB": "Laboratory Alert",
    "NAT": "Insufficient authorization",
    "VALIDAT": "Validation issue",
}


def issue_id(finding: Finding) -> str:
    """A logical id derived from the identifier, so batch outputs are deterministic too."""
    return f"ra-{finding.identifier}"


def detected_issue(finding: Finding, finding_system: str, identified: datetime) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": issue_id(finding),
        "meta": {"profile": [PROFILE_URL]},
        "identifier": [{"system": DECISION_IDENTIFIER_SYSTEM, "value": finding.identifier}],
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": V3_ACT_CODE,
                    "code": finding.act_code,
                    "display": _ACT_DISPLAY[finding.act_code],
                },
                {"system": finding_system, "code": finding.code},
            ],
            "text": finding.code.replace("-", " "),
        },
        "severity": finding.severity,
        "patient": {"reference": finding.patient},
        "identifiedDateTime": instant(identified),
        "author": {"reference": AUTHOR_DEVICE, "display": "rems-adapter"},
    }
    if finding.implicated:
        resource["implicated"] = [{"reference": ref} for ref in finding.implicated]
    evidence: dict[str, Any] = {}
    if finding.reasons:
        evidence["code"] = [
            {"coding": [{"system": finding_system, "code": reason}], "text": reason}
            for reason in finding.reasons
        ]
    if finding.evidence:
        evidence["detail"] = [{"reference": ref} for ref in finding.evidence]
    if evidence:
        resource["evidence"] = [evidence]
    resource["detail"] = finding.detail
    return resource


def withdrawn_issue(original: Mapping[str, Any], withdrawal: Withdrawal) -> dict[str, Any]:
    """The earlier DetectedIssue, updated (never deleted) to its withdrawn status."""
    updated = copy.deepcopy(dict(original))
    updated["status"] = withdrawal.status
    detail = str(updated.get("detail") or "").rstrip()
    note = f"Withdrawn ({withdrawal.status}): {withdrawal.reason}."
    if note not in detail:
        updated["detail"] = f"{detail} {note}".strip()
    return updated
