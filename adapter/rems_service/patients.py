"""Patient enrollment, Patient Status Forms and the patient's state as of a given instant."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapter.rems import contract

from . import registry
from .clock import local_date, parse_instant, to_wire
from .config import ProgramRules
from .outcome import Outcome, error, rejected
from .reasons import ErrorKind, Reason
from .rules import (
    Anc,
    Form,
    PatientState,
    enrollment_reasons,
    latest_anc,
    overrides_in_window,
    psf_current,
    psf_reasons,
)

NEW_PATIENT_FREQUENCY = "weekly"
ENROLLMENT_STATUS = "continue"


def identity_key(patient: Mapping[str, Any]) -> str:
    """Normalised identity (case, spacing, postal-code punctuation) hashed for matching."""

    def norm(text: str) -> str:
        return " ".join(text.split()).casefold()

    postal = "".join(ch for ch in str(patient["postalCode"]) if ch.isalnum()).casefold()
    parts = [
        norm(patient["name"]["family"]),
        norm(patient["name"]["given"]),
        str(patient["birthDate"]),
        str(patient["sex"]),
        postal,
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def anc_list(results: list[dict[str, Any]]) -> list[Anc]:
    return [Anc(float(item["valuePerUL"]), parse_instant(item["collected"])) for item in results]


def _form(conn: sqlite3.Connection, body: dict[str, Any], labs_missed: bool) -> Form:
    npi, signer = str(body["prescriberNpi"]), body["signer"]
    designations = body["designations"]
    return Form(
        prescriber_npi=npi,
        signer_role=str(signer["role"]),
        signer_id=str(signer["id"]),
        prescriber_certified=registry.prescriber_certified(conn, npi),
        signer_is_designee_of_prescriber=registry.is_designee_of(conn, str(signer["id"]), npi),
        ben=bool(designations["ben"]),
        hospice=bool(designations["hospice"]),
        has_rationale="treatmentRationale" in body,
        labs_missed=labs_missed,
        anc_results=anc_list(body["ancResults"]),
    )


def _insert_psf(
    conn: sqlite3.Connection,
    rems_id: str,
    kind: str,
    body: dict[str, Any],
    form: Form,
    fields: Mapping[str, str],
) -> int:
    latest = latest_anc(form.anc_results)
    cursor = conn.execute(
        "INSERT INTO psfs (rems_id, kind, reporting_period, completed_at, prescriber_npi,"
        " signer_role, signer_id, treatment_status, monitoring_frequency, ben, hospice,"
        " labs_missed, latest_anc_per_ul, latest_anc_collected, treatment_rationale)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rems_id,
            kind,
            fields["reporting_period"],
            fields["completed_at"],
            form.prescriber_npi,
            form.signer_role,
            form.signer_id,
            fields["treatment_status"],
            fields["monitoring_frequency"],
            int(form.ben),
            int(form.hospice),
            int(form.labs_missed),
            latest.value_per_ul if latest else None,
            to_wire(latest.collected) if latest else None,
            body.get("treatmentRationale"),
        ),
    )
    if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it after an INSERT
        raise RuntimeError("PSF insert returned no row id")
    return cursor.lastrowid


def enroll(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    key = identity_key(body["patient"])
    if conn.execute("SELECT 1 FROM patients WHERE identity_key = ?", (key,)).fetchone():
        return error(
            409,
            ErrorKind.CONFLICT,
            [Reason.PATIENT_ALREADY_ENROLLED],
            "a patient with this identity is already enrolled; submit PSFs instead",
        )
    form = _form(conn, body, labs_missed=False)
    reasons = enrollment_reasons(form, now, rules)
    if reasons:
        return rejected(ErrorKind.ENROLLMENT_REJECTED, reasons, "enrollment not accepted")
    enrolled_at = to_wire(now)
    cursor = conn.execute(
        "INSERT INTO patients (identity_key, birth_date, sex, prescriber_npi, enrolled_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            key,
            body["patient"]["birthDate"],
            body["patient"]["sex"],
            form.prescriber_npi,
            enrolled_at,
        ),
    )
    rems_id = f"RP{cursor.lastrowid:08d}"
    conn.execute("UPDATE patients SET rems_id = ? WHERE seq = ?", (rems_id, cursor.lastrowid))
    psf_id = _insert_psf(
        conn,
        rems_id,
        "enrollment",
        body,
        form,
        {
            "reporting_period": local_date(now, rules.time_zone).strftime("%Y-%m"),
            "completed_at": enrolled_at,
            "treatment_status": ENROLLMENT_STATUS,
            "monitoring_frequency": str(body.get("monitoringFrequency", NEW_PATIENT_FREQUENCY)),
        },
    )
    response = {"remsId": rems_id, "enrolledAt": enrolled_at, "psfId": psf_id}
    return Outcome(201, response, contract.PATIENT_ENROLLMENT_RESPONSE)


def state_as_of(conn: sqlite3.Connection, rems_id: str, now: datetime) -> PatientState | None:
    """The patient as of `now`: None unless enrolled by then; forms completed later are ignored
    (a request evaluated with an earlier `asOf` must not see the future)."""
    row = conn.execute(
        "SELECT p.rems_id, s.completed_at, s.treatment_status, s.monitoring_frequency, s.ben,"
        " s.hospice FROM patients p JOIN psfs s ON s.rems_id = p.rems_id"
        " WHERE p.rems_id = ? AND p.enrolled_at <= ? AND s.completed_at <= ?"
        " ORDER BY s.completed_at DESC, s.id DESC LIMIT 1",
        (rems_id, to_wire(now), to_wire(now)),
    ).fetchone()
    if row is None:
        return None
    return PatientState(
        rems_id=str(row["rems_id"]),
        ben=bool(row["ben"]),
        hospice=bool(row["hospice"]),
        treatment_status=str(row["treatment_status"]),
        monitoring_frequency=str(row["monitoring_frequency"]),
        last_psf_completed=parse_instant(str(row["completed_at"])),
    )


def _find_patient(conn: sqlite3.Connection, patient: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(remsId, identity mismatch). With a remsId, birth date and sex must agree (name and postal
    code may change); without one, the whole identity must match an enrollment."""
    if "remsId" in patient:
        row = conn.execute(
            "SELECT rems_id, birth_date, sex FROM patients WHERE rems_id = ?", (patient["remsId"],)
        ).fetchone()
        if row is None:
            return None, False
        same = row["birth_date"] == patient["birthDate"] and row["sex"] == patient["sex"]
        return str(row["rems_id"]), not same
    row = conn.execute(
        "SELECT rems_id FROM patients WHERE identity_key = ?", (identity_key(patient),)
    ).fetchone()
    return (str(row["rems_id"]) if row else None), False


