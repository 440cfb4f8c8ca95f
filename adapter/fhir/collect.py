"""Gathers what the rules need from a stream of resources, grouped by patient (a translator:
batch, the pipeline and watch all use it).

Keeps only relevant resources (ANC-related labs, clozapine dispenses and prescriptions,
designations, our own DetectedIssues) so that memory stays flat on large exports. Versions of the
same resource are reconciled (the latest wins); translation errors become input problems.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from adapter.core.labs import version_rank
from adapter.core.model import (
    Designations,
    LabObservation,
    PatientInputs,
    PendingDispense,
    PriorIssue,
    Supply,
    WithdrawnDispense,
    compact_pickle,
    pack_columns,
    unpack_columns,
)
from adapter.fhir.read import FhirInputError, Reader, ReportTimes, collection_time

#: (results without an effective time) -> (reports listing each result, specimens by reference).
CollectionContext = Callable[
    [list[LabObservation]],
    tuple[Mapping[str, list[ReportTimes]], Mapping[str, tuple[datetime, str]]],
]


@dataclass(frozen=True)
class InputProblem:
    location: str  # "file:line" or "file#entry[n]"
    message: str  # names the FHIR path; never quotes values from the resource

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class Located(NamedTuple):
    """A resource and where it was read. A tuple, with the location formatted only when asked
    for (a problem to report): one is made for every line of an export."""

    where: str  # the file, or "file:line#Bundle.entry[n]"
    resource: dict[str, Any]
    line: int = 0  # the line in ``where``; 0 when ``where`` is already complete
    #: Its position in the input (see `adapter.batch.sources.arrival_base`), in reading order;
    #: 0: not known (the collector counts instead). Only compared: the latest of equal versions
    #: wins.
    arrival: int = 0

    @property
    def location(self) -> str:
        return f"{self.where}:{self.line}" if self.line else self.where


class _Reported(Exception):
    """A resource read with problems to report: kept (a lab result as unevaluable, a dispense
    awaiting a decision at its strictest reading) and reported."""

    def __init__(self, lab: LabObservation | None, *errors: FhirInputError) -> None:
        super().__init__(str(errors[0]))
        self.lab = lab
        self.errors = errors


def _rank(resource: dict[str, Any], arrival: int) -> tuple[int, str, int]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    return version_rank(
        _meta_text(meta.get("versionId")), _meta_text(meta.get("lastUpdated")), arrival
    )


def _meta_text(value: object) -> str:
    """A meta string for ordering versions only: a number as written, anything else (a list,
    an object: never repr'd, which could recurse without bound) as absent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # the JSON parser bounds integers to 64 bits
    return ""


@compact_pickle
@dataclass
class _Dispense:
    rank: tuple[int, str, int]
    item: Supply | PendingDispense | WithdrawnDispense | None
    clozapine: bool | None
    medication_ref: str | None


@dataclass
class _Request:
    patient: str
    requester: str | None
    active: bool
    clozapine: bool | None
    medication_ref: str | None


@dataclass
class Collector:
    reader: Reader
    clock: datetime
    problems: list[InputProblem] = field(default_factory=list)
    resources_read: int = 0
    labs: dict[str, list[LabObservation]] = field(default_factory=lambda: defaultdict(list))
    dispenses: dict[str, _Dispense] = field(default_factory=dict)
    requests: dict[str, _Request] = field(default_factory=dict)
    medications: dict[str, bool] = field(default_factory=dict)
    designations: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    issues: dict[str, tuple[tuple[int, str, int], PriorIssue, dict[str, Any]]] = field(
        default_factory=dict
    )
    #: When results were collected, for those whose Observation does not say (latest version).
    reports: dict[str, tuple[tuple[int, str, int], ReportTimes]] = field(default_factory=dict)
    specimens: dict[str, tuple[tuple[int, str, int], datetime, str]] = field(default_factory=dict)
    #: The position of the resource being read (its `Located.arrival`, else the count read).
    arrival: int = 0

    # Pickled (from a batch worker to the parent) with every kept result in columns, one list
    # per field: the results are most of what travels, and most of the hand-over's cost.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        labs = state.pop("labs")
        patients = list(labs)
        state["labs"] = (
            patients,
            [len(labs[patient]) for patient in patients],
            pack_columns([lab for patient in patients for lab in labs[patient]]),
        )
        dispenses = state.pop("dispenses")
        state["dispenses"] = (list(dispenses), pack_columns(list(dispenses.values())))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        patients, counts, packed = state.pop("labs")
        flat = unpack_columns(packed)
        labs: dict[str, list[LabObservation]] = defaultdict(list)
        at = 0
        for patient, count in zip(patients, counts, strict=True):
            labs[patient] = flat[at : at + count]
            at += count
        refs, held = state.pop("dispenses")
        self.__dict__.update(state)
        self.labs = labs
        self.dispenses = dict(zip(refs, unpack_columns(held), strict=True))

    def add(self, located: Located) -> None:
        self.resources_read += 1
        self.arrival = located.arrival or self.resources_read
        resource = located.resource
        kind = resource["resourceType"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            return  # unknown or irrelevant resource types are ignored
        try:
            handler(self, resource)
        except _Reported as reported:
            for error in reported.errors:
                self.problems.append(InputProblem(located.location, f"{kind}: {error}"))
            if reported.lab is not None:
                self.labs[reported.lab.patient].append(reported.lab)
        except FhirInputError as error:
            self.problems.append(InputProblem(located.location, f"{kind}: {error}"))

    def _observation(self, resource: dict[str, Any]) -> None:
        lab, unreadable = self.reader.read_observation(resource, arrival=self.arrival)
        if unreadable is not None:  # reported, and still decided (as unevaluable)
            raise _Reported(lab, unreadable)
        if lab is not None:
            self.labs[lab.patient].append(lab)

    def _dispense(self, resource: dict[str, Any]) -> None:
        rank = _rank(resource, self.arrival)
        ref = f"MedicationDispense/{resource.get('id')}"
        held = self.dispenses.get(ref)
        if held is not None and held.rank > rank:
            return
        clozapine, medication_ref = self.reader.medication_of(resource)
        item, unread = self.reader.dispense(resource) if clozapine is not False else (None, ())
        self.dispenses[ref] = _Dispense(rank, item, clozapine, medication_ref)
        if unread:  # decided all the same (at the strictest reading), and reported
            raise _Reported(None, *unread)

    def _request(self, resource: dict[str, Any]) -> None:
        clozapine, medication_ref = self.reader.medication_of(resource)
        if clozapine is False:
            return
        patient, requester, active = self.reader.request(resource)
        ref = f"MedicationRequest/{resource.get('id')}"
        self.requests[ref] = _Request(patient, requester, active, clozapine, medication_ref)

    def _medication(self, resource: dict[str, Any]) -> None:
        self.medications[f"Medication/{resource.get('id')}"] = self.reader.medication_is_clozapine(
            resource
        )

    def _designation(self, resource: dict[str, Any]) -> None:
        found = self.reader.designation(resource, self.clock)
        if found is not None:
            self.designations[found[0]].add(found[1])

    def _report(self, resource: dict[str, Any]) -> None:
        report = self.reader.report(resource)
        if report is None:
            return
        rank = _rank(resource, self.arrival)
        ref = f"DiagnosticReport/{resource.get('id')}"
        held = self.reports.get(ref)
        if held is None or held[0] <= rank:
            self.reports[ref] = (rank, report)

    def _specimen(self, resource: dict[str, Any]) -> None:
        found = self.reader.specimen(resource)
        if found is None:
            return
        ref, moment, raw = found
        rank = _rank(resource, self.arrival)
        held = self.specimens.get(ref)
        if held is None or held[0] <= rank:
            self.specimens[ref] = (rank, moment, raw)

    def _collection_context(
        self,
    ) -> tuple[dict[str, list[ReportTimes]], dict[str, tuple[datetime, str]]]:
        by_result: dict[str, list[ReportTimes]] = defaultdict(list)
        for _, report in self.reports.values():
            for ref in report.results:
                by_result[ref].append(report)
        specimens = {ref: (moment, raw) for ref, (_, moment, raw) in self.specimens.items()}
        return by_result, specimens

    def _issue(self, resource: dict[str, Any]) -> None:
        issue = self.reader.prior_issue(resource)
        if issue is None:
            return
        rank = _rank(resource, self.arrival)
        held = self.issues.get(issue.ref)
        if held is None or held[0] <= rank:
            self.issues[issue.ref] = (rank, issue, resource)

    def merge(self, later: Collector) -> None:
        """Take in what `later` collected from input read after this collector's: the result
        is what one collector reading both in order would hold (the same dict orders too)."""
        self.problems += later.problems
        self.resources_read += later.resources_read
        for patient, labs in later.labs.items():
            self.labs[patient].extend(labs)
        for ref, dispense in later.dispenses.items():
            held = self.dispenses.get(ref)
            if held is None or held.rank <= dispense.rank:
                self.dispenses[ref] = dispense
        self.requests.update(later.requests)
        self.medications.update(later.medications)
        for patient, found in later.designations.items():
            self.designations[patient] |= found
        for ranked, mine in ((later.issues, self.issues), (later.reports, self.reports)):
            for ref, item in ranked.items():
                held_item = mine.get(ref)
                if held_item is None or held_item[0] <= item[0]:
                    mine[ref] = item  # type: ignore[assignment]
        for ref, specimen in later.specimens.items():
            held_specimen = self.specimens.get(ref)
            if held_specimen is None or held_specimen[0] <= specimen[0]:
                self.specimens[ref] = specimen

    # ------------------------------------------------------------------ results

    def _is_clozapine(self, flag: bool | None, medication_ref: str | None) -> bool:
        if flag is not None:
            return flag
        return bool(medication_ref and self.medications.get(medication_ref, False))

    def unresolved_medications(self) -> int:
        return sum(
            1
            for held in self.dispenses.values()
            if held.clozapine is None and held.medication_ref not in self.medications
        )

    def patients(self, context: CollectionContext | None = None) -> list[PatientInputs]:
        """Every patient's inputs, sorted by patient. `context` gives the reports and specimens
        that date results without an effective time (default: those collected here)."""
        supplies: dict[str, list[Supply]] = defaultdict(list)
        pending: dict[str, list[PendingDispense]] = defaultdict(list)
        withdrawn: dict[str, list[WithdrawnDispense]] = defaultdict(list)
        for held in self.dispenses.values():
            if held.item is None or not self._is_clozapine(held.clozapine, held.medication_ref):
                continue
            if isinstance(held.item, Supply):
                supplies[held.item.patient].append(held.item)
            elif isinstance(held.item, WithdrawnDispense):
                withdrawn[held.item.patient].append(held.item)
            else:
                pending[held.item.patient].append(held.item)
        prescribers: dict[str, set[str]] = defaultdict(set)
        prescribed: dict[str, list[str]] = defaultdict(list)
        for ref, request in sorted(self.requests.items()):
            if not self._is_clozapine(request.clozapine, request.medication_ref):
                continue
            if request.requester:
                prescribers[request.patient].add(request.requester)
            if request.active:
                prescribed[request.patient].append(ref)
        # Results without an effective time are dated by their report or specimen.
        undated = any(lab.collected is None for labs in self.labs.values() for lab in labs)
        by_result: Mapping[str, list[ReportTimes]]
        specimens: Mapping[str, tuple[datetime, str]]
        if not undated:
            by_result, specimens = {}, {}
        elif context is None:
            by_result, specimens = self._collection_context()
        else:
            by_result, specimens = context(
                [lab for labs in self.labs.values() for lab in labs if lab.collected is None]
            )

        def dated(labs: Iterable[LabObservation]) -> tuple[LabObservation, ...]:
            return tuple(collection_time(lab, by_result, specimens) for lab in labs)

        prior: dict[str, list[PriorIssue]] = defaultdict(list)
        for _, issue, _ in self.issues.values():
            prior[issue.patient].append(issue)
        everyone = set(self.labs) | set(supplies) | set(pending) | set(prescribed) | set(prior)
        return [
            PatientInputs(
                patient=patient,
                labs=dated(self.labs.get(patient, ())),
                supplies=tuple(sorted(supplies.get(patient, ()), key=lambda s: s.ref)),
                pending=tuple(sorted(pending.get(patient, ()), key=lambda p: p.ref)),
                designations=Designations(
                    ben="ben" in self.designations.get(patient, ()),
                    hospice="hospice" in self.designations.get(patient, ()),
                ),
                prior_issues=tuple(sorted(prior.get(patient, ()), key=lambda i: i.ref)),
                prescribers=frozenset(prescribers.get(patient, ())),
                prescribed=patient in prescribed,
                requests=tuple(prescribed.get(patient, ())),
                withdrawn_dispenses=tuple(sorted(withdrawn.get(patient, ()), key=lambda w: w.ref)),
            )
            for patient in sorted(everyone)
        ]

    def raw_issue(self, ref: str) -> dict[str, Any]:
        return self.issues[ref][2]

    def requesters(self) -> dict[str, str | None]:
        """Requester of each clozapine MedicationRequest: who signs for a dispense's override."""
        return {ref: request.requester for ref, request in self.requests.items()}


#: Who a REMS form names: the patient, the prescriber, the pharmacy.
IDENTITY_KINDS = frozenset({"Patient", "Practitioner", "Organization"})


def identity_refs(patients: Iterable[PatientInputs]) -> frozenset[str]:
    """The Patient, Practitioner and Organization resources the REMS forms of these patients
    (patients on clozapine) need: the patient, their prescribers, the dispensing pharmacies."""
    refs: set[str] = set()
    for inputs in patients:
        refs.add(inputs.patient)
        refs |= inputs.prescribers
        for pending in inputs.pending:
            refs.update(pending.performers)
    return frozenset(ref for ref in refs if ref.split("/", 1)[0] in IDENTITY_KINDS)


@dataclass
class IdentityCollector:
    """A second pass over the sources (rems backend only) keeping just the resources in
    `wanted`: memory follows the patients on clozapine, not the number of Patients exported.
    Versions of a resource are reconciled as in the first pass (the latest wins)."""

    wanted: frozenset[str]
    seen: int = 0
    found: dict[str, tuple[tuple[int, str, int], dict[str, Any]]] = field(default_factory=dict)

    def add(self, located: Located) -> None:
        self.seen += 1
        resource = located.resource
        if resource.get("resourceType") not in IDENTITY_KINDS:
            return
        ref = f"{resource['resourceType']}/{resource.get('id')}"
        if ref not in self.wanted:
            return
        rank = _rank(resource, self.seen)
        held = self.found.get(ref)
        if held is None or held[0] <= rank:
            self.found[ref] = (rank, resource)

    def resources(self) -> dict[str, dict[str, Any]]:
        return {ref: resource for ref, (_, resource) in self.found.items()}


_HANDLERS = {
    "Observation": Collector._observation,
    "MedicationDispense": Collector._dispense,
    "MedicationRequest": Collector._request,
    "Medication": Collector._medication,
    "Condition": Collector._designation,
    "Flag": Collector._designation,
    "DetectedIssue": Collector._issue,
    "DiagnosticReport": Collector._report,
    "Specimen": Collector._specimen,
}
