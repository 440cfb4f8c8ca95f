"""Frozen values the core takes in and gives out.

References are FHIR-style strings ("Observation/123"); times are timezone-aware datetimes. The
translators in ``adapter.fhir`` build the inputs from FHIR JSON; nothing here knows about JSON.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar, get_args

from adapter.core.protocol import Category, Frequency, Population, Setting

_Class = TypeVar("_Class", bound=type)


def compact_pickle(cls: _Class) -> _Class:
    """A dataclass pickled as its field values in order, rebuilt by its constructor: about half
    the cost of the default (a dict of names per object) for the tens of thousands of results
    batch mode's worker processes hand over. Every field must be an `__init__` argument."""
    names = [f.name for f in dataclasses.fields(cls)]
    assert all(f.init for f in dataclasses.fields(cls)), cls
    values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return (cls, values(self))

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 - a method added to the class
    return cls


_Frozen = TypeVar("_Frozen")

#: Many values of one dataclass as one list per field (see `pack_columns`).
Columns = tuple[type, tuple["list[Any] | _ByClass", ...]] | None


@dataclass(frozen=True)
class _ByClass:
    """A field whose values are dataclass values (or None), packed class by class."""

    which: list[int]  # per value: its class's place in `packs`, -1 for None
    packs: tuple[Columns, ...]


def pack_columns(items: Sequence[Any]) -> Columns:
    """Values of one dataclass (no ``__post_init__``, no slots) as one list per field, to pickle:
    about half the cost, both ways, of pickling each value (tens of thousands of results travel
    from batch mode's workers to the parent). A field holding dataclass values (a dispense's
    supply) is packed the same way, by class. None for no values."""
    if not items:
        return None
    cls = type(items[0])
    if any(type(item) is not cls for item in items):
        raise TypeError(f"pack_columns: values of several classes ({cls.__name__} and others)")
    return cls, tuple(_packed_field(list(map(getter, items))) for getter in _getters(cls))


def _packed_field(values: list[Any]) -> list[Any] | _ByClass:
    first = next((value for value in values if value is not None), None)
    if first is None or not dataclasses.is_dataclass(first):
        return values
    places: dict[type, int] = {}
    which = []
    for value in values:
        if value is None:
            which.append(-1)
            continue
        if not dataclasses.is_dataclass(value):
            return values  # a mixed field: as it is
        which.append(places.setdefault(type(value), len(places)))
    packs = tuple(
        pack_columns([value for value, at in zip(values, which, strict=True) if at == place])
        for place in range(len(places))
    )
    return _ByClass(which, packs)


def unpack_columns(packed: Columns) -> list[Any]:
    """The values `pack_columns` packed, equal and in order (built as `evolve` builds a copy:
    no constructor call per value)."""
    if packed is None:
        return []
    cls, columns = packed
    names = [f.name for f in dataclasses.fields(cls)]
    new = object.__new__
    values: list[Any] = []
    for row in zip(*map(_unpacked_field, columns), strict=True):
        value: Any = new(cls)
        # Filled in field order, as __init__ fills it: the instance dictionary then shares its
        # keys with the class's others (280 bytes a result, against 464 for a dict of its own).
        value.__dict__.update(zip(names, row, strict=True))
        values.append(value)
    return values


def _unpacked_field(column: list[Any] | _ByClass) -> list[Any]:
    if not isinstance(column, _ByClass):
        return column
    groups = [iter(unpack_columns(pack)) for pack in column.packs]
    return [None if at < 0 else next(groups[at]) for at in column.which]


def _getters(cls: type) -> list[Callable[[Any], Any]]:
    return [operator.attrgetter(f.name) for f in dataclasses.fields(cls)]


def evolve(value: _Frozen, **changes: Any) -> _Frozen:
    """A copy of a frozen dataclass (with no ``__post_init__`` and no slots) with some fields
    changed: what `dataclasses.replace` gives, at a fraction of its cost (it re-runs
    ``__init__`` through keyword arguments), for the therapy state the replay renews at
    every event. An unknown field name is an error, as with `replace`."""
    fields: Mapping[str, Any] = value.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = changes.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{type(value).__name__} has no field {sorted(unknown)[0]!r}")
    copy = object.__new__(type(value))
    copy.__dict__.update(value.__dict__)
    copy.__dict__.update(changes)
    return copy


