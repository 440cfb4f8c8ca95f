"""A deterministic, seeded FHIR Bulk Data export of clozapine patients, for benchmarks.

``python -m tests.bench.workload --patients N --out DIR [--seed S]`` (or ``--observations M``:
as many patients as it takes to reach M Observations) writes one NDJSON file per resource type
(Patient.ndjson, Observation.ndjson, MedicationDispense.ndjson, ...), as a Bulk Data ``$export``
of a clozapine cohort Group would. ``--fhir-base URL`` then loads the files into a FHIR server as
transaction Bundles.

Each patient has a clozapine history as of :data:`AS_OF`: a baseline ANC, therapy phases with
the label's step-downs (weekly, every 2 weeks, monthly; every 6 months in hospice), mild,
moderate and severe excursions with their follow-up (three times weekly, daily, interruption,
rechallenge or discontinuation), BEN and hospice designations, completed supplies with
``daysSupply`` and sometimes a dispense awaiting a decision. Every blood draw is a CBC with
differential (direct ANC, WBC and neutrophil %, sometimes without the direct ANC), and the rest of
the export is the noise a real one carries: other hematology, chemistry, vital signs, other
medications, encounters and specimens. ANC, WBC and neutrophil % results are 1 in 20
Observations.

Streaming: one patient is built at a time and written out, so memory stays bounded at any size.
The same seed always gives byte-identical files (no clock, no global random state).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

Resource = dict[str, Any]

#: The export's clock: the benchmark evaluates at this instant.
AS_OF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
AS_OF_TEXT = "2026-03-02T12:00:00Z"
#: Like a Bulk Data ``_since``: history older than this is not in the export.
WINDOW_DAYS = 730

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = "urn:oid:2.16.840.1.113883.3.9999.1"  # a made-up hospital MRN namespace
ACCESSION = "urn:oid:2.16.840.1.113883.3.9999.2"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DISPENSE_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationdispense-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: Load order for a FHIR server: what others reference comes first.
RESOURCE_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Encounter",
    "Specimen",
    "Condition",
    "Flag",
    "MedicationRequest",
    "MedicationDispense",
    "Observation",
)
PRESCRIBERS = 40
PHARMACISTS = 15
#: Non-ANC Observations per ANC-related one: 19 (so those are 1 in 20).
NOISE_PER_RELEVANT = 19

# Lab catalogue: LOINC -> (display, UCUM unit, mean, sd, decimals, reference low, high).
Analyte = tuple[str, str, float, float, int, float, float]
OTHER_HEMATOLOGY: dict[str, Analyte] = {
    "789-8": (
        "Erythrocytes [#/volume] in Blood by Automated count",
        "10*6/uL",
        4.6,
        0.5,
        2,
        4.2,
        5.9,
    ),
    "718-7": ("Hemoglobin [Mass/volume] in Blood", "g/dL", 13.8, 1.4, 1, 12.0, 17.5),
    "4544-3": (
        "Hematocrit [Volume Fraction] of Blood by Automated count",
        "%",
        41.0,
        4.0,
        1,
        36.0,
        50.0,
    ),
    "787-2": ("MCV [Entitic volume] by Automated count", "fL", 89.0, 5.0, 1, 80.0, 100.0),
    "785-6": ("MCH [Entitic mass] by Automated count", "pg", 30.0, 2.0, 1, 27.0, 33.0),
    "786-4": ("MCHC [Mass/volume] by Automated count", "g/dL", 33.5, 1.0, 1, 32.0, 36.0),
    "788-0": (
        "Erythrocyte distribution width [Ratio] by Automated count",
        "%",
        13.2,
        1.0,
        1,
        11.5,
        14.5,
    ),
    "777-3": (
        "Platelets [#/volume] in Blood by Automated count",
        "10*3/uL",
        250.0,
        60.0,
        0,
        150.0,
        400.0,
    ),
    "32623-1": (
        "Platelet mean volume [Entitic volume] in Blood by Automated count",
        "fL",
        10.2,
        1.0,
        1,
        7.5,
        11.5,
    ),
    "736-9": (
        "Lymphocytes/100 leukocytes in Blood by Automated count",
        "%",
        28.0,
        7.0,
        1,
        20.0,
        45.0,
    ),
    "5905-5": ("Monocytes/100 leukocytes in Blood by Automated count", "%", 7.0, 2.0, 1, 2.0, 10.0),
    "713-8": ("Eosinophils/100 leukocytes in Blood by Automated count", "%", 2.5, 1.2, 1, 0.0, 6.0),
    "706-2": ("Basophils/100 leukocytes in Blood by Automated count", "%", 0.6, 0.3, 1, 0.0, 2.0),
    "731-0": (
        "Lymphocytes [#/volume] in Blood by Automated count",
        "10*3/uL",
        2.0,
        0.6,
        2,
        1.0,
        4.8,
    ),
    "742-7": (
        "Monocytes [#/volume] in Blood by Automated count",
        "10*3/uL",
        0.5,
        0.15,
        2,
        0.2,
        0.95,
    ),
    "711-2": (
        "Eosinophils [#/volume] in Blood by Automated count",
        "10*3/uL",
        0.18,
        0.1,
        2,
        0.0,
        0.5,
    ),
}
CHEMISTRY: dict[str, Analyte] = {
    "2345-7": ("Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 104.0, 18.0, 0, 70.0, 99.0),
    "3094-0": ("Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 14.0, 4.0, 0, 7.0, 20.0),
    "2160-0": ("Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.95, 0.2, 2, 0.6, 1.3),
    "2951-2": ("Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 139.0, 2.5, 0, 135.0, 145.0),
    "2823-3": ("Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.35, 1, 3.5, 5.1),
    "2075-0": ("Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 102.0, 3.0, 0, 98.0, 107.0),
    "2028-9": (
        "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
        "mmol/L",
        25.0,
        2.5,
        0,
        22.0,
        29.0,
    ),
    "17861-6": ("Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 9.4, 0.4, 1, 8.6, 10.3),
    "2885-2": ("Protein [Mass/volume] in Serum or Plasma", "g/dL", 7.0, 0.5, 1, 6.0, 8.3),
    "1751-7": ("Albumin [Mass/volume] in Serum or Plasma", "g/dL", 4.2, 0.4, 1, 3.5, 5.0),
    "1975-2": ("Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 0.25, 1, 0.1, 1.2),
    "6768-6": (
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        80.0,
        22.0,
        0,
        40.0,
        129.0,
    ),
    "1742-6": (
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        28.0,
        12.0,
        0,
        7.0,
        56.0,
    ),
    "1920-8": (
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        25.0,
        9.0,
        0,
        10.0,
        40.0,
    ),
}
LIPIDS: dict[str, Analyte] = {
    "2093-3": ("Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 195.0, 35.0, 0, 0.0, 200.0),
    "2571-8": (
        "Triglyceride [Mass/volume] in Serum or Plasma",
        "mg/dL",
        160.0,
        60.0,
        0,
        0.0,
        150.0,
    ),
    "2085-9": (
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "mg/dL",
        45.0,
        10.0,
        0,
        40.0,
        60.0,
    ),
    "13457-7": (
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        "mg/dL",
        118.0,
        30.0,
        0,
        0.0,
        100.0,
    ),
}
SINGLE_TESTS: dict[str, Analyte] = {
    "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.9, 0.6, 1, 4.0, 5.6),
    "10839-9": (
        "Troponin I.cardiac [Mass/volume] in Serum or Plasma",
        "ng/mL",
        0.01,
        0.005,
        3,
        0.0,
        0.04,
    ),
    "1988-5": (
        "C reactive protein [Mass/volume] in Serum or Plasma",
        "mg/L",
        3.0,
        2.0,
        1,
        0.0,
        10.0,
    ),
    "3016-3": ("Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 2.1, 0.9, 2, 0.4, 4.0),
    "2842-3": ("Prolactin [Mass/volume] in Serum or Plasma", "ng/mL", 12.0, 5.0, 1, 4.0, 23.0),
}
# Vital signs: LOINC -> (display, UCUM code, unit text, mean, sd, decimals).
VITALS: dict[str, tuple[str, str, str, float, float, int]] = {
    "8867-4": ("Heart rate", "/min", "beats/minute", 84.0, 12.0, 0),
    "9279-1": ("Respiratory rate", "/min", "breaths/minute", 16.0, 2.0, 0),
    "8310-5": ("Body temperature", "Cel", "C", 36.8, 0.3, 1),
    "59408-5": ("Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 97.0, 1.5, 0),
    "29463-7": ("Body weight", "kg", "kg", 88.0, 16.0, 1),
    "39156-5": ("Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 29.0, 5.0, 1),
}
OTHER_DRUGS = (
    ("6809", "metformin", "Metformin hydrochloride 500 mg tablet"),
    ("83367", "atorvastatin", "Atorvastatin 20 mg tablet"),
    ("6470", "lorazepam", "Lorazepam 1 mg tablet"),
    ("36437", "sertraline", "Sertraline 50 mg tablet"),
    ("61381", "olanzapine", "Olanzapine 10 mg tablet"),
)
ANC_UNITS = (  # (UCUM code, unit text, cells/uL per unit, weight)
    ("10*3/uL", "10*3/uL", 1000, 80),
    ("/uL", "/uL", 1, 12),
    ("10*9/L", "10*9/L", 1000, 8),
)


@dataclass
class WorkloadStats:
    """What a generation run wrote."""

    patients: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    anc_related: int = 0  # ANC, WBC and neutrophil % Observations
    direct_anc: int = 0
    pending: int = 0
    bytes_written: int = 0

    @property
    def observations(self) -> int:
        return self.by_type["Observation"]

    @property
    def resources(self) -> int:
        return sum(self.by_type.values())

    def describe(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.by_type.items()))
        return (
            f"{self.patients} patients, {self.resources} resources ({kinds}); "
            f"{self.anc_related} ANC/WBC/neutrophil% Observations (1 in "
            f"{self.observations / max(self.anc_related, 1):.1f}), {self.direct_anc} direct ANC, "
            f"{self.pending} dispenses awaiting a decision; {self.bytes_written / 1e6:.1f} MB"
        )


class ExportWriter:
    """One NDJSON file per resource type, opened on first use; counts what it writes."""

    def __init__(self, out: Path, stats: WorkloadStats) -> None:
        self.out = out
        self.stats = stats
        self._files: dict[str, IO[bytes]] = {}

    def __enter__(self) -> ExportWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob("*.ndjson"):
            stale.unlink()  # a rerun replaces the export, never appends to it
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for handle in self._files.values():
            handle.close()

    def write(self, resource: Resource) -> None:
        kind = resource["resourceType"]
        handle = self._files.get(kind)
        if handle is None:
            handle = self._files[kind] = (self.out / f"{kind}.ndjson").open("wb")
        line = orjson.dumps(resource) + b"\n"
        handle.write(line)
        self.stats.by_type[kind] += 1
        self.stats.bytes_written += len(line)


# ---------------------------------------------------------------- small builders


def stamp(day: date, minute_of_day: int) -> str:
    """A FHIR instant in UTC, to the second."""
    return f"{day.isoformat()}T{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:00Z"


def coding(system: str | None, code: str, display: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    if system is not None:
        out["system"] = system
    out["code"] = code
    if display is not None:
        out["display"] = display
    return out


def clozapine_concept() -> dict[str, Any]:
    return {"coding": [coding(RXNORM, "2626", "clozapine")], "text": "Clozapine 100 mg tablet"}


def rounded(value: float, decimals: int) -> int | float:
    return round(value) if decimals == 0 else round(value, decimals)


@dataclass
class PatientBuilder:
    """One patient's resources, with serial ids so every id is unique and deterministic."""

    number: int
    rng: random.Random
    prescriber: str
    pharmacist: str
    organization: str
    serial: int = 0
    out: list[Resource] = field(default_factory=list)

    @property
    def pid(self) -> str:
        return f"bench-{self.number:07d}"

    @property
    def ref(self) -> str:
        return f"Patient/{self.pid}"

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.pid}-{kind}-{self.serial:05d}"

    def add(self, resource: Resource) -> Resource:
        self.out.append(resource)
        return resource

    # ------------------------------------------------------------ observations

    def _observation(
        self,
        category: str,
        loinc: str,
        display: str,
        day: date,
        minute: int,
        encounter: str,
        value: Resource | None,
        reported_after: int,
    ) -> Resource:
        reported = minute + reported_after
        resource: Resource = {
            "resourceType": "Observation",
            "id": self.next_id("obs"),
            "meta": {"versionId": "1", "lastUpdated": stamp(day, min(reported, 1439))},
            "status": "final",
            "category": [{"coding": [coding(OBS_CATEGORY, category, category.title())]}],
            "code": {"coding": [coding(LOINC, loinc, display)], "text": display},
            "subject": {"reference": self.ref},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "effectiveDateTime": stamp(day, minute),
        }
        if category == "laboratory":
            resource["issued"] = stamp(day, min(reported, 1439))
            resource["performer"] = [{"reference": f"Organization/{self.organization}"}]
        if value is not None:
            resource["valueQuantity"] = value
        return resource

    def lab(
        self,
        analyte: Analyte,
        loinc: str,
        day: date,
        minute: int,
        encounter: str,
        specimen: str | None,
        accession: str,
        value: float | None = None,
    ) -> Resource:
        display, unit, mean, sd, decimals, low, high = analyte
        number = rounded(
            max(value if value is not None else self.rng.gauss(mean, sd), 0.0), decimals
        )
        resource = self._observation(
            "laboratory",
            loinc,
            display,
            day,
            minute,
            encounter,
            {"value": number, "unit": unit, "system": UCUM, "code": unit},
            reported_after=90 + self.rng.randrange(120),
        )
        resource["identifier"] = [{"system": ACCESSION, "value": f"{accession}-{loinc}"}]
        if specimen is not None:
            resource["specimen"] = {"reference": f"Specimen/{specimen}"}
        flag = "L" if number < low else "H" if number > high else "N"
        resource["interpretation"] = [{"coding": [coding(INTERPRETATION, flag)]}]
        resource["referenceRange"] = [
            {
                "low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                "high": {"value": high, "unit": unit, "system": UCUM, "code": unit},
            }
        ]
        return self.add(resource)

    def vital(self, loinc: str, day: date, minute: int, encounter: str) -> Resource:
        display, code, text, mean, sd, decimals = VITALS[loinc]
        number = rounded(max(self.rng.gauss(mean, sd), 0.0), decimals)
        return self.add(
            self._observation(
                "vital-signs",
                loinc,
                display,
                day,
                minute,
                encounter,
                {"value": number, "unit": text, "system": UCUM, "code": code},
                reported_after=5,
            )
        )

    def blood_pressure(self, day: date, minute: int, encounter: str) -> Resource:
        resource = self._observation(
            "vital-signs",
            "85354-9",
            "Blood pressure panel with all children optional",
            day,
            minute,
            encounter,
            None,
            reported_after=5,
        )
        systolic = round(self.rng.gauss(124, 14))
        resource["component"] = [
            {
                "code": {"coding": [coding(LOINC, code, name)]},
                "valueQuantity": {
                    "value": number,
                    "unit": "mmHg",
                    "system": UCUM,
                    "code": "mm[Hg]",
                },
            }
            for code, name, number in (
                ("8480-6", "Systolic blood pressure", systolic),
                ("8462-4", "Diastolic blood pressure", round(systolic * 0.63)),
            )
        ]
        return self.add(resource)

    # ------------------------------------------------------------ the ANC draw

    def encounter(self, day: date, minute: int, inpatient: bool) -> str:
        eid = self.next_id("enc")
        kind = ("IMP", "inpatient encounter") if inpatient else ("AMB", "ambulatory")
        self.add(
            {
                "resourceType": "Encounter",
                "id": eid,
                "meta": {"versionId": "1", "lastUpdated": stamp(day, min(minute + 60, 1439))},
                "status": "finished",
                "class": coding(ACT_CODE, *kind),
                "subject": {"reference": self.ref},
                "participant": [{"individual": {"reference": f"Practitioner/{self.prescriber}"}}],
                "period": {"start": stamp(day, minute), "end": stamp(day, min(minute + 45, 1439))},
                "serviceProvider": {"reference": f"Organization/{self.organization}"},
            }
        )
        return eid

    def draw(self, day: date, anc_per_ul: int, encounter: str, direct: bool) -> int:
        """A CBC with differential; returns how many ANC-related Observations it carried."""
        minute = 7 * 60 + self.rng.randrange(180)
        specimen = self.next_id("spec")
        accession = f"{self.number:07d}{self.serial:05d}"
        self.add(
            {
                "resourceType": "Specimen",
                "id": specimen,
                "meta": {"versionId": "1", "lastUpdated": stamp(day, minute + 10)},
                "status": "available",
                "type": {"coding": [coding(SNOMED, "119297000", "Blood specimen")]},
                "subject": {"reference": self.ref},
                "collection": {"collectedDateTime": stamp(day, minute)},
            }
        )
        percent = round(self.rng.uniform(45.0, 72.0), 1)
        wbc = max(round(anc_per_ul / percent * 100 / 1000, 1), 0.1)
        relevant = 0
        if direct:
            code, text, factor, _ = self.rng.choices(ANC_UNITS, [u[3] for u in ANC_UNITS])[0]
            value: int | float = anc_per_ul if factor == 1 else round(anc_per_ul / factor, 2)
            anc = self._observation(
                "laboratory",
                "751-8",
                "Neutrophils [#/volume] in Blood by Automated count",
                day,
                minute,
                encounter,
                {"value": value, "unit": text, "system": UCUM, "code": code},
                reported_after=90 + self.rng.randrange(120),
            )
            anc["identifier"] = [{"system": ACCESSION, "value": f"{accession}-751-8"}]
            anc["specimen"] = {"reference": f"Specimen/{specimen}"}
            low = 1.5 if factor == 1000 else 1500
            anc["interpretation"] = [
                {"coding": [coding(INTERPRETATION, "L" if value < low else "N")]}
            ]
            self.add(anc)
            relevant += 1
        wbc_analyte: Analyte = (
            "Leukocytes [#/volume] in Blood by Automated count",
            "10*3/uL",
            0,
            0,
            1,
            4.0,
            11.0,
        )
        pct_analyte: Analyte = (
            "Neutrophils/100 leukocytes in Blood by Automated count",
            "%",
            0,
            0,
            1,
            40.0,
            75.0,
        )
        self.lab(wbc_analyte, "6690-2", day, minute, encounter, specimen, accession, wbc)
        self.lab(pct_analyte, "770-8", day, minute, encounter, specimen, accession, percent)
        relevant += 2
        for loinc, analyte in OTHER_HEMATOLOGY.items():
            self.lab(analyte, loinc, day, minute, encounter, specimen, accession)
        self.noise(day, minute, encounter, NOISE_PER_RELEVANT * relevant - len(OTHER_HEMATOLOGY))
        return relevant

    def noise(self, day: date, minute: int, encounter: str, budget: int) -> None:
        """Exactly ``budget`` other Observations: vital-sign sets, chemistry panels, single tests.

        Some are taken at the draw, others on days up to a week later (ward rounds, clinic)."""
        while budget > 0:
            later = day + timedelta(days=self.rng.randrange(7))
            when = 6 * 60 + self.rng.randrange(14 * 60)
            pick = self.rng.random()
            if pick < 0.55 and budget >= len(VITALS) + 1:
                for loinc in VITALS:
                    self.vital(loinc, later, when, encounter)
                self.blood_pressure(later, when, encounter)
                budget -= len(VITALS) + 1
            elif pick < 0.8 and budget >= len(CHEMISTRY):
                accession = f"{self.number:07d}{self.serial:05d}"
                for loinc, analyte in CHEMISTRY.items():
                    self.lab(analyte, loinc, day, minute, encounter, None, accession)
                budget -= len(CHEMISTRY)
            elif pick < 0.88 and budget >= len(LIPIDS):
                accession = f"{self.number:07d}{self.serial:05d}"
                for loinc, analyte in LIPIDS.items():
                    self.lab(analyte, loinc, day, minute, encounter, None, accession)
                budget -= len(LIPIDS)
            else:
                loinc = self.rng.choice(sorted(SINGLE_TESTS))
                accession = f"{self.number:07d}{self.serial:05d}"
                self.lab(SINGLE_TESTS[loinc], loinc, later, when, encounter, None, accession)
                budget -= 1

    # ------------------------------------------------------------ medications

    def dispense(
        self,
        day: date,
        days: int,
        status: str = "completed",
        category: str = "outpatient",
        concept: Resource | None = None,
        request: str | None = None,
    ) -> Resource:
        # A dispense awaiting a decision was prepared this morning, before the export's clock.
        minute = (10 if status == "completed" else 7) * 60 + self.rng.randrange(4 * 60)
        resource: Resource = {
            "resourceType": "MedicationDispense",
            "id": self.next_id("disp"),
            "meta": {"versionId": "1", "lastUpdated": stamp(day, minute)},
            "status": status,
            "category": {"coding": [coding(DISPENSE_CATEGORY, category)]},
            "medicationCodeableConcept": concept or clozapine_concept(),
            "subject": {"reference": self.ref},
            "performer": [{"actor": {"reference": f"Practitioner/{self.pharmacist}"}}],
            "quantity": {
                "value": days * 3,
                "unit": "tablet",
                "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                "code": "TAB",
            },
            "daysSupply": {"value": days, "unit": "day", "system": UCUM, "code": "d"},
            "whenPrepared": stamp(day, minute - 30),
        }
        if request is not None:
            resource["authorizingPrescription"] = [{"reference": f"MedicationRequest/{request}"}]
        if status == "completed":
            resource["whenHandedOver"] = stamp(day, minute)
        return self.add(resource)

    def request(self, day: date, concept: Resource, status: str = "active") -> str:
        rid = self.next_id("rx")
        self.add(
            {
                "resourceType": "MedicationRequest",
                "id": rid,
                "meta": {"versionId": "1", "lastUpdated": stamp(day, 9 * 60)},
                "status": status,
                "intent": "order",
                "medicationCodeableConcept": concept,
                "subject": {"reference": self.ref},
                "authoredOn": stamp(day, 9 * 60),
                "requester": {"reference": f"Practitioner/{self.prescriber}"},
                "dosageInstruction": [{"text": "Take as directed"}],
            }
        )
        return rid


