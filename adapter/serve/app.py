"""The HTTP face of `serve` (interfaces.md s.4): lab pushes, probes, metrics.

    POST /fhir/Observation   one Observation; 202 once durably in the inbox
    POST /fhir               a batch or transaction Bundle (Observations and the Patient,
                             Specimen, DiagnosticReport they reference); 202 with a
                             batch-response naming each bad entry by index and FHIR path; the
                             good entries are kept
    GET  /healthz            200 while the process runs
    GET  /readyz             200 when the state store and the EHR answer
    GET  /metrics            Prometheus text format

Every error is an OperationOutcome from `adapter.errors` (the kind decides the status). Guards,
in order: the bearer token (constant-time; not for the probes), the body size (413), the rate
(429 with Retry-After).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from adapter.errors import (
    AdapterError,
    Kind,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnauthorizedError,
    UnprocessableError,
    UnreadableInputError,
    UnsupportedMediaTypeError,
    as_adapter_error,
    operation_outcome,
)
from adapter.hl7v2.oru import PatientKey
from adapter.pipeline import Arrival
from adapter.pipeline.intake import Receipt
from adapter.pipeline.matching import WAKE_MATCHING
from adapter.serve.extensions import Extension, ServeContext
from adapter.serve.validate import check_subject, validate_resource

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class HttpSettings:
    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    #: sustained requests per second per client address (0: no limit) and the burst above it
    rate_per_second: float = 200.0
    rate_burst: int = 400
    forward: bool = True
    max_bundle_entries: int = 1000


class RateLimiter:
    """A token bucket per client address (bounded: the oldest addresses are forgotten)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(burst, 1)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> float | None:
        """None when allowed; otherwise seconds until a request will be."""
        if self.rate <= 0:
            return None
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:
                self._buckets.pop(next(iter(self._buckets)))
        return None


def fhir_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype=FHIR_JSON)


def error_response(error: AdapterError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, MethodNotAllowedError) and error.allow:
        headers["Allow"] = ", ".join(error.allow)
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="rems-adapter"'
    return fhir_response(error.operation_outcome(), error.http_status, headers)


def accepted(message: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }


#: Formats a FHIR client may send that the endpoints do not read (they read JSON only). Any
#: other content type is read as JSON (lab engines often send `application/json`, `text/plain`
#: or none): a body that is not JSON still gets a clear 400.
_NOT_JSON = ("xml", "turtle", "n-triples", "rdf")


def _read_json() -> Any:
    mimetype = request.mimetype or ""
    if any(kind in mimetype for kind in _NOT_JSON):
        raise UnsupportedMediaTypeError(
            f"the body is {mimetype}; send FHIR JSON (application/fhir+json)"
        )
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise UnreadableInputError("the body is empty; send a FHIR resource as JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise UnreadableInputError(
            f"the body is not JSON ({error.msg} at position {error.pos})"
        ) from None


