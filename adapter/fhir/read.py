"""FHIR R4 JSON (camelCase dicts) -> the core's frozen values.

Pure translators: no I/O. They read only the elements the rules use and say exactly which FHIR
path is wrong when something cannot be read. Inputs are read at the dict level so that large
exports stream fast; what the adapter writes is built and checked with the R4B models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from functools import cached_property
from sys import intern
from typing import Any

from adapter.core.model import (
    LabObservation,
    LabRole,
    Mitigation,
    PendingDispense,
    PriorIssue,
    Supply,
)
from adapter.core.protocol import Setting
from adapter.core.reference import ReferenceData

JSON = Mapping[str, Any]
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DECISION_IDENTIFIER_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"


class FhirInputError(ValueError):
    """A resource cannot be read; ``path`` is the FHIR path of the offending element."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def parse_datetime(raw: object, path: str, site_tz: tzinfo) -> datetime:
    """A FHIR dateTime/instant as an aware datetime; a date alone is midnight at the site."""
    if not isinstance(raw, str) or not raw:
        raise FhirInputError(path, "expected a dateTime string")
    try:
        if len(raw) == 10:
            return datetime.combine(datetime.fromisoformat(raw).date(), time(), site_tz)
        if len(raw) < 10:
            raise FhirInputError(path, "not precise to the day")
        moment = datetime.fromisoformat(raw)
    except ValueError as error:
        raise FhirInputError(path, "not a FHIR dateTime") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=site_tz)


def reference(node: object) -> str | None:
    """A Reference as "Type/id": absolute URLs and version suffixes are reduced to it."""
    if isinstance(node, Mapping):
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
            for item in resource.get("identifier") or []
            if isinstance(item, Mapping) and item.get("system") == DECISION_IDENTIFIER_SYSTEM
        ),
        None,
    )
    return identifier if isinstance(identifier, str) else None


def _codings(concept: object) -> list[JSON]:
    # `isinstance(x, dict)` first: parsed JSON is always a dict, and the Mapping ABC check is
    # several times slower; this runs for every Observation of a large export.
    if isinstance(concept, (dict, Mapping)):
        codings = concept.get("coding")
        if isinstance(codings, list):
            return [c for c in codings if isinstance(c, (dict, Mapping))]
    return []


def _concepts(node: object) -> list[object]:
    return list(node) if isinstance(node, list) else ([node] if node else [])


def _version(resource: JSON) -> tuple[str, str]:
    meta = resource.get("meta")
    if isinstance(meta, Mapping):
        return str(meta.get("versionId") or ""), str(meta.get("lastUpdated") or "")
    return "", ""


