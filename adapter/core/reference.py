"""Reference data the translators and the core read: code lists and the protocol, loaded from
``mappings/`` by ``adapter.mappings_loader``. Plain values only."""

from __future__ import annotations

from dataclasses import dataclass

from adapter.core.protocol import LabCodes, Protocol, Setting, UnitTable


@dataclass(frozen=True)
class MedicationCodes:
    codes: frozenset[tuple[str, str]]  # (system, code)
    words: tuple[str, ...]


@dataclass(frozen=True)
class DesignationCodes:
    ben: frozenset[tuple[str | None, str]]
    hospice: frozenset[tuple[str | None, str]]


@dataclass(frozen=True)
class DispenseCodes:
    default_setting: Setting
    category_systems: frozenset[str]
    category_codes: frozenset[str]
    completed: frozenset[str]
    awaiting_decision: frozenset[str]
    #: Statuses that withdraw what was decided about a dispense: as entered in error, or as
    #: cancelled (it will not be handed over).
    entered_in_error: frozenset[str]
    withdrawn: frozenset[str]
    #: The longest days' supply a dispense can mean; a longer one is reported, not read.
    max_days_supply: int


@dataclass(frozen=True)
class ReferenceData:
    """Everything loaded from ``mappings/`` and ``profiles/``, validated."""

    protocol: Protocol
    units: UnitTable
    lab_codes: LabCodes
    clozapine: MedicationCodes
    designations: DesignationCodes
    dispense: DispenseCodes
    finding_system: str
