"""The REMS connector's own error types: callers never see HTTP statuses or `requests` errors.

Messages name the request (method, path without query) and, when the service answered, its status
and reason codes; never a body value, since forms carry patient identity.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapter.errors import ConfigurationError, InternalError, UpstreamError


class RemsConfigurationError(ConfigurationError, ValueError):
    """A client setting is unusable (base URL, timeouts, retry bounds)."""


class RemsRequestInvalid(InternalError, ValueError):
    """What the adapter was about to send breaks the REMS contract (profiles/rems); nothing was
    sent. `problems` are schema paths and keywords, never values."""

    def __init__(self, schema: str, problems: Sequence[str]) -> None:
        self.schema = schema
        self.problems = tuple(problems)
        super().__init__(f"request breaks {schema}: {'; '.join(self.problems)}")


class RemsError(UpstreamError):
    """Base of every failure talking to the REMS service."""

    def __init__(self, message: str, *, method: str, path: str, status: int | None = None) -> None:
        self.method = method
        self.path = path
        self.status = status
        shown = f" -> HTTP {status}" if status is not None else ""
        super().__init__(f"{method} {path}{shown}: {message}")
        self.message = message


class RemsTransientError(RemsError):
    """Unreachable, timed out, or 429/502/503/504 after the bounded retries: try again later.
    `retry_after` is the service's last Retry-After in seconds, if it sent one."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        retry_after: float | None = None,
        method: str,
        path: str,
        status: int | None = None,
    ) -> None:
        self.attempts = attempts
        self.retry_after = retry_after
        super().__init__(message, method=method, path=path, status=status)


class RemsTimeoutError(RemsTransientError):
    """The connect or read timeout expired on every attempt."""


class RemsRejection(RemsError):
    """The service refused the request (4xx) with an error body: `rems_error` is its `error`
    field (e.g. psf-rejected, enrollment-rejected, conflict) and `reasons` every reason code.
    (`kind` is the adapter's error kind, `upstream`, as for every RemsError.)"""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        reasons: Sequence[str],
        method: str,
        path: str,
        status: int,
    ) -> None:
        self.rems_error = kind
        self.reasons = tuple(reasons)
        super().__init__(
            f"{message} ({kind}: {', '.join(self.reasons)})",
            method=method,
            path=path,
            status=status,
        )


class RemsResponseError(RemsError):
    """The service answered something unusable: not JSON, outside the contract, an unexpected
    status, or a 5xx that retrying does not fix (a defect in the service)."""
