"""The label algorithm over time (clinical-rules sections 2.1 and 2.2).

ANC results and clozapine supplies are replayed in collection / hand-over order. The state carried
between them is what the label's "until" and "then" clauses need: the worst category of the current
excursion, the end of a weekly-for-4-weeks period, when treatment was interrupted, and when the
current course of therapy started (a restart counts as a new patient).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal

from adapter.core.calendar import add_interval, add_months, local_date
from adapter.core.model import Anc, AncAssessment, Recommendation, Supply
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


@dataclass(frozen=True)
class TherapyState:
    """Where a patient stands after the events replayed so far."""

    course_start: date | None = None
    supply_end: date | None = None  # first day no longer covered by the last supply
    interrupted_on: date | None = None  # explicit interrupt since the last supply
    excursion: Excursion | None = None
    weekly_until: date | None = None  # weekly monitoring until this date after a recovery
    last_value: Decimal | None = None
    last_supply: date | None = None


@dataclass(frozen=True)
class Timeline:
    population: Population
    hospice: bool
    ben_baseline: Decimal | None
    assessments: tuple[AncAssessment, ...]
    state: TherapyState  # after every event up to the clock


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
    starts = [day for day in (state.supply_end, state.interrupted_on) if day is not None]
    if not starts:
        return False
    days_without = (on - min(starts)).days
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
    ) -> None:
        self.protocol = protocol
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
        state = self.state
        on = local_date(item.handed_over, self.site_tz)
        excursion = state.excursion
        if state.course_start is None or gap_restarts(self.protocol, state, on):
            if excursion is not None and excursion.rechallenge:
                excursion = None  # the rechallenge happened: a new patient from here
            state = replace(state, course_start=on, weekly_until=None)
        if excursion is not None and excursion.interrupted:
            excursion = replace(excursion, interrupted=False)  # treatment resumed
        end = on + timedelta(days=item.days_supply or 0)
        self.state = replace(
            state,
            excursion=excursion,
            supply_end=max(end, state.supply_end) if state.supply_end else end,
            interrupted_on=None,
            last_supply=on,
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
            excursion = self._deepen(excursion, band, interrupted=True)
            frequency = band.frequency or normal
            recommendation = "interrupt"
        else:
            excursion = self._deepen(excursion, band, interrupted=False)
            frequency, recommendation = self._below_normal(excursion, band, value, normal)

        if recommendation == "interrupt" and state.interrupted_on is None and state.course_start:
            interrupted_on: date | None = on
        else:
            interrupted_on = state.interrupted_on
        if state.course_start is None:
            recommendation = self._initiation(value)

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
            )
        )
        self.state = replace(
            state,
            excursion=excursion,
            weekly_until=weekly_until,
            interrupted_on=interrupted_on,
            last_value=value,
        )

    def _deepen(self, excursion: Excursion | None, band: Band, interrupted: bool) -> Excursion:
        order = [b.category for b in self.rules.bands]
        if excursion is None:
            return Excursion(band.category, interrupted, band.ends_in_rechallenge)
        worst = max(excursion.worst, band.category, key=order.index)
        return Excursion(
            worst,
            excursion.interrupted or interrupted,
            excursion.rechallenge or band.ends_in_rechallenge,
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
) -> Timeline:
    """Replay results and supplies up to ``until`` (collection / hand-over order)."""
    supplies = sorted(
        (item for item in supplies if item.handed_over <= until),
        key=lambda item: (item.handed_over, item.ref),
    )
    ancs = [anc for anc in ancs if anc.collected <= until]
    first = supplies[0].handed_over if supplies else None
    baseline = ben_baseline(ancs, first, protocol.ben) if population == "ben" else None
    run = _Replay(protocol, population, hospice, baseline, site_tz)
    # A result and a supply at the same instant: the result first (it is the baseline).
    events: list[tuple[datetime, int, Anc | Supply]] = [(a.collected, 0, a) for a in ancs]
    events += [(s.handed_over, 1, s) for s in supplies]
    for _, _, event in sorted(events, key=lambda item: (item[0], item[1])):
        if isinstance(event, Supply):
            run.supply(event)
        else:
            run.anc(event)
    return Timeline(population, hospice, baseline, tuple(run.assessments), run.state)


def first_step(protocol: Protocol) -> Frequency:
    return protocol.normal_schedule[0].frequency


__all__ = [
    "Excursion",
    "Schedule",
    "TherapyState",
    "Timeline",
    "add_months",
    "ben_baseline",
    "first_step",
    "gap_restarts",
    "more_frequent",
    "replay",
]
