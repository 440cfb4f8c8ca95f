"""The core's values -> the camelCase JSON lines of status, authorizations and psf files."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from adapter.core.model import Anc, DispenseDecision, PatientStatus
from adapter.core.psf import PatientStatusForm

PsfState = Literal["prepared", "submitted", "accepted", "rejected", "awaiting-prescriber"]


def number(value: Decimal) -> int | float:
    """JSON number for a cell count: whole numbers stay whole."""
    return int(value) if value == value.to_integral_value() else float(value)


def instant(value: datetime) -> str:
    """A computed instant, always in UTC with a 'Z' (source instants are echoed as written)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(value: datetime | None) -> str | None:
    return instant(value) if value else None


def collected(anc: Anc) -> str:
    return anc.collected_raw or instant(anc.collected)


def _anc(anc: Anc) -> dict[str, Any]:
    return {
        "valuePerUL": number(anc.value_per_ul),
        "collected": collected(anc),
        "observation": anc.observation,
    }


def status_record(status: PatientStatus, as_of: datetime) -> dict[str, Any]:
    latest = status.latest
    return {
        "patient": status.patient,
        "asOf": instant(as_of),
        "population": status.population,
        "hospice": status.hospice,
        "therapyStart": status.therapy_start.isoformat() if status.therapy_start else None,
        "latestAnc": _anc(latest.anc) if latest else None,
        "category": status.category,
        "recommendation": status.recommendation,
        "monitoringFrequency": status.frequency,
        "nextAncDue": status.next_due.isoformat(),
        "overdue": status.overdue,
        "repeatAncBy": _moment(status.repeat_by),
        "hematologyConsult": status.hematology_consult,
    }


def authorization_record(
    decision: DispenseDecision,
    backend: Literal["local", "rems"],
    authorization_number: str | None = None,
) -> dict[str, Any]:
    pending = decision.dispense
    return {
        "dispense": pending.ref,
        "patient": pending.patient,
        "outcome": decision.outcome,
        # Reasons say why a supply is not authorized; an override's lifted reasons stay in the
        # DetectedIssue (evidence.code), which also cites the answer that authorized it.
        "reasons": list(decision.reasons) if decision.outcome == "not-authorized" else [],
        "backend": backend,
        "authorizationNumber": authorization_number,
        "daysSupply": pending.days_supply,
        "setting": pending.setting,
    }


def psf_record(form: PatientStatusForm, state: PsfState) -> dict[str, Any]:
    return {
        "patient": form.patient,
        "reportingPeriod": form.reporting_period,
        "ancResults": [
            {"valuePerUL": number(anc.value_per_ul), "collected": collected(anc)}
            for anc in form.anc_results
        ],
        "monitoringFrequency": form.monitoring_frequency,
        "treatmentStatus": form.treatment_status,
        "designations": {"ben": form.ben, "hospice": form.hospice},
        "treatmentRationaleRequired": form.rationale_required,
        "signerRole": form.signer_role,
        "state": state,
    }
