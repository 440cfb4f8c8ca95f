"""One request with timeouts and bounded retries, shared by the EHR and the REMS connectors.

Retries use tenacity rather than urllib3's `Retry`: urllib3 sleeps for whatever `Retry-After` a
server sends (no cap, not injectable), and cannot bound the total time. Here a retry happens only
when the caller allows it (idempotent requests), at most `max_attempts` times and within
`max_total_seconds` (counting the sleep about to be taken), honouring `Retry-After` (seconds or
HTTP-date) and otherwise backing off exponentially with full jitter.

`send` returns the last response whatever its status; the connector maps statuses to its errors.
Failures without a response come back as the neutral `Unanswered` (retried, then given up) or
`RequestFailed` (not retried), which each connector turns into its own error types.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
import tenacity

#: Statuses worth retrying: the request was not processed (or not answered) and may succeed later.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})

Sleep = Callable[[float], None]
Clock = Callable[[], float]

#: Connection-level failures: nothing (or no answer) came back, so trying again may help.
_UNANSWERED = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Each connector subclasses it with its own defaults and
    its own configuration error (`invalid`)."""

    max_attempts: int
    max_total_seconds: float
    backoff_initial: float
    backoff_max: float

    #: What an unusable policy raises.
    invalid: ClassVar[type[ValueError]] = ValueError

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise self.invalid("RetryPolicy.max_attempts must be at least 1")
        if self.max_total_seconds < 0 or self.backoff_initial < 0 or self.backoff_max < 0:
            raise self.invalid("RetryPolicy times must not be negative")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - now)


class Unanswered(Exception):
    """No response on any attempt allowed (connection failure or timeout)."""

    def __init__(self, cause: requests.RequestException, attempts: int) -> None:
        self.cause = cause
        self.attempts = attempts
        self.timed_out = isinstance(cause, requests.Timeout)
        what = "timed out" if self.timed_out else "could not connect"
        self.message = f"{what} after {attempts} attempt(s) ({type(cause).__name__})"
        super().__init__(self.message)


class RequestFailed(Exception):
    """A failure that retrying will not fix (invalid URL, undecodable body, or a type the
    connector asked to hear about at once, e.g. TLS): raised on the attempt where it happened."""

    def __init__(self, cause: requests.RequestException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class _Retry(Exception):
    """A connection-level failure, for tenacity to retry."""

    def __init__(self, cause: requests.RequestException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _waiter(policy: RetryPolicy, clock: Clock) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_random_exponential(
        multiplier=policy.backoff_initial, max=policy.backoff_max
    )

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response: requests.Response = outcome.result()
            retry_after = parse_retry_after(response.headers.get("Retry-After"), clock())
            if retry_after is not None:
                return retry_after  # the server said when: no jitter; the stop rule bounds it
        return float(backoff(state))

    return wait


def _stopper(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], bool]:
    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        # idle_for counts injected (fake) sleeps too, seconds_since_start the real clock
        spent = max(state.seconds_since_start or 0.0, state.idle_for)
        return spent + (state.upcoming_sleep or 0.0) > policy.max_total_seconds

    return stop


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    retry_allowed: bool,
    policy: RetryPolicy,
    timeouts: Timeouts,
    sleep: Sleep,
    clock: Clock,
    log: logging.Logger,
    shown_as: str,
    headers: Callable[[], Mapping[str, str]],
    params: Any = None,
    json_body: Any = None,
    form: Callable[[], Mapping[str, str]] | None = None,
    verify: bool | str | None = None,
    not_retried: tuple[type[requests.RequestException], ...] = (),
    stream: bool = False,
) -> tuple[requests.Response, int]:
    """Send once, or with retries when `retry_allowed`; returns (last response, attempts).

    `headers` and `form` are called per attempt, so every attempt carries a fresh token or client
    assertion. `shown_as` is how logs name the request (never a query string: it can be PHI);
    `log` is the connector's logger. `verify` None keeps the session's TLS setting. Connection
    failures of a `not_retried` type raise `RequestFailed` at once instead of being retried.
    `stream`: the body is not read here (large downloads); the caller reads and closes it.
    Raises `Unanswered` when no attempt got a response, `RequestFailed` as above."""
    attempts = 0
    request_options: dict[str, Any] = {"verify": verify} if verify is not None else {}
    if stream:
        request_options["stream"] = True

    def attempt() -> requests.Response:
        nonlocal attempts
        attempts += 1
        sent_headers = dict(headers())
        try:
            response = session.request(
                method,
                url,
                params=params,
                headers=sent_headers,
                json=json_body,
                data=form() if form is not None else None,
                timeout=(timeouts.connect, timeouts.read),
                allow_redirects=False,
                **request_options,
            )
        except not_retried as exc:
            raise RequestFailed(exc) from exc
        except _UNANSWERED as exc:
            # A connect timeout means nothing was sent; a read timeout may have been processed
            # by the server, so only requests the caller allows are tried again.
            log.info("%s %s failed: %s", method, shown_as, type(exc).__name__)
            raise _Retry(exc) from exc
        except requests.RequestException as exc:  # undecodable body, invalid URL...
            raise RequestFailed(exc) from exc
        log.debug("%s %s -> %s", method, shown_as, response.status_code)
        return response

    def retry_wanted(state: tenacity.RetryCallState) -> bool:
        if not retry_allowed or state.outcome is None:
            return False
        if state.outcome.failed:
            return isinstance(state.outcome.exception(), _Retry)
        return state.outcome.result().status_code in RETRYABLE_STATUSES

    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.info(
            "retrying %s %s in %.2fs (attempt %d of %d)",
            method,
            shown_as,
            state.upcoming_sleep,
            state.attempt_number + 1,
            policy.max_attempts,
        )

    retrying = tenacity.Retrying(
        retry=retry_wanted,
        stop=_stopper(policy),
        wait=_waiter(policy, clock),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
        # out of attempts on a retryable *status*: hand back that last response
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    try:
        response: requests.Response = retrying(attempt)
    except _Retry as failure:
        raise Unanswered(failure.cause, attempts) from failure.cause
    return response, attempts
