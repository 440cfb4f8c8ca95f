"""The REMS client's error handling with `responses` (no network): retries, Retry-After,
timeouts, reason codes, unusable answers, and the Idempotency-Key it derives."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from responses import registries

from adapter.rems import (
    RemsClient,
    RemsConfigurationError,
    RemsRejection,
    RemsRequestInvalid,
    RemsResponseError,
    RemsTimeoutError,
    RemsTransientError,
    RetryPolicy,
)
from adapter.rems.client import idempotency_key

BASE = "http://rems.test"
RDA_URL = f"{BASE}/dispense-authorizations"
AS_OF = datetime(2021, 12, 1, 12, 0, tzinfo=UTC)
AS_OF_WIRE = "2021-12-01T12:00:00Z"


def rda_request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pharmacyId": "pharm-out",
        "remsId": "RP00000001",
        "dispenseId": "md-1",
        "daysSupply": 7,
        "setting": "outpatient",
        "requestedAt": AS_OF_WIRE,
    }
    body.update(changes)
    return body


def granted(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dispenseId": "md-1",
        "remsId": "RP00000001",
        "pharmacyId": "pharm-out",
        "granted": True,
        "authorizationNumber": "RDA-20211201-000001",
        "reasons": [],
        "override": False,
        "decidedAt": "2021-12-01T12:00:00.000000Z",
    }
    body.update(changes)
    return body


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sleeps: Sleeps) -> RemsClient:
    policy = RetryPolicy(max_attempts=3, max_total_seconds=60, backoff_initial=0.5, backoff_max=2)
    return RemsClient(BASE, retry=policy, sleep=sleeps, clock=lambda: 1_000_000.0)


@responses.activate
def test_grant_carries_the_number_and_the_request_its_derived_key_and_clock(
    client: RemsClient,
) -> None:
    responses.add(responses.POST, RDA_URL, json=granted(), status=200)

    decision = client.request_dispense_authorization(rda_request(), AS_OF)

    assert (decision.granted, decision.authorization_number) == (True, "RDA-20211201-000001")
    [call] = responses.calls
    assert call.request.url == f"{RDA_URL}?asOf=2021-12-01T12%3A00%3A00Z"
    expected_key = idempotency_key("/dispense-authorizations", rda_request(), AS_OF_WIRE)
    assert call.request.headers["Idempotency-Key"] == expected_key
    assert json.loads(call.request.body or b"") == rda_request()


def test_the_key_follows_the_content_and_the_clock_only() -> None:
    key = idempotency_key("/psfs", {"a": 1, "b": [1, 2]}, AS_OF_WIRE)
    assert key == idempotency_key("/psfs", {"b": [1, 2], "a": 1}, AS_OF_WIRE)  # key order
    assert key != idempotency_key("/psfs", {"a": 2, "b": [1, 2]}, AS_OF_WIRE)
    assert key != idempotency_key("/psfs", {"a": 1, "b": [1, 2]}, "2021-12-02T12:00:00Z")
    assert key != idempotency_key("/overrides", {"a": 1, "b": [1, 2]}, AS_OF_WIRE)
    assert len(key) <= 255 and key.isascii() and " " not in key


@responses.activate(registry=registries.OrderedRegistry)
def test_503_with_retry_after_is_honoured_then_the_same_key_is_sent_again(
    client: RemsClient, sleeps: Sleeps
) -> None:
    responses.add(responses.POST, RDA_URL, status=503, headers={"Retry-After": "7"}, body="busy")
    responses.add(responses.POST, RDA_URL, json=granted(), status=200)

    decision = client.request_dispense_authorization(rda_request(), AS_OF)

    assert decision.granted
    assert sleeps == [7.0]
    keys = {call.request.headers["Idempotency-Key"] for call in responses.calls}
    assert len(responses.calls) == 2 and len(keys) == 1


@responses.activate(registry=registries.OrderedRegistry)
def test_429_with_an_http_date_retry_after(client: RemsClient, sleeps: Sleeps) -> None:
    # clock() is 1_000_000 s after the epoch; this date is 30 s later.
    responses.add(
        responses.POST,
        RDA_URL,
        status=429,
        headers={"Retry-After": "Mon, 12 Jan 1970 13:47:10 GMT"},
    )
    responses.add(responses.POST, RDA_URL, json=granted(), status=200)

    client.request_dispense_authorization(rda_request(), AS_OF)

    assert sleeps == [30.0]


@responses.activate
def test_still_unavailable_after_the_bounded_attempts(client: RemsClient, sleeps: Sleeps) -> None:
    responses.add(responses.POST, RDA_URL, status=503, headers={"Retry-After": "2"})

    with pytest.raises(RemsTransientError) as caught:
        client.request_dispense_authorization(rda_request(), AS_OF)

    assert (caught.value.status, caught.value.attempts, caught.value.retry_after) == (503, 3, 2.0)
    assert len(responses.calls) == 3 and sleeps == [2.0, 2.0]


@responses.activate
def test_a_retry_after_beyond_the_time_budget_is_not_slept(sleeps: Sleeps) -> None:
    client = RemsClient(BASE, retry=RetryPolicy(max_attempts=5, max_total_seconds=10), sleep=sleeps)
    responses.add(responses.POST, RDA_URL, status=503, headers={"Retry-After": "3600"})

    with pytest.raises(RemsTransientError):
        client.request_dispense_authorization(rda_request(), AS_OF)

    assert sleeps == [] and len(responses.calls) == 1


@responses.activate
def test_timeouts_on_every_attempt(client: RemsClient, sleeps: Sleeps) -> None:
    responses.add(responses.POST, RDA_URL, body=requests.exceptions.ReadTimeout("slow"))

    with pytest.raises(RemsTimeoutError) as caught:
        client.request_dispense_authorization(rda_request(), AS_OF)

    assert caught.value.attempts == 3 and len(sleeps) == 2
    assert all(0 <= s <= 2 for s in sleeps)  # jittered exponential backoff, capped


@responses.activate
def test_unreachable_is_transient_not_a_timeout(client: RemsClient) -> None:
    responses.add(responses.POST, RDA_URL, body=requests.exceptions.ConnectionError("refused"))

    with pytest.raises(RemsTransientError) as caught:
        client.request_dispense_authorization(rda_request(), AS_OF)

    assert not isinstance(caught.value, RemsTimeoutError)
    assert "could not connect after 3 attempt(s)" in str(caught.value)


@responses.activate
def test_4xx_reason_codes_become_a_rejection_without_retry(client: RemsClient) -> None:
    responses.add(
        responses.POST,
        f"{BASE}/psfs",
        status=422,
        json={
            "error": "psf-rejected",
            "reasons": ["rationale-required", "signer-not-permitted"],
            "message": "PSF not accepted",
        },
    )

    with pytest.raises(RemsRejection) as caught:
        client.submit_psf(psf_form(), AS_OF)

    assert caught.value.rems_error == "psf-rejected"
    assert caught.value.reasons == ("rationale-required", "signer-not-permitted")
    assert caught.value.status == 422 and len(responses.calls) == 1


@responses.activate
def test_a_4xx_without_a_contract_error_body_is_a_response_error(client: RemsClient) -> None:
    responses.add(responses.POST, RDA_URL, status=400, json={"detail": "bad"})

    with pytest.raises(RemsResponseError, match=r"error\.schema\.json"):
        client.request_dispense_authorization(rda_request(), AS_OF)


@responses.activate
def test_non_json_body(client: RemsClient) -> None:
    responses.add(
        responses.POST, RDA_URL, status=200, body="<html>ok</html>", content_type="text/html"
    )

    with pytest.raises(RemsResponseError, match="not JSON"):
        client.request_dispense_authorization(rda_request(), AS_OF)


@pytest.mark.parametrize(
    "answer",
    [
        granted(reasons=["psf-overdue"]),  # a grant never carries reasons
        granted(granted=False, authorizationNumber="RDA-20211201-000001", reasons=[]),
        granted(authorizationNumber="12345"),
        {"granted": True},
    ],
)
@responses.activate
def test_an_answer_outside_the_contract_is_not_trusted(
    client: RemsClient, answer: dict[str, Any]
) -> None:
    responses.add(responses.POST, RDA_URL, status=200, json=answer)

    with pytest.raises(RemsResponseError, match="dispense-authorization-response"):
        client.request_dispense_authorization(rda_request(), AS_OF)


@responses.activate
def test_500_is_a_defect_not_retried(client: RemsClient) -> None:
    responses.add(
        responses.POST,
        RDA_URL,
        status=500,
        json={"error": "internal-error", "reasons": ["internal-error"], "message": "x"},
    )

    with pytest.raises(RemsResponseError) as caught:
        client.request_dispense_authorization(rda_request(), AS_OF)

    assert caught.value.status == 500 and len(responses.calls) == 1


@responses.activate
def test_an_invalid_request_is_not_sent_and_its_values_are_not_quoted(client: RemsClient) -> None:
    form = psf_form()
    form["patient"]["birthDate"] = "17/05/1980"

    with pytest.raises(RemsRequestInvalid) as caught:
        client.submit_psf(form, AS_OF)

    assert len(responses.calls) == 0
    assert "$.patient.birthDate" in str(caught.value)
    assert "1980" not in str(caught.value)


@responses.activate
def test_unknown_patient_status_is_none(client: RemsClient) -> None:
    responses.add(
        responses.GET,
        f"{BASE}/patients/RP00000009",
        status=404,
        json={"error": "not-found", "reasons": ["patient-not-enrolled"], "message": "no"},
    )
    assert client.patient_status("RP00000009", AS_OF) is None


def test_settings_are_checked() -> None:
    with pytest.raises(RemsConfigurationError):
        RemsClient("rems.test")
    with pytest.raises(RemsConfigurationError):
        RemsClient("http://rems.test/?x=1")
    with pytest.raises(RemsConfigurationError):
        RetryPolicy(max_attempts=0)
    client = RemsClient(BASE)
    with pytest.raises(ValueError, match="timezone-aware"):
        client.request_dispense_authorization(rda_request(), datetime(2021, 12, 1))


def psf_form() -> dict[str, Any]:
    return {
        "patient": {
            "name": {"family": "Doe", "given": "Alex"},
            "birthDate": "1980-05-17",
            "sex": "female",
            "postalCode": "02139",
            "remsId": "RP00000001",
        },
        "prescriberNpi": "1234567893",
        "signer": {"role": "designee", "id": "rems-adapter"},
        "reportingPeriod": "2021-12",
        "ancResults": [{"valuePerUL": 2100, "collected": "2021-11-29T08:30:00Z"}],
        "monitoringFrequency": "weekly",
        "treatmentStatus": "continue",
        "designations": {"ben": False, "hospice": False},
        "labsMissed": False,
    }
