"""Security of the reference REMS service: admin writes refused without a token by default,
tokens enforced on every endpoint when configured (probes excepted), Allow on 405, the
contract and metrics served, an access log without patient data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapter.rems_service import make_app
from adapter.rems_service.app import OPEN_PATHS

from .conftest import FakeClock, enrollment_body

PHARMACY = {"pharmacyId": "p-sec", "setting": "outpatient"}
PROBES = sorted(OPEN_PATHS)


def _client(db: Path, **options: Any) -> tuple[Flask, FlaskClient]:
    app = make_app(db, clock=FakeClock(), **options)
    return app, app.test_client()


def _every_route(app: Flask) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app serves."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<path:rems_id>", "RP12345678").replace("<name>", "error")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def test_admin_writes_are_refused_without_a_token_by_default(db_path: Path) -> None:
    _, client = _client(db_path)
    refused = client.post("/admin/pharmacies", json=PHARMACY)
    assert refused.status_code == 401
    assert refused.json is not None and refused.json["reasons"] == ["admin-token-required"]
    assert "--insecure-admin" in refused.json["message"]
    # the rest of the service works without a token
    assert client.get("/health").status_code == 200
    assert client.post("/patients/enrollments", json=enrollment_body(FakeClock().now)).status_code


def test_insecure_admin_allows_admin_writes_without_a_token(db_path: Path) -> None:
    _, client = _client(db_path, insecure_admin=True)
    assert client.post("/admin/pharmacies", json=PHARMACY).status_code == 201


def test_the_admin_token_guards_admin_and_only_the_admin_token_opens_it(db_path: Path) -> None:
    _, client = _client(db_path, admin_token="adm1n", token="t0ken")
    for presented in (None, "Bearer t0ken", "Bearer adm1n-not", "adm1n", "Bearer ADM1N"):
        headers = {"Authorization": presented} if presented else {}
        answer = client.post("/admin/pharmacies", json=PHARMACY, headers=headers)
        assert answer.status_code == 401, presented
    ok = client.post("/admin/pharmacies", json=PHARMACY, headers={"Authorization": "Bearer adm1n"})
    assert ok.status_code == 201


def test_the_service_token_is_enforced_on_every_endpoint_but_the_probes(db_path: Path) -> None:
    app, client = _client(db_path, admin_token="adm1n", token="t0ken")
    routes = _every_route(app)
    assert {path for _, path in routes} >= {
        "/patients/enrollments", "/psfs", "/dispense-authorizations", "/overrides",
        "/patients/RP12345678", "/openapi.yaml", "/error.schema.json", *PROBES,
    }  # fmt: skip
    for method, path in routes:
        if path.startswith("/admin/"):
            continue
        bare = client.open(path, method=method, json={})
        wrong = client.open(path, method=method, json={}, headers={"Authorization": "Bearer x"})
        right = client.open(path, method=method, json={}, headers={"Authorization": "Bearer t0ken"})
        if path in OPEN_PATHS:
            assert bare.status_code == 200, path
            continue
        for answer in (bare, wrong):
            assert answer.status_code == 401, (method, path)
            assert answer.json is not None and answer.json["reasons"] == ["token-required"]
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert right.status_code != 401, (method, path)


def test_without_a_service_token_only_admin_is_guarded(db_path: Path) -> None:
    _, client = _client(db_path, admin_token="adm1n")
    assert client.get("/openapi.yaml").status_code == 200
    assert client.post("/psfs", json={}).status_code == 400  # schema, not the token


def test_405_answers_carry_allow(db_path: Path) -> None:
    _, client = _client(db_path)
    answer = client.get("/psfs")
    assert answer.status_code == 405
    assert set(answer.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert answer.json is not None and answer.json["error"] == "method-not-allowed"
    assert "GET" in client.post("/health").headers["Allow"]


def test_contract_healthz_and_metrics_are_served(db_path: Path) -> None:
    _, client = _client(db_path)
    spec = client.get("/openapi.yaml")
    assert spec.status_code == 200 and spec.data.startswith(b"openapi: 3.1.0")
    schema = client.get("/error.schema.json")
    assert schema.status_code == 200 and schema.json is not None and "$schema" in schema.json
    assert client.get("/nothing.schema.json").status_code == 404
    assert client.get("/healthz").json == {"status": "ok"}
    client.get("/patients/RP12345678")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    text = metrics.data.decode()
    assert 'route="/patients/<path:rems_id>"' in text
    assert "RP12345678" not in text
    assert all(
        line.startswith(("#", "rems_adapter_")) for line in text.splitlines() if line.strip()
    )


def test_the_access_log_names_routes_not_patients(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, client = _client(db_path)
    with caplog.at_level(logging.INFO, logger="adapter.rems_service.access"):
        client.get("/patients/RP12345678")
        client.post("/patients/enrollments", json=enrollment_body(FakeClock().now))
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter.rems_service.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /patients/<path:rems_id> 404 ")
    assert lines[1].startswith("POST /patients/enrollments ")
    joined = "\n".join(lines)
    assert "RP12345678" not in joined and "Doe" not in joined and "asOf" not in joined
