"""Which write each DetectedIssue line of a backfill becomes (the writes are watch's)."""

from __future__ import annotations

from typing import Any

from adapter.backfill.writeback import WriteBackReport, plan
from adapter.fhir.write import AUTHOR_DEVICE

SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"


def issue(status: str, version: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": f"d-{status}",
        "identifier": [{"system": SYSTEM, "value": f"v-{status}"}],
        "status": status,
        "patient": {"reference": "Patient/p1"},
        "author": {"reference": AUTHOR_DEVICE, "display": "rems-adapter"},
    }
    if version is not None:
        resource["meta"] = {"versionId": version}
    return resource


def test_a_decision_is_created_by_identifier_a_withdrawal_updates_the_exported_version() -> None:
    new, withdrawn, unversioned = plan(
        [issue("final"), issue("cancelled", "3"), issue("entered-in-error")], AUTHOR_DEVICE
    )
    assert new.is_create and new.condition == f"{SYSTEM}|v-final" and new.patient == "Patient/p1"
    assert not withdrawn.is_create and withdrawn.if_match == "3"
    assert withdrawn.resource["status"] == "cancelled"
    assert not unversioned.is_create and unversioned.if_match is None


def test_a_server_assigned_author_device_is_named_in_new_decisions_only() -> None:
    new, withdrawn = plan([issue("final"), issue("cancelled", "2")], "Device/abc")
    assert new.resource["author"] == {"reference": "Device/abc", "display": "rems-adapter"}
    assert withdrawn.resource["author"]["reference"] == AUTHOR_DEVICE  # the EHR's as it was


def test_the_report_counts_refusals_by_status() -> None:
    report = WriteBackReport(created=2, already_there=1, withdrawn=1)
    report.refused[412] += 2
    assert report.refused_count == 2
    assert report.summary() == (
        "Written back to the EHR: 2 created, 1 already there, 1 withdrawn, 2 refused (HTTP 412: 2)."
    )
