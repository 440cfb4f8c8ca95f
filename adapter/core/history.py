"""A patient's monitoring history for display: what the decisions were, over time.

Pure and additive: it replays the same label algorithm as ``monitoring.replay`` (the same
``_Replay`` steps, in the same event order) and records the state after every event, so that a
chart can show when an excursion or an interruption began and ended, which monitoring frequency
held when, and which supplies the label allowed. It never makes a decision of its own: a test
checks that the last recorded state and the assessments are exactly those ``replay`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Literal

from adapter.core.calendar import local_date
from adapter.core.dispense import rationale_check
from adapter.core.evaluate import Context, Evaluation
from adapter.core.labs import current_versions, version_rank
from adapter.core.model import Anc, AncAssessment, LabObservation, PatientInputs, Supply
from adapter.core.monitoring import TherapyState, _Replay
from adapter.core.protocol import Category, Frequency

ResultKind = Literal["direct", "derived", "unevaluable", "withdrawn"]
SpanKind = Literal["excursion", "interruption"]


@dataclass(frozen=True)
class Reported:
    """One Observation a result came from, as the source reported it."""

    observation: str
    value: Decimal | None
    unit: str | None  # the unit as reported (UCUM code, else the unit text)
    status: str


@dataclass(frozen=True)
class ResultPoint:
    """One ANC-coded result (or derivation) on the chart."""

    observation: str
    kind: ResultKind
    collected: datetime | None
    value_per_ul: Decimal | None  # normalised; only for results used in decisions
    category: Category | None
    frequency: Frequency | None
    next_due: date | None
    reported: tuple[Reported, ...]
    note: str = ""  # why unevaluable, or how it was withdrawn


@dataclass(frozen=True)
class SupplyBar:
    ref: str
    handed_over: datetime
    start: date
    end: date  # first day no longer covered
    days_supply: int | None
    setting: str
    allowed: bool  # False: handed over while the label did not allow it (surfaced)


@dataclass(frozen=True)
class Span:
    kind: SpanKind
    start: date
    end: date | None  # None: still going on at the clock
    label: str  # excursion: the worst category


@dataclass(frozen=True)
class FrequencyStep:
    start: date
    end: date  # the next result's date, or the clock's
    frequency: Frequency


@dataclass(frozen=True)
class CourseStart:
    """A course of therapy began: the first supply, or a restart as a new patient."""

    on: date
    restart: bool


@dataclass(frozen=True)
class PatientHistory:
    patient: str
    today: date
    results: tuple[ResultPoint, ...]  # by collection time; undated last
    supplies: tuple[SupplyBar, ...]
    spans: tuple[Span, ...]
    frequency: tuple[FrequencyStep, ...]
    courses: tuple[CourseStart, ...]
    next_due: date
    current_until: date  # due date + grace: the last day the latest ANC is current
    repeat_by: datetime | None
    ben_baseline: Decimal | None
    #: The replay's own outcome, identical to the decision's (a test checks): nothing here
    #: decides differently from ``monitoring.replay``.
    state: TherapyState
    assessments: tuple[AncAssessment, ...]


def _unit(lab: LabObservation) -> str | None:
    return lab.unit_code or lab.unit_text


def _reported(refs: tuple[str, ...], labs: dict[str, LabObservation]) -> tuple[Reported, ...]:
    out = []
    for ref in refs:
        lab = labs.get(ref)
        if lab is not None:
            out.append(Reported(ref, lab.value, _unit(lab), lab.status))
    return tuple(out)


def _latest_versions(inputs: PatientInputs) -> dict[str, LabObservation]:
    return current_versions(inputs.labs)


def _valued_versions(inputs: PatientInputs) -> dict[str, LabObservation]:
    """For a withdrawn result: the last version that carried a value (what was withdrawn)."""
    held: dict[str, LabObservation] = {}
    for lab in inputs.labs:
        if lab.value is None:
            continue
        other = held.get(lab.ref)
        rank = version_rank(lab.version, lab.last_updated, lab.arrival)
        if other is None or rank >= version_rank(other.version, other.last_updated, other.arrival):
            held[lab.ref] = lab
    return held


def _events(
    ancs: tuple[Anc, ...], supplies: tuple[Supply, ...], until: datetime
) -> list[Anc | Supply]:
    """The order ``monitoring.replay`` uses: by time, a result before a supply at one instant."""
    chosen_supplies = sorted(
        (item for item in supplies if item.handed_over <= until),
        key=lambda item: (item.handed_over, item.ref),
    )
    events: list[tuple[datetime, int, Anc | Supply]] = [
        (a.collected, 0, a) for a in ancs if a.collected <= until
    ]
    events += [(s.handed_over, 1, s) for s in chosen_supplies]
    return [event for _, _, event in sorted(events, key=lambda item: (item[0], item[1]))]


def _event_date(event: Anc | Supply, tz: tzinfo) -> date:
    moment = event.handed_over if isinstance(event, Supply) else event.collected
    return local_date(moment, tz)


def patient_history(
    inputs: PatientInputs, evaluation: Evaluation, context: Context
) -> PatientHistory:
    """The history behind ``evaluation`` (made from ``inputs`` with ``context``)."""
    protocol, tz, clock = context.protocol, context.site_tz, context.clock
    timeline = evaluation.timeline
    labs = evaluation.labs
    today = local_date(clock, tz)
    run = _Replay(
        protocol,
        timeline.population,
        timeline.hospice,
        timeline.ben_baseline,
        tz,
        rationale_check(inputs),
    )
    states: list[tuple[date, Anc | Supply, TherapyState]] = []
    for event in _events(labs.usable, inputs.supplies, clock):
        if isinstance(event, Supply):
            run.supply(event)
        else:
            run.anc(event)
        states.append((_event_date(event, tz), event, run.state))

    latest = _latest_versions(inputs)
    results: list[ResultPoint] = []
    for item in run.assessments:
        anc = item.anc
        results.append(
            ResultPoint(
                observation=anc.observation,
                kind="derived" if anc.derived else "direct",
                collected=anc.collected,
                value_per_ul=anc.value_per_ul,
                category=item.category,
                frequency=item.frequency,
                next_due=item.next_due,
                reported=_reported(anc.sources or (anc.observation,), latest),
            )
        )
    for bad in labs.unevaluable:
        results.append(
            ResultPoint(
                observation=bad.observation,
                kind="unevaluable",
                collected=bad.collected,
                value_per_ul=None,
                category=None,
                frequency=None,
                next_due=None,
                reported=_reported(bad.sources or (bad.observation,), latest),
                note=bad.reason,
            )
        )
    valued = _valued_versions(inputs)
    for ref in sorted(labs.withdrawn):
        lab = valued.get(ref) or latest.get(ref)
        if lab is None or lab.role != "anc":
            continue
        if lab.collected is not None and lab.collected > clock:
            continue
        how = "entered in error" if ref in labs.entered_in_error else "cancelled"
        results.append(
            ResultPoint(
                observation=ref,
                kind="withdrawn",
                collected=lab.collected,
                value_per_ul=None,
                category=None,
                frequency=None,
                next_due=None,
                reported=(Reported(ref, lab.value, _unit(lab), latest[ref].status),),
                note=f"withdrawn by the laboratory ({how}); not used",
            )
        )
    results.sort(key=lambda r: (r.collected is None, r.collected or clock, r.observation))

    unsanctioned = {item.supply.ref for item in run.unsanctioned}
    supplies = tuple(
        SupplyBar(
            ref=s.ref,
            handed_over=s.handed_over,
            start=local_date(s.handed_over, tz),
            end=local_date(s.handed_over, tz) + timedelta(days=s.days_supply or 0),
            days_supply=s.days_supply,
            setting=s.setting,
            allowed=s.ref not in unsanctioned,
        )
        for s in sorted(inputs.supplies, key=lambda s: (s.handed_over, s.ref))
        if s.handed_over <= clock
    )

    spans: list[Span] = []
    excursion_start: date | None = None
    worst: str = ""
    interrupted_start: date | None = None
    courses: list[CourseStart] = []
    previous = TherapyState()
    for on, _, state in states:
        if state.course_start is not None and state.course_start != previous.course_start:
            courses.append(CourseStart(state.course_start, previous.course_start is not None))
        if state.excursion is not None:
            if excursion_start is None:
                excursion_start = on
            worst = state.excursion.worst
        elif excursion_start is not None:
            spans.append(Span("excursion", excursion_start, on, worst))
            excursion_start = None
        if state.interrupted_on is not None and interrupted_start is None:
            interrupted_start = state.interrupted_on
        elif state.interrupted_on is None and interrupted_start is not None:
            spans.append(Span("interruption", interrupted_start, on, "treatment interrupted"))
            interrupted_start = None
        previous = state
    if excursion_start is not None:
        spans.append(Span("excursion", excursion_start, None, worst))
    if interrupted_start is not None:
        spans.append(Span("interruption", interrupted_start, None, "treatment interrupted"))
    spans.sort(key=lambda s: (s.start, s.kind))

    steps: list[FrequencyStep] = []
    assessed = run.assessments
    for index, item in enumerate(assessed):
        start = local_date(item.anc.collected, tz)
        end = (
            local_date(assessed[index + 1].anc.collected, tz)
            if index + 1 < len(assessed)
            else max(today, start)
        )
        if steps and steps[-1].frequency == item.frequency:
            steps[-1] = FrequencyStep(steps[-1].start, end, item.frequency)
        else:
            steps.append(FrequencyStep(start, end, item.frequency))

    status = evaluation.status
    return PatientHistory(
        patient=inputs.patient,
        today=today,
        results=tuple(results),
        supplies=supplies,
        spans=tuple(spans),
        frequency=tuple(steps),
        courses=tuple(courses),
        next_due=status.next_due,
        current_until=status.next_due + timedelta(days=protocol.timing.grace_days),
        repeat_by=status.repeat_by,
        ben_baseline=timeline.ben_baseline if timeline.population == "ben" else None,
        state=run.state,
        assessments=tuple(run.assessments),
    )


__all__ = [
    "CourseStart",
    "FrequencyStep",
    "PatientHistory",
    "Reported",
    "ResultPoint",
    "Span",
    "SupplyBar",
    "patient_history",
]
