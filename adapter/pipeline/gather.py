"""What the rules need, kept per patient: classifying arriving resources and keeping them.

Every source's resources pass through `Keeper.take`: a resource the rules need (an ANC-related
lab, a clozapine dispense or prescription, a designation, one of our DetectedIssues, the Patient,
the Specimen and DiagnosticReport of a pushed result, a Medication) is kept in the store under
its patient; a version already held is not taken twice; a resource that stopped being relevant
is forgotten. The caller marks the patients it returns for a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from adapter.fhir.read import (
    FhirInputError,
    Reader,
    decision_identifier,
    reference,
    release_stands,
)
from adapter.store import Store
from adapter.store.sql import version_of

log = logging.getLogger(__name__)

#: Resolves a Medication reference the store does not hold (reads it from the EHR): the
#: resource, or None when it does not exist.
MedicationReader = Callable[[str], dict[str, Any] | None]

#: Kept under the patient they are about, without a relevance test of their own.
CONTEXT_KINDS = frozenset({"Patient", "Specimen", "DiagnosticReport"})


@dataclass
class Taken:
    """What one `take` did."""

    patient: str | None = None
    new: bool = False
    duplicate: bool = False
    anc: bool = False
    problem: str | None = None  # a FHIR path and what is wrong with it, never a value


def is_newer(candidate: tuple[str, str], held: tuple[str, str]) -> bool:
    """Whether version `candidate` (versionId, lastUpdated) is later than `held`."""
    from adapter.fhir.values import read_instant_or_none

    (cand_v, cand_t), (held_v, held_t) = candidate, held
    if cand_v.isdigit() and held_v.isdigit():
        return int(cand_v) > int(held_v)
    if cand_v and cand_v == held_v:
        return False
    cand_i, held_i = read_instant_or_none(cand_t), read_instant_or_none(held_t)
    if cand_i is not None and held_i is not None:
        return cand_i > held_i
    return (cand_v, cand_t) != (held_v, held_t)  # cannot order them: a change is a change


def subject_of(resource: dict[str, Any]) -> str | None:
    """The Patient reference a resource is about (``Patient/id``), or None."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else None
    element = "patient" if kind == "DetectedIssue" else "subject"
    try:
        ref = reference(resource.get(element))
    except FhirInputError:
        return None
    return ref if ref and ref.startswith("Patient/") and "/" not in ref[8:] else None


def storable(resource: dict[str, Any]) -> dict[str, Any]:
    """The top-level elements the store can hold (one nested beyond the serialiser's limit is
    dropped; what the rules needed from it is then unreadable, and reported as such)."""
    kept: dict[str, Any] = {}
    for key, value in resource.items():
        try:
            orjson.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept


class Keeper:
    def __init__(self, store: Store, reader: Reader, medications: MedicationReader) -> None:
        self.store = store
        self.reader = reader
        self.read_medication = medications
        self._clozapine: dict[str, bool] = {}

    def forget_medications(self) -> None:
        """A Medication edited on the server is read again (call once per poll cycle)."""
        self._clozapine = {}

    def is_clozapine_medication(self, ref: str) -> bool:
        if ref in self._clozapine:
            return self._clozapine[ref]
        kind, _, rid = ref.partition("/")
        if kind != "Medication" or not rid or "/" in rid:
            self._clozapine[ref] = False
            return False
        held = self.store.resource("Medication", rid)
        if held is None:
            held = self.read_medication(ref)
            if held is not None:
                self.store.upsert_resource(held, None)
        flag = self.reader.medication_is_clozapine(held) if held is not None else False
        self._clozapine[ref] = flag
        return flag

    def note_medication(self, resource: dict[str, Any]) -> None:
        """A Medication that came along (an _include): remember whether it is clozapine."""
        rid = resource.get("id")
        if isinstance(rid, str):
            self._clozapine[f"Medication/{rid}"] = self.reader.medication_is_clozapine(resource)

    def classify(self, resource: dict[str, Any]) -> tuple[bool, str | None, str | None]:
        """(keep it, its patient, our decision identifier if it is one of our DetectedIssues)."""
        kind = resource["resourceType"]
        if kind == "Medication":
            return True, None, None
        patient = subject_of(resource)
        if kind == "Observation":
            relevant = self.reader.lab_role(resource) not in (None, "not-anc")
        elif kind in ("MedicationDispense", "MedicationRequest"):
            flag, ref = self.reader.medication_of(resource)
            relevant = flag if flag is not None else bool(ref and self.is_clozapine_medication(ref))
        elif kind in ("Condition", "Flag"):
            relevant = self.reader.designation_coded(resource)
        elif kind == "DetectedIssue":
            identifier = decision_identifier(resource)
            if identifier is None:
                return False, None, None
            return patient is not None, patient, identifier
        elif kind in CONTEXT_KINDS:
            relevant = True
        else:
            return False, None, None
        if relevant and patient is None:
            return False, None, None  # relevant but about no patient: nothing to decide
        return relevant, patient, None

    def take(self, resource: dict[str, Any]) -> Taken:
        """Keep one resource (inside the caller's transaction). Never raises for bad content:
        a resource that cannot be read is held as far as it can be, under its patient, so that
        deciding the patient reports it (an unreadable ANC result gives `anc-unevaluable`)."""
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind, str) or not isinstance(rid, str) or not rid:
            return Taken(problem="resourceType and id are required")
        held = self.store.held_version(kind, rid)
        if held is not None and not is_newer(version_of(resource), held):
            return Taken(patient=subject_of(resource), duplicate=True)
        if held is not None and release_stands(resource, lambda: self.store.resource(kind, rid)):
            return Taken(patient=subject_of(resource), duplicate=True)
        try:
            relevant, patient, identifier = self.classify(resource)
        except FhirInputError as error:
            patient = subject_of(resource)
            if patient is not None:
                self.store.upsert_resource(storable(resource), patient, None)
            return Taken(patient=patient, new=patient is not None, problem=str(error))
        if relevant:
            self.store.upsert_resource(storable(resource), patient, identifier)
            anc = kind == "Observation" and self.reader.lab_role(resource) == "anc"
            return Taken(patient=patient, new=True, anc=anc)
        if held is not None:
            # it was relevant and no longer is (recoded, another drug): forget it, re-decide
            previous = self.store.resource(kind, rid) or {}
            self.store.delete_resource(kind, rid)
            return Taken(patient=subject_of(previous), new=True)
        return Taken()
