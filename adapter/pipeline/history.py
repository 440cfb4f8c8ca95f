"""What the rules need from the EHR, as searches: the poll source's queries and a patient's
history (hydration of a patient first seen through a push).

Hydration is bounded: one search per kind (at most `max_pages` pages of `page_size` each) and
one read of the Patient. A search the server does not support (stock servers without
DetectedIssue search parameters) is skipped: our DetectedIssues are then known from our own
writes, and writes stay idempotent on the server (deterministic ids, conditional creates).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from adapter.core.reference import ReferenceData
from adapter.ehr import FhirClient, FhirNotFoundError, FhirServerError
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM


@dataclass(frozen=True)
class Query:
    """One search. `name` keys its watermark; `patient` is set for a per-patient search."""

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


def queries(
    data: ReferenceData, derive_anc: bool, use_include: bool, issue_identifier_search: bool = True
) -> tuple[Query, ...]:
    """The searches that find everything the rules read (watch polls them with `_lastUpdated`;
    a new patient's history is read with them, per patient)."""
    labs = data.lab_codes
    codes = set(labs.anc)
    if derive_anc:
        codes |= labs.wbc | labs.neutrophil_pct | labs.segs_pct | labs.band_pct
    observation_codes = ",".join(f"{labs.system}|{code}" for code in sorted(codes))
    designations = _tokens(set(data.designations.ben) | set(data.designations.hospice))
    # Medications named by reference come with the page. Not `MedicationDispense:prescription`:
    # MedicationRequests are searched on their own, and on sekmet-fhir that include costs
    # seconds per page of 1,000 (measured by tests/bench/watch_bench.py).
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
        # A server without DetectedIssue `identifier` search (stock sekmet-fhir) is searched for
        # every DetectedIssue; ours are recognised locally by their decision identifier.
        Query(
            "decision",
            "DetectedIssue",
            (("identifier", f"{DECISION_IDENTIFIER_SYSTEM}|"),) if issue_identifier_search else (),
        ),
    )


def matches_and_includes(
    bundle: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    matches: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
            continue
        search = entry.get("search")
        mode = search.get("mode", "match") if isinstance(search, dict) else "match"
        (included if mode == "include" else matches).append(resource)
    return matches, included


@dataclass(frozen=True)
class HistoryLimits:
    max_pages: int = 5
    page_size: int = 200


def _search(client: FhirClient, query: Query, limits: HistoryLimits) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        pages = client.search_pages(
            query.resource_type,
            list(query.params),
            include=query.include,
            count=limits.page_size,
            max_pages=limits.max_pages,
        )
        for page, bundle in enumerate(pages, 1):
            matches, included = matches_and_includes(bundle)
            out += included
            out += matches
            if page >= limits.max_pages:
                pages.close()
                break
    except FhirNotFoundError:
        return []
    except FhirServerError as error:
        if error.status in (400, 403, 422, 501):
            return []  # the server does not support this search: skip it
        raise
    return out


def _read_patient(client: FhirClient, patient: str) -> list[dict[str, Any]]:
    try:
        return [client.read("Patient", patient.removeprefix("Patient/"))]
    except FhirNotFoundError:
        return []


def patient_history(
    client: FhirClient,
    data: ReferenceData,
    patient: str,
    *,
    derive_anc: bool,
    limits: HistoryLimits,
) -> list[dict[str, Any]]:
    """The patient's resources the rules need, as the EHR holds them (bounded: a read and one
    search per kind, at once). Transient failures propagate (the caller tries again later); an
    unsupported search is skipped."""
    searches = [q.for_patient(patient) for q in queries(data, derive_anc, use_include=True)]
    with ThreadPoolExecutor(max_workers=len(searches) + 1, thread_name_prefix="history") as pool:
        reads = [pool.submit(_read_patient, client, patient)]
        reads += [pool.submit(_search, client, query, limits) for query in searches]
        out: list[dict[str, Any]] = []
        for future in reads:
            out += future.result()  # the first failure propagates
    return out