# ---------------------------------------------------------------- clinical history


@dataclass
class Course:
    """The simulation state of one patient's therapy."""

    start: date
    ben: bool
    hospice_from: date | None
    level: float  # the patient's usual ANC, cells/uL
    on_therapy: bool = True
    interrupted: bool = False
    follow_up: str = ""  # "", "mild", "moderate", "severe", "recovery"
    recovery_draws: int = 0


def _months(start: date, day: date) -> int:
    months = (day.year - start.year) * 12 + day.month - start.month
    return months - 1 if day.day < start.day else months


def _routine_interval(course: Course, day: date) -> int:
    if course.hospice_from is not None and day >= course.hospice_from:
        return 182
    months = _months(course.start, day)
    return 7 if months < 6 else 14 if months < 12 else 28


def patient_history(number: int, seed: int, staff: tuple[str, str, str]) -> PatientBuilder:
    """One patient's resources (built in memory: a patient is small) in creation order."""
    rng = random.Random(f"{seed}:{number}")
    prescriber, pharmacist, organization = staff
    patient = PatientBuilder(number, rng, prescriber, pharmacist, organization)
    today = AS_OF.date()
    window_start = today - timedelta(days=WINDOW_DAYS)
    shape = rng.random()
    if shape < 0.25:  # new on clozapine
        months_on = rng.uniform(0.3, 3)
    elif shape < 0.55:  # first year
        months_on = rng.uniform(3, 12)
    else:  # established, monthly monitoring
        months_on = rng.uniform(12, 72)
    start = today - timedelta(days=int(months_on * 30.44))
    ben = rng.random() < 0.08
    hospice_from = today - timedelta(days=rng.randrange(60, 400)) if rng.random() < 0.03 else None
    usual = rng.uniform(1150, 1900) if ben else max(rng.gauss(4300, 1100), 1900)
    course = Course(start, ben, hospice_from, usual)

    birth = date(1950 + rng.randrange(50), 1 + rng.randrange(12), 1 + rng.randrange(28))
    patient.add(
        {
            "resourceType": "Patient",
            "id": patient.pid,
            "meta": {"versionId": "1", "lastUpdated": stamp(max(start, window_start), 8 * 60)},
            "identifier": [{"system": MRN, "value": f"BM{number:08d}"}],
            "active": True,
            "name": [{"family": "Benchmark", "given": [f"Patient{number}"]}],
            "gender": rng.choice(("female", "male")),
            "birthDate": birth.isoformat(),
            "address": [{"postalCode": "00000", "country": "US"}],
            "managingOrganization": {"reference": f"Organization/{organization}"},
        }
    )
    rx = patient.request(max(start, window_start), clozapine_concept())
    for code, name, text in rng.sample(OTHER_DRUGS, rng.randrange(1, 4)):
        concept = {"coding": [coding(RXNORM, code, name)], "text": text}
        other = patient.request(max(start, window_start), concept)
        for month in range(rng.randrange(1, 4)):
            day = today - timedelta(days=30 * month + rng.randrange(25))
            patient.dispense(day, 30, concept=concept, request=other)
    if ben:
        onset = max(start, window_start) - timedelta(days=rng.randrange(1, 30))
        patient.add(
            {
                "resourceType": "Condition",
                "id": patient.next_id("cond"),
                "meta": {"versionId": "1", "lastUpdated": stamp(onset, 11 * 60)},
                "clinicalStatus": {"coding": [coding(CONDITION_CLINICAL, "active")]},
                "verificationStatus": {"coding": [coding(CONDITION_VERIFICATION, "confirmed")]},
                "code": {
                    "coding": [
                        coding(None, "benign-ethnic-neutropenia", "Benign ethnic neutropenia")
                    ],
                    "text": "Benign ethnic neutropenia",
                },
                "subject": {"reference": patient.ref},
                "onsetDateTime": stamp(onset, 11 * 60),
                "recorder": {"reference": f"Practitioner/{prescriber}"},
            }
        )
    if hospice_from is not None:
        patient.add(
            {
                "resourceType": "Flag",
                "id": patient.next_id("flag"),
                "meta": {"versionId": "1", "lastUpdated": stamp(hospice_from, 10 * 60)},
                "status": "active",
                "code": {
                    "coding": [coding(SNOMED, "385763009", "Hospice care")],
                    "text": "Hospice",
                },
                "subject": {"reference": patient.ref},
                "period": {"start": stamp(hospice_from, 10 * 60)},
                "author": {"reference": f"Practitioner/{prescriber}"},
            }
        )
    _simulate(patient, course, window_start, today, rx)
    return patient


