"""What to ask the EHR's `$export` for: the level, `_type`, `_typeFilter` and `_since`.

Only what batch mode reads is exported (`RESOURCE_TYPES`; the identities the REMS forms need
only with a REMS backend), and two types are narrowed by the codes in ``mappings/``:

- ``Observation?code=...``: every LOINC code in ``lab-codes.toml`` (ANC, segmented-only, WBC,
  neutrophil, segmented and band %), as bare codes so that a system-less coding, which the
  reader accepts, matches too;
- ``Condition?code=...``: the BEN and hospice codes of ``designations.toml`` (bare codes again:
  the project's own codes are accepted in a coding with no system).

Both are supersets of what the reader takes, so a narrowed export decides exactly as the whole
one. The other types are not narrowed: a MedicationDispense or MedicationRequest that names its
drug by a `medicationReference` is not found by a `code` search, Flag has no `code` search
parameter in R4, and a filtered-out Medication would make its dispenses look unresolved.
One `_typeFilter` per type: servers differ on combining several for one type (the Bulk Data
specification ORs them, some servers AND them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any
from urllib.parse import quote

from adapter.core.reference import ReferenceData
from adapter.ehr.bulk import ExportRequest, Level
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM, reference

#: The resource types batch mode reads (adapter.fhir.collect); a test keeps them equal.
RESOURCE_TYPES = (
    "Condition",
    "DetectedIssue",
    "DiagnosticReport",
    "Flag",
    "Medication",
    "MedicationDispense",
    "MedicationRequest",
    "Observation",
    "Specimen",
)
#: What the REMS backend reads besides: patient, prescriber and pharmacy identities.
IDENTITY_TYPES = ("Organization", "Patient", "Practitioner")


@dataclass(frozen=True)
class Scope:
    level: Level = "system"
    group: str | None = None


def _codes_query(resource_type: str, codes: Iterable[str]) -> str:
    """``Type?code=a%2Cb``: each code escaped, the commas between them too, so that a server
    splitting the `_typeFilter` value on commas still sees one query."""
    joined = "%2C".join(quote(code, safe="") for code in sorted(set(codes)))
    return f"{resource_type}?code={joined}"


def type_filters(data: ReferenceData) -> tuple[str, ...]:
    labs = data.lab_codes
    lab_codes = (
        labs.anc | labs.not_anc | labs.wbc | labs.neutrophil_pct | labs.segs_pct | labs.band_pct
    )
    designations = {code for _, code in data.designations.ben | data.designations.hospice}
    return (_codes_query("Observation", lab_codes), _codes_query("Condition", designations))


def export_request(
    data: ReferenceData, scope: Scope, since: str | None, *, identities: bool
) -> ExportRequest:
    types = RESOURCE_TYPES + (IDENTITY_TYPES if identities else ())
    return ExportRequest(
        level=scope.level,
        group=scope.group,
        types=tuple(sorted(types)),
        type_filters=type_filters(data),
        since=since,
    )


def decisions_request(since: str | None) -> ExportRequest:
    """A system-level export of our own DetectedIssues (the decisions already on the EHR and
    the mitigations people added), for a Patient or Group export that held none: a server
    without DetectedIssue `patient` search (stock sekmet-fhir) leaves them out of the Patient
    compartment. A server that ignores the identifier filter sends every DetectedIssue; the
    reader takes only ours."""
    return ExportRequest(
        level="system",
        types=("DetectedIssue",),
        type_filters=(f"DetectedIssue?identifier={quote(DECISION_IDENTIFIER_SYSTEM, safe='')}|",),
        since=since,
    )


def group_members(group: Mapping[str, Any]) -> frozenset[str]:
    """The Group's Patient members as "Patient/id" (inactive ones too: servers export them)."""
    out = set()
    for member in group.get("member") or []:
        ref = reference(member.get("entity")) if isinstance(member, Mapping) else None
        if ref and ref.startswith("Patient/"):
            out.add(ref)
    return frozenset(out)


def read_since(raw: str, site_tz: tzinfo) -> str:
    """`_since` as a FHIR instant in UTC with milliseconds (``2025-01-01T05:00:00.000Z``).

    A date alone means the start of that day at the site; a date-time without offset is taken
    at the site. UTC with milliseconds is what most servers write in `meta.lastUpdated`, so a
    server comparing the strings compares the instants. A ValueError says what is wrong."""
    text = raw.strip()
    moment: datetime
    try:
        if "T" in text or " " in text:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=site_tz)
        else:
            moment = datetime.combine(date.fromisoformat(text), time(0), tzinfo=site_tz)
    except ValueError as error:
        raise ValueError(
            "not an ISO 8601 date or date-time (e.g. 2025-01-01 or 2025-01-01T00:00:00Z)"
        ) from error
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
