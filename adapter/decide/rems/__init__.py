"""The `rems` decision backend (clinical-rules section 3): a REMS service decides."""

from adapter.decide.rems.backend import RemsBackend, RemsOutcome
from adapter.decide.rems.decider import RemsDecider
from adapter.decide.rems.settings import (
    DEFAULT_DESIGNEE_ID,
    DEFAULT_PHARMACY_ID_SYSTEM,
    DEFAULT_REMS_ID_SYSTEM,
    Directory,
    RemsSettings,
)

__all__ = [
    "DEFAULT_DESIGNEE_ID",
    "DEFAULT_PHARMACY_ID_SYSTEM",
    "DEFAULT_REMS_ID_SYSTEM",
    "Directory",
    "RemsBackend",
    "RemsDecider",
    "RemsOutcome",
    "RemsSettings",
]
