"""FHIR R4 JSON (camelCase dicts) -> the core's frozen values.

Pure translators: no I/O. They read only the elements the rules use and say exactly which FHIR
path is wrong when something cannot be read. Inputs are read at the dict level so that large
exports stream fast; what the adapter writes is built and checked with the R4B models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from decimal import Decimal
from functools import cached_property
from sys import intern
from typing import Any, TypeVar

from adapter.core.labs import keeps_release
from adapter.core.model import (
    LabObservation,
    LabRole,
    Mitigation,
    PendingDispense,
    PriorIssue,
    Supply,
    WithdrawnDispense,
)
from adapter.core.protocol import Setting
from adapter.core.reference import ReferenceData
from adapter.fhir.values import (
    ValueProblem,
    as_list,
    as_string,
    read_datetime,
    read_decimal,
    read_whole_number,
    too_deep,
)

JSON = Mapping[str, Any]
#: A JSON object: parsed JSON is always a dict, and `isinstance` tries dict first (the Mapping
#: ABC's check is several times slower, and runs for most elements of every kept result).
_OBJECT = (dict, Mapping)
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DECISION_IDENTIFIER_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"
#: One of our DetectedIssues read back is written again when withdrawn: deeper nesting than this
#: (no DetectedIssue needs more than a dozen levels) is reported, never echoed.
MAX_ECHOED_DEPTH = 64


#: A resource cannot be read; ``path`` is the FHIR path of the offending element.
FhirInputError = ValueProblem

_T = TypeVar("_T")


def parse_datetime(raw: object, path: str, site_tz: tzinfo) -> datetime:
    """A FHIR dateTime/instant as an aware datetime; a date alone is midnight at the site."""
    return read_datetime(raw, path, site_tz)


def reference(node: object) -> str | None:
    """A Reference as "Type/id": absolute URLs and version suffixes are reduced to it."""
    if isinstance(node, _OBJECT):
        ref = node.get("reference")
        if isinstance(ref, str) and ref:
            ref = ref.split("/_history/")[0]
            if "://" in ref:
                parts = ref.rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2][:1].isupper():
                    return f"{parts[-2]}/{parts[-1]}"
            return ref
    return None


def decision_identifier(resource: Mapping[str, Any]) -> str | None:
    """The identifier value in our decision system, on one of our own DetectedIssues; else None."""
    identifier = next(
        (
            item.get("value")
            for item in as_list(
                resource.get("identifier"), f"{resource.get('resourceType')}.identifier"
            )
            if isinstance(item, _OBJECT) and item.get("system") == DECISION_IDENTIFIER_SYSTEM
        ),
        None,
    )
    return identifier if isinstance(identifier, str) else None


def _code(coding: JSON, key: str, path: str) -> str | None:
    """A coding's `system` / `code`: a string or absent; anything else is reported."""
    value = coding.get(key)
    if value is None or type(value) is str:
        return value
    raise FhirInputError(f"{path}.{key}", f"expected a string, got a {type(value).__name__}")


def _codings(concept: object, path: str = "coding") -> list[JSON]:
    """The codings of a CodeableConcept whose `system` and `code` are strings (or absent);
    a coding with another kind of value there is reported with its path, and so is a concept
    that is not an object or whose `coding` is not a list: read as no coding, a clozapine
    dispense would pass for another drug, an inpatient one for outpatient (no supply limit)
    and an ANC for another result, all without a word."""
    if concept is None:
        return []
    if not isinstance(concept, _OBJECT):
        raise FhirInputError(path, "expected a CodeableConcept")
    codings = concept.get("coding")
    if codings is not None and not isinstance(codings, list):
        raise FhirInputError(f"{path}.coding", "expected a list")
    found = []
    for index, c in enumerate(codings or ()):
        if isinstance(c, _OBJECT):
            _code(c, "system", f"{path}.coding[{index}]")
            _code(c, "code", f"{path}.coding[{index}]")
            found.append(c)
    return found


def _concepts(node: object) -> list[object]:
    return list(node) if isinstance(node, list) else ([node] if node else [])


def _version(resource: JSON) -> tuple[str, str]:
    meta = resource.get("meta")
    if isinstance(meta, _OBJECT):
        kind = resource.get("resourceType")
        version = as_string(meta.get("versionId"), f"{kind}.meta.versionId")
        updated = as_string(meta.get("lastUpdated"), f"{kind}.meta.lastUpdated")
        return version or "", updated or ""
    return "", ""


