"""Connector to a REMS service over HTTP (the reference service or a compatible one)."""

from adapter.http.retry import Timeouts

from .client import Decision, Enrolled, PsfAccepted, RemsClient, RetryPolicy
from .errors import (
    RemsConfigurationError,
    RemsError,
    RemsRejection,
    RemsRequestInvalid,
    RemsResponseError,
    RemsTimeoutError,
    RemsTransientError,
)

__all__ = [
    "Decision",
    "Enrolled",
    "PsfAccepted",
    "RemsClient",
    "RemsConfigurationError",
    "RemsError",
    "RemsRejection",
    "RemsRequestInvalid",
    "RemsResponseError",
    "RemsTimeoutError",
    "RemsTransientError",
    "RetryPolicy",
    "Timeouts",
]
