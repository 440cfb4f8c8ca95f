"""The monitoring protocol as typed values.

Every threshold and interval the core uses lives in ``mappings/protocol.toml``; the loader in
``adapter.mappings_loader`` validates that file and builds these objects. The core only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

Population = Literal["general", "ben"]
Category = Literal[
    "normal",
    "mild-neutropenia",
    "moderate-neutropenia",
    "ben-neutropenia",
    "severe-neutropenia",
]
Frequency = Literal[
    "daily",
    "three-times-weekly",
    "weekly",
    "every-2-weeks",
    "monthly",
    "every-6-months",
]
Setting = Literal["inpatient", "outpatient", "community", "discharge"]

# The values of each Literal, in its order, for checks and messages at run time.
CATEGORIES: tuple[Category, ...] = get_args(Category)
FREQUENCIES: tuple[Frequency, ...] = get_args(Frequency)
SETTINGS: tuple[Setting, ...] = get_args(Setting)


@dataclass(frozen=True)
class Band:
    """One row of a population's ANC table: ``min`` inclusive, up to the next band's ``min``."""

    category: Category
    min: int
    interrupts: bool
    hematology_consult: bool
    ends_in_rechallenge: bool
    #: None means "the normal-range schedule"; otherwise the excursion frequency.
    frequency: Frequency | None


@dataclass(frozen=True)
class PopulationRules:
    bands: tuple[Band, ...]  # highest ``min`` first; the last band has ``min`` 0
    initiation_min: int
    initiation_baselines: int
    confirm_below: int
    rechallenge_min: int
    resume_min: int
    psf_rationale_below: int
    weekly_after_recovery_weeks: int
    baseline_default: int | None  # BEN only

    def band_for(self, value_per_ul: Decimal) -> Band:
        """The band of an exact value (never rounded: 999.9 is below 1000)."""
        for band in self.bands:
            if value_per_ul >= band.min:
                return band
        return self.bands[-1]

    @property
    def normal_min(self) -> int:
        return self.bands[0].min


@dataclass(frozen=True)
class Interval:
    days: int = 0
    months: int = 0


@dataclass(frozen=True)
class ScheduleStep:
    from_month: int
    frequency: Frequency
    after: bool = False  # applies the day after the anniversary, not on it


@dataclass(frozen=True)
class Timing:
    grace_days: int
    confirm_within_hours: int
    baseline_window_days: int
    interruption_days: int
    interruption_inclusive: bool  # True: ">=" (30 days or more restarts); False: ">"


@dataclass(frozen=True)
class OverridePolicy:
    limit: int
    window_days: int
    limited_settings: frozenset[Setting]


@dataclass(frozen=True)
class Sanity:
    min_per_ul: int
    max_per_ul: int
    fraction_implies_thousands_below: int


@dataclass(frozen=True)
class Protocol:
    general: PopulationRules
    ben: PopulationRules
    intervals: dict[Frequency, Interval]
    normal_schedule: tuple[ScheduleStep, ...]  # ascending ``from_month``, first is month 0
    hospice_frequency: Frequency
    timing: Timing
    supply_limit_settings: frozenset[Setting]
    supply_limit_days: dict[Frequency, int]
    override: OverridePolicy
    psf_frequency: dict[Frequency, Frequency]
    sanity: Sanity

    def rules(self, population: Population) -> PopulationRules:
        return self.ben if population == "ben" else self.general


@dataclass(frozen=True)
class UnitTable:
    """Count units -> factor to cells/uL, and the accepted spellings of percent."""

    ucum_system: str
    ucum: dict[str, int]
    alias: dict[str, int]  # keys already folded (lower case, no spaces)
    percent_ucum: frozenset[str]
    percent_alias: frozenset[str]  # folded


@dataclass(frozen=True)
class LabCodes:
    system: str
    anc: frozenset[str]
    not_anc: frozenset[str]
    wbc: frozenset[str]
    neutrophil_pct: frozenset[str]
    segs_pct: frozenset[str]
    band_pct: frozenset[str]


def fold_unit(text: str) -> str:
    """Case- and space-insensitive form used to match free-text unit aliases."""
    return "".join(text.split()).lower()
