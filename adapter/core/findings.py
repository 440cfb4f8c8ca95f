"""Decisions as findings: what each DetectedIssue will say (interfaces.md section 2).

A finding carries a ``key``: the inputs that produced it, from which the translator derives the
deterministic identifier, and a ``topic``: what it is about, so that a later decision on the same
topic can withdraw it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Literal

from adapter.core.calendar import local_date
from adapter.core.model import (
    Anc,
    AncAssessment,
    DispenseDecision,
    PatientStatus,
    Unevaluable,
)
from adapter.core.protocol import Category, Protocol
from adapter.core.psf import PatientStatusForm

Severity = Literal["high", "moderate", "low"]
ActCode = Literal["LAB", "NAT", "VALIDAT"]

#: interfaces.md section 2: finding code -> (v3 ActCode, severity). A contract, not a threshold.
FINDINGS: dict[str, tuple[ActCode, Severity]] = {
    "anc-mild-neutropenia": ("LAB", "moderate"),
    "anc-moderate-neutropenia": ("LAB", "high"),
    "anc-ben-neutropenia": ("LAB", "moderate"),
    "anc-severe-neutropenia": ("LAB", "high"),
    "anc-monitoring-overdue": ("LAB", "moderate"),
    "anc-unevaluable": ("LAB", "moderate"),
    "dispense-authorized": ("NAT", "low"),
    "dispense-authorized-override": ("NAT", "low"),
    "dispense-not-authorized": ("NAT", "high"),
    "dispense-authorization-pending": ("NAT", "moderate"),
    "psf-prescriber-action-required": ("VALIDAT", "moderate"),
    "psf-rejected": ("VALIDAT", "moderate"),
}
PSF_ACTION = "psf-prescriber-action-required"
#: Topic of the finding on a completed dispense handed over although not authorized.
HANDED_OVER_TOPIC = "handed-over"
OUTCOME_FINDING = {
    "authorized": "dispense-authorized",
    "authorized-override": "dispense-authorized-override",
    "not-authorized": "dispense-not-authorized",
    "pending": "dispense-authorization-pending",
}
_READABLE = {
    "mild-neutropenia": "mild neutropenia",
    "moderate-neutropenia": "moderate neutropenia",
    "ben-neutropenia": "neutropenia (benign ethnic neutropenia table)",
    "severe-neutropenia": "severe neutropenia",
}
_REASON_TEXT = {
    "anc-missing": "no usable ANC (or not the baselines a first supply needs)",
    "anc-not-current": "the latest ANC is not current",
    "anc-below-threshold": "the ANC is below the level this supply needs",
    "treatment-interrupted": "treatment is interrupted",
    "rechallenge-requires-prescriber": "a rechallenge needs the prescriber's decision",
    "supply-exceeds-limit": "the supply runs past what monitoring allows",
    "patient-not-enrolled": "the patient is not enrolled",
    "prescriber-not-certified": "the prescriber is not certified",
    "pharmacy-not-certified": "the pharmacy is not certified",
    "psf-overdue": "no Patient Status Form in the allowed window",
    "override-limit-reached": "the pharmacist override limit is reached",
}
#: Plain words for each reason code, for other backends' sentences too.
REASON_TEXT: dict[str, str] = _REASON_TEXT


@dataclass(frozen=True)
class Finding:
    code: str
    patient: str
    detail: str
    key: str
    topic: str
    evidence: tuple[str, ...] = ()
    implicated: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def identifier(self) -> str:
        """Deterministic: the same inputs always give the same DetectedIssue identifier."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:40]

    @property
    def act_code(self) -> ActCode:
        return FINDINGS[self.code][0]

    @property
    def severity(self) -> Severity:
        return FINDINGS[self.code][1]


