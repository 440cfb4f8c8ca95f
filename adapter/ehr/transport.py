"""HTTP transport: one `requests.Session`, timeouts, TLS settings and bounded retries.

Retries use tenacity rather than urllib3's `Retry`: urllib3 sleeps for whatever `Retry-After` a
server sends (no cap, not injectable), and cannot bound the total time. Here a retry happens
only for idempotent requests, at most `max_attempts` times and within `max_total_seconds`
(counting the sleep about to be taken), honouring `Retry-After` (seconds or HTTP-date) and
otherwise backing off exponentially with full jitter.

This module returns the last response whatever its status; `client.py` maps statuses to errors.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import tenacity

from .errors import (
    FhirResponseError,
    FhirTimeoutError,
    FhirTlsError,
    FhirTransientError,
    redact_url,
)

log = logging.getLogger(__name__)

#: Statuses worth retrying: the request was not processed and may succeed later.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    max_total_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.max_total_seconds < 0 or self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("RetryPolicy times must not be negative")


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


class _RetryableFailure(Exception):
    """A connection-level failure on an idempotent request, for tenacity to retry."""

    def __init__(self, cause: requests.RequestException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Transport:
    """Sends requests with timeouts, TLS verification and retries. No FHIR, no auth here."""

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.time,
        user_agent: str = "rems-adapter",
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        # TLS verification is on unless explicitly turned off; a string is a CA bundle path.
        self.verify = verify
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.sleep = sleep
        self.clock = clock
        # urllib3 logs each request line, query string included, at DEBUG; search values can be
        # PHI, so its request lines stay out of the logs even when the site turns on DEBUG.
        pool_log = logging.getLogger("urllib3.connectionpool")
        if pool_log.level < logging.INFO:  # NOTSET (inherit) included
            pool_log.setLevel(logging.INFO)

    def close(self) -> None:
        self.session.close()

    # -- retry strategy ------------------------------------------------------------------------

    def _wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response: requests.Response = outcome.result()
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
            if retry_after is not None:
                return retry_after  # the server said when: no jitter on top
        backoff = tenacity.wait_random_exponential(
            multiplier=self.retry.backoff_initial, max=self.retry.backoff_max
        )
        return float(backoff(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.retry.max_attempts:
            return True
        # idle_for counts injected (fake) sleeps too, seconds_since_start the real clock
        spent = max(state.seconds_since_start or 0.0, state.idle_for)
        return spent + state.upcoming_sleep > self.retry.max_total_seconds

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Callable[[], Mapping[str, str]] | None = None,
        authorize: Callable[[], Mapping[str, str]] | None = None,
    ) -> tuple[requests.Response, int]:
        """Send once, or with retries when `idempotent`; returns (last response, attempts).
        `form` and `authorize` are called per attempt so every attempt carries a fresh client
        assertion or token."""
        attempts = 0

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            all_headers = dict(headers or {})
            if authorize is not None:
                all_headers.update(authorize())
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    headers=all_headers,
                    json=json_body,
                    data=form() if form is not None else None,
                    timeout=(self.timeouts.connect, self.timeouts.read),
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                # certificate or handshake failure: retrying will not fix the configuration
                raise FhirTlsError(
                    f"TLS failed ({type(exc).__name__}); check the CA bundle and the server "
                    "certificate",
                    method=method,
                    url=url,
                ) from exc
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # A connect timeout means nothing was sent; a read timeout may have been processed
                # by the server, so only idempotent requests are tried again (tenacity decides).
                log.info("%s %s failed: %s", method, redact_url(url), type(exc).__name__)
                raise _RetryableFailure(exc) from exc
            except requests.RequestException as exc:  # undecodable body, invalid URL...
                raise FhirResponseError(
                    f"request failed: {type(exc).__name__}", method=method, url=url
                ) from exc
            log.debug("%s %s -> %s", method, redact_url(url), response.status_code)
            return response

        def retry_wanted(state: tenacity.RetryCallState) -> bool:
            if not idempotent or state.outcome is None:
                return False
            if state.outcome.failed:
                return isinstance(state.outcome.exception(), _RetryableFailure)
            return state.outcome.result().status_code in RETRYABLE_STATUSES

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.info(
                "retrying %s %s in %.2fs (attempt %d of %d)",
                method,
                redact_url(url),
                state.upcoming_sleep,
                state.attempt_number + 1,
                self.retry.max_attempts,
            )

        retrying = tenacity.Retrying(
            retry=retry_wanted,
            stop=self._stop,
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
            # out of attempts on a retryable *status*: hand back that last response
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        try:
            response: requests.Response = retrying(attempt)
        except _RetryableFailure as failure:
            cause = failure.cause
            error_type = (
                FhirTimeoutError if isinstance(cause, requests.Timeout) else FhirTransientError
            )
            what = "timed out" if isinstance(cause, requests.Timeout) else "could not connect"
            raise error_type(
                f"{what} after {attempts} attempt(s) ({type(cause).__name__})",
                method=method,
                url=url,
                attempts=attempts,
            ) from cause
        return response, attempts