def _simulate(
    patient: PatientBuilder, course: Course, window_start: date, today: date, rx: str
) -> None:
    rng = patient.rng
    first = max(course.start - timedelta(days=rng.randrange(1, 6)), window_start)
    next_draw = first
    next_supply = max(course.start, window_start)
    supply_days = 7
    inpatient = rng.random() < 0.1
    mild_floor = 500 if course.ben else 1000
    normal_floor = 1000 if course.ben else 1500
    # Some patients miss their blood tests lately while supplies go on: overdue, not current.
    lapsed_from = today - timedelta(days=rng.randrange(20, 60)) if rng.random() < 0.06 else None
    day = first
    while day <= today:
        if day == next_draw and lapsed_from is not None and day >= lapsed_from:
            next_draw = today + timedelta(days=1)
        if day == next_draw:
            value = _anc_today(course, rng, mild_floor, normal_floor)
            encounter = patient.encounter(day, 7 * 60, inpatient and rng.random() < 0.5)
            patient.draw(day, value, encounter, direct=rng.random() < 0.9)
            next_draw = day + timedelta(
                days=_after_draw(course, value, day, rng, mild_floor, normal_floor)
            )
            if not course.on_therapy and course.follow_up == "":
                break  # discontinued after severe neutropenia: no more clozapine care
        if course.on_therapy and not course.interrupted and day >= next_supply:
            if day >= course.start:
                supply_days = min(_routine_interval(course, day), 28)
                if course.follow_up in ("mild", "moderate", "recovery"):
                    supply_days = 7
                category = "inpatient" if inpatient and rng.random() < 0.3 else "outpatient"
                patient.dispense(day, supply_days, category=category, request=rx)
                next_supply = day + timedelta(days=supply_days)
        day += timedelta(days=1)
    if course.on_therapy and not course.interrupted and rng.random() < 0.4:
        status = "preparation" if rng.random() < 0.8 else "in-progress"
        category = rng.choices(
            ("outpatient", "inpatient", "discharge", "community"), (80, 8, 7, 5)
        )[0]
        patient.dispense(today, supply_days, status=status, category=category, request=rx)


