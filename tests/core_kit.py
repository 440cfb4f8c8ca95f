"""Builders for the core's inputs, so core tests read like clinical histories."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache

from adapter.core.evaluate import Context, Evaluation, evaluate_patient
from adapter.core.model import (
    Designations,
    LabObservation,
    Mitigation,
    PatientInputs,
    PendingDispense,
    PriorIssue,
    Supply,
)
from adapter.core.protocol import Protocol, Setting
from adapter.core.reference import ReferenceData
from adapter.mappings_loader import load_reference_data

PATIENT = "Patient/p"
START = date(2025, 1, 6)


@lru_cache(maxsize=1)
def reference() -> ReferenceData:
    return load_reference_data()


def at(day: date | int, hour: int = 9) -> datetime:
    if isinstance(day, int):
        day = START + timedelta(days=day)
    return datetime.combine(day, time(hour), UTC)


def anc(
    day: date | int,
    value: float | str,
    unit: str = "/uL",
    *,
    ref: str | None = None,
    status: str = "final",
    version: str = "",
    role: str = "anc",
    text_unit: str | None = None,
    system: str | None = "http://unitsofmeasure.org",
    hour: int = 9,
    identifiers: tuple[str, ...] = (),
    arrival: int = 0,
    specimen: str | None = None,
) -> LabObservation:
    moment = at(day, hour)
    return LabObservation(
        ref=ref or f"Observation/{role}-{moment:%Y%m%d%H}-{value}",
        patient=PATIENT,
        role=role,  # type: ignore[arg-type]
        status=status,
        collected=moment,
        value=Decimal(str(value)),
        unit_code=unit if text_unit is None else None,
        unit_system=system if text_unit is None else None,
        unit_text=text_unit,
        version=version,
        identifiers=identifiers,
        arrival=arrival,
        specimen=specimen,
    )


def supply(day: date | int, days: int | None = 7, setting: Setting = "outpatient") -> Supply:
    moment = at(day, 14)
    return Supply(f"MedicationDispense/s-{moment:%Y%m%d}", PATIENT, moment, days, setting)


def pending(
    day: date | int,
    days: int | None = 7,
    setting: Setting = "outpatient",
    ref: str = "MedicationDispense/pending",
) -> PendingDispense:
    return PendingDispense(ref, PATIENT, at(day, 15), days, setting)


def weekly_supplies(first: int, last: int, step: int = 7) -> list[Supply]:
    return [supply(day, step) for day in range(first, last + 1, step)]


def issue(
    finding: str,
    *,
    author: str,
    when: datetime,
    action: tuple[str, ...] = (),
    implicated: tuple[str, ...] = (),
    evidence: tuple[str, ...] = (),
    reasons: tuple[str, ...] = (),
    ref: str = "DetectedIssue/prior",
) -> PriorIssue:
    return PriorIssue(
        ref=ref,
        identifier=f"id-{ref}",
        patient=PATIENT,
        finding=finding,
        status="final",
        identified=when - timedelta(hours=1),
        evidence=evidence,
        implicated=implicated,
        mitigations=(Mitigation(author, action, when, "documented decision"),),
        reasons=reasons,
    )


def evaluate(
    labs: list[LabObservation] | tuple[LabObservation, ...] = (),
    supplies: list[Supply] | tuple[Supply, ...] = (),
    clock: datetime | int | None = None,
    *,
    ben: bool = False,
    hospice: bool = False,
    pending_dispenses: tuple[PendingDispense, ...] = (),
    prior: tuple[PriorIssue, ...] = (),
    prescribers: frozenset[str] = frozenset(),
    protocol: Protocol | None = None,
) -> Evaluation:
    data = reference()
    if clock is None:
        moments = [lab.collected for lab in labs if lab.collected]
        moments += [p.time for p in pending_dispenses if p.time] + [s.handed_over for s in supplies]
        clock = max([*moments, at(0)]) + timedelta(hours=1)
    elif isinstance(clock, int):
        clock = at(clock, 23)
    inputs = PatientInputs(
        patient=PATIENT,
        labs=tuple(labs),
        supplies=tuple(supplies),
        pending=pending_dispenses,
        designations=Designations(ben=ben, hospice=hospice),
        prior_issues=prior,
        prescribers=prescribers,
        prescribed=True,
    )
    return evaluate_patient(inputs, Context(protocol or data.protocol, data.units, UTC, clock))