def _id_ref(resource: JSON) -> str:
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        path = f"{resource.get('resourceType')}.id"
        if rid is None or rid == "":
            raise FhirInputError(path, "missing")
        raise FhirInputError(path, f"expected a string, got a {type(rid).__name__}")
    return f"{resource['resourceType']}/{rid}"


def _subject(resource: JSON, element: str) -> str:
    ref = reference(resource.get(element))
    kind = resource.get("resourceType")
    if ref is None or not ref.startswith("Patient/"):
        raise FhirInputError(f"{kind}.{element}", "needs a reference to a Patient")
    return ref


def _interned(text: str | None) -> str | None:
    return None if text is None else intern(text)


def _decimal(raw: object, path: str) -> Decimal:
    # Messages never quote the value: these errors reach logs, and values belong to a person.
    # The one place a FHIR number becomes a core value: exactly, as a Decimal (a JSON parser's
    # float is taken by its shortest repr, i.e. the digits the source wrote). No rounding. The
    # reading itself (types, grammar, finite, bounded) is adapter.fhir.values'.
    return read_decimal(raw, path)


@dataclass(frozen=True)
class ReportTimes:
    """A DiagnosticReport's results and when they were collected, as far as it says."""

    subject: str | None
    results: tuple[str, ...]
    specimens: tuple[str, ...]
    collected: datetime | None
    raw: str


def collection_time(
    lab: LabObservation,
    reports: Mapping[str, list[ReportTimes]],
    specimens: Mapping[str, tuple[datetime, str]],
) -> LabObservation:
    """A result without an effective time, dated by the DiagnosticReport that lists it in
    ``result`` (its ``effective[x]``), else by its Specimen (``collection.collected[x]``; the
    Observation's own specimen, else the report's), clinical-rules section 1. Otherwise it is
    returned unchanged (and stays unevaluable). Reports of another patient are never used; two
    reports that disagree leave it unevaluable rather than picking one."""
    if lab.collected is not None:
        return lab
    listing = [item for item in reports.get(lab.ref, ()) if item.subject in (None, lab.patient)]
    dated = {(item.collected, item.raw) for item in listing if item.collected is not None}
    if len({moment for moment, _ in dated}) > 1:
        return replace(
            lab,
            problem=lab.problem
            or "DiagnosticReport.effective[x]: the reports listing this result disagree on "
            "its collection time",
        )
    if dated:
        moment, raw = min(dated)
        return replace(lab, collected=moment, collected_raw=raw)
    candidates = [lab.specimen] if lab.specimen else []
    candidates += [ref for item in listing for ref in item.specimens]
    for ref in candidates:
        if ref in specimens:
            moment, raw = specimens[ref]
            return replace(lab, collected=moment, collected_raw=raw, specimen=ref)
    return lab


