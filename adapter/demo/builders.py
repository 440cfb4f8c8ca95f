"""FHIR R4 JSON builders for the synthetic demo data.

Every builder returns a plain ``dict`` (what goes on the wire); nothing here reads a clock or a
random source, so the same calls always give the same resources. A :class:`DemoPatient` collects
one patient's resources while a scenario writes its history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

Resource = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NPI = "http://hl7.org/fhir/sid/us-npi"
DISPENSE_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationdispense-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
FINDING_SYSTEM = "https://rems-adapter.github.io/fhir/CodeSystem/finding"
DECISION_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"
DETECTED_ISSUE_PROFILE = (
    "https://rems-adapter.github.io/fhir/StructureDefinition/rems-adapter-detectedissue"
)
ADAPTER_DEVICE = "Device/rems-adapter"
DEMO_MRN_SYSTEM = "urn:rems-adapter:demo:mrn"

#: US Eastern standard time: some labs report local times with an offset. Every demo time keeps
#: the same calendar date in UTC and in this offset, so the site time zone never changes a date.
EASTERN = timezone(timedelta(hours=-5))

# Count units: name -> (UCUM code or None for a text-only unit, unit text, factor to cells/uL).
UNITS: dict[str, tuple[str | None, str, int]] = {
    "10*3/uL": ("10*3/uL", "10*3/uL", 1000),
    "10*9/L": ("10*9/L", "10*9/L", 1000),
    "/uL": ("/uL", "/uL", 1),
    "/mm3": ("/mm3", "/mm3", 1),
    "{cells}/uL": ("{cells}/uL", "cells/uL", 1),
    "K/uL": (None, "K/uL", 1000),
    "x10^3/uL": (None, "x10^3/uL", 1000),
    "10^9/L": (None, "10^9/L", 1000),
    "cells/uL": (None, "cells/uL", 1),
    "cells/mm3": (None, "cells/mm3", 1),
}

ANC_CODES = {
    "751-8": "Neutrophils [#/volume] in Blood by Automated count",
    "753-4": "Neutrophils [#/volume] in Blood by Manual count",
    "26499-4": "Neutrophils [#/volume] in Blood",
    "768-2": "Segmented neutrophils [#/volume] in Blood by Manual count",
}


ANC_TEXT = {"768-2": "Segmented neutrophils"}


def fhir_time(moment: datetime) -> str:
    """A FHIR dateTime with seconds and an explicit zone ("Z" for UTC)."""
    text = moment.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def at(day: date, hour: int, minute: int = 0, tz: timezone = UTC) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


def add_months(day: date, months: int) -> date:
    """Calendar months; the demo only uses days 1-28, so no month-end clamping is needed."""
    if day.day > 28:
        raise ValueError(f"demo dates must use days 1-28 for calendar arithmetic, got {day}")
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)


def months_between(start: date, day: date) -> int:
    """Whole calendar months from ``start`` to ``day``."""
    months = (day.year - start.year) * 12 + day.month - start.month
    return months - 1 if day.day < start.day else months


def quantity(per_ul: int | Decimal, unit: str) -> dict[str, Any]:
    """A valueQuantity carrying ``per_ul`` cells/uL in the given unit variant."""
    code, text, factor = UNITS[unit]
    scaled = Decimal(per_ul) / factor
    # Every scaled value must survive a float round trip exactly (1.3 * 1000 == 1300.0), so a
    # reader that parses JSON numbers as floats still gets the intended count.
    number: int | float = int(scaled) if scaled == scaled.to_integral_value() else float(scaled)
    if Decimal(str(number)) * factor != per_ul or float(number) * factor != float(per_ul):
        raise ValueError(f"{per_ul} cells/uL is not exactly representable in {unit}")
    value: dict[str, Any] = {"value": number, "unit": text}
    if code is not None:
        value["system"] = UCUM
        value["code"] = code
    return value


def coding(system: str | None, code: str, display: str | None = None) -> dict[str, str]:
    result: dict[str, str] = {}
    if system is not None:
        result["system"] = system
    result["code"] = code
    if display is not None:
        result["display"] = display
    return result


def meta(last_updated: datetime, version: int = 1) -> dict[str, str]:
    return {"versionId": str(version), "lastUpdated": fhir_time(last_updated)}


def luhn_npi(base9: str) -> str:
    """A 10-digit NPI-shaped number with a valid check digit (prefix 80840, as CMS defines)."""
    digits = [int(c) for c in "80840" + base9]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 0:
            doubled = digit * 2
            total += doubled - 9 if doubled > 9 else doubled
        else:
            total += digit
    return base9 + str((10 - total % 10) % 10)


def practitioner(pid: str, family: str, given: str, npi: str, created: datetime) -> Resource:
    return {
        "resourceType": "Practitioner",
        "id": pid,
        "meta": meta(created),
        "identifier": [{"system": NPI, "value": npi}],
        "active": True,
        "name": [{"text": f"{given} {family}", "family": family, "given": [given]}],
    }


def practitioner_role(rid: str, practitioner_id: str, role: str, created: datetime) -> Resource:
    return {
        "resourceType": "PractitionerRole",
        "id": rid,
        "meta": meta(created),
        "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        "code": [
            {"coding": [coding("http://terminology.hl7.org/CodeSystem/practitioner-role", role)]}
        ],
    }


@dataclass
class DemoPatient:
    """One synthetic patient and the resources written for it, in creation order."""

    number: int
    prescriber: str
    pharmacist: str
    resources: list[Resource] = field(default_factory=list)
    _serial: int = 0

    @property
    def id(self) -> str:
        return f"demo-{self.number:02d}"

    @property
    def ref(self) -> str:
        return f"Patient/{self.id}"

    @property
    def request_id(self) -> str:
        return f"{self.id}-rx-clozapine"

    def _next_id(self, kind: str, day: date) -> str:
        self._serial += 1
        return f"{self.id}-{kind}-{day:%Y%m%d}-{self._serial:03d}"

    def add(self, resource: Resource) -> Resource:
        self.resources.append(resource)
        return resource

    # ------------------------------------------------------------------ identity and orders

    def patient(self, gender: str, birth: date, postal: str, created: datetime) -> Resource:
        label = f"Demo-Patient {self.number:02d}"
        return self.add(
            {
                "resourceType": "Patient",
                "id": self.id,
                "meta": meta(created),
                "identifier": [{"system": DEMO_MRN_SYSTEM, "value": f"DEMO{self.number:04d}"}],
                "active": True,
                "name": [
                    {"text": label, "family": "Demo-Patient", "given": [f"{self.number:02d}"]}
                ],
                "gender": gender,
                "birthDate": birth.isoformat(),
                "address": [{"postalCode": postal, "country": "US"}],
            }
        )

    def clozapine_request(self, authored: datetime) -> Resource:
        return self.add(
            {
                "resourceType": "MedicationRequest",
                "id": self.request_id,
                "meta": meta(authored),
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": clozapine_concept(),
                "subject": {"reference": self.ref},
                "authoredOn": fhir_time(authored),
                "requester": {"reference": f"Practitioner/{self.prescriber}"},
                "dosageInstruction": [{"text": "Take as directed; ANC monitoring required"}],
            }
        )

    # ------------------------------------------------------------------ laboratory

    def anc(
        self,
        collected: datetime,
        per_ul: int,
        unit: str = "/uL",
        loinc: str = "751-8",
        status: str = "final",
        version: int = 1,
        issued: datetime | None = None,
        obs_id: str | None = None,
        raw_value: dict[str, Any] | None = None,
        specimen: str | None = None,
    ) -> Resource:
        """A direct ANC-coded Observation (or a segmented-neutrophil one, for noise)."""
        reported = issued if issued is not None else collected + timedelta(hours=3)
        oid = obs_id if obs_id is not None else self._next_id("anc", collected.date())
        resource: Resource = {
            "resourceType": "Observation",
            "id": oid,
            "meta": meta(reported, version),
            "status": status,
            "category": [{"coding": [coding(OBSERVATION_CATEGORY, "laboratory")]}],
            "code": {
                "coding": [coding(LOINC, loinc, ANC_CODES[loinc])],
                "text": ANC_TEXT.get(loinc, "Absolute neutrophil count"),
            },
            "subject": {"reference": self.ref},
            "effectiveDateTime": fhir_time(collected),
            "issued": fhir_time(reported),
            "valueQuantity": raw_value if raw_value is not None else quantity(per_ul, unit),
        }
        if specimen is not None:
            resource["specimen"] = {"reference": f"Specimen/{specimen}"}
        return self.add(resource)

    def derived_anc_panel(
        self,
        collected: datetime,
        wbc_thousands: str,
        neutrophil_pct: int,
        band_pct: int | None,
        direct_anc: int | None = None,
    ) -> list[Resource]:
        """A CBC with differential: WBC + neutrophil % (+ band %) from one specimen.

        With ``direct_anc`` the same specimen also has a direct ANC, which must win over the
        derivation; without it the ANC can only be derived.
        """
        day = collected.date()
        specimen_id = self._next_id("specimen", day)
        reported = collected + timedelta(hours=2)
        self.add(
            {
                "resourceType": "Specimen",
                "id": specimen_id,
                "meta": meta(reported),
                "status": "available",
                "type": {
                    "coding": [coding("http://snomed.info/sct", "119297000", "Blood specimen")]
                },
                "subject": {"reference": self.ref},
                "collection": {"collectedDateTime": fhir_time(collected)},
            }
        )
        parts: list[tuple[str, str, dict[str, Any]]] = [
            (
                "6690-2",
                "Leukocytes [#/volume] in Blood by Automated count",
                {
                    "value": float(wbc_thousands),
                    "unit": "10*3/uL",
                    "system": UCUM,
                    "code": "10*3/uL",
                },
            ),
            (
                "770-8",
                "Neutrophils/100 leukocytes in Blood by Automated count",
                {"value": neutrophil_pct, "unit": "%", "system": UCUM, "code": "%"},
            ),
        ]
        if band_pct is not None:
            parts.append(
                (
                    "764-1",
                    "Band form neutrophils/100 leukocytes in Blood by Manual count",
                    {"value": band_pct, "unit": "%", "system": UCUM, "code": "%"},
                )
            )
        made: list[Resource] = []
        if direct_anc is not None:
            made.append(self.anc(collected, direct_anc, specimen=specimen_id))
        for loinc, display, value in parts:
            made.append(
                self.add(
                    {
                        "resourceType": "Observation",
                        "id": self._next_id("cbc", day),
                        "meta": meta(reported),
                        "status": "final",
                        "category": [{"coding": [coding(OBSERVATION_CATEGORY, "laboratory")]}],
                        "code": {"coding": [coding(LOINC, loinc, display)]},
                        "subject": {"reference": self.ref},
                        "effectiveDateTime": fhir_time(collected),
                        "issued": fhir_time(reported),
                        "valueQuantity": value,
                        "specimen": {"reference": f"Specimen/{specimen_id}"},
                    }
                )
            )
        return made

    def vital_signs(self, taken: datetime) -> None:
        """Noise the adapter must ignore: heart rate and a glucose result."""
        self.add(
            {
                "resourceType": "Observation",
                "id": self._next_id("hr", taken.date()),
                "meta": meta(taken + timedelta(minutes=5)),
                "status": "final",
                "category": [{"coding": [coding(OBSERVATION_CATEGORY, "vital-signs")]}],
                "code": {"coding": [coding(LOINC, "8867-4", "Heart rate")]},
                "subject": {"reference": self.ref},
                "effectiveDateTime": fhir_time(taken),
                "valueQuantity": {
                    "value": 92,
                    "unit": "beats/minute",
                    "system": UCUM,
                    "code": "/min",
                },
            }
        )
        self.add(
            {
                "resourceType": "Observation",
                "id": self._next_id("glucose", taken.date()),
                "meta": meta(taken + timedelta(hours=3)),
                "status": "final",
                "category": [{"coding": [coding(OBSERVATION_CATEGORY, "laboratory")]}],
                "code": {
                    "coding": [coding(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma")]
                },
                "subject": {"reference": self.ref},
                "effectiveDateTime": fhir_time(taken),
                "issued": fhir_time(taken + timedelta(hours=3)),
                "valueQuantity": {"value": 104, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
            }
        )

    # ------------------------------------------------------------------ dispensing

    def supply(self, handed_over: datetime, days: int, category: str | None = None) -> Resource:
        """A completed clozapine supply (therapy history)."""
        return self.add(
            self._dispense(
                self._next_id("disp", handed_over.date()),
                "completed",
                handed_over,
                days,
                category,
                prepared=handed_over - timedelta(hours=1),
                handed=handed_over,
            )
        )

    def pending(self, prepared: datetime, days: int, category: str | None = None) -> Resource:
        """A clozapine dispense in ``preparation``: awaiting the adapter's decision."""
        return self.add(
            self._dispense(
                f"{self.id}-pending-{prepared:%Y%m%d}",
                "preparation",
                prepared,
                days,
                category,
                prepared=prepared,
                handed=None,
            )
        )

    def other_drug_dispense(self, prepared: datetime) -> Resource:
        """Noise: an olanzapine dispense awaiting preparation; not clozapine, so never decided."""
        resource = self._dispense(
            f"{self.id}-olanzapine-{prepared:%Y%m%d}",
            "preparation",
            prepared,
            30,
            None,
            prepared=prepared,
            handed=None,
        )
        resource["medicationCodeableConcept"] = {
            "coding": [coding(RXNORM, "61381", "olanzapine")],
            "text": "Olanzapine 10 mg tablet",
        }
        del resource["authorizingPrescription"]
        return self.add(resource)

    def _dispense(
        self,
        did: str,
        status: str,
        stamp: datetime,
        days: int,
        category: str | None,
        prepared: datetime,
        handed: datetime | None,
    ) -> Resource:
        resource: Resource = {
            "resourceType": "MedicationDispense",
            "id": did,
            "meta": meta(stamp),
            "status": status,
        }
        if category is not None:
            resource["category"] = {"coding": [coding(DISPENSE_CATEGORY, category)]}
        resource.update(
            {
                "medicationCodeableConcept": clozapine_concept(),
                "subject": {"reference": self.ref},
                "performer": [{"actor": {"reference": f"Practitioner/{self.pharmacist}"}}],
                "authorizingPrescription": [{"reference": f"MedicationRequest/{self.request_id}"}],
                "quantity": {
                    "value": days * 4,
                    "unit": "tablet",
                    "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                    "code": "TAB",
                },
                "daysSupply": {"value": days, "unit": "day", "system": UCUM, "code": "d"},
                "whenPrepared": fhir_time(prepared),
            }
        )
        if handed is not None:
            resource["whenHandedOver"] = fhir_time(handed)
        return resource

    # ------------------------------------------------------------------ designations

    def designation_condition(
        self, code: str, display: str, onset: datetime, clinical_status: str = "active"
    ) -> Resource:
        return self.add(
            {
                "resourceType": "Condition",
                "id": f"{self.id}-condition-{code}",
                "meta": meta(onset),
                "clinicalStatus": {"coding": [coding(CONDITION_CLINICAL, clinical_status)]},
                "verificationStatus": {"coding": [coding(CONDITION_VERIFICATION, "confirmed")]},
                "code": {"coding": [coding(None, code, display)], "text": display},
                "subject": {"reference": self.ref},
                "onsetDateTime": fhir_time(onset),
                "recorder": {"reference": f"Practitioner/{self.prescriber}"},
            }
        )

    def designation_flag(
        self, code: str, display: str, start: datetime, status: str = "active"
    ) -> Resource:
        return self.add(
            {
                "resourceType": "Flag",
                "id": f"{self.id}-flag-{code}",
                "meta": meta(start),
                "status": status,
                "code": {"coding": [coding(None, code, display)], "text": display},
                "subject": {"reference": self.ref},
                "period": {"start": fhir_time(start)},
                "author": {"reference": f"Practitioner/{self.prescriber}"},
            }
        )

    # ------------------------------------------------------------------ answers to the adapter

    def prior_issue(
        self,
        issue_id: str,
        finding: str,
        act_code: str,
        severity: str,
        identified: datetime,
        detail: str,
        evidence: list[str],
        implicated: list[str],
        mitigation: dict[str, Any],
        reasons: tuple[str, ...] = (),
    ) -> Resource:
        """A DetectedIssue the adapter wrote earlier, with the answer a person added in the EHR."""
        evidence_entry: dict[str, Any] = {
            "detail": [{"reference": ref} for ref in evidence],
        }
        if reasons:
            evidence_entry["code"] = [
                {"coding": [coding(FINDING_SYSTEM, reason)]} for reason in reasons
            ]
        return self.add(
            {
                "resourceType": "DetectedIssue",
                "id": issue_id,
                "meta": {
                    **meta(datetime.fromisoformat(mitigation["date"].replace("Z", "+00:00")), 2),
                    "profile": [DETECTED_ISSUE_PROFILE],
                },
                "identifier": [{"system": DECISION_ID_SYSTEM, "value": issue_id}],
                "status": "final",
                "code": {
                    "coding": [coding(V3_ACT_CODE, act_code), coding(FINDING_SYSTEM, finding)]
                },
                "severity": severity,
                "patient": {"reference": self.ref},
                "identifiedDateTime": fhir_time(identified),
                "author": {"reference": ADAPTER_DEVICE},
                "implicated": [{"reference": ref} for ref in implicated],
                "evidence": [evidence_entry],
                "detail": detail,
                "mitigation": [mitigation],
            }
        )


def clozapine_concept() -> dict[str, Any]:
    return {
        "coding": [coding(RXNORM, "2626", "clozapine")],
        "text": "Clozapine 100 mg tablet",
    }
