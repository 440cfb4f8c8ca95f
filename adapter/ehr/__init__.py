"""EHR connector: a FHIR R4 REST client (SMART Backend Services or bearer auth, retries, paging).

Only this package sees HTTP; callers get parsed JSON dicts and the errors of `adapter.ehr.errors`.
"""

from adapter.http.retry import Timeouts

from .auth import Authorizer, SmartBackendServices, StaticBearerToken, public_jwk
from .client import CreateResult, FhirClient, SearchResult
from .errors import (
    EhrConfigurationError,
    FhirAuthError,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
    FhirPagingError,
    FhirResponseError,
    FhirServerError,
    FhirTimeoutError,
    FhirTlsError,
    FhirTransientError,
    OutcomeIssue,
)
from .transport import RetryPolicy, Transport

__all__ = [
    "Authorizer",
    "CreateResult",
    "EhrConfigurationError",
    "FhirAuthError",
    "FhirClient",
    "FhirConflictError",
    "FhirError",
    "FhirNotFoundError",
    "FhirPagingError",
    "FhirResponseError",
    "FhirServerError",
    "FhirTimeoutError",
    "FhirTlsError",
    "FhirTransientError",
    "OutcomeIssue",
    "RetryPolicy",
    "SearchResult",
    "SmartBackendServices",
    "StaticBearerToken",
    "Timeouts",
    "Transport",
    "public_jwk",
]
