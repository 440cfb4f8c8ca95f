"""HTTP face of the REMS service (Flask): validation, idempotency, clock, JSON errors.

Safe by default: `/admin/*` writes need the admin token, and without one they are refused
unless the service was started with `insecure_admin`; with `token` set every other endpoint
needs ``Authorization: Bearer <token>`` too (both compared in constant time), except the
liveness and metrics endpoints (`/health`, `/healthz`, `/metrics`) that probes call. Every
request is logged (method, route pattern, status, bytes, milliseconds): the route pattern,
never the path, since a path carries a REMS patient id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from adapter.rems import contract

from . import dispensing, patients, registry
from .clock import Clock, parse_instant, require_aware, system_clock, to_wire
from .config import ProgramRules, load_rules
from .contract import Contract
from .outcome import Outcome, error
from .reasons import ErrorKind, Reason
from .seed import apply_seed
from .store import Store

log = logging.getLogger(__name__)

Operation = Callable[[sqlite3.Connection, dict[str, Any], datetime, ProgramRules], Outcome]

MAX_BODY_BYTES = 1024 * 1024
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7E]{1,255}$")
_REMS_ID = re.compile(r"^RP[0-9]{8}$")

_HTTP_ERRORS: dict[int, tuple[ErrorKind, Reason]] = {
    404: (ErrorKind.NOT_FOUND, Reason.NOT_FOUND),
    405: (ErrorKind.METHOD_NOT_ALLOWED, Reason.METHOD_NOT_ALLOWED),
    413: (ErrorKind.PAYLOAD_TOO_LARGE, Reason.PAYLOAD_TOO_LARGE),
    415: (ErrorKind.UNSUPPORTED_MEDIA_TYPE, Reason.UNSUPPORTED_MEDIA_TYPE),
}


class ContractViolation(RuntimeError):
    """The service was about to send a body outside its own contract (a defect). The message
    holds schema paths and keywords only, so it may be logged."""


class _Refused(Exception):
    """Stops a request early with an error outcome (bad header, body, clock, token)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.body.get("message", ""))
        self.outcome = outcome


def _invalid(reason: Reason, message: str) -> _Refused:
    return _Refused(error(400, ErrorKind.INVALID_REQUEST, [reason], message))


def _reject_json_constant(name: str) -> float:
    # NaN and Infinity are not JSON and would slip past numeric range checks.
    raise ValueError(f"{name} is not valid JSON")


#: How far a request's `asOf` may be from the service clock and still be tolerated (and ignored)
#: when ``[api] accept_as_of`` is off: a client's clock, not a time travel.
AS_OF_TOLERANCE = timedelta(minutes=5)


