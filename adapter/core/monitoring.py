"""The label algorithm over time (clinical-rules sections 2.1 and 2.2).

ANC results and clozapine supplies are replayed in collection / hand-over order. The state carried
between them is what the label's "until" and "then" clauses need: the worst category of the current
excursion, the end of a weekly-for-4-weeks period, when treatment was interrupted, and when the
current course of therapy started (a restart counts as a new patient).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal

from adapter.core.calendar import add_interval, add_months, local_date
from adapter.core.model import Anc, AncAssessment, Recommendation, Supply, evolve
from adapter.core.protocol import (
    FREQUENCIES,
    Band,
    Category,
    Frequency,
    Population,
    PopulationRules,
    Protocol,
)


def more_frequent(a: Frequency, b: Frequency) -> Frequency:
    return a if FREQUENCIES.index(a) <= FREQUENCIES.index(b) else b


@dataclass(frozen=True)
class Excursion:
    """A stretch of results below normal, remembered until the label lets the patient go."""

    worst: Category
    interrupted: bool  # treatment was interrupted during it
    rechallenge: bool  # severe: a restart needs the prescriber and counts as a new patient
    #: The result that made a supply wait: the first whose band ends in a rechallenge, else the
    #: first that interrupted treatment (a decision it blocks cites it).
    cause: Anc | None = None


@dataclass(frozen=True)
class TherapyState:
    """Where a patient stands after the events replayed so far."""

    course_start: date | None = None
    supply_end: date | None = None  # first day no longer covered by the last supply
    interrupted_on: date | None = None  # explicit interrupt since the last supply
    excursion: Excursion | None = None
    weekly_until: date | None = None  # weekly monitoring until this date after a recovery
    last_value: Decimal | None = None
    last_supply: date | None = None  # the last supply the label allowed (a resumption)
    #: First day no longer covered by supplies handed over while the label said interrupt (or a
    #: rechallenge awaited the prescriber): days on clozapine for the 30-day rule, nothing else.
    unsanctioned_end: date | None = None
    #: An interruption long enough to restart as a new patient had passed when such a supply was
    #: handed over: the supply never stands in for that restart (clinical-rules 2.2), so the
    #: next supply the label allows is still the restart.
    restart_owed: bool = False


#: Recommendations under which the label allows no supply (clinical-rules 2.3 rule 2).
BLOCKING: frozenset[Recommendation] = frozenset({"interrupt", "prescriber-decision-required"})


@dataclass(frozen=True)
class Timeline:
    population: Population
    hospice: bool
    ben_baseline: Decimal | None
    assessments: tuple[AncAssessment, ...]
    state: TherapyState  # after every event up to the clock
    #: Supplies handed over while the label said interrupt (or a rechallenge awaited the
    #: prescriber), each with the timeline as it stood at its hand-over.
    unsanctioned: tuple[UnsanctionedSupply, ...] = ()


@dataclass(frozen=True)
class UnsanctionedSupply:
    """A supply handed over that the label did not allow: it never changes therapy state
    (clinical-rules 2.2) and is surfaced with the reasons that held at its hand-over."""

    supply: Supply
    assessments: tuple[AncAssessment, ...]  # up to the hand-over
    state: TherapyState  # just before it


#: Whether a prescriber's rationale answers a supply that the latest result blocks (section 4);
#: the replay asks, the dispense rules answer (they know who the prescriber is).
RationaleCheck = Callable[[Supply, AncAssessment], bool]


def effective_recommendation(
    assessment: AncAssessment, rules: PopulationRules, on_therapy: bool
) -> Recommendation:
    """The recommendation a result stands for now: a baseline judged before therapy started
    (``may-initiate`` / ``do-not-initiate``) means interrupt or continue once it has started."""
    recommendation = assessment.recommendation
    if on_therapy and recommendation in ("may-initiate", "do-not-initiate"):
        band = rules.band_for(assessment.anc.value_per_ul)
        return "interrupt" if band.interrupts else "continue"
    return recommendation


def _default_baseline(rules: PopulationRules) -> Decimal | None:
    return Decimal(rules.baseline_default) if rules.baseline_default is not None else None


def ben_baseline(
    ancs: Sequence[Anc], first_supply: datetime | None, rules: PopulationRules
) -> Decimal | None:
    """Median of the ANCs collected before therapy start; the protocol default if there are none."""
    before = [
        anc.value_per_ul for anc in ancs if first_supply is None or anc.collected < first_supply
    ]
    if before:
        return Decimal(statistics.median(before))
    return _default_baseline(rules)


class Schedule:
    """The normal-range interval and due dates for one patient."""

    def __init__(self, protocol: Protocol, hospice: bool) -> None:
        self.protocol = protocol
        self.hospice = hospice

    def normal_frequency(self, course_start: date | None, on: date) -> Frequency:
        if self.hospice:
            return self.protocol.hospice_frequency
        frequency = first_step(self.protocol)
        if course_start is None or on < course_start:
            return frequency
        for step in self.protocol.normal_schedule:
            anniversary = add_months(course_start, step.from_month)
            if on > anniversary or (on == anniversary and not step.after):
                frequency = step.frequency
        return frequency

    def due(self, collected_on: date, frequency: Frequency) -> date:
        return add_interval(collected_on, self.protocol.intervals[frequency])

    def current_until(self, due: date) -> date:
        return due + timedelta(days=self.protocol.timing.grace_days)


def gap_restarts(
    protocol: Protocol, state: TherapyState, on: date, rechallenge: bool = True
) -> bool:
    """Whether a supply on ``on`` restarts as a new patient: after an interruption long enough,
    or (``rechallenge``) as the rechallenge that follows severe neutropenia."""
    if state.course_start is None:
        return False
    if rechallenge and state.excursion is not None and state.excursion.rechallenge:
        return True
    if state.restart_owed:
        return True
    starts = [day for day in (state.supply_end, state.interrupted_on) if day is not None]
    if not starts:
        return False
    off_since = min(starts)
    if state.unsanctioned_end is not None:
        # Supplies handed over during the interruption count as days on clozapine.
        off_since = max(off_since, state.unsanctioned_end)
    days_without = (on - off_since).days
    timing = protocol.timing
    if timing.interruption_inclusive:
        return days_without >= timing.interruption_days
    return days_without > timing.interruption_days


class _Replay:
    def __init__(
        self,
        protocol: Protocol,
        population: Population,
        hospice: bool,
        baseline: Decimal | None,
        site_tz: tzinfo,
        rationale: RationaleCheck | None = None,
    ) -> None:
        self.protocol = protocol
        self.rationale = rationale
        self.unsanctioned: list[UnsanctionedSupply] = []
        self.rules = protocol.rules(population)
        self.population = population
        self.final_baseline = baseline
        self.baseline = baseline
        self.pre_therapy: list[Decimal] = []
        self.schedule = Schedule(protocol, hospice)
        self.site_tz = site_tz
        self.state = TherapyState()
        self.assessments: list[AncAssessment] = []
        self.previous_category: Category | None = None

    # -- supplies

    def supply(self, item: Supply) -> None:
        """A supply handed over. Only a supply the label allows (or a prescriber's rationale
        answers) is a clinical event: it starts or resumes treatment, and after severe
        neutropenia it is the rechallenge. Any other supply counts as days on clozapine for the
        30-day rule and is remembered to be surfaced, nothing more (clinical-rules 2.2)."""
        state = self.state
        on = local_date(item.handed_over, self.site_tz)
        end = on + timedelta(days=item.days_supply or 0)
        latest = self.assessments[-1] if self.assessments else None
        # Events at one instant: results first, so a refill at the instant of a low result is
        # judged by that result.
        recommendation = (
            effective_recommendation(latest, self.rules, on_therapy=True) if latest else None
        )
        blocked = recommendation in BLOCKING
        answered = (
            blocked
            and latest is not None
            and self.rationale is not None
            and self.rationale(item, latest)
        )
        if blocked and not answered:
            # Surfaced with the reasons that held at its hand-over, whether or not therapy had
            # started: a first supply after a baseline that says interrupt (severe or moderate
            # neutropenia, no prescriber's decision) is one the label forbids as well.
            self.unsanctioned.append(UnsanctionedSupply(item, tuple(self.assessments), state))
            if state.course_start is not None:
                held = state.unsanctioned_end
                owed = gap_restarts(self.protocol, state, on, rechallenge=False)
                self.state = evolve(
                    state, unsanctioned_end=max(end, held) if held else end, restart_owed=owed
                )
                return
            # A first supply against a baseline that says interrupt: therapy starts with it
            # (clinical-rules 2.2), but it ends no excursion and resumes nothing.
            self.state = evolve(state, course_start=on, supply_end=end)
            return
        excursion = state.excursion
        # After severe neutropenia a supply is the rechallenge (a new patient) only once the ANC
        # reached the rechallenge level and the prescriber decided; a rationale below that
        # level resumes supply but leaves the rechallenge to come.
        rechallenge = (
            excursion is not None
            and excursion.rechallenge
            and (state.course_start is None or recommendation == "prescriber-decision-required")
        )
        if (
            state.course_start is None
            or rechallenge
            or gap_restarts(self.protocol, state, on, rechallenge=False)
        ):
            if rechallenge:
                excursion = None  # the rechallenge happened: a new patient from here
            if state.course_start is not None:
                self._restart_schedule(on)
            state = evolve(state, course_start=on, weekly_until=None)
        if excursion is not None and excursion.interrupted:
            # Treatment resumed; a rechallenge still to come keeps the result it waits on.
            cause = excursion.cause if excursion.rechallenge else None
            excursion = evolve(excursion, interrupted=False, cause=cause)
        covered = [day for day in (state.supply_end, state.unsanctioned_end) if day is not None]
        self.state = evolve(
            state,
            excursion=excursion,
            supply_end=max([end, *covered]),
            interrupted_on=None,
            last_supply=on,
            unsanctioned_end=None,
            restart_owed=False,
        )

    def _restart_schedule(self, on: date) -> None:
        """A restart as a new patient puts the normal-range schedule back at its first step
        (weekly from the restart, clinical-rules 2.2): the latest result, assessed under the
        old course, is due as a new patient's would be (its excursion's interval stands when
        that is more frequent)."""
        if not self.assessments:
            return
        last = self.assessments[-1]
        frequency = more_frequent(last.frequency, self.schedule.normal_frequency(on, on))
        if frequency != last.frequency:
            collected_on = local_date(last.anc.collected, self.site_tz)
            self.assessments[-1] = evolve(
                last, frequency=frequency, next_due=self.schedule.due(collected_on, frequency)
            )

    # -- results

    def _recovered(self, value: Decimal) -> bool:
        """At or above the level that ends an excursion (BEN: >= 1000 or >= own baseline)."""
        if value >= self.rules.normal_min:
            return True
        return (
            self.population == "ben"
            and self.baseline is not None
            and value >= self.baseline
            and value >= self.rules.resume_min
        )

    def anc(self, anc: Anc) -> None:
        state = self.state
        rules = self.rules
        value = anc.value_per_ul
        if self.population == "ben" and state.course_start is None:
            # Before therapy the baseline is still forming: a result is judged against the
            # results before it, never against itself.
            self.baseline = (
                Decimal(statistics.median(self.pre_therapy))
                if self.pre_therapy
                else _default_baseline(rules)
            )
            self.pre_therapy.append(value)
        elif self.population == "ben":
            self.baseline = self.final_baseline
        on = local_date(anc.collected, self.site_tz)
        band = rules.band_for(value)
        excursion = state.excursion
        weekly_until = state.weekly_until
        if weekly_until is not None and on >= weekly_until:
            weekly_until = None
        normal = self.schedule.normal_frequency(state.course_start, on)
        recommendation: Recommendation
        if self._recovered(value):
            frequency, recommendation, excursion, weekly_until = self._at_recovery(
                excursion, value, on, normal, weekly_until
            )
        elif band.interrupts:
            excursion = self._deepen(excursion, band, anc, interrupted=True)
            frequency = band.frequency or normal
            recommendation = "interrupt"
        else:
            excursion = self._deepen(excursion, band, anc, interrupted=False)
            frequency, recommendation = self._below_normal(excursion, band, value, normal)

        if recommendation == "interrupt" and state.interrupted_on is None and state.course_start:
            interrupted_on: date | None = on
        else:
            interrupted_on = state.interrupted_on
        if state.course_start is None:
            recommendation = self._initiation(value)
        # A block this result does not carry by its own band comes from the excursion's cause.
        blocked_by = (
            excursion.cause
            if excursion is not None
            and recommendation in BLOCKING
            and not band.interrupts
            and excursion.cause != anc
            else None
        )

        repeat_by = None
        if (
            state.last_value is not None
            and state.last_value >= rules.confirm_below
            and value < rules.confirm_below
        ):
            repeat_by = anc.collected + timedelta(hours=self.protocol.timing.confirm_within_hours)
        consult = band.hematology_consult
        self.assessments.append(
            AncAssessment(
                anc=anc,
                category=band.category,
                frequency=frequency,
                recommendation=recommendation,
                hematology_consult=consult,
                next_due=self.schedule.due(on, frequency),
                repeat_by=repeat_by,
                therapy_start=state.course_start,
                population=self.population,
                blocked_by=blocked_by,
            )
        )
        self.state = evolve(
            state,
            excursion=excursion,
            weekly_until=weekly_until,
            interrupted_on=interrupted_on,
            last_value=value,
        )

    def _deepen(
        self, excursion: Excursion | None, band: Band, anc: Anc, interrupted: bool
    ) -> Excursion:
        order = [b.category for b in self.rules.bands]
        if excursion is None:
            cause = anc if band.ends_in_rechallenge or interrupted else None
            return Excursion(band.category, interrupted, band.ends_in_rechallenge, cause)
        worst = max(excursion.worst, band.category, key=order.index)
        cause = excursion.cause
        if band.ends_in_rechallenge and not excursion.rechallenge:
            cause = anc  # from here a restart waits on this result
        elif cause is None and interrupted:
            cause = anc
        return Excursion(
            worst,
            excursion.interrupted or interrupted,
            excursion.rechallenge or band.ends_in_rechallenge,
            cause,
        )

    def _below_normal(
        self, excursion: Excursion, band: Band, value: Decimal, normal: Frequency
    ) -> tuple[Frequency, Recommendation]:
        """A result below normal that does not itself interrupt (mild, BEN, or recovering)."""
        frequency = band.frequency or normal
        if excursion.rechallenge:
            # After severe: no restart before the rechallenge level, whatever the band says.
            return frequency, "interrupt"
        if excursion.interrupted and value >= self.rules.resume_min:
            return frequency, "may-resume"
        return frequency, "continue"

    def _at_recovery(
        self,
        excursion: Excursion | None,
        value: Decimal,
        on: date,
        normal: Frequency,
        weekly_until: date | None,
    ) -> tuple[Frequency, Recommendation, Excursion | None, date | None]:
        first = first_step(self.protocol)
        if excursion is None:
            frequency = more_frequent(first, normal) if weekly_until else normal
            return frequency, "continue", None, weekly_until
        if excursion.rechallenge:
            # Severe: rechallenge possible now, only as a new patient and only if the prescriber
            # decides; monitoring is the new-patient schedule meanwhile.
            # BEN: three times weekly continues until the patient's own baseline is reached.
            below_baseline = self.baseline is not None and value < self.baseline
            ben_recovering = self.population == "ben" and below_baseline
            frequency = self._below_normal_frequency() if ben_recovering else first
            return frequency, "prescriber-decision-required", excursion, weekly_until
        order = [b.category for b in self.rules.bands]
        mild_only = order.index(excursion.worst) <= 1 and not excursion.interrupted
        if mild_only and self.population == "general":
            # Mild: straight back to the last normal-range interval.
            frequency = more_frequent(first, normal) if weekly_until else normal
            return frequency, "continue", None, weekly_until
        weeks = self.rules.weekly_after_recovery_weeks
        until = on + timedelta(weeks=weeks)
        recommendation: Recommendation = "may-resume" if excursion.interrupted else "continue"
        return more_frequent(first, normal), recommendation, None, until

    def _below_normal_frequency(self) -> Frequency:
        """The frequency of the first band below normal (three times weekly in both tables)."""
        return self.rules.bands[1].frequency or first_step(self.protocol)

    def _initiation(self, value: Decimal) -> Recommendation:
        """Before therapy: the latest baselines (two for BEN) must all reach the level."""
        needed = self.rules.initiation_baselines
        values = (
            [a.anc.value_per_ul for a in self.assessments[-(needed - 1) :]] if needed > 1 else []
        )
        values.append(value)
        if len(values) >= needed and all(v >= self.rules.initiation_min for v in values):
            return "may-initiate"
        return "do-not-initiate"


def replay(
    ancs: Sequence[Anc],
    supplies: Sequence[Supply],
    protocol: Protocol,
    population: Population,
    hospice: bool,
    site_tz: tzinfo,
    until: datetime,
    rationale: RationaleCheck | None = None,
) -> Timeline:
    """Replay results and supplies up to ``until`` (collection / hand-over order).

    ``rationale`` tells whether a prescriber's rationale answers a supply the latest result
    blocks; without it no blocked supply is answered."""
    supplies = sorted(
        (item for item in supplies if item.handed_over <= until),
        key=lambda item: (item.handed_over, item.ref),
    )
    ancs = [anc for anc in ancs if anc.collected <= until]
    first = supplies[0].handed_over if supplies else None
    baseline = ben_baseline(ancs, first, protocol.ben) if population == "ben" else None
    run = _Replay(protocol, population, hospice, baseline, site_tz, rationale)
    # A result and a supply at the same instant: the result first (it is the baseline).
    events: list[tuple[datetime, int, Anc | Supply]] = [(a.collected, 0, a) for a in ancs]
    events += [(s.handed_over, 1, s) for s in supplies]
    for _, _, event in sorted(events, key=lambda item: (item[0], item[1])):
        if isinstance(event, Supply):
            run.supply(event)
        else:
            run.anc(event)
    return Timeline(
        population,
        hospice,
        baseline,
        tuple(run.assessments),
        run.state,
        tuple(run.unsanctioned),
    )


def first_step(protocol: Protocol) -> Frequency:
    return protocol.normal_schedule[0].frequency


__all__ = [
    "BLOCKING",
    "Excursion",
    "RationaleCheck",
    "Schedule",
    "TherapyState",
    "Timeline",
    "UnsanctionedSupply",
    "add_months",
    "ben_baseline",
    "effective_recommendation",
    "first_step",
    "gap_restarts",
    "more_frequent",
    "replay",
]
