"""The monthly Patient Status Form a REMS program expects (clinical-rules section 3).

The core prepares the form's content from the ANC history; whether it is submitted (and by whom)
is the backend's business. The adapter never invents a clinical rationale: a form that needs one,
or that carries a BEN or hospice designation, is routed to the prescriber.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
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
    #: The ANC deadlines (due date + grace) inside the period that passed without a usable
    #: result, even if a later one arrived (clinical-rules section 3).
    missed_deadlines: tuple[date, ...] = ()
    #: An ANC the form reports is below the level at which a rationale is required.
    anc_below: bool = False

    @property
    def needs(self) -> tuple[str, ...]:
        """What only the prescriber can give this form: ``rationale``, ``ben``, ``hospice``."""
        wanted = (("rationale", self.rationale_required), ("ben", self.ben))
        return tuple(name for name, needed in (*wanted, ("hospice", self.hospice)) if needed)


def missed_deadlines(
    assessments: Sequence[AncAssessment],
    protocol: Protocol,
    period: tuple[date, date],
    today: date,
    therapy_since: date | None,
    site_tz: tzinfo,
) -> tuple[date, ...]:
    """Every ANC deadline (next due date + grace) inside ``period`` that passed before
    ``today`` with no usable result collected by it, once therapy had started: labs missed for
    the period, whether or not a later result arrived."""
    if therapy_since is None:
        return ()
    first, last = period
    grace = protocol.timing.grace_days
    collected = [local_date(item.anc.collected, site_tz) for item in assessments]
    missed: list[date] = []
    for index, item in enumerate(assessments):
        deadline = item.next_due + timedelta(days=grace)
        if deadline < therapy_since or not first <= deadline <= last or deadline >= today:
            continue
        following = collected[index + 1 :]
        if not following or following[0] > deadline:
            missed.append(deadline)
    return tuple(sorted(set(missed)))


def prepare_psf(
    status: PatientStatus,
    assessments: tuple[AncAssessment, ...],
    protocol: Protocol,
    clock: datetime,
    site_tz: tzinfo,
    therapy_since: date | None = None,
) -> PatientStatusForm | None:
    """The form for the clock's month, or None when there is no therapy or no ANC to report.
    ``therapy_since``: the first supply's date (labs are due from then); the current course's
    start when not given."""
    if status.therapy_start is None or status.latest is None:
        return None
    today = local_date(clock, site_tz)
    period = f"{today.year:04d}-{today.month:02d}"
    month = (
        today.replace(day=1),
        today.replace(day=calendar.monthrange(today.year, today.month)[1]),
    )
    missed = missed_deadlines(
        assessments, protocol, month, today, therapy_since or status.therapy_start, site_tz
    )
    in_period = tuple(
        item.anc
        for item in assessments
        if local_date(item.anc.collected, site_tz).strftime("%Y-%m") == period
    )
    # The most recent result is required even when the month has none yet.
    results = in_period or (status.latest.anc,)
    rules = protocol.rules(status.population)
    # Any ANC the form reports below the level needs a rationale, not only the latest: a month
    # with a severe result still needs the prescriber after recovery (the safer reading).
    level = Decimal(rules.psf_rationale_below)
    below = any(anc.value_per_ul < level for anc in results)
    # Labs missed for the period: a deadline inside it passed without a usable result (even if
    # a later one arrived), or the patient is overdue now.
    labs_missed = bool(missed) or status.overdue
    rationale = below or labs_missed
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
        labs_missed=labs_missed,
        signer_role="prescriber" if rationale or ben or status.hospice else "designee",
        missed_deadlines=missed,
        anc_below=below,
    )
