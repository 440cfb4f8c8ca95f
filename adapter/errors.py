"""The one error tree of the adapter, and the one place that maps it to the outside world.

Every failure a user or a client can meet is an `AdapterError` with a `Kind`. The kind alone
decides the process exit code (CLI), the HTTP status (services) and the FHIR OperationOutcome
issue (severity and `issue.code` from the FHIR issue-type value set). Nothing else in the code
base chooses an exit code or an error status for these failures::

    AdapterError                     kind                exit  HTTP  issue.code
    ├── UsageError                   usage                  2   400  invalid
    ├── ConfigurationError           configuration          3   500  exception
    ├── UnreadableInputError         unreadable-input       4   400  structure
    ├── UpstreamError                upstream               5   502  transient
    ├── StateError                   state                  5   503  transient
    ├── NotFoundError                not-found              4   404  not-found
    ├── ConflictError                conflict               5   409  conflict
    ├── PayloadTooLargeError         payload-too-large      4   413  too-costly
    ├── UnauthorizedError            unauthorized           3   401  login
    ├── ForbiddenError               forbidden              3   403  forbidden
    ├── MethodNotAllowedError        method-not-allowed     2   405  not-supported
    ├── RateLimitedError             rate-limited           5   429  throttled
    ├── UnprocessableError           unprocessable          4   422  processing
    └── InternalError                internal               1   500  exception

Exit codes mean the same in every command: 0 done (clinical findings never change it), 1 an
unexpected internal error (a defect: please report it), 2 usage, 3 configuration (settings,
mappings, credentials, a state store that belongs to another EHR), 4 unreadable input, 5 an
upstream system (EHR, REMS) or the state store failed.

Members of the tree elsewhere (they derive from the classes above, so `except AdapterError`
catches them and `.kind` tells what they are):

- `adapter.ehr.errors`: `FhirError` (upstream; `FhirNotFoundError` etc. keep the upstream kind:
  a 404 from the EHR is the EHR failing us, not a 404 of ours), `EhrConfigurationError`
  (configuration);
- `adapter.rems.errors`: `RemsError` (upstream), `RemsConfigurationError` (configuration),
  `RemsRequestInvalid` (internal: the adapter built a request the contract forbids);
- `adapter.mappings_loader.MappingError`, `adapter.watch.config.ConfigError`,
  `adapter.settings` validation (configuration);
- `adapter.batch.sources.UnreadableInput` (unreadable input);
- `adapter.watch.state.StateError` (state: a corrupt or unreadable state file, exit 5) and
  `adapter.watch.state.ForeignStateError` (configuration: a state file of another EHR, exit 3);
  likewise `adapter.store.StateError` and `adapter.store.ForeignStateError` for the state store
  of serve (SQLite or PostgreSQL); serve answers every HTTP error with `operation_outcome`.

An error carries `where` (what is at fault: a flag, a file, "file:line", a setting key, a
message control id) and `expression` (the FHIR paths at fault, FHIRPath-like, e.g.
``Observation.valueQuantity.value``). `str(error)` is one line, safe to log: messages must never
quote PHI (names, birth dates, identifiers, values tied to a person).

This module is pure (no I/O) and imports nothing from the adapter, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final


class Kind(StrEnum):
    """What went wrong, as far as the outside world needs to know."""

    USAGE = "usage"
    CONFIGURATION = "configuration"
    UNREADABLE_INPUT = "unreadable-input"
    UPSTREAM = "upstream"
    STATE = "state"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    RATE_LIMITED = "rate-limited"
    UNPROCESSABLE = "unprocessable"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Outward:
    """How one kind shows outside: exit code, HTTP status, OperationOutcome issue."""

    exit_code: int
    http_status: int
    issue_code: str  # http://hl7.org/fhir/issue-type
    severity: str = "error"  # http://hl7.org/fhir/issue-severity
    label: str = ""  # the words a CLI puts before the message ("configuration error")


EXIT_OK: Final = 0
EXIT_INTERNAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_UNREADABLE: Final = 4
EXIT_UPSTREAM: Final = 5
#: What a shell reports for a process its pipe's reader stopped (128 + SIGPIPE).
EXIT_BROKEN_PIPE: Final = 141

#: The one table. Change a status or exit code here and nowhere else.
MAPPING: Final[dict[Kind, Outward]] = {
    Kind.USAGE: Outward(EXIT_USAGE, 400, "invalid", label="error"),
    Kind.CONFIGURATION: Outward(EXIT_CONFIG, 500, "exception", label="configuration error"),
    Kind.UNREADABLE_INPUT: Outward(EXIT_UNREADABLE, 400, "structure", label="cannot read input"),
    Kind.UPSTREAM: Outward(EXIT_UPSTREAM, 502, "transient", label="upstream error"),
    Kind.STATE: Outward(EXIT_UPSTREAM, 503, "transient", label="state store error"),
    Kind.NOT_FOUND: Outward(EXIT_UNREADABLE, 404, "not-found", label="not found"),
    Kind.CONFLICT: Outward(EXIT_UPSTREAM, 409, "conflict", label="conflict"),
    Kind.PAYLOAD_TOO_LARGE: Outward(EXIT_UNREADABLE, 413, "too-costly", label="too large"),
    Kind.UNSUPPORTED_MEDIA_TYPE: Outward(
        EXIT_UNREADABLE, 415, "not-supported", label="unsupported format"
    ),
    Kind.UNAUTHORIZED: Outward(EXIT_CONFIG, 401, "login", label="not authorized"),
    Kind.FORBIDDEN: Outward(EXIT_CONFIG, 403, "forbidden", label="forbidden"),
    Kind.METHOD_NOT_ALLOWED: Outward(EXIT_USAGE, 405, "not-supported", label="not allowed"),
    Kind.RATE_LIMITED: Outward(EXIT_UPSTREAM, 429, "throttled", label="rate limited"),
    Kind.UNPROCESSABLE: Outward(EXIT_UNREADABLE, 422, "processing", label="unprocessable"),
    Kind.INTERNAL: Outward(EXIT_INTERNAL, 500, "exception", "fatal", label="internal error"),
}

#: Exit codes as documented in `--help` and the README (code, meaning).
EXIT_CODES: Final[tuple[tuple[int, str], ...]] = (
    (EXIT_OK, "done (clinical findings never change it)"),
    (EXIT_INTERNAL, "unexpected internal error (a defect; details with --log-level debug)"),
    (EXIT_USAGE, "usage: a bad flag or argument"),
    (EXIT_CONFIG, "configuration: settings, mappings, rules, credentials, a foreign state store"),
    (EXIT_UNREADABLE, "unreadable input: a source, seed or database file cannot be read"),
    (EXIT_UPSTREAM, "upstream or state: the EHR, the REMS or the state store failed"),
    (EXIT_BROKEN_PIPE, "the reader of standard output stopped reading (`| head`)"),
)


class AdapterError(Exception):
    """Base of every error the adapter reports to a user or a client.

    `kind` is a class default that an instance may override (`kind=` keyword), so a generic
    error type (say a parser's) can still say which kind one failure is.
    """

    default_kind: ClassVar[Kind] = Kind.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        kind: Kind | None = None,
        where: str | None = None,
        expression: Sequence[str] = (),
    ) -> None:
        self.kind: Kind = kind or self.default_kind
        self.message = message
        self.where = where
        self.expression: tuple[str, ...] = tuple(expression)
        super().__init__(f"{where}: {message}" if where else message)

    @property
    def exit_code(self) -> int:
        return MAPPING[self.kind].exit_code

    @property
    def http_status(self) -> int:
        return MAPPING[self.kind].http_status

    def one_line(self, prog: str = "rems-adapter") -> str:
        """What a CLI prints on stderr: ``prog: <label>: <where>: <message>``, one line."""
        text = " ".join(str(self).split())  # no embedded newlines from wrapped causes
        return f"{prog}: {MAPPING[self.kind].label}: {text}"

    def operation_outcome(self) -> dict[str, Any]:
        """A FHIR R4 OperationOutcome (JSON) describing this error."""
        return operation_outcome(self.kind, str(self), self.expression)


def operation_outcome(
    kind: Kind, diagnostics: str, expression: Sequence[str] = ()
) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome with one issue for `kind`; `expression` only when known."""
    mapping = MAPPING[kind]
    issue: dict[str, Any] = {
        "severity": mapping.severity,
        "code": mapping.issue_code,
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class UsageError(AdapterError):
    """A bad flag or argument: `where` names the flag."""

    default_kind = Kind.USAGE


class ConfigurationError(AdapterError):
    """A setting, mappings file, credential or state store that cannot be used as configured."""

    default_kind = Kind.CONFIGURATION


class UnreadableInputError(AdapterError):
    """An input (source, seed, rules file, database) that does not exist or cannot be read."""

    default_kind = Kind.UNREADABLE_INPUT


class UpstreamError(AdapterError):
    """An upstream system (EHR, REMS) failed or answered something unusable."""

    default_kind = Kind.UPSTREAM


class StateError(AdapterError):
    """The state store cannot be opened, is corrupt or failed a write."""

    default_kind = Kind.STATE


class NotFoundError(AdapterError):
    default_kind = Kind.NOT_FOUND


class ConflictError(AdapterError):
    default_kind = Kind.CONFLICT


class PayloadTooLargeError(AdapterError):
    default_kind = Kind.PAYLOAD_TOO_LARGE


class UnsupportedMediaTypeError(AdapterError):
    """A body in a format the endpoints do not take (FHIR XML or RDF: JSON only), HTTP 415."""

    default_kind = Kind.UNSUPPORTED_MEDIA_TYPE


class UnauthorizedError(AdapterError):
    """No or a wrong bearer token (HTTP 401); the message never echoes the token."""

    default_kind = Kind.UNAUTHORIZED


class ForbiddenError(AdapterError):
    default_kind = Kind.FORBIDDEN


class MethodNotAllowedError(AdapterError):
    """HTTP 405; `allow` lists the methods the path accepts (the `Allow` header)."""

    default_kind = Kind.METHOD_NOT_ALLOWED

    def __init__(self, message: str, *, allow: Sequence[str] = (), **kwargs: Any) -> None:
        self.allow = tuple(allow)
        super().__init__(message, **kwargs)


class RateLimitedError(AdapterError):
    """HTTP 429; `retry_after` in seconds when known."""

    default_kind = Kind.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class UnprocessableError(AdapterError):
    """Well-formed but not acceptable content (HTTP 422); `expression` names the FHIR path."""

    default_kind = Kind.UNPROCESSABLE


class InternalError(AdapterError):
    default_kind = Kind.INTERNAL


def as_adapter_error(error: BaseException) -> AdapterError:
    """`error` itself when it is in the tree; otherwise an InternalError naming its type only
    (an unexpected exception's text may carry anything, so it is left to debug logs)."""
    if isinstance(error, AdapterError):
        return error
    return InternalError(f"unexpected {type(error).__name__}")
