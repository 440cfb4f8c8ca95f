"""The EHR client's own error types: callers never see HTTP status handling or `requests` errors.

Every error names the request (method and URL *without* its query string: search values can be
PHI) and, when the server answered, its status and OperationOutcome issues. `str(error)` keeps
to what is safe to log: method, URL path, status, issue severity/code/expression. The servers'
free-text `diagnostics` (some servers echo submitted content there) stays on `error.issues` for
code that shows it deliberately.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapter.errors import ConfigurationError, UpstreamError


@dataclass(frozen=True)
class OutcomeIssue:
    """One OperationOutcome.issue, as the server sent it."""

    severity: str
    code: str
    diagnostics: str | None = None
    expression: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f" at {', '.join(self.expression)}" if self.expression else ""
        return f"{self.severity}/{self.code}{where}"


def issues_from_outcome(body: object) -> tuple[OutcomeIssue, ...]:
    """Issues of an OperationOutcome body; () for anything else (HTML error pages, OAuth errors)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ()
    out = []
    for raw in body.get("issue") or ():
        if not isinstance(raw, Mapping):
            continue
        expression = raw.get("expression") or raw.get("location") or ()
        out.append(
            OutcomeIssue(
                severity=str(raw.get("severity", "")),
                code=str(raw.get("code", "")),
                diagnostics=raw.get("diagnostics")
                if isinstance(raw.get("diagnostics"), str)
                else None,
                expression=tuple(str(e) for e in expression)
                if isinstance(expression, Sequence) and not isinstance(expression, str)
                else (),
            )
        )
    return tuple(out)


def redact_url(url: str) -> str:
    """The URL without query string, fragment or credentials: safe to log and to carry in errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class EhrConfigurationError(ConfigurationError, ValueError):
    """A client setting is unusable (bad key for the algorithm, bad base URL...)."""


class FhirError(UpstreamError):
    """Base of every failure talking to the EHR FHIR server."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        issues: Sequence[OutcomeIssue] = (),
    ) -> None:
        self.method = method
        self.url = redact_url(url)
        self.status = status
        self.issues: tuple[OutcomeIssue, ...] = tuple(issues)
        self.message = message
        super().__init__(self._render())
        self.message = message  # the base keeps the rendered line in str(); this stays bare

    def _render(self) -> str:
        status = f" -> HTTP {self.status}" if self.status is not None else ""
        issues = f" [{'; '.join(i.describe() for i in self.issues)}]" if self.issues else ""
        return f"{self.method} {self.url}{status}: {self.message}{issues}"


class FhirServerError(FhirError):
    """The server answered with an error status that retrying will not fix."""


class FhirNotFoundError(FhirServerError):
    """404 / 410: the resource (or version) does not exist or was deleted."""


class FhirConflictError(FhirServerError):
    """409 / 412: a version conflict (If-Match) or a duplicate / multiple-match on a condition."""


class FhirAuthError(FhirError):
    """Authentication or authorisation failed (401 after one token refresh, 403, token endpoint
    refusal). `oauth_error` is the token endpoint's `error` code when there was one."""

    def __init__(self, message: str, *, oauth_error: str | None = None, **kwargs: Any) -> None:
        self.oauth_error = oauth_error
        super().__init__(message, **kwargs)


class FhirTransientError(FhirError):
    """Still failing after the bounded retries (429, 502, 503, 504, connection errors): the caller
    may try again later. `retry_after` is the server's last Retry-After in seconds, if any."""

    def __init__(
        self, message: str, *, attempts: int, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        self.attempts = attempts
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class FhirTimeoutError(FhirTransientError):
    """The connect or read timeout expired on every attempt."""


class FhirTlsError(FhirError):
    """TLS failed (certificate not trusted, hostname mismatch, handshake): a configuration
    problem, so it is not retried."""


class FhirResponseError(FhirError):
    """The server answered 2xx with something unusable: not JSON, not the expected resource."""


class FhirPagingError(FhirResponseError):
    """A search could not be paged through: a broken, foreign or unreachable `next` link, a
    loop, or more pages than the configured bound. `page` is the 1-based page that failed."""

    def __init__(self, message: str, *, page: int, **kwargs: Any) -> None:
        self.page = page
        super().__init__(message, **kwargs)
