"""Settings of the `rems` backend (README configuration table)."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapter.decide.base import Directory
from adapter.rems import (
    RetryPolicy,
    Timeouts,
)

DEFAULT_REMS_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/rems-patient-id"
DEFAULT_PHARMACY_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/rems-pharmacy-id"
DEFAULT_DESIGNEE_ID = "rems-adapter"


@dataclass(frozen=True)
class RemsSettings:
    """`--rems URL` and the identifiers the forms need (README configuration table)."""

    url: str
    rems_id_system: str = DEFAULT_REMS_ID_SYSTEM
    pharmacy_id_system: str = DEFAULT_PHARMACY_ID_SYSTEM
    designee_id: str = DEFAULT_DESIGNEE_ID
    #: Used when a dispense names no pharmacy Organization with an identifier in that system.
    pharmacy_id: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Bearer token sent to the REMS service (REMS_ADAPTER_REMS_TOKEN); never shown.
    token: str | None = field(default=None, repr=False)


__all__ = [
    "DEFAULT_DESIGNEE_ID",
    "DEFAULT_PHARMACY_ID_SYSTEM",
    "DEFAULT_REMS_ID_SYSTEM",
    "Directory",
    "RemsSettings",
]