def _id_ref(resource: JSON) -> str:
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise FhirInputError(f"{resource.get('resourceType')}.id", "missing")
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
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise FhirInputError(path, f"expected a number, got a {type(raw).__name__}")
    try:
        # The one place a FHIR number becomes a core value: exactly, as a Decimal (a JSON parser's
        # float is taken by its shortest repr, i.e. the digits the source wrote). No rounding.
        value = (
            raw
            if isinstance(raw, Decimal)
            else Decimal(repr(raw) if isinstance(raw, float) else raw)
        )
    except InvalidOperation as error:
        raise FhirInputError(path, "expected a number") from error
    if not value.is_finite():
        raise FhirInputError(path, "expected a finite number")
    return value


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
            codings = _codings(concept)
        for coding in codings:
            if not isinstance(coding, (dict, Mapping)):
                continue
            if coding.get("system") not in (system, None):
                continue
            role = roles.get(coding.get("code"))  # type: ignore[arg-type]
            if role == "anc":
                return role
            if found is None:
                found = role
        return found

    def observation(self, resource: JSON, arrival: int) -> LabObservation | None:
        """A lab result the ANC rules use, or None for anything else (vitals, other labs)."""
        # Cheap shape checks of what every Observation must have, so that an invalid one is
        # reported rather than silently taken for "not an ANC".
        if not isinstance(resource.get("code"), (dict, Mapping)):  # dict first: fast path
            raise FhirInputError("Observation.code", "expected a CodeableConcept")
        if not isinstance(resource.get("status"), str):
            raise FhirInputError("Observation.status", "expected a code")
        role = self.lab_role(resource)
        if role is None or role == "not-anc":
            return None
        ref = _id_ref(resource)
        patient = _subject(resource, "subject")
        version, updated = _version(resource)
        status = resource.get("status")
        if not isinstance(status, str):
            raise FhirInputError("Observation.status", "missing")
        problem: str | None = None
        collected: datetime | None = None
        try:
            collected = self._collected(resource)
        except FhirInputError as error:
            problem = str(error)
        period = resource.get("effectivePeriod")
        raw = resource.get("effectiveDateTime") or (
            period.get("start") if isinstance(period, Mapping) else None
        )
        value: Decimal | None = None
        unit_code = unit_system = unit_text = None
        quantity = resource.get("valueQuantity")
        if isinstance(quantity, Mapping):
            unit_code = quantity.get("code") if isinstance(quantity.get("code"), str) else None
            unit_system = (
                quantity.get("system") if isinstance(quantity.get("system"), str) else None
            )
            unit_text = quantity.get("unit") if isinstance(quantity.get("unit"), str) else None
            if quantity.get("comparator"):
                problem = problem or (
                    f"Observation.valueQuantity.comparator: reported as a bound "
                    f"('{quantity.get('comparator')}{quantity.get('value')}'), not a value"
                )
            elif "value" in quantity:
                try:
                    value = _decimal(quantity.get("value"), "Observation.valueQuantity.value")
                except FhirInputError as error:
                    problem = problem or str(error)
        else:
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
        )

    def _collected(self, resource: JSON) -> datetime:
        if "effectiveDateTime" in resource:
            return parse_datetime(
                resource["effectiveDateTime"], "Observation.effectiveDateTime", self.site_tz
            )
        period = resource.get("effectivePeriod")
        if isinstance(period, Mapping) and period.get("start"):
            return parse_datetime(
                period["start"], "Observation.effectivePeriod.start", self.site_tz
            )
        if "effectiveInstant" in resource:
            return parse_datetime(
                resource["effectiveInstant"], "Observation.effectiveInstant", self.site_tz
            )
        raise FhirInputError("Observation.effective[x]", "no collection time")

    @staticmethod
    def _identifiers(resource: JSON) -> tuple[str, ...]:
        out = []
        for item in resource.get("identifier") or []:
            if isinstance(item, Mapping) and item.get("value"):
                out.append(f"{item.get('system') or ''}|{item['value']}")
        return tuple(sorted(out))

    @staticmethod
    def _replaces(resource: JSON) -> tuple[str, ...]:
        out = []
        for ext in resource.get("extension") or []:
            if isinstance(ext, Mapping) and str(ext.get("url", "")).endswith("/replaces"):
                ref = reference(ext.get("valueReference"))
                if ref:
                    out.append(ref)
        return tuple(out)

    # ---------------------------------------------------------------- medications

    def is_clozapine_concept(self, concept: object) -> bool:
        codes = self.reference_data.clozapine
        for coding in _codings(concept):
            if (coding.get("system"), coding.get("code")) in codes.codes:
                return True
        texts = [concept.get("text")] if isinstance(concept, Mapping) else []
        texts += [coding.get("display") for coding in _codings(concept)]
        return any(
            isinstance(text, str) and any(word in text.lower() for word in codes.words)
            for text in texts
        )

    def medication_is_clozapine(self, resource: JSON) -> bool:
        return self.is_clozapine_concept(resource.get("code"))

    def medication_of(self, resource: JSON) -> tuple[bool | None, str | None]:
        """(is clozapine, unresolved Medication reference) for a dispense or request."""
        concept = resource.get("medicationCodeableConcept")
        if concept is not None:
            return self.is_clozapine_concept(concept), None
        ref = reference(resource.get("medicationReference"))
        if ref is None:
            return False, None
        if ref.startswith("#"):
            for contained in resource.get("contained") or []:
                if isinstance(contained, Mapping) and contained.get("id") == ref[1:]:
                    return self.medication_is_clozapine(contained), None
            return False, None
        return None, ref

    # ---------------------------------------------------------------- dispenses

    def setting(self, resource: JSON) -> Setting:
        dispense = self.reference_data.dispense
        for coding in _codings(resource.get("category")):
            system, code = coding.get("system"), coding.get("code")
            if code in dispense.category_codes and (
                system is None or system in dispense.category_systems
            ):
                return code  # type: ignore[no-any-return]
        return dispense.default_setting

    def _days_supply(self, resource: JSON) -> int | None:
        quantity = resource.get("daysSupply")
        if not isinstance(quantity, Mapping) or quantity.get("value") is None:
            return None
        value = _decimal(quantity.get("value"), "MedicationDispense.daysSupply.value")
        if value < 0:
            raise FhirInputError("MedicationDispense.daysSupply.value", "must not be negative")
        return int(value.to_integral_value(rounding="ROUND_CEILING"))

    def dispense(self, resource: JSON) -> Supply | PendingDispense | None:
        """A clozapine supply handed over, a dispense awaiting a decision, or None."""
        codes = self.reference_data.dispense
        status = resource.get("status")
        if not isinstance(status, str):
            raise FhirInputError("MedicationDispense.status", "expected a code")
        if status not in codes.completed and status not in codes.awaiting_decision:
            return None
        ref = _id_ref(resource)
        patient = _subject(resource, "subject")
        days = self._days_supply(resource)
        setting = self.setting(resource)
        if status in codes.completed:
            if not resource.get("whenHandedOver"):
                raise FhirInputError(
                    "MedicationDispense.whenHandedOver", "a completed dispense needs it"
                )
            handed = parse_datetime(
                resource["whenHandedOver"], "MedicationDispense.whenHandedOver", self.site_tz
            )
            return Supply(ref, patient, handed, days, setting)
        moment = None
        for element in ("whenHandedOver", "whenPrepared"):
            if resource.get(element):
                moment = parse_datetime(
                    resource[element], f"MedicationDispense.{element}", self.site_tz
                )
                break
        performers = tuple(
            actor
            for item in resource.get("performer") or []
            if isinstance(item, Mapping) and (actor := reference(item.get("actor")))
        )
        prescriptions = [
            prescription
            for item in resource.get("authorizingPrescription") or []
            if (prescription := reference(item))
        ]
        version, _ = _version(resource)
        return PendingDispense(
            ref=ref,
            patient=patient,
            time=moment,
            days_supply=days,
            setting=setting,
            version=version,
            performers=performers,
            prescription=prescriptions[0] if prescriptions else None,
        )

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
        for coding in _codings(resource.get("code")):
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
            if isinstance(period, Mapping) and not self._within(
                period.get("start"), period.get("end"), clock, "Flag.period"
            ):
                return None
        else:
            clinical = {c.get("code") for c in _codings(resource.get("clinicalStatus"))}
            verification = {c.get("code") for c in _codings(resource.get("verificationStatus"))}
            if clinical and not clinical & {"active", "recurrence", "relapse"}:
                return None
            if verification & {"refuted", "entered-in-error"}:
                return None
            onset = resource.get("onsetDateTime") or resource.get("recordedDate")
            abatement = resource.get("abatementDateTime")
            if not self._within(onset, abatement, clock, "Condition.onsetDateTime"):
                return None
        return _subject(resource, "subject"), kind

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
        finding = next(
            (
                coding.get("code")
                for coding in _codings(resource.get("code"))
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
        for item in resource.get("evidence") or []:
            if not isinstance(item, Mapping):
                continue
            evidence += [ref for detail in item.get("detail") or [] if (ref := reference(detail))]
            for concept in _concepts(item.get("code")):
                reasons += [
                    str(c.get("code"))
                    for c in _codings(concept)
                    if c.get("system") == self.reference_data.finding_system
                ]
        mitigations = tuple(
            self._mitigation(item, index)
            for index, item in enumerate(resource.get("mitigation") or [])
            if isinstance(item, Mapping)
        )
        return PriorIssue(
            ref=_id_ref(resource),
            identifier=identifier,
            patient=_subject(resource, "patient"),
            finding=finding,
            status=str(resource.get("status") or ""),
            identified=identified,
            evidence=tuple(evidence),
            implicated=tuple(
                ref for item in resource.get("implicated") or [] if (ref := reference(item))
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
            for c in _codings(action)
            if c.get("system") in (V3_ACT_CODE, None) and c.get("code")
        )
        text = ""
        if isinstance(action, Mapping) and isinstance(action.get("text"), str):
            text = action["text"]
        return Mitigation(author=author, action_codes=codes, date=when, text=text)
