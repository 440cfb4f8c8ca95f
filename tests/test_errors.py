"""The one error tree: every kind maps to one exit code, HTTP status and OperationOutcome issue,
and the existing error types of the connectors and loaders are members of it."""

from __future__ import annotations

import pytest

from adapter import errors
from adapter.batch.sources import UnreadableInput
from adapter.ehr.errors import EhrConfigurationError, FhirNotFoundError, FhirTransientError
from adapter.errors import AdapterError, Kind, operation_outcome
from adapter.mappings_loader import MappingError
from adapter.rems.errors import RemsConfigurationError, RemsRejection, RemsTransientError
from adapter.rems_service.config import ConfigError as RulesError
from adapter.rems_service.seed import SeedError
from adapter.rems_service.store import StoreError
from adapter.watch.config import ConfigError as WatchConfigError

# The FHIR R4 issue-type codes (http://hl7.org/fhir/issue-type), all levels.
FHIR_ISSUE_TYPE = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
}  # fmt: skip


def test_every_kind_is_mapped_once_with_a_valid_issue_code() -> None:
    assert set(errors.MAPPING) == set(Kind)
    for kind, outward in errors.MAPPING.items():
        assert outward.issue_code in FHIR_ISSUE_TYPE, kind
        assert outward.severity in {"fatal", "error", "warning", "information"}
        assert 400 <= outward.http_status < 600
        assert outward.exit_code in {code for code, _ in errors.EXIT_CODES}


@pytest.mark.parametrize(
    ("kind", "exit_code"),
    [
        (Kind.USAGE, 2),
        (Kind.CONFIGURATION, 3),
        (Kind.UNREADABLE_INPUT, 4),
        (Kind.UPSTREAM, 5),
        (Kind.STATE, 5),
        (Kind.INTERNAL, 1),
    ],
)
def test_documented_exit_codes(kind: Kind, exit_code: int) -> None:
    assert AdapterError("x", kind=kind).exit_code == exit_code


def test_operation_outcome_names_the_path_when_known() -> None:
    error = errors.UnprocessableError(
        "value is not a number",
        where="entry[3]",
        expression=["Bundle.entry[3].resource.valueQuantity.value"],
    )
    outcome = error.operation_outcome()
    assert error.http_status == 422
    assert outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": "entry[3]: value is not a number",
                "expression": ["Bundle.entry[3].resource.valueQuantity.value"],
            }
        ],
    }
    assert "expression" not in operation_outcome(Kind.NOT_FOUND, "no such path")["issue"][0]


def test_one_line_has_no_newline_and_a_label() -> None:
    line = errors.ConfigurationError("bad\nvalue", where="watch.toml").one_line()
    assert line == "rems-adapter: configuration error: watch.toml: bad value"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (MappingError("units.toml", "[units]", "bad"), Kind.CONFIGURATION),
        (WatchConfigError("fhir.base", "missing"), Kind.CONFIGURATION),
        (RulesError("rules.toml: bad"), Kind.CONFIGURATION),
        (EhrConfigurationError("bad key"), Kind.CONFIGURATION),
        (RemsConfigurationError("bad url"), Kind.CONFIGURATION),
        (UnreadableInput("no such file: x.ndjson"), Kind.UNREADABLE_INPUT),
        (SeedError("seed.json: not JSON"), Kind.UNREADABLE_INPUT),
        (StoreError("db: not a database"), Kind.STATE),
        (
            FhirNotFoundError("gone", method="GET", url="http://x/fhir/P/1", status=404),
            Kind.UPSTREAM,
        ),
        (
            FhirTransientError("down", attempts=3, method="GET", url="http://x/fhir?name=secret"),
            Kind.UPSTREAM,
        ),
        (RemsTransientError("down", attempts=2, method="POST", path="/psf"), Kind.UPSTREAM),
        (
            RemsRejection(
                "no", kind="psf-rejected", reasons=["x"], method="POST", path="/psf", status=422
            ),
            Kind.UPSTREAM,
        ),
    ],
)
def test_existing_error_types_are_in_the_tree(error: AdapterError, kind: Kind) -> None:
    assert isinstance(error, AdapterError)
    assert error.kind is kind
    assert "\n" not in error.one_line()


def test_connector_errors_keep_their_own_fields() -> None:
    error = FhirTransientError("down", attempts=3, method="GET", url="http://x/fhir?name=secret")
    assert error.message == "down"
    assert "secret" not in str(error)
    rejection = RemsRejection(
        "refused", kind="psf-rejected", reasons=["a", "b"], method="POST", path="/psf", status=422
    )
    assert rejection.rems_error == "psf-rejected"
    assert rejection.message == "refused (psf-rejected: a, b)"
    assert isinstance(UnreadableInput("x"), OSError)


def test_unexpected_errors_become_internal_without_their_text() -> None:
    wrapped = errors.as_adapter_error(KeyError("Patient Jane Doe"))
    assert wrapped.kind is Kind.INTERNAL
    assert "Jane" not in str(wrapped)
    assert wrapped.exit_code == 1