def _anc_today(course: Course, rng: random.Random, mild_floor: int, normal_floor: int) -> int:
    if course.follow_up == "":
        pick = rng.random()
        if pick < 0.002:
            course.follow_up = "severe"
        elif pick < 0.010 and not course.ben:
            course.follow_up = "moderate"
        elif pick < 0.035:
            course.follow_up = "mild"
        else:
            return max(int(rng.gauss(course.level, course.level * 0.15)), normal_floor)
        course.recovery_draws = rng.randrange(2, 5)
    if course.follow_up == "severe":
        return rng.randrange(150, 500)
    if course.follow_up == "moderate":
        return rng.randrange(500, 1000)
    if course.follow_up == "mild":
        return rng.randrange(mild_floor, normal_floor)
    return max(int(rng.gauss(course.level, course.level * 0.1)), normal_floor)  # recovery


def _after_draw(
    course: Course,
    value: int,
    day: date,
    rng: random.Random,
    mild_floor: int,
    normal_floor: int,
) -> int:
    """Days to the next draw, moving the follow-up along (the label's monitoring pattern)."""
    routine = _routine_interval(course, day)
    if course.follow_up == "":
        return routine
    course.recovery_draws -= 1
    if course.follow_up == "severe":
        course.interrupted = True
        if course.recovery_draws <= 0:
            if rng.random() < 0.5:  # discontinued for good
                course.on_therapy = False
                course.follow_up = ""
                return 1
            course.follow_up = "recovery"  # rechallenge once recovered: a new course
            course.recovery_draws = 4
            course.interrupted = False
            course.start = day + timedelta(days=rng.randrange(30, 60))
            return (course.start - day).days - 2
        return 1
    if course.follow_up == "moderate":
        course.interrupted = True
        if course.recovery_draws <= 0:
            course.follow_up, course.recovery_draws, course.interrupted = "recovery", 4, False
        return 1
    if course.follow_up == "mild":
        if course.recovery_draws <= 0:
            course.follow_up, course.recovery_draws = "recovery", 4
        return rng.choice((2, 3))
    if course.recovery_draws <= 0:
        course.follow_up = ""
    return min(7, routine)