class RemsHttp:
    """Runs each request through the same pipeline; the operations hold the rules."""

    def __init__(
        self,
        store: Store,
        schemas: Contract,
        rules: ProgramRules,
        clock: Clock,
        admin_token: str | None,
        token: str | None = None,
        insecure_admin: bool = False,
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.rules = rules
        self.clock = clock
        self.admin_token = admin_token
        self.token = token
        self.insecure_admin = insecure_admin

    # ---- pieces of the pipeline
    def requested_as_of(self) -> datetime | None:
        """The request's `asOf`, parsed (checked before any transaction starts)."""
        as_of = request.args.get("asOf")
        if as_of is None:
            return None
        try:
            return parse_instant(as_of)
        except ValueError as exc:
            raise _invalid(Reason.AS_OF_INVALID, "asOf must be an RFC 3339 date-time") from exc

    def now(self, as_of: datetime | None) -> datetime:
        """The instant a request is evaluated at. Called *inside* the request's transaction, so
        that every decision is dated after every decision committed before it (also by another
        process on the same database): the override count and the new override are one step.

        `asOf` is a test feature (``[api] accept_as_of``, off by default): without it the
        service's own clock decides; an `asOf` within :data:`AS_OF_TOLERANCE` of that clock (a
        client sending its run's clock) is ignored, a farther one refused."""
        clock = require_aware(self.clock(), "the REMS service clock")
        if as_of is None:
            return clock
        if self.rules.accept_as_of:
            return as_of
        if abs(as_of - clock) <= AS_OF_TOLERANCE:
            return clock
        raise _invalid(Reason.AS_OF_NOT_ALLOWED, "this service does not accept asOf")

    def check_admin(self) -> None:
        if self.admin_token is None:
            if self.insecure_admin:
                return
            raise _Refused(
                error(
                    401,
                    ErrorKind.UNAUTHORIZED,
                    [Reason.ADMIN_TOKEN_REQUIRED],
                    "admin writes are disabled: start the service with an admin token "
                    "(or --insecure-admin)",
                )
            )
        if not _bearer_matches(self.admin_token):
            raise _Refused(
                error(
                    401,
                    ErrorKind.UNAUTHORIZED,
                    [Reason.ADMIN_TOKEN_REQUIRED],
                    "admin endpoints need the service's admin token",
                )
            )

    def check_token(self) -> Response | None:
        """Before every request: the service token, when one is set (admin paths have their
        own token; probes need none)."""
        if self.token is None or request.path in OPEN_PATHS or request.path.startswith("/admin/"):
            return None
        if _bearer_matches(self.token):
            return None
        refused = error(
            401, ErrorKind.UNAUTHORIZED, [Reason.TOKEN_REQUIRED], "this service needs its token"
        )
        response = _respond(refused)
        response.headers["WWW-Authenticate"] = 'Bearer realm="rems"'
        return response

    def idempotency_key(self) -> str | None:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise _invalid(
                Reason.IDEMPOTENCY_KEY_INVALID,
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        return key

    def json_body(self, schema: str) -> dict[str, Any]:
        if request.mimetype != "application/json":
            raise _Refused(
                error(
                    415,
                    ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                    [Reason.UNSUPPORTED_MEDIA_TYPE],
                    "send the body as application/json",
                )
            )
        try:
            body = json.loads(request.get_data(cache=False), parse_constant=_reject_json_constant)
        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError, absurd nesting
            raise _invalid(Reason.JSON_INVALID, "the body is not valid JSON") from exc
        problems = self.schemas.problems(schema, body)
        if problems:
            raise _invalid(
                Reason.SCHEMA_VIOLATION, f"the body does not match {schema}: " + "; ".join(problems)
            )
        if not isinstance(body, dict):  # pragma: no cover - every request schema is an object
            raise _invalid(Reason.SCHEMA_VIOLATION, "the body must be a JSON object")
        return body

    def checked(self, outcome: Outcome) -> Outcome:
        """The service validates what it sends, too: a response outside the contract is a
        defect, reported as 500 instead of being sent."""
        problems = self.schemas.problems(outcome.schema, outcome.body)
        if problems:
            raise ContractViolation(f"response breaks {outcome.schema}: {'; '.join(problems)}")
        return outcome

    # ---- the pipelines
    def post(
        self, schema: str, endpoint: str, operation: Operation, admin: bool = False
    ) -> Response:
        try:
            if admin:
                self.check_admin()
            body = self.json_body(schema)
            key = self.idempotency_key()
            as_of = self.requested_as_of()
        except _Refused as refused:
            return _respond(self.checked(refused.outcome))
        fingerprint = hashlib.sha256(
            json.dumps([body, request.args.get("asOf")], sort_keys=True).encode()
        ).hexdigest()
        with self.store.write() as conn:  # BEGIN IMMEDIATE: one writer at a time
            try:
                now = self.now(as_of)
            except _Refused as refused:
                return _respond(self.checked(refused.outcome))
            if key is not None:
                replay = _stored_response(conn, key, endpoint, fingerprint)
                if replay is not None:
                    return replay
            outcome = self.checked(operation(conn, body, now, self.rules))
            if key is not None:
                conn.execute(
                    "INSERT INTO idempotency"
                    " (key, endpoint, request_hash, status, body, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        endpoint,
                        fingerprint,
                        outcome.status,
                        json.dumps(outcome.body),
                        to_wire(now),
                    ),
                )
        return _respond(outcome)

    def patient_status(self, rems_id: str) -> Response:
        try:
            now = self.now(self.requested_as_of())
        except _Refused as refused:
            return _respond(self.checked(refused.outcome))
        if not _REMS_ID.match(rems_id):
            outcome = error(404, ErrorKind.NOT_FOUND, [Reason.NOT_FOUND], "no such patient")
            return _respond(self.checked(outcome))
        with self.store.read() as conn:
            return _respond(self.checked(patients.status(conn, rems_id, now, self.rules)))

    def health(self) -> Response:
        if not self.store.ping():
            outcome = error(
                503,
                ErrorKind.SERVICE_UNAVAILABLE,
                [Reason.DATABASE_UNAVAILABLE],
                "the REMS database does not answer",
            )
            return _respond(self.checked(outcome))
        return _respond(Outcome(200, {"status": "ok", "database": "ok"}, contract.HEALTH))


def _bearer_matches(expected: str) -> bool:
    presented = request.headers.get("Authorization", "")
    return hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode())


