"""What backfill asks the EHR's $export for: types batch mode reads, filters from mappings/."""

from __future__ import annotations

from datetime import UTC
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest

from adapter.backfill.plan import (
    IDENTITY_TYPES,
    RESOURCE_TYPES,
    Scope,
    decisions_request,
    export_request,
    group_members,
    read_since,
    type_filters,
)
from adapter.fhir import collect
from adapter.mappings_loader import load_reference_data

DATA = load_reference_data(None)


def test_the_exported_types_are_those_batch_mode_reads() -> None:
    assert set(RESOURCE_TYPES) == set(collect._HANDLERS)
    assert set(IDENTITY_TYPES) == set(collect.IDENTITY_KINDS)
    local = export_request(DATA, Scope(), None, identities=False)
    assert set(local.types) == set(RESOURCE_TYPES)
    rems = export_request(DATA, Scope("group", "g1"), None, identities=True)
    assert set(rems.types) == set(RESOURCE_TYPES) | set(IDENTITY_TYPES)
    assert rems.path() == ("Group", "g1", "$export")


def _codes(query: str) -> tuple[str, set[str]]:
    kind, _, rest = query.partition("?")
    ((name, value),) = parse_qsl(rest)  # one parameter; %2C decodes to the OR separator
    assert name == "code" and "," not in rest
    return kind, set(value.split(","))


def test_filters_cover_every_code_in_the_mappings_as_bare_codes() -> None:
    observation, condition = type_filters(DATA)
    kind, codes = _codes(observation)
    labs = DATA.lab_codes
    assert kind == "Observation"
    assert codes == set().union(
        labs.anc, labs.not_anc, labs.wbc, labs.neutrophil_pct, labs.segs_pct, labs.band_pct
    )
    assert {"751-8", "753-4", "26499-4", "6690-2", "770-8", "764-1"} <= codes
    kind, codes = _codes(condition)
    assert kind == "Condition"
    assert codes == {"benign-ethnic-neutropenia", "hospice", "385763009", "170935008"}


@pytest.mark.parametrize(
    ("raw", "zone", "sent"),
    [
        ("2025-01-01T00:00:00Z", "UTC", "2025-01-01T00:00:00.000Z"),
        ("2025-01-01T00:00:00.5+02:00", "UTC", "2024-12-31T22:00:00.500Z"),
        ("2025-06-01", "America/Chicago", "2025-06-01T05:00:00.000Z"),  # its start at the site
        ("2025-06-01T08:30", "Europe/Paris", "2025-06-01T06:30:00.000Z"),
    ],
)
def test_since_is_sent_as_a_utc_instant_with_milliseconds(raw: str, zone: str, sent: str) -> None:
    assert read_since(raw, ZoneInfo(zone) if zone != "UTC" else UTC) == sent


@pytest.mark.parametrize("raw", ["soon", "2025-13-01", "2025-01-01T25:00Z", ""])
def test_a_bad_since_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        read_since(raw, UTC)


def test_our_decisions_are_asked_for_by_their_identifier_system() -> None:
    request = decisions_request("2025-01-01T00:00:00.000Z")
    assert request.level == "system" and request.types == ("DetectedIssue",)
    ((kind, query),) = [q.split("?", 1) for q in request.type_filters]
    assert kind == "DetectedIssue"
    assert parse_qsl(query) == [("identifier", "https://rems-adapter.github.io/fhir/sid/decision|")]
    assert request.since == "2025-01-01T00:00:00.000Z"


def test_group_members_are_patient_references_whatever_their_form() -> None:
    group = {
        "resourceType": "Group",
        "member": [
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "https://ehr.test/fhir/Patient/b/_history/2"}},
            {"entity": {"reference": "Patient/c"}, "inactive": True},
            {"entity": {"reference": "Practitioner/d"}},
            {"entity": {}},
            "junk",
        ],
    }
    assert group_members(group) == {"Patient/a", "Patient/b", "Patient/c"}
