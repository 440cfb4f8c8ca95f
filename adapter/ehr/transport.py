"""HTTP transport: one `requests.Session`, timeouts, TLS settings and bounded retries.

The retry loop is `adapter.http.retry` (shared with the REMS connector): a retry happens only for
idempotent requests, bounded in count and total time, honouring `Retry-After`. This module adds
the EHR's defaults, TLS settings and error types.

This module returns the last response whatever its status; `client.py` maps statuses to errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from adapter.http import retry as http_retry
from adapter.http.retry import (
    Clock,
    RequestFailed,
    Sleep,
    Timeouts,
    Unanswered,
)

from .errors import (
    FhirResponseError,
    FhirTimeoutError,
    FhirTlsError,
    FhirTransientError,
    redact_url,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy(http_retry.RetryPolicy):
    max_attempts: int = 5
    max_total_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0


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
        stream: bool = False,
    ) -> tuple[requests.Response, int]:
        """Send once, or with retries when `idempotent`; returns (last response, attempts).
        `form` and `authorize` are called per attempt so every attempt carries a fresh client
        assertion or token. `stream`: the body is left unread (the caller reads and closes it)."""

        def attempt_headers() -> Mapping[str, str]:
            all_headers = dict(headers or {})
            if authorize is not None:
                all_headers.update(authorize())
            return all_headers

        try:
            return http_retry.send(
                self.session,
                method,
                url,
                retry_allowed=idempotent,
                policy=self.retry,
                timeouts=self.timeouts,
                sleep=self.sleep,
                clock=self.clock,
                log=log,
                shown_as=redact_url(url),
                headers=attempt_headers,
                params=params,
                json_body=json_body,
                form=form,
                verify=self.verify,
                # certificate or handshake failure: retrying will not fix the configuration
                not_retried=(requests.exceptions.SSLError,),
                stream=stream,
            )
        except RequestFailed as failure:
            cause = failure.cause
            if isinstance(cause, requests.exceptions.SSLError):
                raise FhirTlsError(
                    f"TLS failed ({type(cause).__name__}); check the CA bundle and the server "
                    "certificate",
                    method=method,
                    url=url,
                ) from cause
            raise FhirResponseError(
                f"request failed: {type(cause).__name__}", method=method, url=url
            ) from cause
        except Unanswered as failure:
            error_type = FhirTimeoutError if failure.timed_out else FhirTransientError
            raise error_type(
                failure.message, method=method, url=url, attempts=failure.attempts
            ) from failure.cause