LabRole = Literal["anc", "not-anc", "wbc", "neutrophil-pct", "segs-pct", "band-pct"]
Recommendation = Literal[
    "continue",
    "interrupt",
    "may-resume",
    "prescriber-decision-required",
    "may-initiate",
    "do-not-initiate",
]
Outcome = Literal["authorized", "authorized-override", "not-authorized", "pending"]
Reason = Literal[
    "anc-missing",
    "anc-not-current",
    "anc-below-threshold",
    "treatment-interrupted",
    "rechallenge-requires-prescriber",
    "supply-exceeds-limit",
    "patient-not-enrolled",
    "prescriber-not-certified",
    "pharmacy-not-certified",
    "psf-overdue",
    "override-limit-reached",
]
#: Interfaces.md lists the reasons in this order (the order of `Reason`); outputs list them in
#: this order too.
REASON_ORDER: tuple[Reason, ...] = get_args(Reason)

USABLE_STATUSES = frozenset({"final", "amended", "corrected"})
WITHDRAWING_STATUSES = frozenset({"entered-in-error", "cancelled"})
CORRECTION_STATUSES = frozenset({"amended", "corrected"})


# ---------------------------------------------------------------- inputs


@compact_pickle
@dataclass(frozen=True)
class LabObservation:
    """One laboratory Observation relevant to ANC (direct, or a component of a derived ANC)."""

    ref: str
    patient: str
    role: LabRole
    status: str
    collected: datetime | None
    value: Decimal | None
    unit_code: str | None
    unit_system: str | None
    unit_text: str | None
    version: str = ""
    specimen: str | None = None
    #: Business identifiers ("system|value"): two results sharing one are the same test.
    identifiers: tuple[str, ...] = ()
    #: Explicit links to earlier results this one replaces.
    replaces: tuple[str, ...] = ()
    issued: datetime | None = None
    #: Raw ``meta.lastUpdated`` string, only compared between versions of one result.
    last_updated: str = ""
    #: Position in the input, the last tie-breaker between versions.
    arrival: int = 0
    #: Why the translator could not read a value (e.g. a valueString); makes it unevaluable.
    problem: str | None = None
    #: The collection time exactly as the source wrote it (outputs echo it unchanged).
    collected_raw: str = ""


@compact_pickle
@dataclass(frozen=True)
class Supply:
    """A clozapine supply handed over (MedicationDispense ``completed``)."""

    ref: str
    patient: str
    handed_over: datetime
    days_supply: int | None
    setting: Setting
    performers: tuple[str, ...] = ()


@compact_pickle
@dataclass(frozen=True)
class PendingDispense:
    """A clozapine MedicationDispense awaiting a decision (``preparation`` / ``in-progress``)."""

    ref: str
    patient: str
    time: datetime | None  # whenHandedOver or whenPrepared; None: decided at the clock
    days_supply: int | None
    setting: Setting
    version: str = ""
    performers: tuple[str, ...] = ()
    prescription: str | None = None
    #: FHIR paths that could not be read, each taken at its strictest (no days supply, no
    #: performer or prescription, decided at the clock): the dispense is still decided, and
    #: its decision says which were not read.
    unreadable: tuple[str, ...] = ()
    #: The category could not be read: `setting` is the site's default, and the supply limit
    #: of the settings that have one applies as well (the strictest of both readings).
    setting_unknown: bool = False


@compact_pickle
@dataclass(frozen=True)
class WithdrawnDispense:
    """A clozapine MedicationDispense that will not be (or was never) what it said: its latest
    version is ``entered-in-error`` (`in_error`), or ``cancelled`` / ``declined`` / ``stopped``.
    It is no supply and awaits no decision; what was decided about it is withdrawn."""

    ref: str
    patient: str
    in_error: bool
    status: str


@dataclass(frozen=True)
class Mitigation:
    """An answer a person added to one of our DetectedIssues."""

    author: str
    action_codes: tuple[str, ...]
    date: datetime | None
    text: str