def cells(value: Decimal) -> str:
    """A cell count as a pharmacist reads it, exactly as decided: 1,499.85 stays 1,499.85 (a
    rounded 1,500 would read as normal while the decision was mild neutropenia)."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return format(value.normalize(), ",f")


def _anc_phrase(anc: Anc, tz: tzinfo) -> str:
    how = " (derived from WBC and differential)" if anc.derived else ""
    return f"ANC {cells(anc.value_per_ul)} cells/uL{how} collected {local_date(anc.collected, tz)}"


def _evidence(anc: Anc) -> tuple[str, ...]:
    return tuple(sorted(set(anc.sources or (anc.observation,))))


def _version_key(anc: Anc, versions: dict[str, str]) -> str:
    return ",".join(f"{ref}@{versions.get(ref, '')}:{anc.value_per_ul}" for ref in _evidence(anc))


def category_finding(
    item: AncAssessment, protocol: Protocol, tz: tzinfo, versions: dict[str, str]
) -> Finding | None:
    """A finding for a usable non-normal ANC."""
    category: Category = item.category
    if category == "normal":
        return None
    rules = protocol.rules(item.population)
    clauses = [
        _TREATMENT[item.recommendation],
        f"monitor {item.frequency.replace('-', ' ')} with the next ANC due {item.next_due}",
    ]
    if item.repeat_by is not None:
        clauses.append(
            f"repeat this ANC by {_when_exact(item.repeat_by, tz)} (first result below "
            f"{cells(Decimal(rules.confirm_below))} after a normal one)"
        )
    if item.hematology_consult:
        clauses.append("a hematology consultation is recommended")
    code = f"anc-{category}"
    return Finding(
        code=code,
        patient=item.anc.patient,
        detail=f"{_anc_phrase(item.anc, tz)} is {_READABLE[category]}: {'; '.join(clauses)}.",
        key=f"{code}|{item.anc.patient}|{_version_key(item.anc, versions)}",
        topic=f"anc|{item.anc.observation}",
        evidence=_evidence(item.anc),
    )


_TREATMENT = {
    "continue": "clozapine may continue",
    "interrupt": "interrupt clozapine",
    "may-resume": "clozapine may resume",
    "prescriber-decision-required": "a rechallenge needs the prescriber's decision",
    "may-initiate": "clozapine may be started",
    "do-not-initiate": "do not start clozapine on this result",
}


def _when_exact(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()


def unevaluable_finding(item: Unevaluable, tz: tzinfo) -> Finding:
    when = f" collected {local_date(item.collected, tz)}" if item.collected else ""
    return Finding(
        code="anc-unevaluable",
        patient=item.patient,
        detail=(
            f"ANC result{when} cannot be interpreted ({item.reason}), so it is not used for any "
            "decision and the laboratory should correct it."
        ),
        key=f"anc-unevaluable|{item.patient}|{item.observation}@{item.version}|{item.reason}",
        topic=f"anc|{item.observation}",
        evidence=tuple(sorted(set(item.sources or (item.observation,)))),
    )


def overdue_finding(
    status: PatientStatus, protocol: Protocol, clock_date: date, tz: tzinfo
) -> Finding:
    latest = status.latest
    if latest is None:
        said = f"no ANC is on record since therapy start {status.therapy_start}"
        evidence: tuple[str, ...] = ()
        basis = "none"
    else:
        said = (
            f"the last ANC, {cells(latest.anc.value_per_ul)} cells/uL, was collected "
            f"{local_date(latest.anc.collected, tz)} under {status.frequency.replace('-', ' ')} "
            "monitoring"
        )
        evidence = _evidence(latest.anc)
        basis = latest.anc.key
    grace = protocol.timing.grace_days
    return Finding(
        code="anc-monitoring-overdue",
        patient=status.patient,
        detail=(
            f"ANC monitoring is overdue as of {clock_date}: the next ANC was due "
            f"{status.next_due} (grace {grace} days) and {said}."
        ),
        key=f"anc-monitoring-overdue|{status.patient}|{basis}|{status.next_due}",
        topic=f"overdue|{status.patient}",
        evidence=evidence,
    )


def dispense_finding(decision: DispenseDecision, tz: tzinfo) -> Finding:
    pending = decision.dispense
    code = OUTCOME_FINDING[decision.outcome]
    days = f" {pending.days_supply}-day" if pending.days_supply is not None else ""
    if pending.setting_unknown:
        head = f"A{days} clozapine supply of unknown setting ({pending.ref})"
    else:
        head = f"{pending.setting.capitalize()}{days} clozapine supply ({pending.ref})"
    basis = (
        " and ".join(_anc_phrase(anc, tz) for anc in decision.evidence) or "no usable ANC on record"
    )
    if decision.outcome == "authorized":
        detail = (
            f"{head} is authorized on {basis} under "
            f"{decision.frequency.replace('-', ' ')} monitoring."
        )
    else:
        why = ", ".join(_REASON_TEXT[reason] for reason in decision.reasons)
        if decision.supply_limit is not None and "supply-exceeds-limit" in decision.reasons:
            why += f" (at most {decision.supply_limit} days under {decision.frequency} monitoring)"
        if decision.handed_over:
            detail = (
                f"{head} was handed over on {_when(pending.time, tz)} although it was NOT "
                f"authorized: {why}; based on {basis}. It counts as days on clozapine; it "
                "neither ends the interruption nor stands in for the prescriber's decision."
            )
        elif decision.citation is not None:
            who = decision.citation.role
            detail = (
                f"{head} is authorized by {who} override ({decision.citation.author} on "
                f'{_when(decision.citation.date, tz)}: "{decision.citation.text}") despite: '
                f"{why}; based on {basis}."
            )
        else:
            detail = f"{head} is NOT authorized: {why}; based on {basis}."
    unread = ""
    if pending.unreadable:
        detail += (
            f" Not readable in the dispense, so taken at the strictest: "
            f"{', '.join(pending.unreadable)}."
        )
        unread = f"|unreadable:{','.join(pending.unreadable)}"  # keys of readable ones unchanged
    evidence_refs = sorted({ref for anc in decision.evidence for ref in _evidence(anc)})
    cited = decision.citation.issue if decision.citation else ""
    if cited:
        evidence_refs.append(cited)  # the answer that authorized it, cited
    # A completed dispense surfaced after the fact is its own finding, never taken for the
    # decision on a pending version of the same dispense.
    version = "handed-over" if decision.handed_over else pending.version
    return Finding(
        code=code,
        patient=pending.patient,
        detail=detail,
        key=(
            f"{code}|{pending.ref}@{version}|{','.join(decision.reasons)}|"
            f"{','.join(anc.key + ':' + str(anc.value_per_ul) for anc in decision.evidence)}|"
            f"{pending.days_supply}|{pending.setting}|{cited}{unread}"
        ),
        topic=f"{HANDED_OVER_TOPIC if decision.handed_over else 'dispense'}|{pending.ref}",
        evidence=tuple(evidence_refs),
        implicated=(pending.ref,),
        reasons=decision.reasons,
    )


def _when(moment: datetime | None, tz: tzinfo) -> str:
    return moment.astimezone(tz).date().isoformat() if moment else "undated"


_NEEDS_TEXT = {
    "ben": "the benign ethnic neutropenia designation",
    "hospice": "the hospice designation",
}


def psf_action_finding(form: PatientStatusForm, tz: tzinfo) -> Finding:
    """The prescriber is needed for this month's PSF (clinical-rules section 3: a designee may
    not sign a rationale, a BEN or a hospice designation), and the EHR is told what for."""
    needs = []
    for need in form.needs:
        if need != "rationale":
            needs.append(_NEEDS_TEXT[need])
            continue
        why = []
        if form.anc_below:
            lowest = min(form.anc_results, key=lambda anc: (anc.value_per_ul, anc.collected))
            why.append(f"{_anc_phrase(lowest, tz)} is below the level needing one")
        if form.missed_deadlines:
            days = ", ".join(str(day) for day in form.missed_deadlines)
            why.append(
                f"labs were missed for the period (ANC deadline {days} passed without a "
                "usable result)"
            )
        elif form.labs_missed:
            why.append("labs were missed for the period (the next ANC is overdue)")
        needs.append(f"a treatment rationale ({'; '.join(why)})")
    content = "|".join(
        [
            ",".join(f"{anc.key}:{anc.value_per_ul}" for anc in form.anc_results),
            form.monitoring_frequency,
            form.treatment_status,
            ",".join(form.needs),
            ",".join(str(day) for day in form.missed_deadlines),
        ]
    )
    return Finding(
        code=PSF_ACTION,
        patient=form.patient,
        detail=(
            f"The Patient Status Form for {form.reporting_period} needs the prescriber: "
            f"{' and '.join(needs)}. A designee cannot sign it; the adapter never invents a "
            "rationale: answer this issue with a mitigation giving the treatment rationale."
        ),
        key=f"{PSF_ACTION}|local|{form.patient}|{form.reporting_period}|{content}",
        topic=f"psf|{form.patient}|{form.reporting_period}",
        evidence=tuple(
            sorted({ref for anc in form.anc_results for ref in anc.sources or (anc.observation,)})
        ),
    )