def build_app(
    context: ServeContext, http: HttpSettings, extensions: Sequence[Extension] = ()
) -> Flask:
    pipeline = context.pipeline
    app = Flask("rems_adapter_serve")
    app.config["MAX_CONTENT_LENGTH"] = http.max_body_bytes
    limiter = RateLimiter(http.rate_per_second, http.rate_burst)
    open_paths = set(OPEN_PATHS)
    for extension in extensions:
        open_paths |= set(extension.open_paths)
    ready = _Readiness(context)

    @app.before_request
    def guard() -> Response | None:
        if request.path not in open_paths and http.token is not None:
            presented = request.headers.get("Authorization", "")
            expected = f"Bearer {http.token}"
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                return error_response(
                    UnauthorizedError("a valid bearer token is required (Authorization header)")
                )
        length = request.content_length
        if length is not None and length > http.max_body_bytes:
            return error_response(_too_large(http.max_body_bytes))
        wait = limiter.check(request.remote_addr or "?")
        if wait is not None and request.path not in OPEN_PATHS:
            return error_response(
                RateLimitedError("too many requests; slow down", retry_after=wait)
            )
        return None

    @app.errorhandler(AdapterError)
    def adapter_error(error: AdapterError) -> Response:
        if error.kind in (Kind.INTERNAL, Kind.STATE, Kind.CONFIGURATION):
            log.error("%s %s failed: %s", request.method, request.url_rule, error)
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if isinstance(error, RequestEntityTooLarge):
            return error_response(_too_large(http.max_body_bytes))
        if error.code == 405:
            allow = sorted(
                m
                for rule in app.url_map.iter_rules()
                if rule.rule == request.path
                for m in (rule.methods or ())
            )
            return error_response(
                MethodNotAllowedError(f"{request.method} is not allowed here", allow=allow)
            )
        if error.code == 404:
            return error_response(NotFoundError(f"no such endpoint: {request.path}"))
        kind = Kind.USAGE if (error.code or 500) < 500 else Kind.INTERNAL
        return fhir_response(
            operation_outcome(kind, error.description or "request failed"), error.code or 500
        )

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        wrapped = as_adapter_error(error)
        log.error("%s %s failed: %s", request.method, request.url_rule, wrapped)
        return error_response(wrapped)

    @app.get("/healthz")
    def healthz() -> Response:
        return fhir_response({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        problems = ready.problems()
        if problems:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "error", "code": "transient", "diagnostics": p} for p in problems
                ],
            }
            return fhir_response(outcome, 503)
        return fhir_response({"status": "ready"}, 200)

    @app.get("/metrics")
    def metrics() -> Response:
        from adapter.pipeline.metrics import CONTENT_TYPE

        return Response(pipeline.metrics.exposition(), status=200, content_type=CONTENT_TYPE)

    def _wake_matching(receipts: Sequence[Receipt]) -> None:
        """A result parked (its patient named by identifier only): the matching pass is due."""
        wake = context.extras.get(WAKE_MATCHING)
        if wake is not None and any(r.patient is None for r in receipts):
            wake()

    @app.post("/fhir/Observation")
    def push_observation() -> Response:
        resource = validate_resource(_read_json(), allowed=("Observation",))
        check_subject(resource, "Observation")
        receipts = pipeline.intake.receive([Arrival(resource, "push", forward=http.forward)])
        _wake_matching(receipts)
        # the same resource again answers exactly as the first time (interfaces.md s.4)
        return fhir_response(accepted("accepted"), 202)

    @app.post("/fhir")
    def push_bundle() -> Response:
        bundle = _read_json()
        return _bundle(bundle)

    def _bundle(bundle: Any) -> Response:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise UnprocessableError(
                "POST /fhir takes a Bundle (batch or transaction)",
                expression=["Bundle.resourceType"],
            )
        if bundle.get("type") not in ("batch", "transaction"):
            raise UnprocessableError(
                "Bundle.type must be batch or transaction", expression=["Bundle.type"]
            )
        entries = bundle.get("entry")
        if not isinstance(entries, list) or not entries:
            raise UnprocessableError("Bundle.entry is empty", expression=["Bundle.entry"])
        if len(entries) > http.max_bundle_entries:
            raise PayloadTooLargeError(
                f"Bundle.entry has more than {http.max_bundle_entries} entries",
                expression=["Bundle.entry"],
            )
        local = _local_references(entries)
        arrivals: list[tuple[int, Arrival]] = []
        answers: list[dict[str, Any] | None] = [None] * len(entries)
        for index, entry in enumerate(entries):
            where = f"Bundle.entry[{index}]"
            try:
                if not isinstance(entry, dict):
                    raise UnprocessableError(f"{where} must be an object", expression=[where])
                resource = validate_resource(entry.get("resource"), prefix=f"{where}.resource")
                if _matched_later(resource):
                    # named by identifier only: what it says travels on the results that
                    # reference it (matched to the EHR's Patient); nothing to keep of it here
                    answers[index] = {
                        "response": {
                            "status": "202 Accepted",
                            "outcome": accepted(
                                "accepted: the results that reference it are matched to the "
                                "EHR's Patient by its identifier"
                            ),
                        }
                    }
                    continue
                resource = _resolve(resource, local, f"{where}.resource")
                check_subject(resource, f"{where}.resource")
                forward = http.forward and resource["resourceType"] == "Observation"
                arrivals.append((index, Arrival(resource, "push", forward=forward)))
            except AdapterError as error:
                answers[index] = {
                    "response": {
                        "status": f"{error.http_status} {_reason(error.http_status)}",
                        "outcome": error.operation_outcome(),
                    }
                }
        if not arrivals:  # nothing to keep: the refusals (a Patient entry alone keeps nothing)
            issues = [
                a["response"]["outcome"]["issue"][0]
                for a in answers
                if a is not None and not a["response"]["status"].startswith("202")
            ]
            return fhir_response({"resourceType": "OperationOutcome", "issue": issues}, 422)
        receipts = pipeline.intake.receive([arrival for _, arrival in arrivals])
        _wake_matching(receipts)
        for index, _ in arrivals:
            answers[index] = {
                "response": {
                    "status": "202 Accepted",
                    "outcome": accepted("accepted"),  # the same again answers the same
                }
            }
        return fhir_response(
            {"resourceType": "Bundle", "type": "batch-response", "entry": answers}, 202
        )

    for extension in extensions:
        extension.routes(app, context)
    return app


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the body is larger than the limit of {limit} bytes")