# ---------------------------------------------------------------- the export


def staff(rng: random.Random) -> Iterator[Resource]:
    yield {
        "resourceType": "Organization",
        "id": "bench-hospital",
        "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z"},
        "active": True,
        "name": "Benchmark General Hospital",
        "type": [
            {"coding": [coding("http://terminology.hl7.org/CodeSystem/organization-type", "prov")]}
        ],
    }
    for role, count in (("prescriber", PRESCRIBERS), ("pharmacist", PHARMACISTS)):
        for index in range(count):
            yield {
                "resourceType": "Practitioner",
                "id": f"bench-{role}-{index:03d}",
                "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z"},
                "identifier": [{"system": NPI, "value": f"19{rng.randrange(10**8):08d}"}],
                "active": True,
                "name": [{"family": f"Bench{role.title()}", "given": [f"N{index}"]}],
            }


def generate(
    out: Path,
    patients: int | None = None,
    observations: int | None = None,
    seed: int = 1,
) -> WorkloadStats:
    """Write the export to ``out``; stop after ``patients``, or once ``observations`` is reached."""
    if (patients is None) == (observations is None):
        raise ValueError("give exactly one of patients or observations")
    stats = WorkloadStats()
    rng = random.Random(f"{seed}:staff")
    with ExportWriter(out, stats) as writer:
        for resource in staff(rng):
            writer.write(resource)
        number = 0
        while (patients is not None and number < patients) or (
            observations is not None and stats.observations < observations
        ):
            people = (
                f"bench-prescriber-{rng.randrange(PRESCRIBERS):03d}",
                f"bench-pharmacist-{rng.randrange(PHARMACISTS):03d}",
                "bench-hospital",
            )
            built = patient_history(number, seed, people)
            for resource in built.out:
                writer.write(resource)
                if resource["resourceType"] == "Observation":
                    code = resource["code"]["coding"][0]["code"]
                    if code in ("751-8", "6690-2", "770-8"):
                        stats.anc_related += 1
                        stats.direct_anc += code == "751-8"
                elif resource["resourceType"] == "MedicationDispense":
                    stats.pending += resource["status"] != "completed"
            number += 1
            stats.patients = number
    return stats


