"""One patient, everything decided: the core's single entry point.

``evaluate_patient`` takes a patient's inputs and a clock and returns every decision value: the
status row, each ANC's assessment, the dispense decisions, the PSF, the findings to write and the
earlier findings to withdraw. It performs no effects; the service layer does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from typing import Literal

from adapter.core.calendar import local_date
from adapter.core.dispense import (
    DispenseContext,
    as_dispense,
    decide,
    prescriber_answered,
    prescriber_decided,
    rationale_check,
)
from adapter.core.findings import (
    OUTCOME_FINDING,
    PSF_ACTION,
    Finding,
    category_finding,
    dispense_finding,
    overdue_finding,
    psf_action_finding,
    unevaluable_finding,
)
from adapter.core.labs import assess_labs
from adapter.core.model import (
    DispenseDecision,
    LabOutcome,
    PatientInputs,
    PatientStatus,
    PriorIssue,
    Recommendation,
)
from adapter.core.monitoring import (
    Schedule,
    Timeline,
    effective_recommendation,
    first_step,
    replay,
)
from adapter.core.protocol import LabCodes, Population, Protocol, UnitTable
from adapter.core.psf import PatientStatusForm, prepare_psf


@dataclass(frozen=True)
class Context:
    protocol: Protocol
    units: UnitTable
    site_tz: tzinfo
    clock: datetime
    derive_anc: bool = True


@dataclass(frozen=True)
class Withdrawal:
    issue: PriorIssue
    status: Literal["cancelled", "entered-in-error"]
    reason: str


@dataclass(frozen=True)
class Evaluation:
    patient: str
    on_clozapine: bool
    status: PatientStatus
    labs: LabOutcome
    timeline: Timeline
    decisions: tuple[DispenseDecision, ...]
    psf: PatientStatusForm | None
    findings: tuple[Finding, ...]
    withdrawals: tuple[Withdrawal, ...]
    #: Completed dispenses handed over while the label did not allow them, decided as of their
    #: hand-over (each has a `dispense-not-authorized` finding; no authorization line).
    surfaced: tuple[DispenseDecision, ...] = ()
    #: The prescriber answered the PSF's `psf-prescriber-action-required` issue (local backend:
    #: the form is then prepared, signed by the prescriber).
    psf_signed: bool = False


def evaluate_patient(inputs: PatientInputs, context: Context) -> Evaluation:
    protocol, clock, tz = context.protocol, context.clock, context.site_tz
    labs = assess_labs(inputs.labs, context.units, protocol.sanity, clock, context.derive_anc)
    population: Population = "ben" if inputs.designations.ben else "general"
    hospice = inputs.designations.hospice
    timeline = replay(
        labs.usable,
        inputs.supplies,
        protocol,
        population,
        hospice,
        tz,
        clock,
        rationale=rationale_check(inputs),
    )
    latest = timeline.assessments[-1] if timeline.assessments else None
    decided = latest is not None and prescriber_decided(inputs, latest, clock)
    status = patient_status(inputs.patient, timeline, protocol, clock, tz, decided)
    on_clozapine = bool(inputs.supplies or inputs.pending or inputs.prescribed)

    dispense_context = DispenseContext(protocol, tz, clock)
    decisions = tuple(
        decide(pending, inputs, timeline, dispense_context)
        for pending in sorted(inputs.pending, key=lambda item: item.ref)
        if pending.time is None or pending.time <= clock
    )
    surfaced = tuple(
        replace(
            decide(
                as_dispense(item.supply),
                inputs,
                replace(timeline, assessments=item.assessments, state=item.state, unsanctioned=()),
                DispenseContext(protocol, tz, item.supply.handed_over),
            ),
            handed_over=True,
        )
        for item in timeline.unsanctioned
    )
    first_supply = min(
        (item.handed_over for item in inputs.supplies if item.handed_over <= clock), default=None
    )
    psf = (
        prepare_psf(
            status,
            timeline.assessments,
            protocol,
            clock,
            tz,
            local_date(first_supply, tz) if first_supply else None,
        )
        if on_clozapine
        else None
    )

    findings: list[Finding] = []
    for item in timeline.assessments:
        finding = category_finding(item, protocol, tz, labs.current_versions)
        if finding is not None:
            findings.append(finding)
    findings += [unevaluable_finding(item, tz) for item in labs.unevaluable]
    if on_clozapine and status.overdue:
        findings.append(overdue_finding(status, protocol, local_date(clock, tz), tz))
    if inputs.requests:
        # An ANC finding concerns the clozapine the patient is prescribed.
        findings = [replace(f, implicated=inputs.requests) for f in findings]
    psf_signed = False
    if psf is not None and psf.signer_role == "prescriber":
        # The form concerns the clozapine the patient is prescribed, as an ANC finding does.
        action = replace(psf_action_finding(psf, tz), implicated=inputs.requests)
        findings.append(action)
        psf_signed = prescriber_answered(inputs, action.identifier, clock)
    findings += [dispense_finding(decision, tz) for decision in decisions]
    findings += [
        dispense_finding(decision, tz)
        for decision in surfaced
        if decision.outcome == "not-authorized"
    ]
    findings.sort(key=lambda f: (f.topic, f.code, f.key))
    withdrawals = withdraw(inputs, labs, findings, clock)
    return Evaluation(
        patient=inputs.patient,
        on_clozapine=on_clozapine,
        status=status,
        labs=labs,
        timeline=timeline,
        decisions=decisions,
        psf=psf,
        findings=tuple(findings),
        withdrawals=withdrawals,
        surfaced=surfaced,
        psf_signed=psf_signed,
    )


def patient_status(
    patient: str,
    timeline: Timeline,
    protocol: Protocol,
    clock: datetime,
    tz: tzinfo,
    prescriber_decided: bool = False,
) -> PatientStatus:
    """The status row as of the clock. ``prescriber_decided``: the prescriber answered the
    latest result, so a rechallenge that waited for their decision may now go ahead."""
    state = timeline.state
    schedule = Schedule(protocol, timeline.hospice)
    today = local_date(clock, tz)
    on_therapy = state.course_start is not None
    latest = timeline.assessments[-1] if timeline.assessments else None
    recommendation: Recommendation
    if latest is None:
        next_due = state.course_start or today
        frequency = first_step(protocol)
        recommendation = "continue" if on_therapy else "do-not-initiate"
        overdue = on_therapy and today > schedule.current_until(next_due)
        return PatientStatus(
            patient=patient,
            population=timeline.population,
            hospice=timeline.hospice,
            therapy_start=state.course_start,
            latest=None,
            category=None,
            recommendation=recommendation,
            frequency=frequency,
            next_due=next_due,
            overdue=overdue,
            repeat_by=None,
            hematology_consult=False,
            ben_baseline=timeline.ben_baseline,
        )
    # Therapy may have started after this result was assessed as a baseline.
    recommendation = effective_recommendation(
        latest, protocol.rules(timeline.population), on_therapy
    )
    if recommendation == "prescriber-decision-required" and prescriber_decided:
        recommendation = "may-resume"  # the rechallenge the prescriber decided on
    elif (
        recommendation == "may-resume"
        and state.last_supply is not None
        and state.last_supply >= local_date(latest.anc.collected, tz)
    ):
        recommendation = "continue"  # a supply since this result: treatment has resumed
    elif not on_therapy and recommendation == "may-initiate":
        window = timedelta(days=protocol.timing.baseline_window_days)
        if clock - latest.anc.collected > window:
            recommendation = "do-not-initiate"  # the baseline is too old to start on
    return PatientStatus(
        patient=patient,
        population=timeline.population,
        hospice=timeline.hospice,
        therapy_start=state.course_start,
        latest=latest,
        category=latest.category,
        recommendation=recommendation,
        frequency=latest.frequency,
        next_due=latest.next_due,
        overdue=on_therapy and today > schedule.current_until(latest.next_due),
        repeat_by=latest.repeat_by,
        hematology_consult=latest.hematology_consult,
        ben_baseline=timeline.ben_baseline,
    )


_ANC_FINDINGS = frozenset(
    {
        "anc-mild-neutropenia",
        "anc-moderate-neutropenia",
        "anc-ben-neutropenia",
        "anc-severe-neutropenia",
        "anc-unevaluable",
    }
)
_PENDING_FINDING = OUTCOME_FINDING["pending"]
_DISPENSE_FINDINGS = frozenset(OUTCOME_FINDING.values())


def withdraw(
    inputs: PatientInputs,
    labs: LabOutcome,
    findings: list[Finding],
    clock: datetime,
) -> tuple[Withdrawal, ...]:
    """Earlier decisions whose inputs changed: ``entered-in-error`` when a source was withdrawn,
    ``cancelled`` when a result was corrected or replaced, or the same question now has another
    answer. Only open problems stay final (interfaces.md section 2): an overdue alert that a
    later usable result answers is cancelled, and so is a PSF routing issue of this month that
    a newer form replaced, and a pending-authorization alert once its dispense was handed over.
    A dispense since entered in error withdraws its decisions as ``entered-in-error``; one
    cancelled, declined or stopped withdraws them as ``cancelled`` (it will not be handed over:
    nothing about it is open). A decision merely overtaken by time otherwise (an authorized
    dispense since handed over) stands: it was right when it was made."""
    identifiers = {finding.identifier for finding in findings}
    pending_refs = {item.ref for item in inputs.pending}
    handed_refs = {item.ref for item in inputs.supplies if item.handed_over <= clock}
    gone = {item.ref: item for item in inputs.withdrawn_dispenses}
    month = (clock.year, clock.month)

    out: list[Withdrawal] = []
    for issue in sorted(inputs.prior_issues, key=lambda item: item.ref):
        if issue.status != "final" or (issue.identified and issue.identified > clock):
            continue
        if issue.identifier in identifiers:
            continue
        dispense = next((gone[ref] for ref in issue.implicated if ref in gone), None)
        if dispense is not None and issue.finding in _DISPENSE_FINDINGS:
            if dispense.in_error:
                reason = f"source entered in error: {dispense.ref}"
                out.append(Withdrawal(issue, "entered-in-error", reason))
            else:
                reason = f"dispense {dispense.status}: {dispense.ref}"
                out.append(Withdrawal(issue, "cancelled", reason))
            continue
        in_error = [ref for ref in issue.evidence if ref in labs.entered_in_error]
        if in_error:
            out.append(
                Withdrawal(issue, "entered-in-error", f"source entered in error: {in_error[0]}")
            )
            continue
        withdrawn = [ref for ref in issue.evidence if ref in labs.withdrawn]
        if withdrawn:
            out.append(Withdrawal(issue, "cancelled", f"source cancelled: {withdrawn[0]}"))
            continue
        replaced = [ref for ref in issue.evidence if ref in labs.replaced]
        if issue.finding in _ANC_FINDINGS:
            known = [ref for ref in issue.evidence if ref in labs.current_versions]
            if replaced or known:
                changed = sorted(set(replaced) | set(known))
                out.append(Withdrawal(issue, "cancelled", f"re-decided: {changed[0]}"))
        elif issue.finding in _DISPENSE_FINDINGS:
            still_pending = [ref for ref in issue.implicated if ref in pending_refs]
            handed = [ref for ref in issue.implicated if ref in handed_refs]
            if still_pending:
                out.append(Withdrawal(issue, "cancelled", f"re-decided: {still_pending[0]}"))
            elif replaced:
                out.append(Withdrawal(issue, "cancelled", f"result replaced: {replaced[0]}"))
            elif issue.finding == _PENDING_FINDING and handed:
                # No longer awaiting a decision: the pharmacy handed it over (the supply is
                # judged as a supply: surfaced if the label did not allow it).
                out.append(Withdrawal(issue, "cancelled", f"handed over: {handed[0]}"))
        elif issue.finding == "anc-monitoring-overdue":
            if replaced:
                out.append(Withdrawal(issue, "cancelled", f"result replaced: {replaced[0]}"))
            elif (answer := _answering_result(issue, labs, clock)) is not None:
                out.append(Withdrawal(issue, "cancelled", f"answered by {answer}"))
            elif known := [ref for ref in issue.evidence if ref in labs.current_versions]:
                # its result still stands but this alert was not made again (the result was
                # corrected in place, or the schedule changed): no longer the open problem
                out.append(Withdrawal(issue, "cancelled", f"re-decided: {known[0]}"))
        elif issue.finding == PSF_ACTION and issue.identified is not None:
            identified = issue.identified.astimezone(clock.tzinfo)
            if (identified.year, identified.month) == month:
                out.append(Withdrawal(issue, "cancelled", "re-decided: the form changed"))
    return tuple(out)


def _answering_result(issue: PriorIssue, labs: LabOutcome, clock: datetime) -> str | None:
    """A usable ANC collected after the one an overdue alert was about (any usable ANC when it
    said there was none): the alert is answered, no longer an open problem."""
    basis = [
        anc for anc in labs.usable if set(anc.sources or (anc.observation,)) & set(issue.evidence)
    ]
    if issue.evidence and not basis:
        return None  # the result it was about is not standing: left to the rules above
    since = max((anc.collected for anc in basis), default=None)
    later = [
        anc
        for anc in labs.usable
        if anc.collected <= clock and (since is None or anc.collected > since)
    ]
    return later[0].observation if later else None


__all__ = [
    "Context",
    "Evaluation",
    "LabCodes",
    "UnitTable",
    "Withdrawal",
    "evaluate_patient",
    "patient_status",
    "withdraw",
]
