"""FhirClient.batch, the write path of the watcher, with a mocked server (`responses`)."""

from __future__ import annotations

import json

import pytest
import responses

from adapter.ehr import FhirClient, FhirResponseError, FhirTransientError, RetryPolicy, Transport

BASE = "https://ehr.example.org/fhir"


def client() -> FhirClient:
    return FhirClient(
        BASE, transport=Transport(retry=RetryPolicy(max_attempts=2), sleep=lambda _: None)
    )


ENTRY = {"resource": {"resourceType": "DetectedIssue"}, "request": {"method": "POST", "url": "X"}}


@responses.activate
def test_posts_a_batch_bundle_and_returns_the_answers_in_order() -> None:
    answers = [{"response": {"status": "201 Created"}}, {"response": {"status": "412"}}]
    responses.post(
        BASE, json={"resourceType": "Bundle", "type": "batch-response", "entry": answers}
    )

    assert client().batch([ENTRY, ENTRY]) == answers

    sent = responses.calls[0].request
    body = json.loads(sent.body or b"{}")
    assert (body["resourceType"], body["type"], len(body["entry"])) == ("Bundle", "batch", 2)
    assert sent.headers["Prefer"] == "return=representation"
    assert sent.headers["Content-Type"] == "application/fhir+json"


@responses.activate
def test_a_batch_is_retried_on_503_then_fails_as_transient() -> None:
    responses.post(BASE, status=503, headers={"Retry-After": "0"})
    with pytest.raises(FhirTransientError):
        client().batch([ENTRY])
    assert len(responses.calls) == 2  # conditional writes only: safe to send again


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "transaction-response", "entry": [{}]},
        {"resourceType": "Bundle", "type": "batch-response", "entry": []},
        {"resourceType": "OperationOutcome", "issue": []},
    ],
)
@responses.activate
def test_an_answer_that_does_not_match_the_request_is_an_error(body: dict[str, object]) -> None:
    responses.post(BASE, json=body)
    with pytest.raises(FhirResponseError):
        client().batch([ENTRY])
