"""What the worklist and a patient's page show, from the decisions the adapter writes.

Pure: a patient's evaluation, the dispense decisions and findings that were written (the REMS
backend's when it decided), and the history behind them (``adapter.core.history``) become one
frozen ``PatientView``. No decision is made here; only grouping and words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Literal

from adapter.core.calendar import local_date
from adapter.core.evaluate import Context, Evaluation
from adapter.core.findings import OUTCOME_FINDING, PSF_ACTION, Finding
from adapter.core.history import PatientHistory, patient_history
from adapter.core.model import DispenseDecision, PatientInputs, PatientStatus
from adapter.report.chart import PendingMark
from adapter.report.words import CATEGORY_WORDS, OUTCOME_WORDS, REASON_TEXT, RECOMMENDATION_WORDS

Group = Literal[
    "not-authorized", "overdue", "due-soon", "repeat", "prescriber", "authorized", "routine"
]
#: The worklist's groups, in the order a pharmacist works through them, with their headings.
GROUPS: tuple[tuple[Group, str], ...] = (
    ("not-authorized", "Dispense not authorized"),
    ("overdue", "ANC overdue"),
    ("due-soon", "ANC due today or tomorrow"),
    ("repeat", "Repeat ANC by a deadline"),
    ("prescriber", "Prescriber action awaiting"),
    ("authorized", "Dispense authorized"),
    ("routine", "Nothing due"),
)
GROUP_TITLE: dict[str, str] = dict(GROUPS)
DueState = Literal["overdue", "grace", "today", "tomorrow", "later"]


@dataclass(frozen=True)
class DispenseLine:
    ref: str
    outcome: str
    reasons: tuple[str, ...]
    days_supply: int | None
    setting: str


@dataclass(frozen=True)
class PatientView:
    patient: str  # "Patient/demo-01"
    key: str  # "demo-01": the id in links
    group: Group  # the first group that applies
    flags: tuple[Group, ...]  # every group that applies
    population: str
    hospice: bool
    therapy_start: date | None
    latest_anc: Decimal | None
    latest_collected: datetime | None
    latest_age_days: int | None
    latest_derived: bool
    category: str | None
    recommendation: str
    frequency: str
    next_due: date
    current_until: date
    due_state: DueState
    repeat_by: datetime | None
    hematology_consult: bool
    ben_baseline: Decimal | None
    dispenses: tuple[DispenseLine, ...]
    #: What needs doing and why, one plain sentence each (the DetectedIssues' words first).
    reasons: tuple[str, ...]
    #: The same, in a few words each, for the worklist.
    notes: tuple[str, ...]
    history: PatientHistory
    pending: tuple[PendingMark, ...]


def _due_state(next_due: date, current_until: date, overdue: bool, today: date) -> DueState:
    if overdue:
        return "overdue"
    if today > next_due and today <= current_until:
        return "grace"
    if next_due == today:
        return "today"
    if next_due == today + timedelta(days=1):
        return "tomorrow"
    return "later"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


def build_view(
    inputs: PatientInputs,
    evaluation: Evaluation,
    context: Context,
    decisions: Sequence[DispenseDecision],
    findings: Iterable[Finding],
) -> PatientView:
    """One patient's view. ``decisions`` and ``findings`` are this patient's, as written."""
    tz = context.site_tz
    status = evaluation.status
    history = patient_history(inputs, evaluation, context)
    today = history.today
    mine = [f for f in findings if f.patient == evaluation.patient]
    latest = status.latest
    due_state = _due_state(status.next_due, history.current_until, status.overdue, today)

    flags: list[Group] = []
    outcomes = {d.outcome for d in decisions}
    if outcomes & {"not-authorized", "pending"}:
        flags.append("not-authorized")
    if status.overdue:
        flags.append("overdue")
    if due_state in ("grace", "today", "tomorrow"):
        flags.append("due-soon")
    if status.repeat_by is not None:
        flags.append("repeat")
    psf_waits = any(f.code == PSF_ACTION for f in mine) and not evaluation.psf_signed
    if status.recommendation in ("prescriber-decision-required", "interrupt") or psf_waits:
        flags.append("prescriber")
    if outcomes & {"authorized", "authorized-override"}:
        flags.append("authorized")
    if not flags:
        flags.append("routine")

    reasons: list[str] = []
    for decision in decisions:
        ref = decision.dispense.ref
        code = OUTCOME_FINDING[decision.outcome]
        said = [f.detail for f in mine if f.code == code and ref in f.implicated]
        reasons += [_sentence(text) for text in said[:1]]
    if status.overdue:
        reasons += [_sentence(f.detail) for f in mine if f.code == "anc-monitoring-overdue"]
    elif due_state == "grace":
        reasons.append(
            f"The next ANC was due {status.next_due}; it is past due but inside the grace period "
            f"(current until {history.current_until})."
        )
    elif due_state in ("today", "tomorrow"):
        reasons.append(f"The next ANC is due {due_state} ({status.next_due}).")
    if status.recommendation == "prescriber-decision-required":
        worst = [s for s in history.spans if s.kind == "excursion" and s.end is None]
        since = (
            f"{CATEGORY_WORDS.get(worst[-1].label, worst[-1].label)} since {worst[-1].start}: "
            if worst
            else ""
        )
        reasons.append(
            _sentence(
                f"{since[:1].upper()}{since[1:]}a rechallenge needs the prescriber's decision "
                "(answer the DetectedIssue with a mitigation); until then no supply is authorized"
            )
        )
    if latest is not None and latest.category != "normal":
        evidence = set(latest.anc.sources or (latest.anc.observation,))
        reasons += [
            _sentence(f.detail)
            for f in mine
            if f.code.startswith("anc-")
            and f.code not in ("anc-monitoring-overdue", "anc-unevaluable")
            and set(f.evidence) == evidence
        ]
    elif status.repeat_by is not None:
        reasons.append(f"Repeat the ANC by {status.repeat_by.astimezone(tz):%Y-%m-%d %H:%M %Z}.")
    reasons += [_sentence(f.detail) for f in mine if f.code == PSF_ACTION and psf_waits]
    reasons += [_sentence(f.detail) for f in mine if f.code == "anc-unevaluable"]
    reasons += [
        _sentence(f.detail)
        for f in mine
        if f.code == "dispense-not-authorized" and f.topic.startswith("handed-over")
    ]
    if status.hematology_consult and not any("hematology" in r for r in reasons):
        reasons.append("A hematology consultation is recommended.")
    if not reasons:
        reasons.append(
            f"Nothing to do now: {RECOMMENDATION_WORDS[status.recommendation]}; next ANC due "
            f"{status.next_due}."
        )
    # One sentence once, in order.
    unique = list(dict.fromkeys(reasons))
    notes = _notes(status, decisions, history, due_state, psf_waits, mine, tz, context.clock)

    collected = latest.anc.collected if latest else None
    return PatientView(
        patient=evaluation.patient,
        key=evaluation.patient.removeprefix("Patient/"),
        group=flags[0],
        flags=tuple(flags),
        population=status.population,
        hospice=status.hospice,
        therapy_start=status.therapy_start,
        latest_anc=latest.anc.value_per_ul if latest else None,
        latest_collected=collected,
        latest_age_days=(today - local_date(collected, tz)).days if collected else None,
        latest_derived=bool(latest and latest.anc.derived),
        category=status.category,
        recommendation=status.recommendation,
        frequency=status.frequency,
        next_due=status.next_due,
        current_until=history.current_until,
        due_state=due_state,
        repeat_by=status.repeat_by,
        hematology_consult=status.hematology_consult,
        ben_baseline=history.ben_baseline,
        dispenses=tuple(
            DispenseLine(
                d.dispense.ref, d.outcome, d.reasons, d.dispense.days_supply, d.dispense.setting
            )
            for d in decisions
        ),
        reasons=tuple(unique),
        notes=notes,
        history=history,
        pending=tuple(
            PendingMark(
                d.dispense.ref,
                d.dispense.time or context.clock,
                d.outcome,
                d.dispense.days_supply,
                d.dispense.setting,
            )
            for d in decisions
        ),
    )


def _notes(
    status: PatientStatus,
    decisions: Sequence[DispenseDecision],
    history: PatientHistory,
    due_state: DueState,
    psf_waits: bool,
    mine: Sequence[Finding],
    tz: tzinfo,
    clock: datetime,
) -> tuple[str, ...]:
    """What needs doing, a few words each (the worklist's "Why" column)."""
    notes: list[str] = []
    for decision in decisions:
        words = OUTCOME_WORDS.get(decision.outcome, decision.outcome)
        if decision.reasons and decision.outcome != "authorized":
            why = ", ".join(REASON_TEXT.get(r, r) for r in decision.reasons)
            notes.append(f"dispense {words}: {why}")
        else:
            notes.append(f"dispense {words}")
    if status.overdue:
        notes.append(f"ANC overdue: was due {status.next_due}, grace ended {history.current_until}")
    elif due_state == "grace":
        notes.append(f"ANC past due {status.next_due}, in grace until {history.current_until}")
    elif due_state in ("today", "tomorrow"):
        notes.append(f"ANC due {due_state}")
    if status.repeat_by is not None:
        by = f"{status.repeat_by.astimezone(tz):%Y-%m-%d %H:%M %Z}"
        passed = status.repeat_by < clock
        notes.append(f"repeat ANC was due by {by} (passed)" if passed else f"repeat ANC by {by}")
    if status.recommendation in ("prescriber-decision-required", "interrupt"):
        notes.append(RECOMMENDATION_WORDS[status.recommendation])
    if psf_waits:
        notes.append("this month's PSF needs the prescriber")
    if status.hematology_consult:
        notes.append("hematology consult recommended")
    unevaluable = sum(1 for f in mine if f.code == "anc-unevaluable")
    if unevaluable:
        notes.append(f"{unevaluable} unevaluable result{'s' if unevaluable != 1 else ''}")
    handed = sum(
        1 for f in mine if f.code == "dispense-not-authorized" and f.topic.startswith("handed-over")
    )
    if handed:
        notes.append(f"{handed} supply handed over without authorization")
    if not notes:
        notes.append(f"nothing due; next ANC {status.next_due}")
    return tuple(notes)


def build_views(
    inputs: Sequence[PatientInputs],
    evaluations: Sequence[Evaluation],
    context: Context,
    decisions: Sequence[DispenseDecision],
    findings: Sequence[Finding],
) -> tuple[PatientView, ...]:
    """Every patient on clozapine, in worklist order (group, then patient)."""
    by_patient: dict[str, list[DispenseDecision]] = {}
    for decision in decisions:
        by_patient.setdefault(decision.dispense.patient, []).append(decision)
    said: dict[str, list[Finding]] = {}
    for finding in findings:
        said.setdefault(finding.patient, []).append(finding)
    order = {group: index for index, (group, _) in enumerate(GROUPS)}
    views = [
        build_view(
            item,
            evaluation,
            context,
            by_patient.get(evaluation.patient, []),
            said.get(evaluation.patient, []),
        )
        for item, evaluation in zip(inputs, evaluations, strict=True)
        if evaluation.on_clozapine
    ]
    return tuple(sorted(views, key=lambda v: (order[v.group], v.patient)))


def age_words(days: int | None) -> str:
    if days is None:
        return "-"
    if days == 0:
        return "today"
    return f"{days} day{'s' if days != 1 else ''} ago"


__all__ = [
    "GROUPS",
    "GROUP_TITLE",
    "DispenseLine",
    "Group",
    "PatientView",
    "age_words",
    "build_view",
    "build_views",
]
