"""The monthly Patient Status Form a REMS program expects (clinical-rules section 3).

The core prepares the form's content from the ANC history; whether it is submitted (and by whom)
is the backend's business. The adapter never invents a clinical rationale: a form that needs one,
or that carries a BEN or hospice designation, is routed to the prescriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Literal

from adapter.core.calendar import local_date
from adapter.core.model import Anc, AncAssessment, PatientStatus, Recommendation
from adapter.core.protocol import Frequency, Protocol

TreatmentStatus = Literal["continue", "interrupt", "discontinue", "resume"]
SignerRole = Literal["designee", "prescriber"]

_TREATMENT: dict[Recommendation, TreatmentStatus] = {
    "continue": "continue",
    "may-initiate": "continue",
    "interrupt": "interrupt",
    "prescriber-decision-required": "interrupt",
    "do-not-initiate": "interrupt",
    "may-resume": "resume",
}


@dataclass(frozen=True)
class PatientStatusForm:
    patient: str
    reporting_period: str  # YYYY-MM
    anc_results: tuple[Anc, ...]
    monitoring_frequency: Frequency
    treatment_status: TreatmentStatus
    ben: bool
    hospice: bool
    rationale_required: bool
    labs_missed: bool
    signer_role: SignerRole


def prepare_psf(
    status: PatientStatus,
    assessments: tuple[AncAssessment, ...],
    protocol: Protocol,
    clock: datetime,
    site_tz: tzinfo,
) -> PatientStatusForm | None:
    """The form for the clock's month, or None when there is no therapy or no ANC to report."""
    if status.therapy_start is None or status.latest is None:
        return None
    today = local_date(clock, site_tz)
    period = f"{today.year:04d}-{today.month:02d}"
    in_period = tuple(
        item.anc
        for item in assessments
        if local_date(item.anc.collected, site_tz).strftime("%Y-%m") == period
    )
    # The most recent result is required even when the month has none yet.
    results = in_period or (status.latest.anc,)
    rules = protocol.rules(status.population)
    below = status.latest.anc.value_per_ul < Decimal(rules.psf_rationale_below)
    rationale = below or status.overdue
    ben = status.population == "ben"
    return PatientStatusForm(
        patient=status.patient,
        reporting_period=period,
        anc_results=results,
        monitoring_frequency=protocol.psf_frequency[status.frequency],
        treatment_status=_TREATMENT[status.recommendation],
        ben=ben,
        hospice=status.hospice,
        rationale_required=rationale,
        labs_missed=status.overdue,
        signer_role="prescriber" if rationale or ben or status.hospice else "designee",
    )
