"""Inbound security: bearer token (constant time), loopback-only without one, size and rate
limits; every refusal an OperationOutcome."""

from __future__ import annotations

import json

import pytest
import requests

from adapter.cli import main
from adapter.serve.app import HttpSettings
from tests.serve.kit import lab_result

pytestmark = pytest.mark.integration


def test_a_wrong_or_missing_token_is_refused_and_the_probes_stay_open(serve_factory):
    serve = serve_factory(http=HttpSettings(token="s3cret-token"))
    result = lab_result("Patient/x", 1200)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        answer = serve.push(result, **headers)
        assert answer.status_code == 401
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "login"
        assert "s3cret" not in answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert serve.store is not None and serve.store.inbox_depth() == 0
    assert serve.push(result, Authorization="Bearer s3cret-token").status_code == 202
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(f"{serve.url}{probe}", timeout=10).status_code == 200


def test_a_body_over_the_limit_gets_413(serve_factory):
    serve = serve_factory(http=HttpSettings(max_body_bytes=4096))
    result = lab_result("Patient/x", 1200)
    result["note"] = [{"text": "x" * 5000}]
    answer = serve.push(result)
    assert answer.status_code == 413
    assert answer.json()["issue"][0]["code"] == "too-costly"
    chunked = requests.post(
        f"{serve.url}/fhir/Observation",
        data=iter([json.dumps(result).encode()]),  # no Content-Length: streamed
        headers={"Content-Type": "application/fhir+json"},
        timeout=10,
    )
    assert chunked.status_code == 413


def test_too_many_requests_get_429_with_retry_after(serve_factory):
    serve = serve_factory(http=HttpSettings(rate_per_second=0.5, rate_burst=2))
    answers = [serve.push(lab_result("Patient/x", 1200)) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    assert answers[2].status_code == 429
    assert answers[2].json()["issue"][0]["code"] == "throttled"
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert requests.get(f"{serve.url}/healthz", timeout=10).status_code == 200


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REMS_ADAPTER_INBOUND_TOKEN", raising=False)
    argv = [
        "serve",
        "--fhir-base",
        "http://127.0.0.1:9/fhir",
        "--listen",
        "0.0.0.0:0",
        "--state",
        str(tmp_path / "s.sqlite"),
        "--no-poll",
    ]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "REMS_ADAPTER_INBOUND_TOKEN" in err and "--listen" in err
    assert "Traceback" not in err
