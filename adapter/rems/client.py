"""HTTP client of a REMS service (profiles/rems/openapi.yaml): enrollment, PSF, RDA, override.

The one place that sees the service's HTTP statuses. Every POST carries an Idempotency-Key derived
from what is sent (endpoint, body and `asOf`), so a retry, or a rerun of the same batch, is
replayed by the service instead of being counted again; that is also why POSTs may be retried.
Retries are bounded in count and total time, honour Retry-After on 429/503, and otherwise back
off exponentially with jitter (tenacity, as the EHR client). Bodies are checked against the
contract in both directions; failures become the errors of `adapter.rems.errors`.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity

from . import contract
from .contract import RemsSchemas
from .errors import (
    RemsConfigurationError,
    RemsRejection,
    RemsRequestInvalid,
    RemsResponseError,
    RemsTimeoutError,
    RemsTransientError,
)

log = logging.getLogger(__name__)

#: The request was not processed (or not answered) and may succeed later.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
KEY_PREFIX = "rems-adapter-"

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    max_total_seconds: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise RemsConfigurationError("RetryPolicy.max_attempts must be at least 1")
        if min(self.max_total_seconds, self.backoff_initial, self.backoff_max) < 0:
            raise RemsConfigurationError("RetryPolicy times must not be negative")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0


@dataclass(frozen=True)
class Enrolled:
    rems_id: str
    psf_id: int


@dataclass(frozen=True)
class PsfAccepted:
    rems_id: str
    psf_id: int


@dataclass(frozen=True)
class Decision:
    """The answer to an RDA or an override request."""

    granted: bool
    authorization_number: str | None
    reasons: tuple[str, ...]
    override: bool


def wire_instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("the REMS clock (asOf) must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def idempotency_key(path: str, body: Mapping[str, Any], as_of: str) -> str:
    """Derived from the content: the same request (same endpoint, body and clock) always has the
    same key, so the service replays it; a different request never collides with it."""
    canonical = json.dumps(
        [path, body, as_of], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return KEY_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class _Unanswered(Exception):
    """A connection-level failure, for tenacity to retry."""

    def __init__(self, cause: requests.RequestException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemsConfigurationError("the REMS base URL must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise RemsConfigurationError("the REMS base URL must not carry a query or fragment")
    return base_url.rstrip("/")


class RemsClient:
    """Talks to one REMS service. `sleep` and `clock` are injectable so tests do not wait."""

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        schemas: RemsSchemas | None = None,
        sleep: Sleep = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "rems-adapter"
        self.schemas = schemas or RemsSchemas()
        self.sleep = sleep
        self.clock = clock

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ operations

    def enroll_patient(self, form: Mapping[str, Any], as_of: datetime) -> Enrolled:
        body = self._post(
            "/patients/enrollments",
            form,
            as_of,
            contract.PATIENT_ENROLLMENT,
            {201: contract.PATIENT_ENROLLMENT_RESPONSE},
        )
        return Enrolled(rems_id=str(body["remsId"]), psf_id=int(body["psfId"]))

    def submit_psf(self, form: Mapping[str, Any], as_of: datetime) -> PsfAccepted:
        body = self._post(
            "/psfs", form, as_of, contract.PSF_SUBMISSION, {201: contract.PSF_ACCEPTANCE}
        )
        return PsfAccepted(rems_id=str(body["remsId"]), psf_id=int(body["psfId"]))

    def request_dispense_authorization(
        self, request: Mapping[str, Any], as_of: datetime
    ) -> Decision:
        body = self._post(
            "/dispense-authorizations",
            request,
            as_of,
            contract.DISPENSE_AUTHORIZATION_REQUEST,
            {200: contract.DISPENSE_AUTHORIZATION_RESPONSE},
        )
        return _decision(body)

    def request_override(self, request: Mapping[str, Any], as_of: datetime) -> Decision:
        body = self._post(
            "/overrides",
            request,
            as_of,
            contract.OVERRIDE_REQUEST,
            {200: contract.DISPENSE_AUTHORIZATION_RESPONSE},
        )
        return _decision(body)

    def patient_status(self, rems_id: str, as_of: datetime) -> dict[str, Any] | None:
        """The patient's REMS status, or None when the service does not know the patient."""
        path = f"/patients/{rems_id}"
        try:
            return self._exchange("GET", path, None, as_of, None, {200: contract.PATIENT_STATUS})
        except RemsRejection as rejection:
            if rejection.status == 404:
                return None
            raise

    # ------------------------------------------------------------------ plumbing

    def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        as_of: datetime,
        request_schema: str,
        expected: Mapping[int, str],
    ) -> dict[str, Any]:
        return self._exchange("POST", path, body, as_of, request_schema, expected)

    def _exchange(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        as_of: datetime,
        request_schema: str | None,
        expected: Mapping[int, str],
    ) -> dict[str, Any]:
        if request_schema is not None:
            problems = self.schemas.problems(request_schema, body)
            if problems:
                raise RemsRequestInvalid(request_schema, problems)
        as_of_wire = wire_instant(as_of)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Idempotency-Key"] = idempotency_key(path, body, as_of_wire)
        response, attempts = self._send(method, path, body, {"asOf": as_of_wire}, headers)
        return self._answer(method, path, response, attempts, expected)

    def _answer(
        self,
        method: str,
        path: str,
        response: requests.Response,
        attempts: int,
        expected: Mapping[int, str],
    ) -> dict[str, Any]:
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise RemsTransientError(
                f"still unavailable after {attempts} attempt(s)",
                attempts=attempts,
                retry_after=parse_retry_after(response.headers.get("Retry-After"), self.clock()),
                method=method,
                path=path,
                status=status,
            )
        schema = expected.get(status)
        if schema is None and not 400 <= status < 500:
            raise RemsResponseError("unexpected status", method=method, path=path, status=status)
        try:
            answer = response.json()
        except ValueError as exc:  # requests' JSONDecodeError is a ValueError
            raise RemsResponseError(
                "the body is not JSON", method=method, path=path, status=status
            ) from exc
        if schema is None:  # a 4xx: the service says why in an error body
            if self.schemas.problems(contract.ERROR, answer):
                raise RemsResponseError(
                    "the error body does not match error.schema.json",
                    method=method,
                    path=path,
                    status=status,
                )
            raise RemsRejection(
                "refused",
                kind=str(answer["error"]),
                reasons=[str(reason) for reason in answer["reasons"]],
                method=method,
                path=path,
                status=status,
            )
        problems = self.schemas.problems(schema, answer)
        if problems:
            raise RemsResponseError(
                f"the answer breaks {schema}: {'; '.join(problems)}",
                method=method,
                path=path,
                status=status,
            )
        assert isinstance(answer, dict)  # every response schema is an object
        return answer

    def _wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response: requests.Response = outcome.result()
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
            if retry_after is not None:
                return retry_after  # the service said when; the stop rule bounds it
        backoff = tenacity.wait_random_exponential(
            multiplier=self.retry.backoff_initial, max=self.retry.backoff_max
        )
        return float(backoff(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.retry.max_attempts:
            return True
        # idle_for counts injected (fake) sleeps too, seconds_since_start the real clock.
        spent = max(state.seconds_since_start or 0.0, state.idle_for)
        return spent + (state.upcoming_sleep or 0.0) > self.retry.max_total_seconds

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> tuple[requests.Response, int]:
        attempts = 0
        url = self.base_url + path

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            try:
                return self.session.request(
                    method,
                    url,
                    params=params,
                    headers=dict(headers),
                    json=body,
                    timeout=(self.timeouts.connect, self.timeouts.read),
                    allow_redirects=False,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                log.info("%s %s failed: %s", method, path, type(exc).__name__)
                raise _Unanswered(exc) from exc
            except requests.RequestException as exc:
                raise RemsResponseError(
                    f"request failed ({type(exc).__name__})", method=method, path=path
                ) from exc

        def retry_wanted(state: tenacity.RetryCallState) -> bool:
            if state.outcome is None:
                return False
            if state.outcome.failed:
                return isinstance(state.outcome.exception(), _Unanswered)
            return state.outcome.result().status_code in RETRYABLE_STATUSES

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.info(
                "retrying %s %s in %.2fs (attempt %d of %d)",
                method,
                path,
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
            # Out of attempts on a retryable status: hand back that last response.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        try:
            response: requests.Response = retrying(attempt)
        except _Unanswered as failure:
            cause = failure.cause
            timed_out = isinstance(cause, requests.Timeout)
            error = RemsTimeoutError if timed_out else RemsTransientError
            what = "timed out" if timed_out else "could not connect"
            raise error(
                f"{what} after {attempts} attempt(s) ({type(cause).__name__})",
                attempts=attempts,
                method=method,
                path=path,
            ) from cause
        return response, attempts


def _decision(body: Mapping[str, Any]) -> Decision:
    number = body["authorizationNumber"]
    return Decision(
        granted=bool(body["granted"]),
        authorization_number=str(number) if number is not None else None,
        reasons=tuple(str(reason) for reason in body["reasons"]),
        override=bool(body["override"]),
    )