@dataclass(frozen=True)
class Reader:
    """Translators bound to the reference data and the site's time zone."""

    reference_data: ReferenceData
    site_tz: tzinfo

    # ---------------------------------------------------------------- Observation

    @cached_property
    def _lab_roles(self) -> dict[str, LabRole]:
        """Lab code -> role. Where lists overlap, the earlier role in :func:`lab_role`'s order
        wins: it is written last."""
        codes = self.reference_data.lab_codes
        roles: dict[str, LabRole] = {}
        ordered: tuple[tuple[frozenset[str], LabRole], ...] = (
            (codes.band_pct, "band-pct"),
            (codes.segs_pct, "segs-pct"),
            (codes.neutrophil_pct, "neutrophil-pct"),
            (codes.wbc, "wbc"),
            (codes.not_anc, "not-anc"),
            (codes.anc, "anc"),
        )
        for listed, role in ordered:
            roles.update(dict.fromkeys(listed, role))
        return roles

    def lab_role(self, resource: JSON) -> LabRole | None:
        """The role of the first LOINC (or system-less) coding with a listed code; a direct ANC
        code anywhere in the concept wins over every other role.

        One pass with one lookup per coding: this runs for every Observation of an export, and
        nineteen in twenty of them are not ANC-related."""
        system = self.reference_data.lab_codes.system
        roles = self._lab_roles
        found: LabRole | None = None
        concept = resource.get("code")
        codings = concept.get("coding") if type(concept) is dict else None
        if type(codings) is not list:  # the plain JSON shape skips the general reader
            codings = _codings(concept, "Observation.code")
        for index, coding in enumerate(codings):
            if not isinstance(coding, _OBJECT):
                continue
            code = coding.get("code")
            if type(code) is not str:
                _code(coding, "code", f"Observation.code.coding[{index}]")
                continue  # absent
            if coding.get("system") not in (system, None):
                continue
            role = roles.get(code)
            if role == "anc":
                return role
            if found is None:
                found = role
        return found

    def observation(self, resource: JSON, arrival: int) -> LabObservation | None:
        """A lab result the ANC rules use, or None for anything else (vitals, other labs)."""
        return self.read_observation(resource, arrival)[0]

    def read_observation(
        self, resource: JSON, arrival: int
    ) -> tuple[LabObservation | None, FhirInputError | None]:
        """(the lab result the ANC rules use or None, the reading problem to report or None).

        An ANC-related result (its code, id and patient known) whose other elements cannot be
        read is still returned, with the problem, so that it is reported *and* decided as
        unevaluable; one whose code, id or patient cannot be read raises: it has nowhere to go.
        """
        # Cheap shape checks of what every Observation must have, so that an invalid one is
        # reported rather than silently taken for "not an ANC".
        if not isinstance(resource.get("code"), _OBJECT):
            raise FhirInputError("Observation.code", "expected a CodeableConcept")
        role = self.lab_role(resource)
        if role is None or role == "not-anc":
            if not isinstance(resource.get("status"), str):
                raise FhirInputError("Observation.status", "expected a code")
            return None, None
        ref = _id_ref(resource)
        patient = _subject(resource, "subject")
        try:
            return self._lab(resource, arrival, role, ref, patient)
        except FhirInputError as error:
            status = resource.get("status")
            try:
                version, updated = _version(resource)
            except FhirInputError:
                version, updated = "", ""
            try:  # placed in time when it can be: one collected after the clock is ignored
                collected = self._collected(resource)
            except FhirInputError:
                collected = None
            unreadable = LabObservation(
                ref=ref,
                patient=intern(patient),
                role=role,
                # A status that cannot be read cannot hold the result back or withdraw it:
                # the result is decided as unevaluable, never silently dropped.
                status=intern(status) if isinstance(status, str) else "final",
                collected=collected,
                value=None,
                unit_code=None,
                unit_system=None,
                unit_text=None,
                version=intern(version),
                last_updated=updated,
                arrival=arrival,
                problem=str(error),
            )
            return unreadable, error

    def _lab(
        self, resource: JSON, arrival: int, role: LabRole, ref: str, patient: str
    ) -> tuple[LabObservation, FhirInputError | None]:
        version, updated = _version(resource)
        status = resource.get("status")
        if not isinstance(status, str):
            raise FhirInputError("Observation.status", "expected a code")
        problem: str | None = None
        reported: FhirInputError | None = None
        collected: datetime | None = None
        try:
            collected = self._collected(resource)
        except FhirInputError as error:
            problem = str(error)
            reported = error
        # No effective time at all: the collection time may come from the DiagnosticReport that
        # lists this result, or its Specimen (see `collection_time`); the collector fills it in.
        period = resource.get("effectivePeriod")
        raw = resource.get("effectiveDateTime") or (
            period.get("start") if isinstance(period, _OBJECT) else None
        )
        value: Decimal | None = None
        unit_code = unit_system = unit_text = None
        quantity = resource.get("valueQuantity")
        if isinstance(quantity, _OBJECT):
            unit_code = quantity.get("code") if isinstance(quantity.get("code"), str) else None
            unit_system = (
                quantity.get("system") if isinstance(quantity.get("system"), str) else None
            )
            unit_text = quantity.get("unit") if isinstance(quantity.get("unit"), str) else None
            comparator = quantity.get("comparator")
            if comparator:
                bound = quantity.get("value")
                shown = (
                    f" ('{comparator}{bound}')"
                    if isinstance(comparator, str)
                    and len(comparator) <= 2
                    and isinstance(bound, int | float)
                    else ""
                )
                problem = problem or (
                    f"Observation.valueQuantity.comparator: reported as a bound{shown}, not a value"
                )
            elif "value" in quantity:
                try:
                    value = _decimal(quantity.get("value"), "Observation.valueQuantity.value")
                except FhirInputError as error:
                    problem = problem or str(error)
                    reported = reported or error
        elif quantity is not None:
            raise FhirInputError("Observation.valueQuantity", "expected a Quantity")
        if quantity is None:
            kinds = [key for key in resource if key.startswith("value")]
            if kinds:
                problem = problem or f"Observation.{kinds[0]}: not a Quantity"
            elif resource.get("dataAbsentReason"):
                problem = problem or "Observation.dataAbsentReason: no value reported"
        issued: datetime | None = None
        if resource.get("issued"):
            try:
                issued = parse_datetime(resource.get("issued"), "Observation.issued", self.site_tz)
            except FhirInputError:
                issued = None  # only a tie-breaker between linked results
        # Interned: these few values repeat across every kept result of a large export, and
        # one shared copy of each keeps the collector's memory down (equal strings either way).
        return LabObservation(
            ref=ref,
            patient=intern(patient),
            role=role,
            status=intern(status),
            collected=collected,
            value=value,
            unit_code=_interned(unit_code),
            unit_system=_interned(unit_system),
            unit_text=_interned(unit_text),
            version=intern(version),
            specimen=reference(resource.get("specimen")),
            identifiers=self._identifiers(resource),
            replaces=self._replaces(resource),
            issued=issued,
            last_updated=updated,
            arrival=arrival,
            problem=problem,
            collected_raw=raw if isinstance(raw, str) and collected is not None else "",
        ), reported

    def _collected(self, resource: JSON) -> datetime | None:
        if "effectiveDateTime" in resource:
            return parse_datetime(
                resource["effectiveDateTime"], "Observation.effectiveDateTime", self.site_tz
            )
        period = resource.get("effectivePeriod")
        if isinstance(period, _OBJECT) and period.get("start"):
            return parse_datetime(
                period["start"], "Observation.effectivePeriod.start", self.site_tz
            )
        if "effectiveInstant" in resource:
            return parse_datetime(
                resource["effectiveInstant"], "Observation.effectiveInstant", self.site_tz
            )
        return None

    # ---------------------------------------------------------------- collection context

    def report(self, resource: JSON) -> ReportTimes | None:
        """What a DiagnosticReport says about when its results were collected (clinical-rules
        section 1: its ``effective[x]``, else its specimen), or None when it names no result."""
        results = tuple(
            ref
            for item in resource.get("result") or []
            if (ref := reference(item)) and ref.startswith("Observation/")
        )
        if not results:
            return None
        collected, raw = self._effective(resource, "DiagnosticReport")
        specimens = tuple(
            ref for item in resource.get("specimen") or [] if (ref := reference(item))
        )
        subject = reference(resource.get("subject"))
        return ReportTimes(subject, results, specimens, collected, raw)

    def specimen(self, resource: JSON) -> tuple[str, datetime, str] | None:
        """(reference, collection time, raw string) of a Specimen, or None without a time."""
        collection = resource.get("collection")
        if not isinstance(collection, _OBJECT):
            return None
        collected, raw = self._effective(collection, "Specimen.collection", prefix="collected")
        if collected is None:
            return None
        return _id_ref(resource), collected, raw

    def _effective(
        self, node: JSON, path: str, prefix: str = "effective"
    ) -> tuple[datetime | None, str]:
        raw = node.get(f"{prefix}DateTime")
        element = f"{path}.{prefix}DateTime"
        period = node.get(f"{prefix}Period")
        if raw is None and isinstance(period, _OBJECT) and period.get("start"):
            raw, element = period["start"], f"{path}.{prefix}Period.start"
        if raw is None:
            return None, ""
        return parse_datetime(raw, element, self.site_tz), str(raw)

    @staticmethod
    def _identifiers(resource: JSON) -> tuple[str, ...]:
        out = []
        for index, item in enumerate(as_list(resource.get("identifier"), "Observation.identifier")):
            if isinstance(item, _OBJECT) and item.get("value"):
                where = f"Observation.identifier[{index}]"
                system = as_string(item.get("system"), f"{where}.system")
                value = as_string(item["value"], f"{where}.value")
                out.append(f"{system or ''}|{value}")
        return tuple(sorted(out))

    @staticmethod
    def _replaces(resource: JSON) -> tuple[str, ...]:
        out = []
        for ext in as_list(resource.get("extension"), "Observation.extension"):
            if (
                isinstance(ext, _OBJECT)
                and isinstance(ext.get("url"), str)
                and ext["url"].endswith("/replaces")
            ):
                ref = reference(ext.get("valueReference"))
                if ref:
                    out.append(ref)
        return tuple(out)

    # ---------------------------------------------------------------- medications

    def is_clozapine_concept(self, concept: object, path: str = "medication") -> bool:
        codes = self.reference_data.clozapine
        codings = _codings(concept, path)
        for coding in codings:
            if (coding.get("system"), coding.get("code")) in codes.codes:
                return True
        texts: list[object] = [concept.get("text")] if isinstance(concept, _OBJECT) else []
        texts += [coding.get("display") for coding in codings]
        return any(
            isinstance(text, str) and any(word in text.lower() for word in codes.words)
            for text in texts
        )

    def medication_is_clozapine(self, resource: JSON) -> bool:
        return self.is_clozapine_concept(resource.get("code"), "Medication.code")

    def medication_of(self, resource: JSON) -> tuple[bool | None, str | None]:
        """(is clozapine, unresolved Medication reference) for a dispense or request."""
        concept = resource.get("medicationCodeableConcept")
        if concept is not None:
            where = f"{resource.get('resourceType')}.medicationCodeableConcept"
            return self.is_clozapine_concept(concept, where), None
        ref = reference(resource.get("medicationReference"))
        if ref is None:
            return False, None
        if ref.startswith("#"):
            for contained in as_list(resource.get("contained"), "contained"):
                if isinstance(contained, _OBJECT) and contained.get("id") == ref[1:]:
                    return self.medication_is_clozapine(contained), None
            return False, None
        return None, ref

    # ---------------------------------------------------------------- dispenses

    def setting(self, resource: JSON) -> Setting:
        dispense = self.reference_data.dispense
        category = resource.get("category")
        # R4's one CodeableConcept; a list of them (R5's shape) is read too, never as none.
        concepts = category if isinstance(category, list) else [category]
        path = "MedicationDispense.category"
        for coding in (c for concept in concepts for c in _codings(concept, path)):
            system, code = coding.get("system"), coding.get("code")
            if code in dispense.category_codes and (
                system is None or system in dispense.category_systems
            ):
                return code  # type: ignore[no-any-return]
        return dispense.default_setting

    def _days_supply(self, resource: JSON) -> int | None:
        quantity = resource.get("daysSupply")
        if quantity is None:
            return None
        if not isinstance(quantity, _OBJECT):
            raise FhirInputError("MedicationDispense.daysSupply", "expected a Quantity")
        if quantity.get("value") is None:
            return None
        return read_whole_number(
            quantity.get("value"),
            "MedicationDispense.daysSupply.value",
            minimum=0,
            maximum=self.reference_data.dispense.max_days_supply,
        )

    def dispense(
        self, resource: JSON
    ) -> tuple[Supply | PendingDispense | WithdrawnDispense | None, tuple[FhirInputError, ...]]:
        """A clozapine supply handed over, a dispense awaiting a decision, one withdrawn
        (entered in error, cancelled), or None (a status that changes nothing: on hold); and
        what of a dispense awaiting a decision could not be read, to report.

        A supply that cannot be read raises (it cannot be placed in the history). A dispense
        awaiting a decision whose identity (id, patient) reads is decided all the same, each
        unreadable element taken at its strictest: dropped, it would await a decision nobody
        is told of (clinical-rules.md: when the adapter cannot decide, it says so)."""
        codes = self.reference_data.dispense
        status = resource.get("status")
        if not isinstance(status, str):
            raise FhirInputError("MedicationDispense.status", "expected a code")
        if status in codes.entered_in_error or status in codes.withdrawn:
            subject = reference(resource.get("subject"))
            if subject is None or not subject.startswith("Patient/"):
                return None, ()  # nobody's decision to withdraw: nothing else about it is read
            withdrawn = WithdrawnDispense(
                _id_ref(resource), subject, status in codes.entered_in_error, status
            )
            return withdrawn, ()
        if status not in codes.completed and status not in codes.awaiting_decision:
            return None, ()
        ref = _id_ref(resource)
        patient = _subject(resource, "subject")
        if status in codes.completed:
            return self._supply(resource, ref, patient), ()
        return self._pending(resource, ref, patient)

    def _performers(self, resource: JSON) -> tuple[str, ...]:
        return tuple(
            actor
            for item in as_list(resource.get("performer"), "MedicationDispense.performer")
            if isinstance(item, _OBJECT) and (actor := reference(item.get("actor")))
        )

    def _supply(self, resource: JSON, ref: str, patient: str) -> Supply:
        days = self._days_supply(resource)
        setting = self.setting(resource)
        performers = self._performers(resource)
        if not resource.get("whenHandedOver"):
            raise FhirInputError(
                "MedicationDispense.whenHandedOver", "a completed dispense needs it"
            )
        handed = parse_datetime(
            resource["whenHandedOver"], "MedicationDispense.whenHandedOver", self.site_tz
        )
        return Supply(ref, patient, handed, days, setting, performers)

    def _pending(
        self, resource: JSON, ref: str, patient: str
    ) -> tuple[PendingDispense, tuple[FhirInputError, ...]]:
        problems: list[FhirInputError] = []

        def read(element: Callable[[], _T], strictest: _T) -> _T:
            try:
                return element()
            except FhirInputError as error:
                problems.append(error)
                return strictest

        days = read(lambda: self._days_supply(resource), None)
        setting = read(lambda: self.setting(resource), None)
        nobody: tuple[str, ...] = ()
        performers = read(lambda: self._performers(resource), nobody)
        moment = read(lambda: self._prepared(resource), None)
        prescription = read(lambda: self._prescription(resource), None)
        version = read(lambda: _version(resource)[0], "")
        pending = PendingDispense(
            ref=ref,
            patient=patient,
            time=moment,
            days_supply=days,
            setting=setting or self.reference_data.dispense.default_setting,
            version=version,
            performers=performers,
            prescription=prescription,
            unreadable=tuple(dict.fromkeys(error.path for error in problems)),
            setting_unknown=setting is None,
        )
        return pending, tuple(problems)

    def _prepared(self, resource: JSON) -> datetime | None:
        for element in ("whenHandedOver", "whenPrepared"):
            if resource.get(element):
                return parse_datetime(
                    resource[element], f"MedicationDispense.{element}", self.site_tz
                )
        return None

    def _prescription(self, resource: JSON) -> str | None:
        prescriptions = [
            prescription
            for item in as_list(
                resource.get("authorizingPrescription"),
                "MedicationDispense.authorizingPrescription",
            )
            if (prescription := reference(item))
        ]
        return prescriptions[0] if prescriptions else None

    # ---------------------------------------------------------------- requests, designations

    def request(self, resource: JSON) -> tuple[str, str | None, bool]:
        """(patient, requester, active) of a MedicationRequest (call only for clozapine ones)."""
        patient = _subject(resource, "subject")
        active = resource.get("status") in ("active", "on-hold", "completed", "draft")
        return patient, reference(resource.get("requester")), active

    def designation(self, resource: JSON, clock: datetime) -> tuple[str, str] | None:
        """(patient, 'ben' | 'hospice') for an active designation Condition or Flag."""
        codes = self.reference_data.designations
        kind: str | None = None
        for coding in _codings(resource.get("code"), f"{resource['resourceType']}.code"):
            key = (coding.get("system"), coding.get("code"))
            if key in codes.ben:
                kind = "ben"
            elif key in codes.hospice:
                kind = "hospice"
        if kind is None:
            return None
        if resource["resourceType"] == "Flag":
            if resource.get("status") != "active":
                return None
            period = resource.get("period")
            if isinstance(period, _OBJECT) and not self._within(
                period.get("start"), period.get("end"), clock, "Flag.period"
            ):
                return None
        else:
            clinical = {
                c.get("code")
                for c in _codings(resource.get("clinicalStatus"), "Condition.clinicalStatus")
            }
            verification = {
                c.get("code")
                for c in _codings(
                    resource.get("verificationStatus"), "Condition.verificationStatus"
                )
            }
            if clinical and not clinical & {"active", "recurrence", "relapse"}:
                return None
            if verification & {"refuted", "entered-in-error"}:
                return None
            onset = resource.get("onsetDateTime") or resource.get("recordedDate")
            abatement = resource.get("abatementDateTime")
            if not self._within(onset, abatement, clock, "Condition.onsetDateTime"):
                return None
        return _subject(resource, "subject"), kind

    def designation_coded(self, resource: JSON) -> bool:
        """Whether a Condition or Flag carries a designation code (whatever its status)."""
        codes = self.reference_data.designations
        return any(
            (coding.get("system"), coding.get("code")) in codes.ben | codes.hospice
            for coding in _codings(resource.get("code"), f"{resource.get('resourceType')}.code")
        )

    def _within(self, start: object, end: object, clock: datetime, path: str) -> bool:
        if start and parse_datetime(start, path, self.site_tz) > clock:
            return False
        return not (end and parse_datetime(end, path, self.site_tz) <= clock)

    # ---------------------------------------------------------------- our DetectedIssues

    def prior_issue(self, resource: JSON) -> PriorIssue | None:
        """One of our own DetectedIssues read back, or None if someone else wrote it."""
        identifier = decision_identifier(resource)
        if identifier is None:
            return None
        if too_deep(resource, MAX_ECHOED_DEPTH):  # it is written back when withdrawn
            raise FhirInputError("DetectedIssue.*", f"nested deeper than {MAX_ECHOED_DEPTH} levels")
        finding = next(
            (
                coding.get("code")
                for coding in _codings(resource.get("code"), "DetectedIssue.code")
                if coding.get("system") == self.reference_data.finding_system
            ),
            None,
        )
        if not isinstance(finding, str):
            raise FhirInputError("DetectedIssue.code.coding", "no code from the finding CodeSystem")
        identified = None
        if resource.get("identifiedDateTime"):
            identified = parse_datetime(
                resource["identifiedDateTime"], "DetectedIssue.identifiedDateTime", self.site_tz
            )
        evidence: list[str] = []
        reasons: list[str] = []
        for index, item in enumerate(as_list(resource.get("evidence"), "DetectedIssue.evidence")):
            if not isinstance(item, _OBJECT):
                continue
            where = f"DetectedIssue.evidence[{index}]"
            evidence += [
                ref
                for detail in as_list(item.get("detail"), f"{where}.detail")
                if (ref := reference(detail))
            ]
            for concept in _concepts(item.get("code")):
                reasons += [
                    str(c.get("code"))
                    for c in _codings(concept, f"{where}.code")
                    if c.get("system") == self.reference_data.finding_system
                ]
        mitigations = tuple(
            self._mitigation(item, index)
            for index, item in enumerate(
                as_list(resource.get("mitigation"), "DetectedIssue.mitigation")
            )
            if isinstance(item, _OBJECT)
        )
        return PriorIssue(
            ref=_id_ref(resource),
            identifier=identifier,
            patient=_subject(resource, "patient"),
            finding=finding,
            status=as_string(resource.get("status"), "DetectedIssue.status") or "",
            identified=identified,
            evidence=tuple(evidence),
            implicated=tuple(
                ref
                for item in as_list(resource.get("implicated"), "DetectedIssue.implicated")
                if (ref := reference(item))
            ),
            mitigations=tuple(m for m in mitigations if m is not None),
            reasons=tuple(reasons),
        )

    def _mitigation(self, item: JSON, index: int) -> Mitigation | None:
        author = reference(item.get("author"))
        if author is None:
            return None  # an unsigned answer cannot carry anyone's authority
        when = None
        if item.get("date"):
            when = parse_datetime(
                item["date"], f"DetectedIssue.mitigation[{index}].date", self.site_tz
            )
        action = item.get("action")
        codes = tuple(
            str(c.get("code"))
            for c in _codings(action, f"DetectedIssue.mitigation[{index}].action")
            if c.get("system") in (V3_ACT_CODE, None) and c.get("code")
        )
        text = ""
        if isinstance(action, _OBJECT) and isinstance(action.get("text"), str):
            text = action["text"]
        return Mitigation(author=author, action_codes=codes, date=when, text=text)


def release_stands(resource: JSON, held: Callable[[], JSON | None]) -> bool:
    """Whether the held version of this resource stays in force over this later one, for the
    stores that hold one version of each resource (serve, watch): a later version of an
    Observation that is not yet released (preliminary, registered) never displaces a released
    result or a withdrawal, as batch mode's `current_versions` decides over every version.
    `held` reads the held version, only when it matters."""
    if resource.get("resourceType") != "Observation":
        return False
    return keeps_release(resource.get("status"), lambda: (held() or {}).get("status"))