# ---------------------------------------------------------------- loading a FHIR server


def load_server(
    base_url: str,
    source: Path,
    batch_size: int = 200,
    timeout: float = 60.0,
    session: Any = None,
) -> int:
    """PUT every resource of the export into a FHIR server as transaction Bundles.

    PUT keeps the export's ids, so references stay valid; types go in :data:`RESOURCE_TYPES`
    order so that what is referenced exists first. Returns the number of resources sent."""
    import requests  # only this path talks to a network

    http = session or requests.Session()
    sent = 0
    for kind in RESOURCE_TYPES:
        path = source / f"{kind}.ndjson"
        if not path.exists():
            continue
        entries: list[Resource] = []
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    entries.append(_put_entry(orjson.loads(line)))
                if len(entries) >= batch_size:
                    sent += _post_transaction(http, base_url, entries, timeout, path)
                    entries = []
        if entries:
            sent += _post_transaction(http, base_url, entries, timeout, path)
    return sent


def _put_entry(resource: Resource) -> Resource:
    kind, rid = resource["resourceType"], resource["id"]
    return {
        "fullUrl": f"{kind}/{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{kind}/{rid}"},
    }


def _post_transaction(
    http: Any, base_url: str, entries: list[Resource], timeout: float, path: Path
) -> int:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = http.post(
        base_url.rstrip("/"),
        data=orjson.dumps(bundle),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=timeout,
    )
    if not 200 <= response.status_code < 300:
        raise RuntimeError(
            f"{base_url}: transaction of {len(entries)} resources from {path.name} failed with "
            f"HTTP {response.status_code}"
        )
    return len(entries)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.workload",
        description="Write a seeded synthetic FHIR Bulk Data export of clozapine patients.",
    )
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--patients", type=int, help="number of patients")
    size.add_argument("--observations", type=int, help="patients until this many Observations")
    parser.add_argument("--out", type=Path, required=True, help="folder for the NDJSON files")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--fhir-base", default=None, help="also load into this FHIR server")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    stats = generate(args.out, args.patients, args.observations, args.seed)
    print(f"Wrote {stats.describe()} to {args.out} in {time.perf_counter() - began:.1f} s.")
    print(f"Evaluate as of {AS_OF_TEXT}.")
    if args.fhir_base:
        sent = load_server(args.fhir_base, args.out)
        print(f"Loaded {sent} resources into {args.fhir_base}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