#: Paths that never need a token: what liveness probes and metrics scrapers call.
OPEN_PATHS = frozenset({"/health", "/healthz", "/metrics"})


class Metrics:
    """Request counts and latency in the Prometheus text format (no labels with PHI: the route
    pattern, the method and the status only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._seconds: dict[str, float] = {}
        self._count: Counter[str] = Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._seconds[route] = self._seconds.get(route, 0.0) + seconds
            self._count[route] += 1

    def text(self) -> str:
        with self._lock:
            lines = [
                "# HELP rems_adapter_rems_service_requests_total HTTP requests answered.",
                "# TYPE rems_adapter_rems_service_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(
                    "rems_adapter_rems_service_requests_total"
                    f'{{method="{method}",route="{route}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP rems_adapter_rems_service_request_seconds Time to answer, by route.",
                "# TYPE rems_adapter_rems_service_request_seconds summary",
            ]
            for route in sorted(self._count):
                label = f'{{route="{route}"}}'
                lines.append(
                    f"rems_adapter_rems_service_request_seconds_sum{label} "
                    f"{self._seconds[route]:.6f}"
                )
                lines.append(
                    f"rems_adapter_rems_service_request_seconds_count{label} {self._count[route]}"
                )
        return "\n".join(lines) + "\n"


def _stored_response(
    conn: sqlite3.Connection, key: str, endpoint: str, fingerprint: str
) -> Response | None:
    row = conn.execute(
        "SELECT request_hash, status, body FROM idempotency WHERE key = ? AND endpoint = ?",
        (key, endpoint),
    ).fetchone()
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        outcome = error(
            422,
            ErrorKind.INVALID_REQUEST,
            [Reason.IDEMPOTENCY_KEY_REUSED],
            "this Idempotency-Key was already used for a different request",
        )
        return _respond(outcome)
    replay = Response(row["body"], status=row["status"], mimetype="application/json")
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


def _respond(outcome: Outcome) -> Response:
    return Response(json.dumps(outcome.body), status=outcome.status, mimetype="application/json")


def _register_routes(app: Flask, http: RemsHttp) -> None:
    routes: list[tuple[str, str, Operation, bool]] = [
        (
            "/admin/prescribers",
            contract.PRESCRIBER_CERTIFICATION,
            registry.certify_prescriber,
            True,
        ),
        ("/admin/designees", contract.DESIGNEE_ENROLLMENT, registry.enroll_designee, True),
        ("/admin/pharmacies", contract.PHARMACY_ENROLLMENT, registry.certify_pharmacy, True),
        ("/patients/enrollments", contract.PATIENT_ENROLLMENT, patients.enroll, False),
        ("/psfs", contract.PSF_SUBMISSION, patients.submit_psf, False),
        (
            "/dispense-authorizations",
            contract.DISPENSE_AUTHORIZATION_REQUEST,
            dispensing.request_rda,
            False,
        ),
        ("/overrides", contract.OVERRIDE_REQUEST, dispensing.request_override, False),
    ]
    for path, schema, operation, admin in routes:

        def view(
            schema: str = schema,
            path: str = path,
            operation: Operation = operation,
            admin: bool = admin,
        ) -> Response:
            return http.post(schema, path, operation, admin)

        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])
    app.add_url_rule("/health", endpoint="health", view_func=http.health, methods=["GET"])
    app.add_url_rule(
        "/healthz",
        endpoint="healthz",
        view_func=lambda: Response('{"status":"ok"}', mimetype="application/json"),
        methods=["GET"],
    )
    app.add_url_rule("/openapi.yaml", endpoint="openapi", view_func=_contract_file, methods=["GET"])
    app.add_url_rule(
        "/<name>.schema.json", endpoint="schema", view_func=_contract_file, methods=["GET"]
    )
    app.add_url_rule(
        "/patients/<path:rems_id>",
        endpoint="patient",
        view_func=http.patient_status,
        methods=["GET"],
    )


def _contract_file(name: str | None = None) -> Response:
    """The service's own contract: openapi.yaml and the JSON Schemas it references."""
    folder = resources.files("adapter.profiles").joinpath("rems")
    file = "openapi.yaml" if name is None else f"{name}.schema.json"
    entry = folder.joinpath(file)
    if "/" in file or not entry.is_file():
        return _respond(error(404, ErrorKind.NOT_FOUND, [Reason.NOT_FOUND], "no such file"))
    mimetype = "application/yaml" if name is None else "application/schema+json"
    return Response(entry.read_bytes(), mimetype=mimetype)


