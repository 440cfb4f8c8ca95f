"""The local backend's dispense decision (clinical-rules sections 2.3 and 4).

A supply is authorized only when every condition holds; otherwise every failing condition is
listed. People answer through DetectedIssue mitigations: a prescriber's rationale recorded after
the blocking result authorizes (and is cited); a pharmacist's EMAUTH override authorizes what a
pharmacist may lift, within the rolling override limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from adapter.core.calendar import local_date
from adapter.core.model import (
    REASON_ORDER,
    Anc,
    AncAssessment,
    Citation,
    DispenseDecision,
    Mitigation,
    PatientInputs,
    PendingDispense,
    PriorIssue,
    Reason,
    Supply,
)
from adapter.core.monitoring import (
    BLOCKING,
    RationaleCheck,
    Schedule,
    Timeline,
    effective_recommendation,
    first_step,
    gap_restarts,
    more_frequent,
)
from adapter.core.protocol import Frequency, Protocol

EMAUTH = "EMAUTH"
#: Findings a prescriber answers with a treatment rationale or rechallenge decision.
PRESCRIBER_ANSWERABLE = frozenset(
    {
        "anc-mild-neutropenia",
        "anc-moderate-neutropenia",
        "anc-ben-neutropenia",
        "anc-severe-neutropenia",
        "anc-monitoring-overdue",
        "dispense-not-authorized",
    }
)
#: Reasons a pharmacist's override never lifts: clinical ones are the prescriber's, and an
#: override needs a current ANC (clinical-rules section 3; section 4 "who may do what").
NOT_FOR_PHARMACIST: frozenset[Reason] = frozenset(
    {
        "anc-missing",
        "anc-not-current",
        "anc-below-threshold",
        "treatment-interrupted",
        "rechallenge-requires-prescriber",
    }
)


def ordered(reasons: Iterable[Reason]) -> tuple[Reason, ...]:
    unique = set(reasons)
    return tuple(reason for reason in REASON_ORDER if reason in unique)


@dataclass(frozen=True)
class DispenseContext:
    protocol: Protocol
    site_tz: tzinfo
    clock: datetime


def _latest_before(assessments: Sequence[AncAssessment], moment: datetime) -> AncAssessment | None:
    chosen = [item for item in assessments if item.anc.collected <= moment]
    return chosen[-1] if chosen else None


def _supply_limit(protocol: Protocol, pending: PendingDispense, frequency: Frequency) -> int | None:
    """The longest supply the dispense's setting allows, or None. A setting that could not be
    read is held to the limit (it may be an inpatient or discharge supply)."""
    if pending.setting not in protocol.supply_limit_settings and not pending.setting_unknown:
        return None
    return protocol.supply_limit_days[frequency]


def decide(
    pending: PendingDispense,
    inputs: PatientInputs,
    timeline: Timeline,
    context: DispenseContext,
) -> DispenseDecision:
    protocol, tz = context.protocol, context.site_tz
    # A dispense awaiting a decision is decided as of the clock (interfaces.md s.3: every
    # decision is made as of it): the supply is handed over now, not when it was prepared, so
    # an ANC current at the preparation but not now does not support it.
    on = local_date(context.clock, tz)
    rules = protocol.rules(timeline.population)
    # The newest result known at the clock counts, even if collected after the preparation.
    latest = _latest_before(timeline.assessments, context.clock)
    state = timeline.state
    recommendation = (
        effective_recommendation(latest, rules, on_therapy=state.course_start is not None)
        if latest is not None
        else None
    )
    # A supply after severe neutropenia is a rechallenge (a new patient) only once the ANC has
    # reached the rechallenge level; below it, treatment is simply interrupted.
    rechallenge = recommendation == "prescriber-decision-required"
    starts_course = state.course_start is None or gap_restarts(protocol, state, on, rechallenge)
    reasons: list[Reason] = []
    evidence: list[Anc] = []

    if latest is None:
        reasons.append("anc-missing")
        frequency = first_step(protocol)
    else:
        evidence.append(latest.anc)
        frequency = latest.frequency
        due = Schedule(protocol, timeline.hospice).current_until(latest.next_due)
        # Every rule must hold (clinical-rules 2.3): a restart's baseline window (below) does
        # not excuse a latest result that is no longer current. Only a first supply, with no
        # schedule yet, is judged by its baseline window alone.
        if on > due and state.course_start is not None:
            reasons.append("anc-not-current")
        if recommendation == "interrupt":
            reasons.append("treatment-interrupted")
        elif recommendation == "prescriber-decision-required":
            reasons.append("rechallenge-requires-prescriber")
        if recommendation in BLOCKING and latest.blocked_by is not None:
            # The earlier result the block rests on (the severe one a rechallenge waits on) was
            # used too: cited, so withdrawing it withdraws this decision (clinical-rules 1).
            evidence.append(latest.blocked_by)

    if starts_course:
        # A first supply, or a restart as a new patient: baseline within the window before it.
        frequency = more_frequent(frequency, first_step(protocol))
        # "Within the 30 days before it" in the site's dates, as every other interval here:
        # a baseline collected 30 days before, at whatever hour, is within the window.
        window_start = on - timedelta(days=protocol.timing.baseline_window_days)
        baselines = [a.anc for a in timeline.assessments if a.anc.collected <= context.clock]
        in_window = [anc for anc in baselines if local_date(anc.collected, tz) >= window_start]
        if not baselines:
            reasons.append("anc-missing")
        elif not in_window:
            reasons.append("anc-not-current")
        else:
            # BEN: each of the required baselines (the latest ones) must reach the level.
            needed = baselines[-rules.initiation_baselines :]
            if any(anc.value_per_ul < rules.initiation_min for anc in needed):
                reasons.append("anc-below-threshold")
        if state.course_start is None and len(baselines) < rules.initiation_baselines:
            reasons.append("anc-missing")

    limit = _supply_limit(protocol, pending, frequency)
    if limit is not None and (pending.days_supply is None or pending.days_supply > limit):
        reasons.append("supply-exceeds-limit")

    final = ordered(reasons)
    base = DispenseDecision(
        dispense=pending,
        outcome="authorized" if not final else "not-authorized",
        reasons=final,
        frequency=frequency,
        evidence=tuple(evidence),
        supply_limit=limit,
        first_supply=starts_course,
    )
    if not final:
        return base
    rationale = prescriber_rationale(inputs, pending, latest, context.clock)
    if rationale is not None:
        return _override(base, rationale)
    return pharmacist_override(base, inputs, context)


def _override(decision: DispenseDecision, citation: Citation) -> DispenseDecision:
    return DispenseDecision(
        dispense=decision.dispense,
        outcome="authorized-override",
        reasons=decision.reasons,
        frequency=decision.frequency,
        evidence=decision.evidence,
        citation=citation,
        supply_limit=decision.supply_limit,
        first_supply=decision.first_supply,
    )


def _usable_issue(issue: PriorIssue, clock: datetime) -> bool:
    return issue.status != "entered-in-error" and (
        issue.identified is None or issue.identified <= clock
    )


def by_prescriber(mitigation: Mitigation, inputs: PatientInputs) -> bool:
    """Whether an answer is the prescriber's (section 4: "author = the prescriber"): a requester
    of the patient's clozapine MedicationRequest. With no prescription in view nobody can be
    told to be the prescriber, and no answer counts as one (a pharmacist's note must never
    stand in for the prescriber's rationale)."""
    return EMAUTH not in mitigation.action_codes and mitigation.author in inputs.prescribers


def by_pharmacist(mitigation: Mitigation, inputs: PatientInputs) -> bool:
    """Whether an answer is a pharmacist's override request (section 4: `EMAUTH`, written by a
    Practitioner or PractitionerRole who is not the patient's prescriber: never by the patient,
    a relative, a device or an unnamed author)."""
    return (
        EMAUTH in mitigation.action_codes
        and mitigation.author.startswith(("Practitioner/", "PractitionerRole/"))
        and mitigation.author not in inputs.prescribers
    )


def known_since(lab: AncAssessment) -> datetime:
    """When the result could be known: its report (`issued`), else its collection. An answer
    recorded before then was not about it."""
    anc = lab.anc
    return anc.issued if anc.issued is not None and anc.issued > anc.collected else anc.collected


def prescriber_rationale(
    inputs: PatientInputs,
    pending: PendingDispense,
    latest: AncAssessment | None,
    clock: datetime,
) -> Citation | None:
    """The newest prescriber rationale recorded after the blocking result, if any."""
    best: Citation | None = None
    for issue in inputs.prior_issues:
        if issue.finding not in PRESCRIBER_ANSWERABLE or not _usable_issue(issue, clock):
            continue
        if latest is None and pending.ref not in issue.implicated:
            continue  # nothing to be "after": only an answer about this very dispense counts
        for mitigation in issue.mitigations:
            when = mitigation.date
            if when is None or when > clock or not by_prescriber(mitigation, inputs):
                continue
            if latest is not None and when < known_since(latest):
                continue  # recorded before the blocking result was known: it answered another
            if best is None or (best.date is not None and when > best.date):
                best = Citation(issue.ref, mitigation.author, "prescriber", when, mitigation.text)
    return best


def as_dispense(supply: Supply) -> PendingDispense:
    """A completed supply as the dispense it was, decided as of its hand-over."""
    return PendingDispense(
        ref=supply.ref,
        patient=supply.patient,
        time=supply.handed_over,
        days_supply=supply.days_supply,
        setting=supply.setting,
        performers=supply.performers,
    )


def rationale_check(inputs: PatientInputs) -> RationaleCheck:
    """For the replay: whether a prescriber's rationale, recorded after the blocking result and
    by the supply's hand-over, answers a supply (the same test as for a pending dispense)."""

    def answered(supply: Supply, latest: AncAssessment) -> bool:
        citation = prescriber_rationale(inputs, as_dispense(supply), latest, supply.handed_over)
        return citation is not None

    return answered


def prescriber_decided(inputs: PatientInputs, latest: AncAssessment, clock: datetime) -> bool:
    """Whether the prescriber answered the latest result (a rechallenge decision, section 4)."""
    anyone = PendingDispense("", latest.anc.patient, None, None, "outpatient")
    return prescriber_rationale(inputs, anyone, latest, clock) is not None


def prescriber_answered(inputs: PatientInputs, identifier: str, clock: datetime) -> bool:
    """Whether the prescriber answered our issue with this identifier (a mitigation by them)."""
    return any(
        issue.identifier == identifier
        and _usable_issue(issue, clock)
        and any(
            m.date is not None and m.date <= clock and by_prescriber(m, inputs)
            for m in issue.mitigations
        )
        for issue in inputs.prior_issues
    )


@dataclass(frozen=True)
class _OverrideRequest:
    dispense: str
    citation: Citation
    reasons: tuple[str, ...]


def _override_requests(inputs: PatientInputs, clock: datetime) -> list[_OverrideRequest]:
    requests: dict[str, _OverrideRequest] = {}
    for issue in inputs.prior_issues:
        if issue.finding != "dispense-not-authorized" or not _usable_issue(issue, clock):
            continue
        for mitigation in issue.mitigations:
            if not by_pharmacist(mitigation, inputs) or mitigation.date is None:
                continue
            if mitigation.date > clock:
                continue
            for dispense in issue.implicated:
                if not dispense.startswith("MedicationDispense/"):
                    continue
                citation = Citation(
                    issue.ref, mitigation.author, "pharmacist", mitigation.date, mitigation.text
                )
                held = requests.get(dispense)
                if held is None or (held.citation.date or mitigation.date) > mitigation.date:
                    requests[dispense] = _OverrideRequest(dispense, citation, issue.reasons)
    return sorted(requests.values(), key=lambda r: (r.citation.date, r.dispense))


def pharmacist_override(
    decision: DispenseDecision, inputs: PatientInputs, context: DispenseContext
) -> DispenseDecision:
    """Honour a recorded EMAUTH override, replaying earlier ones to apply the rolling limit."""
    requests = _override_requests(inputs, context.clock)
    mine = next((r for r in requests if r.dispense == decision.dispense.ref), None)
    if mine is None:
        return decision
    if NOT_FOR_PHARMACIST & set(decision.reasons):
        return decision  # not a pharmacist's to lift
    policy = context.protocol.override
    settings = {item.ref: item.setting for item in inputs.supplies}
    settings.update({item.ref: item.setting for item in inputs.pending})
    if decision.dispense.setting not in policy.limited_settings:
        return _override(decision, mine.citation)
    assert mine.citation.date is not None
    window = timedelta(days=policy.window_days)
    honoured: list[datetime] = []
    for request in requests:
        when = request.citation.date
        assert when is not None
        if request.dispense == decision.dispense.ref:
            break
        if NOT_FOR_PHARMACIST & set(request.reasons):
            continue
        setting = settings.get(request.dispense)
        if setting is not None and setting not in policy.limited_settings:
            continue  # an override of a dispense we cannot see counts: the safer reading
        recent = [moment for moment in honoured if moment > when - window]
        if len(recent) < policy.limit:
            honoured.append(when)
    recent = [moment for moment in honoured if moment > mine.citation.date - window]
    if len(recent) >= policy.limit:
        return DispenseDecision(
            dispense=decision.dispense,
            outcome="not-authorized",
            reasons=ordered([*decision.reasons, "override-limit-reached"]),
            frequency=decision.frequency,
            evidence=decision.evidence,
            supply_limit=decision.supply_limit,
            first_supply=decision.first_supply,
        )
    return _override(decision, mine.citation)
