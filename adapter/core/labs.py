"""From raw lab Observations to usable ANCs (clinical-rules section 1).

Decides which version of a result stands, which results are withdrawn or replaced, normalises
units to cells/uL, derives an ANC from WBC and differential where allowed, and marks everything it
cannot interpret as unevaluable instead of guessing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import MAX_PREC, Decimal, localcontext
from typing import Literal

from adapter.core.model import (
    CORRECTION_STATUSES,
    USABLE_STATUSES,
    WITHDRAWING_STATUSES,
    Anc,
    LabObservation,
    LabOutcome,
    Unevaluable,
)
from adapter.core.protocol import Sanity, UnitTable, fold_unit

_HUNDRED = Decimal(100)
NO_COLLECTION_TIME = (
    "no collection time (Observation.effective[x], the DiagnosticReport listing it, or its "
    "Specimen)"
)


def exact_product(*factors: Decimal | int) -> Decimal:
    """The exact product: Decimal arithmetic rounds to 28 digits by default, and no value is
    rounded before it is categorised (clinical-rules section 1)."""
    with localcontext(prec=MAX_PREC):
        result = Decimal(1)
        for factor in factors:
            result *= factor
        return result


def exact_sum(*terms: Decimal) -> Decimal:
    with localcontext(prec=MAX_PREC):
        return sum(terms, Decimal(0))


@dataclass(frozen=True)
class _Scaled:
    per_ul: Decimal | None
    problem: str | None


UnitKind = Literal["count", "percent"]


def unit_kind(lab: LabObservation, units: UnitTable) -> tuple[UnitKind, int] | None:
    """The kind of a result's unit (a count, with its factor to cells/uL, or a percentage), or
    None for a unit we do not know. The UCUM ``code`` decides first and the ``unit`` text only
    when the code is absent or unknown (clinical-rules section 1): a known code of the other
    kind is never overridden by the text."""
    code = (lab.unit_code or "").strip()
    if code:
        if lab.unit_system in (None, units.ucum_system):
            if code in units.ucum:
                return "count", units.ucum[code]
            if code in units.percent_ucum:
                return "percent", 1
        found = _alias_kind(fold_unit(code), units)
        if found is not None:
            return found
    text = (lab.unit_text or "").strip()
    if text:
        if text in units.ucum:
            return "count", units.ucum[text]
        if text in units.percent_ucum:
            return "percent", 1
        return _alias_kind(fold_unit(text), units)
    return None


def _alias_kind(folded: str, units: UnitTable) -> tuple[UnitKind, int] | None:
    if folded in units.alias:
        return "count", units.alias[folded]
    if folded in units.percent_alias:
        return "percent", 1
    return None


def count_factor(lab: LabObservation, units: UnitTable) -> int | None:
    """Factor to cells/uL, or None when the unit is not a count we know."""
    found = unit_kind(lab, units)
    return found[1] if found is not None and found[0] == "count" else None


def is_percent(lab: LabObservation, units: UnitTable) -> bool:
    found = unit_kind(lab, units)
    return found is not None and found[0] == "percent"


def _unit_label(lab: LabObservation) -> str:
    return lab.unit_code or lab.unit_text or "no unit"


def scale_count(lab: LabObservation, units: UnitTable, sanity: Sanity) -> _Scaled:
    """A count result in cells/uL, or why it cannot be read. Never rescales a doubtful value."""
    if lab.problem:
        return _Scaled(None, lab.problem)
    if lab.value is None:
        return _Scaled(None, "no numeric value")
    found = unit_kind(lab, units)
    if found is not None and found[0] == "percent":
        # A unit of the wrong kind for the code: unevaluable, never reinterpreted.
        return _Scaled(None, f"unit '{_unit_label(lab)}' is a percentage, not a count")
    if found is None:
        return _Scaled(None, f"unit '{_unit_label(lab)}' is not a known count unit")
    factor = found[1]
    if (
        factor == 1
        and lab.value != lab.value.to_integral_value()
        and lab.value < sanity.fraction_implies_thousands_below
    ):
        return _Scaled(
            None,
            f"{lab.value} {_unit_label(lab)} only makes sense in thousands per uL",
        )
    per_ul = exact_product(lab.value, factor)
    if not sanity.min_per_ul <= per_ul <= sanity.max_per_ul:
        return _Scaled(
            None,
            f"{lab.value} {_unit_label(lab)} is {per_ul} cells/uL, outside "
            f"{sanity.min_per_ul}..{sanity.max_per_ul}",
        )
    return _Scaled(per_ul, None)


#: Longest versionId read as a number (the largest 64-bit integer's digits): no server counts past
#: it, and a longer string of digits is an opaque version, never an integer conversion error.
_MAX_VERSION_DIGITS = len("9223372036854775807")


def numeric_version(version: str) -> int | None:
    """A versionId that counts (ASCII digits, at most 19 of them) as a number; None otherwise."""
    if version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS:
        return int(version)
    return None


def version_rank(version: str, last_updated: str, arrival: int) -> tuple[int, str, int]:
    """Order of versions of one resource: numeric versionId, then the raw meta.lastUpdated
    (one server's strings compare in time order), then position in the input."""
    number = numeric_version(version)
    return (-1 if number is None else number, last_updated, arrival)


def _version_rank(lab: LabObservation) -> tuple[int, str, int]:
    return version_rank(lab.version, lab.last_updated, lab.arrival)


def decisive_status(status: object) -> bool:
    """A status that settles what a result is: released (usable), or withdrawing it."""
    return status in USABLE_STATUSES or status in WITHDRAWING_STATUSES


def keeps_release(later_status: object, held_status: Callable[[], object]) -> bool:
    """Whether a held version stays in force over a later one with `later_status`
    (`current_versions`' rule, for stores that hold one version of each result): a version not
    yet released never displaces a released result or a withdrawal. `held_status` is asked
    only when the later version is not released (it may cost a read)."""
    return not decisive_status(later_status) and decisive_status(held_status())


def _decisive(lab: LabObservation) -> bool:
    return decisive_status(lab.status)


def current_versions(labs: Iterable[LabObservation]) -> dict[str, LabObservation]:
    """The latest version of every result id (versionId, then lastUpdated, then arrival).

    A later preliminary or registered version (a feed resending a result as not yet final)
    never displaces a final, amended or corrected one, nor a withdrawal: the result stands as
    last released until a released version or a withdrawal replaces it (the safer reading:
    a severe result must not vanish behind a preliminary resend)."""
    latest: dict[str, LabObservation] = {}
    for lab in labs:
        held = latest.get(lab.ref)
        if held is None:
            latest[lab.ref] = lab
            continue
        if _decisive(lab) != _decisive(held):
            if _decisive(lab):
                latest[lab.ref] = lab
            continue
        if _version_rank(lab) >= _version_rank(held):
            latest[lab.ref] = lab
    return latest


#: Before any issue time (results without one rank below those with one).
_NEVER_ISSUED = datetime.min.replace(tzinfo=UTC)


def _sort_key_rank(lab: LabObservation) -> tuple[bool, datetime, str, int]:
    # Compared as instants: two labs may write their offsets differently, and the later
    # instant is the later report whatever its offset (text would put 10:00+05:00 after 06:00Z).
    issued = lab.issued if lab.issued is not None else _NEVER_ISSUED
    return (lab.status in CORRECTION_STATUSES, issued, lab.last_updated, lab.arrival)


def replaced_results(standing: Sequence[LabObservation]) -> frozenset[str]:
    """Results superseded by a linked newer one (shared identifier, or an explicit link)."""
    replaced: set[str] = set()
    present = {lab.ref for lab in standing}
    by_identifier: dict[tuple[str, str], list[LabObservation]] = defaultdict(list)
    for lab in standing:
        replaced.update(ref for ref in lab.replaces if ref in present and ref != lab.ref)
        for identifier in lab.identifiers:
            by_identifier[(lab.role, identifier)].append(lab)
    for group in by_identifier.values():
        if len(group) > 1:
            winner = max(group, key=_sort_key_rank)
            replaced.update(lab.ref for lab in group if lab.ref != winner.ref)
    return frozenset(replaced)


def _collection_key(lab: LabObservation) -> tuple[str, datetime | None]:
    return (lab.patient, lab.collected)


def _same_specimen(labs: Iterable[LabObservation | None]) -> bool:
    specimens = {lab.specimen for lab in labs if lab is not None and lab.specimen}
    return len(specimens) <= 1


def _pick(labs: Sequence[LabObservation], role: str) -> LabObservation | None:
    chosen = [lab for lab in labs if lab.role == role]
    return max(chosen, key=lambda lab: (lab.arrival, lab.ref)) if chosen else None


def _derive(
    group: Sequence[LabObservation], units: UnitTable, sanity: Sanity
) -> Anc | Unevaluable | None:
    """ANC = WBC x (neutrophil% [+ band%]) / 100 for one collection without a direct ANC."""
    wbc = _pick(group, "wbc")
    neutrophils = _pick(group, "neutrophil-pct") or _pick(group, "segs-pct")
    if wbc is None or neutrophils is None:
        return None
    bands = _pick(group, "band-pct")
    parts = [lab for lab in (wbc, neutrophils, bands) if lab is not None]
    sources = tuple(lab.ref for lab in parts)
    if not _same_specimen(parts):
        return None
    collected = wbc.collected
    assert collected is not None  # grouped by collection time, never None here

    def unevaluable(reason: str) -> Unevaluable:
        return Unevaluable(
            observation=wbc.ref,
            version=wbc.version,
            patient=wbc.patient,
            collected=collected,
            reason=f"derived ANC: {reason}",
            sources=sources,
        )

    if any(lab.status not in USABLE_STATUSES for lab in parts):
        return None  # preliminary parts: nothing to decide on yet
    scaled = scale_count(wbc, units, sanity)
    if scaled.per_ul is None:
        return unevaluable(f"WBC {scaled.problem}")
    percent = Decimal(0)
    for lab in (neutrophils, bands):
        if lab is None:
            continue
        if lab.problem or lab.value is None:
            return unevaluable(f"differential {lab.problem or 'has no numeric value'}")
        if not is_percent(lab, units):
            # e.g. 770-8 (a percentage code) sent with a count unit: not a percentage.
            kind = "is a count, not" if count_factor(lab, units) else "is not"
            return unevaluable(f"differential unit '{_unit_label(lab)}' {kind} a percentage")
        if not Decimal(0) <= lab.value <= _HUNDRED:
            return unevaluable(f"differential {lab.value}% is outside 0..100")
        percent = exact_sum(percent, lab.value)
    if percent > _HUNDRED:
        return unevaluable(f"neutrophil and band percentages add up to {percent}%")
    # Exact, never rounded: a derived 999.9 is moderate. A whole number is written without a
    # fractional part, as before, so that the identifiers of findings on it do not change.
    with localcontext(prec=MAX_PREC):
        value = exact_product(scaled.per_ul, percent).scaleb(-2)
        if value == value.to_integral_value():
            value = value.quantize(Decimal(1))
    if not sanity.min_per_ul <= value <= sanity.max_per_ul:
        return unevaluable(f"{value} cells/uL is outside {sanity.min_per_ul}..{sanity.max_per_ul}")
    return Anc(
        observation=wbc.ref,
        version=wbc.version,
        patient=wbc.patient,
        collected=collected,
        value_per_ul=value,
        derived=True,
        sources=sources,
        collected_raw=wbc.collected_raw,
        issued=max((lab.issued for lab in parts if lab.issued is not None), default=None),
    )


def assess_labs(
    labs: Iterable[LabObservation],
    units: UnitTable,
    sanity: Sanity,
    clock: datetime,
    derive: bool = True,
) -> LabOutcome:
    """Usable ANCs ordered by collection time, plus what was unevaluable, withdrawn or replaced.

    Results collected after the clock are ignored. A result without a collection time cannot be
    placed in time, so it is unevaluable rather than dated by its report time.
    """
    latest = current_versions(labs)
    withdrawn = frozenset(ref for ref, lab in latest.items() if lab.status in WITHDRAWING_STATUSES)
    standing = [
        lab
        for lab in latest.values()
        if lab.ref not in withdrawn and (lab.collected is None or lab.collected <= clock)
    ]
    replaced = replaced_results(standing)
    standing = [lab for lab in standing if lab.ref not in replaced]

    usable: list[Anc] = []
    unevaluable: list[Unevaluable] = []
    direct_collections: set[tuple[str, datetime | None]] = set()
    direct_specimens: set[str] = set()
    for lab in standing:
        if lab.role != "anc":
            continue
        direct_collections.add(_collection_key(lab))
        if lab.specimen:
            direct_specimens.add(lab.specimen)
        if lab.status not in USABLE_STATUSES:
            continue  # preliminary / registered: not used for decisions
        scaled = (
            scale_count(lab, units, sanity)
            if lab.collected is not None
            # a result that could not be read says why (its time may be what is unreadable)
            else _Scaled(None, lab.problem or NO_COLLECTION_TIME)
        )
        if scaled.per_ul is None or lab.collected is None:
            unevaluable.append(
                Unevaluable(
                    observation=lab.ref,
                    version=lab.version,
                    patient=lab.patient,
                    collected=lab.collected,
                    reason=scaled.problem or "unreadable",
                    sources=(lab.ref,),
                )
            )
            continue
        usable.append(
            Anc(
                observation=lab.ref,
                version=lab.version,
                patient=lab.patient,
                collected=lab.collected,
                value_per_ul=scaled.per_ul,
                sources=(lab.ref,),
                collected_raw=lab.collected_raw,
                issued=lab.issued,
            )
        )

    if derive:
        groups: dict[tuple[str, datetime | None], list[LabObservation]] = defaultdict(list)
        for lab in standing:
            if lab.role in ("wbc", "neutrophil-pct", "segs-pct", "band-pct") and lab.collected:
                groups[_collection_key(lab)].append(lab)
        for key, group in groups.items():
            if key in direct_collections or any(
                lab.specimen in direct_specimens for lab in group if lab.specimen
            ):
                continue
            derived = _derive(group, units, sanity)
            if isinstance(derived, Anc):
                usable.append(derived)
            elif isinstance(derived, Unevaluable):
                unevaluable.append(derived)

    usable.sort(key=lambda anc: (anc.collected, anc.observation))
    unevaluable.sort(key=lambda item: (item.collected or clock, item.observation))
    return LabOutcome(
        usable=tuple(usable),
        unevaluable=tuple(unevaluable),
        withdrawn=withdrawn,
        entered_in_error=frozenset(
            ref for ref in withdrawn if latest[ref].status == "entered-in-error"
        ),
        current_versions={ref: lab.version for ref, lab in latest.items()},
        replaced=replaced,
    )
