"""The 2021 Clozapine REMS rules (clinical-rules.md section 3) as pure functions over facts.

The HTTP layer loads the facts from the database, calls these, and records the outcome; nothing
here does I/O, so every rule can be read (and tested) on its own. Each function returns every
reason that applies, not only the first, so a pharmacist sees the whole picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .clock import days_between, local_date
from .config import ProgramRules
from .reasons import Reason

STOPPED_STATUSES = frozenset({"interrupt", "discontinue"})


@dataclass(frozen=True)
class Anc:
    value_per_ul: float
    collected: datetime


@dataclass(frozen=True)
class Form:
    """What the rules need from an enrollment form or a PSF, plus what the registry says of its
    signer and prescriber."""

    prescriber_npi: str
    signer_role: str
    signer_id: str
    prescriber_certified: bool
    signer_is_designee_of_prescriber: bool
    ben: bool
    hospice: bool
    has_rationale: bool
    labs_missed: bool
    anc_results: Sequence[Anc]


@dataclass(frozen=True)
class PatientState:
    """The patient as of the request: their latest completed PSF (enrollment counts as one)."""

    rems_id: str
    ben: bool
    hospice: bool
    treatment_status: str
    monitoring_frequency: str
    last_psf_completed: datetime


@dataclass(frozen=True)
class DispenseRequest:
    pharmacy_settings: frozenset[str]
    """Settings the pharmacy is certified in; empty when it is not certified."""
    days_supply: int
    setting: str


def latest_anc(results: Sequence[Anc]) -> Anc | None:
    return max(results, key=lambda anc: anc.collected, default=None)


def rationale_threshold(ben: bool, rules: ProgramRules) -> float:
    return rules.rationale_anc_below_ben if ben else rules.rationale_anc_below_general


def rationale_required(
    results: Sequence[Anc], labs_missed: bool, ben: bool, rules: ProgramRules
) -> bool:
    """Labs missed, or an ANC the form reports below the level (any of the period's, not only
    the latest: a month with a severe result needs the prescriber even after recovery)."""
    level = rationale_threshold(ben, rules)
    return labs_missed or any(anc.value_per_ul < level for anc in results)


def psf_current(patient: PatientState, now: datetime, rules: ProgramRules) -> bool:
    age = days_between(patient.last_psf_completed, now, rules.time_zone)
    return 0 <= age <= rules.psf_window_days


def _signer_reasons(form: Form, needs_prescriber: bool) -> list[Reason]:
    reasons: list[Reason] = []
    if not form.prescriber_certified:
        reasons.append(Reason.PRESCRIBER_NOT_CERTIFIED)
    if form.signer_role == "prescriber":
        signer_ok = form.signer_id == form.prescriber_npi
    else:
        # A designee signs only routine forms, and only for the prescriber who added them.
        signer_ok = form.signer_is_designee_of_prescriber and not needs_prescriber
    if not signer_ok:
        reasons.append(Reason.SIGNER_NOT_PERMITTED)
    return reasons


def _anc_in_future(results: Sequence[Anc], now: datetime, rules: ProgramRules) -> bool:
    return any(days_between(anc.collected, now, rules.time_zone) < 0 for anc in results)


def enrollment_reasons(form: Form, now: datetime, rules: ProgramRules) -> list[Reason]:
    """Enrollment is the first PSF: a baseline ANC within the window; designees may enroll
    general-population patients only."""
    reasons: list[Reason] = []
    baseline = latest_anc(form.anc_results)
    if baseline is None:
        reasons.append(Reason.ANC_MISSING)
    elif _anc_in_future(form.anc_results, now, rules):
        reasons.append(Reason.ANC_IN_FUTURE)
    elif days_between(baseline.collected, now, rules.time_zone) > rules.baseline_window_days:
        reasons.append(Reason.BASELINE_ANC_TOO_OLD)
    if rationale_required(form.anc_results, False, form.ben, rules) and not form.has_rationale:
        reasons.append(Reason.RATIONALE_REQUIRED)
    needs_prescriber = form.ben or form.hospice or form.has_rationale
    return reasons + _signer_reasons(form, needs_prescriber)


def psf_reasons(
    form: Form,
    patient: PatientState | None,
    reporting_period: str,
    now: datetime,
    rules: ProgramRules,
) -> list[Reason]:
    """Acceptance of a monthly PSF. `patient` is None when the patient is not enrolled."""
    reasons: list[Reason] = []
    if patient is None:
        reasons.append(Reason.PATIENT_NOT_ENROLLED)
    if reporting_period > local_date(now, rules.time_zone).strftime("%Y-%m"):
        reasons.append(Reason.REPORTING_PERIOD_IN_FUTURE)
    latest = latest_anc(form.anc_results)
    if latest is None and not form.labs_missed:
        reasons.append(Reason.ANC_MISSING)
    if _anc_in_future(form.anc_results, now, rules):
        reasons.append(Reason.ANC_IN_FUTURE)
    if (
        rationale_required(form.anc_results, form.labs_missed, form.ben, rules)
        and not form.has_rationale
    ):
        reasons.append(Reason.RATIONALE_REQUIRED)
    # A designation already on record also needs the prescriber: a designee cannot drop it.
    recorded_designation = patient is not None and (patient.ben or patient.hospice)
    needs_prescriber = form.has_rationale or form.ben or form.hospice or recorded_designation
    return reasons + _signer_reasons(form, needs_prescriber)


def discharge_limit_days(
    pharmacy_settings: frozenset[str], setting: str, frequency: str, rules: ProgramRules
) -> int | None:
    """Inpatient-only pharmacies are limited at discharge; outpatient and dual ones are not."""
    if setting != "discharge" or pharmacy_settings != frozenset({"inpatient"}):
        return None
    if rules.discharge_mode == "monitoring-frequency":
        return rules.discharge_limit_by_frequency_days[frequency]
    return rules.discharge_limit_days


def _supply_reasons(
    request: DispenseRequest, patient: PatientState, rules: ProgramRules
) -> list[Reason]:
    limit = discharge_limit_days(
        request.pharmacy_settings, request.setting, patient.monitoring_frequency, rules
    )
    if limit is not None and request.days_supply > limit:
        return [Reason.SUPPLY_EXCEEDS_LIMIT]
    return []


def rda_reasons(
    request: DispenseRequest, patient: PatientState | None, now: datetime, rules: ProgramRules
) -> list[Reason]:
    """REMS Dispense Authorization: granted when this returns no reason."""
    reasons: list[Reason] = []
    if not request.pharmacy_settings:
        reasons.append(Reason.PHARMACY_NOT_CERTIFIED)
    if patient is None:
        return [*reasons, Reason.PATIENT_NOT_ENROLLED]
    if patient.treatment_status in STOPPED_STATUSES:
        reasons.append(Reason.TREATMENT_INTERRUPTED)
    if not psf_current(patient, now, rules):
        reasons.append(Reason.PSF_OVERDUE)
    return reasons + _supply_reasons(request, patient, rules)


def override_counts_toward_limit(pharmacy_settings: frozenset[str], rules: ProgramRules) -> bool:
    return bool(pharmacy_settings & rules.override_limit_applies_to)


@dataclass(frozen=True)
class OverrideFacts:
    request: DispenseRequest
    prescriber_certified: bool
    dispense_rationale: str
    current_anc: Anc
    limited_overrides_in_window: int
    """Granted overrides for this patient that count toward the limit, within the window."""


def override_reasons(
    facts: OverrideFacts, patient: PatientState | None, now: datetime, rules: ProgramRules
) -> list[Reason]:
    """Pharmacist override: enrolled, no current PSF, a dispense rationale, a certified
    prescriber's NPI, a current ANC; limited per patient per rolling window."""
    request = facts.request
    reasons: list[Reason] = []
    if not request.pharmacy_settings:
        reasons.append(Reason.PHARMACY_NOT_CERTIFIED)
    if not facts.prescriber_certified:
        reasons.append(Reason.PRESCRIBER_NOT_CERTIFIED)
    if not facts.dispense_rationale.strip():
        reasons.append(Reason.DISPENSE_RATIONALE_REQUIRED)
    if patient is None:
        return [*reasons, Reason.PATIENT_NOT_ENROLLED]
    if psf_current(patient, now, rules):
        reasons.append(Reason.PSF_CURRENT)
    # An override replaces a missing form, never a prescriber's stop.
    if patient.treatment_status in STOPPED_STATUSES:
        reasons.append(Reason.TREATMENT_INTERRUPTED)
    reasons += _override_anc_reasons(facts.current_anc, patient, now, rules)
    limited = override_counts_toward_limit(request.pharmacy_settings, rules)
    if limited and facts.limited_overrides_in_window >= rules.override_limit:
        reasons.append(Reason.OVERRIDE_LIMIT_REACHED)
    return reasons + _supply_reasons(request, patient, rules)


def _override_anc_reasons(
    anc: Anc, patient: PatientState, now: datetime, rules: ProgramRules
) -> list[Reason]:
    reasons: list[Reason] = []
    age = days_between(anc.collected, now, rules.time_zone)
    allowed = rules.monitoring_interval_days[patient.monitoring_frequency]
    if age < 0:
        reasons.append(Reason.ANC_IN_FUTURE)
    elif age > allowed + rules.override_anc_grace_days:
        reasons.append(Reason.ANC_NOT_CURRENT)
    below = anc.value_per_ul < rationale_threshold(patient.ben, rules)
    if rules.override_requires_anc_at_or_above_threshold and below:
        reasons.append(Reason.ANC_BELOW_THRESHOLD)
    return reasons


def overrides_in_window(granted_at: Sequence[datetime], now: datetime, rules: ProgramRules) -> int:
    """Rolling window: the request day and the `override_window_days - 1` days before it, so an
    override made on day 0 no longer counts on day `override_window_days`."""
    ages = (days_between(when, now, rules.time_zone) for when in granted_at)
    return sum(1 for age in ages if 0 <= age < rules.override_window_days)