@dataclass(frozen=True)
class PriorIssue:
    """A DetectedIssue the adapter wrote earlier, read back with the answers people gave."""

    ref: str
    identifier: str
    patient: str
    finding: str
    status: str
    identified: datetime | None
    evidence: tuple[str, ...]
    implicated: tuple[str, ...]
    mitigations: tuple[Mitigation, ...]
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Designations:
    ben: bool = False
    hospice: bool = False


@dataclass(frozen=True)
class PatientInputs:
    """Everything the core needs about one patient, as of the clock."""

    patient: str
    labs: tuple[LabObservation, ...] = ()
    supplies: tuple[Supply, ...] = ()
    pending: tuple[PendingDispense, ...] = ()
    designations: Designations = Designations()
    prior_issues: tuple[PriorIssue, ...] = ()
    #: Requesters of the patient's clozapine prescriptions: who counts as "the prescriber".
    prescribers: frozenset[str] = frozenset()
    #: Whether something says the patient is on clozapine without a dispense (a prescription).
    prescribed: bool = False
    #: The patient's active clozapine MedicationRequests: what an ANC finding implicates.
    requests: tuple[str, ...] = ()
    #: Clozapine dispenses entered in error or cancelled since: their decisions are withdrawn.
    withdrawn_dispenses: tuple[WithdrawnDispense, ...] = ()


# ---------------------------------------------------------------- lab results


@dataclass(frozen=True)
class Anc:
    """A usable ANC, normalised to cells/uL."""

    observation: str  # the direct ANC, or the WBC result a derived value came from
    version: str
    patient: str
    collected: datetime
    value_per_ul: Decimal
    derived: bool = False
    sources: tuple[str, ...] = ()  # every Observation the value came from
    collected_raw: str = ""
    #: When it was reported (`issued`; of a derived value, its latest part's), if known.
    issued: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.observation}@{self.version}" if self.version else self.observation


@dataclass(frozen=True)
class Unevaluable:
    """An ANC-coded result (or a derivation) that cannot be interpreted: reported, never used."""

    observation: str
    version: str
    patient: str
    collected: datetime | None
    reason: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabOutcome:
    usable: tuple[Anc, ...]  # ordered by collection time
    unevaluable: tuple[Unevaluable, ...]
    #: Results withdrawn by the lab (entered-in-error / cancelled).
    withdrawn: frozenset[str]
    #: Of those, the ones entered in error (the others were cancelled).
    entered_in_error: frozenset[str] = frozenset()
    #: Current version key of every result still standing ("Observation/1@2").
    current_versions: dict[str, str] = field(default_factory=dict)
    #: Results replaced by a linked newer result.
    replaced: frozenset[str] = frozenset()


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class AncAssessment:
    """What one usable ANC means, given everything collected before it."""

    anc: Anc
    category: Category
    frequency: Frequency
    recommendation: Recommendation
    hematology_consult: bool
    next_due: date
    repeat_by: datetime | None  # the 24-hour confirmation deadline, for a first low result
    therapy_start: date | None
    population: Population
    #: An earlier result that makes this one's recommendation block a supply although its own
    #: band does not (the severe result a rechallenge waits on): a decision refused for it cites
    #: that result too, so it is withdrawn when that result is (clinical-rules section 1).
    blocked_by: Anc | None = None


@dataclass(frozen=True)
class PatientStatus:
    patient: str
    population: Population
    hospice: bool
    therapy_start: date | None
    latest: AncAssessment | None
    category: Category | None
    recommendation: Recommendation
    frequency: Frequency
    next_due: date
    overdue: bool
    repeat_by: datetime | None
    hematology_consult: bool
    ben_baseline: Decimal | None


@dataclass(frozen=True)
class Citation:
    """A person's answer that changed a decision."""

    issue: str
    author: str
    role: Literal["prescriber", "pharmacist"]
    date: datetime | None
    text: str


@dataclass(frozen=True)
class DispenseDecision:
    dispense: PendingDispense
    outcome: Outcome
    reasons: tuple[Reason, ...]  # why it is (or, for an override, was) not authorized
    frequency: Frequency
    evidence: tuple[Anc, ...]
    citation: Citation | None = None
    supply_limit: int | None = None
    first_supply: bool = False
    #: A completed dispense surfaced after the fact: it was handed over while the label did not
    #: allow it (clinical-rules 2.2); decided as of its hand-over.
    handed_over: bool = False
