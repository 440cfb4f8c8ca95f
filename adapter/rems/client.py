"""HTTP client of a REMS service (profiles/rems/openapi.yaml): enrollment, PSF, RDA, override.

The one place that sees the service's HTTP statuses. Every POST carries an Idempotency-Key derived
from what is sent (endpoint, body and `asOf`), so a retry, or a rerun of the same batch, is
replayed by the service instead of being counted again; that is also why POSTs may be retried.
Retries are bounded in count and total time, honour Retry-After on 429/503, and otherwise back
off exponentially with jitter (`adapter.http.retry`, shared with the EHR client). Bodies are
checked against the contract in both directions; failures become the errors of
`adapter.rems.errors`.
"""

from __future__ import annotations

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

from adapter.http import retry as http_retry
from adapter.http.retry import (
    RETRYABLE_STATUSES,
    RequestFailed,
    Sleep,
    Timeouts,
    Unanswered,
    parse_retry_after,
)

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

KEY_PREFIX = "rems-adapter-"


@dataclass(frozen=True)
class RetryPolicy(http_retry.RetryPolicy):
    max_attempts: int = 4
    max_total_seconds: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0

    invalid = RemsConfigurationError


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

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> tuple[requests.Response, int]:
        # Every request may be retried: GETs are safe, POSTs carry an Idempotency-Key.
        try:
            return http_retry.send(
                self.session,
                method,
                self.base_url + path,
                retry_allowed=True,
                policy=self.retry,
                timeouts=self.timeouts,
                sleep=self.sleep,
                clock=self.clock,
                log=log,
                shown_as=path,
                headers=lambda: headers,
                params=params,
                json_body=body,
            )
        except RequestFailed as failure:
            raise RemsResponseError(
                f"request failed ({type(failure.cause).__name__})", method=method, path=path
            ) from failure.cause
        except Unanswered as failure:
            error = RemsTimeoutError if failure.timed_out else RemsTransientError
            raise error(
                failure.message, attempts=failure.attempts, method=method, path=path
            ) from failure.cause


def _decision(body: Mapping[str, Any]) -> Decision:
    number = body["authorizationNumber"]
    return Decision(
        granted=bool(body["granted"]),
        authorization_number=str(number) if number is not None else None,
        reasons=tuple(str(reason) for reason in body["reasons"]),
        override=bool(body["override"]),
    )
