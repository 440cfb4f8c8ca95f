"""Reason and error codes of the REMS service (mirrors profiles/rems/common.schema.json)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a request was denied or rejected; the wire enum is `reasonCode` in common.schema.json."""

    # The project's reason codes (interfaces.md section 2), reused where they fit.
    PATIENT_NOT_ENROLLED = "patient-not-enrolled"
    PRESCRIBER_NOT_CERTIFIED = "prescriber-not-certified"
    PHARMACY_NOT_CERTIFIED = "pharmacy-not-certified"
    PSF_OVERDUE = "psf-overdue"
    TREATMENT_INTERRUPTED = "treatment-interrupted"
    OVERRIDE_LIMIT_REACHED = "override-limit-reached"
    SUPPLY_EXCEEDS_LIMIT = "supply-exceeds-limit"
    ANC_NOT_CURRENT = "anc-not-current"
    ANC_MISSING = "anc-missing"
    ANC_BELOW_THRESHOLD = "anc-below-threshold"
    # Specific to the REMS service's forms.
    RATIONALE_REQUIRED = "rationale-required"
    SIGNER_NOT_PERMITTED = "signer-not-permitted"
    BASELINE_ANC_TOO_OLD = "baseline-anc-too-old"
    ANC_IN_FUTURE = "anc-in-future"
    REPORTING_PERIOD_IN_FUTURE = "reporting-period-in-future"
    PATIENT_ALREADY_ENROLLED = "patient-already-enrolled"
    PATIENT_IDENTITY_MISMATCH = "patient-identity-mismatch"
    KNOWLEDGE_ASSESSMENT_NOT_PASSED = "knowledge-assessment-not-passed"
    NPI_INVALID = "npi-invalid"
    DISPENSE_RATIONALE_REQUIRED = "dispense-rationale-required"
    PSF_CURRENT = "psf-current"
    # Request-level problems.
    SCHEMA_VIOLATION = "schema-violation"
    JSON_INVALID = "json-invalid"
    AS_OF_INVALID = "as-of-invalid"
    AS_OF_NOT_ALLOWED = "as-of-not-allowed"
    IDEMPOTENCY_KEY_INVALID = "idempotency-key-invalid"
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    ADMIN_TOKEN_REQUIRED = "admin-token-required"
    TOKEN_REQUIRED = "token-required"
    DATABASE_UNAVAILABLE = "database-unavailable"
    INTERNAL_ERROR = "internal-error"


class ErrorKind(StrEnum):
    """The `error` field of an error body (error.schema.json)."""

    INVALID_REQUEST = "invalid-request"
    CERTIFICATION_REJECTED = "certification-rejected"
    ENROLLMENT_REJECTED = "enrollment-rejected"
    PSF_REJECTED = "psf-rejected"
    CONFLICT = "conflict"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    UNAUTHORIZED = "unauthorized"
    SERVICE_UNAVAILABLE = "service-unavailable"
    INTERNAL_ERROR = "internal-error"