def _register_access_log(app: Flask, http: RemsHttp, metrics: Metrics) -> None:
    access = logging.getLogger("adapter.rems_service.access")

    @app.before_request
    def started() -> Response | None:
        request.environ["rems.started"] = time.monotonic()
        return http.check_token()

    @app.after_request
    def logged(response: Response) -> Response:
        began = request.environ.get("rems.started", time.monotonic())
        seconds = time.monotonic() - began
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        metrics.observe(request.method, route, response.status_code, seconds)
        access.info(
            "%s %s %d %dB %.1fms",
            request.method,
            route,
            response.status_code,
            response.calculate_content_length() or 0,
            seconds * 1000,
        )
        return response

    app.add_url_rule(
        "/metrics",
        endpoint="metrics",
        view_func=lambda: Response(metrics.text(), mimetype="text/plain; version=0.0.4"),
        methods=["GET"],
    )


def _register_error_handlers(app: Flask) -> None:
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind, reason = _HTTP_ERRORS.get(
            status, (ErrorKind.INVALID_REQUEST, Reason.SCHEMA_VIOLATION)
        )
        if status >= 500:
            kind, reason = ErrorKind.INTERNAL_ERROR, Reason.INTERNAL_ERROR
        response = _respond(error(status, kind, [reason], exc.name))
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    def database_error(exc: sqlite3.OperationalError) -> Response:
        log.error("REMS database error on %s: %s", request.endpoint, type(exc).__name__)
        outcome = error(
            503,
            ErrorKind.SERVICE_UNAVAILABLE,
            [Reason.DATABASE_UNAVAILABLE],
            "database unavailable",
        )
        return _respond(outcome)

    def contract_violation(exc: ContractViolation) -> Response:
        log.error("REMS service defect on %s: %s", request.endpoint, exc)
        outcome = error(500, ErrorKind.INTERNAL_ERROR, [Reason.INTERNAL_ERROR], "internal error")
        return _respond(outcome)

    def defect(exc: Exception) -> Response:
        # Only the type and the endpoint: the exception text may quote patient data.
        log.error("REMS service defect on %s: %s", request.endpoint, type(exc).__name__)
        outcome = error(500, ErrorKind.INTERNAL_ERROR, [Reason.INTERNAL_ERROR], "internal error")
        return _respond(outcome)

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(sqlite3.OperationalError, database_error)
    app.register_error_handler(ContractViolation, contract_violation)
    app.register_error_handler(Exception, defect)


def make_app(
    db_path: str | Path,
    seed: str | Path | None = None,
    *,
    clock: Clock | None = None,
    rules: ProgramRules | str | Path | None = None,
    admin_token: str | None = None,
    token: str | None = None,
    insecure_admin: bool = False,
) -> Flask:
    """Build the WSGI app: creates the database schema, applies the seed, loads the contract.

    `clock` returns the current aware datetime (tests pass their own); `rules` is a
    ProgramRules, a path to a program TOML, or None for mappings/rems-program.toml.
    `admin_token` guards /admin/* (without it admin writes are refused unless
    `insecure_admin`); `token` guards every other endpoint except the probes.
    """
    program = rules if isinstance(rules, ProgramRules) else load_rules(rules)
    service_clock = clock or system_clock
    store = Store(db_path)
    store.initialise()
    schemas = Contract()
    if seed is not None:
        apply_seed(seed, store, schemas, program, require_aware(service_clock(), "clock"))
    app = Flask("adapter.rems_service")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    http = RemsHttp(store, schemas, program, service_clock, admin_token, token, insecure_admin)
    _register_routes(app, http)
    _register_access_log(app, http, Metrics())
    _register_error_handlers(app)
    return app
