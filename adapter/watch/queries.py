"""What the watcher polls, and the watermark arithmetic.

Each query is polled ascending by ``_lastUpdated`` from the stored watermark minus an overlap
window: a resource committed late (a long transaction, clocks a little apart) still has a
lastUpdated inside the window and is seen; de-duplication by id + versionId drops the repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adapter.core.reference import ReferenceData
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM
from adapter.watch.state import instant_of


@dataclass(frozen=True)
class Query:
    """One search the watcher polls. `name` keys its watermark; `patient` is set in the
    per-patient mode (servers whose searches need a patient)."""

    name: str
    resource_type: str
    params: tuple[tuple[str, str], ...]
    include: tuple[str, ...] = ()
    patient: str | None = None

    @property
    def key(self) -> str:
        return self.name if self.patient is None else f"{self.name}|{self.patient}"

    def for_patient(self, patient: str) -> Query:
        pid = patient.removeprefix("Patient/")
        return Query(
            self.name, self.resource_type, (*self.params, ("patient", pid)), self.include, patient
        )


def _tokens(pairs: set[tuple[str | None, str]]) -> str:
    # no system: a bare code matches it in any system; the Reader then applies the exact rule
    return ",".join(sorted(f"{system}|{code}" if system else code for system, code in pairs))


def watch_queries(
    data: ReferenceData, derive_anc: bool, use_include: bool, issue_identifier_search: bool = True
) -> tuple[Query, ...]:
    labs = data.lab_codes
    codes = set(labs.anc)
    if derive_anc:
        codes |= labs.wbc | labs.neutrophil_pct | labs.segs_pct | labs.band_pct
    observation_codes = ",".join(f"{labs.system}|{code}" for code in sorted(codes))
    designations = _tokens(set(data.designations.ben) | set(data.designations.hospice))
    # Medications named by reference come with the page. Not `MedicationDispense:prescription`:
    # MedicationRequests are polled on their own, and on sekmet-fhir that include costs seconds
    # per page of 1,000 (measured by tests/bench/watch_bench.py).
    dispense_include = ("MedicationDispense:medication",) if use_include else ()
    request_include = ("MedicationRequest:medication",) if use_include else ()
    return (
        Query("observation", "Observation", (("code", observation_codes),)),
        # clozapine is recognised locally (codes, NDC, Medication resources, text): the server
        # cannot be asked for every way a dispense may name it
        Query("dispense", "MedicationDispense", (), dispense_include),
        Query("request", "MedicationRequest", (), request_include),
        Query("condition", "Condition", (("code", designations),)),
        Query("flag", "Flag", ()),  # R4 defines no `code` search parameter for Flag
        # A server without DetectedIssue `identifier` search (stock sekmet-fhir) is polled for
        # every DetectedIssue; ours are recognised locally by their decision identifier.
        Query(
            "decision",
            "DetectedIssue",
            (("identifier", f"{DECISION_IDENTIFIER_SYSTEM}|"),) if issue_identifier_search else (),
        ),
    )


def format_instant(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def poll_from(watermark: str | None, overlap_seconds: float) -> str | None:
    """The `_lastUpdated=ge` bound for the first page of a cycle: the watermark minus the overlap.
    Without overlap the raw server string is sent back unchanged."""
    if watermark is None:
        return None
    if overlap_seconds <= 0:
        return watermark
    moment = instant_of(watermark)
    if moment is None:
        return watermark  # not an instant we can do arithmetic on: poll from it exactly
    return format_instant(moment - timedelta(seconds=overlap_seconds))


def later(candidate: str, than: str | None) -> bool:
    """Whether raw instant `candidate` is after `than` (None: nothing yet)."""
    if than is None:
        return True
    a, b = instant_of(candidate), instant_of(than)
    if a is not None and b is not None:
        return a > b
    return candidate > than