_REASONS = {400: "Bad Request", 413: "Payload Too Large", 422: "Unprocessable Entity"}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Error")


#: What a reference to another entry of a Bundle names: ``Type/id`` for an entry with an id;
#: for a Patient entry without one, its identifier (matched to the EHR's Patient later); None
#: for a Patient entry with neither (nobody can tell who it is).
_Local = str | PatientKey | None


def _patient_identifier(patient: dict[str, Any]) -> PatientKey | None:
    """The first identifier of a Patient with both a system and a value."""
    for item in patient.get("identifier") or []:
        if isinstance(item, dict):
            system, value = item.get("system"), item.get("value")
            if isinstance(system, str) and system and isinstance(value, str) and value:
                return PatientKey(system, value)
    return None


def _matched_later(resource: dict[str, Any]) -> bool:
    """A Patient entry without an id: the EHR's Patient is found by its identifier."""
    return resource.get("resourceType") == "Patient" and not resource.get("id")


def _local_references(entries: list[Any]) -> dict[str, _Local]:
    """fullUrl -> what it names, for every entry with a fullUrl (transaction Bundles reference
    each other by urn:uuid, and a lab's Patient entry often has no id, only identifiers)."""
    out: dict[str, _Local] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        url = entry.get("fullUrl")
        if isinstance(resource, dict) and isinstance(url, str):
            kind, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(kind, str) and isinstance(rid, str) and rid:
                out[url] = f"{kind}/{rid}"
            elif kind == "Patient":
                out[url] = _patient_identifier(resource)
    return out


def _resolve(resource: dict[str, Any], local: dict[str, _Local], where: str) -> dict[str, Any]:
    """The subject as ``Patient/id``, or as the identifier of a Patient entry without an id,
    when it names another entry of the Bundle."""
    subject = resource.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
        return resource
    ref = subject["reference"]
    if ref not in local:
        return resource
    target = local[ref]
    if isinstance(target, str):
        return {**resource, "subject": {**subject, "reference": target}}
    if target is None:
        path = f"{where}.subject"
        raise UnprocessableError(
            f"{path} names a Patient entry with neither an id nor an identifier (system and "
            "value): its patient cannot be matched",
            expression=[path],
        )
    logical = {"identifier": {"system": target.system, "value": target.value}}
    return {**resource, "subject": logical}


class _Readiness:
    """Readiness: the store answers and the EHR answers (its CapabilityStatement), checked at
    most once a second so a probe storm does not reach the EHR."""

    def __init__(self, context: ServeContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._checked = 0.0
        self._last: list[str] = []

    def problems(self) -> list[str]:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < 1.0:
                return self._last
            self._checked = now
            problems: list[str] = []
            try:
                self.context.pipeline.store.ping()
            except AdapterError as error:
                problems.append(f"state store: {error}")
            probe = self.context.extras.get("ehr_probe")
            if probe is not None:
                try:
                    probe()
                except AdapterError as error:
                    problems.append(f"EHR: {error}")
            self._last = problems
            return problems
