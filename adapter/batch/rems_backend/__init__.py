"""The `rems` decision backend (clinical-rules section 3): a REMS service decides."""

from adapter.batch.rems_backend.backend import RemsBackend, RemsOutcome
from adapter.batch.rems_backend.settings import (
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
    "RemsOutcome",
    "RemsSettings",
]