def submit_psf(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    rems_id, mismatch = _find_patient(conn, body["patient"])
    patient = None if rems_id is None or mismatch else state_as_of(conn, rems_id, now)
    form = _form(conn, body, labs_missed=bool(body["labsMissed"]))
    reasons = psf_reasons(form, patient, str(body["reportingPeriod"]), now, rules)
    if mismatch:
        reasons = [Reason.PATIENT_IDENTITY_MISMATCH, *reasons]
        reasons.remove(Reason.PATIENT_NOT_ENROLLED)
    if reasons or patient is None:
        return rejected(ErrorKind.PSF_REJECTED, reasons, "PSF not accepted")
    completed_at = to_wire(now)
    psf_id = _insert_psf(
        conn,
        patient.rems_id,
        "psf",
        body,
        form,
        {
            "reporting_period": str(body["reportingPeriod"]),
            "completed_at": completed_at,
            "treatment_status": str(body["treatmentStatus"]),
            "monitoring_frequency": str(body["monitoringFrequency"]),
        },
    )
    response = {
        "psfId": psf_id,
        "remsId": patient.rems_id,
        "reportingPeriod": body["reportingPeriod"],
        "completedAt": completed_at,
        "treatmentStatus": body["treatmentStatus"],
    }
    return Outcome(201, response, contract.PSF_ACCEPTANCE)


def limited_overrides(conn: sqlite3.Connection, rems_id: str, now: datetime) -> list[datetime]:
    rows = conn.execute(
        "SELECT decided_at FROM decisions WHERE rems_id = ? AND kind = 'override' AND granted = 1"
        " AND counts_toward_limit = 1 AND decided_at <= ?",
        (rems_id, to_wire(now)),
    )
    return [parse_instant(str(row["decided_at"])) for row in rows]


def status(conn: sqlite3.Connection, rems_id: str, now: datetime, rules: ProgramRules) -> Outcome:
    patient = state_as_of(conn, rems_id, now)
    if patient is None:
        return error(404, ErrorKind.NOT_FOUND, [Reason.PATIENT_NOT_ENROLLED], "no such patient")
    enrolled_at = conn.execute(
        "SELECT enrolled_at FROM patients WHERE rems_id = ?", (rems_id,)
    ).fetchone()["enrolled_at"]
    body = {
        "remsId": patient.rems_id,
        "enrolledAt": enrolled_at,
        "treatmentStatus": patient.treatment_status,
        "monitoringFrequency": patient.monitoring_frequency,
        "designations": {"ben": patient.ben, "hospice": patient.hospice},
        "lastPsfCompletedAt": to_wire(patient.last_psf_completed),
        "psfCurrent": psf_current(patient, now, rules),
        "limitedOverridesInWindow": overrides_in_window(
            limited_overrides(conn, rems_id, now), now, rules
        ),
    }
    return Outcome(200, body, contract.PATIENT_STATUS)
