"""Fixtures: the real REMS service on 127.0.0.1 (waitress in a thread) with an injected clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.rems_service import BackgroundServer, make_app
from adapter.rems_service.config import load_rules

#: The program rules with `asOf` accepted: a test-only setting (off by default).
TEST_RULES = replace(load_rules(), accept_as_of=True)

PRESCRIBER_NPI = "1234567893"  # valid NPI check digit
OTHER_PRESCRIBER_NPI = "1245319599"
DESIGNEE_ID = "designee-1"
OUTPATIENT = "pharm-out"
INPATIENT = "pharm-in"
DUAL = "pharm-dual"
START = datetime(2021, 12, 1, 12, 0, tzinfo=UTC)
HTTP_TIMEOUT_SECONDS = 10


@dataclass
class FakeClock:
    """The service's clock, moved by the tests."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: int) -> None:
        self.now += timedelta(days=days)


def seed_document() -> dict[str, Any]:
    assessment = {"passed": True, "completedOn": "2021-11-01"}
    return {
        "prescribers": [
            {"npi": PRESCRIBER_NPI, "knowledgeAssessment": assessment},
            {"npi": OTHER_PRESCRIBER_NPI, "knowledgeAssessment": assessment},
        ],
        "designees": [{"designeeId": DESIGNEE_ID, "prescriberNpi": PRESCRIBER_NPI}],
        "pharmacies": [
            {"pharmacyId": OUTPATIENT, "setting": "outpatient"},
            {"pharmacyId": INPATIENT, "setting": "inpatient"},
            {"pharmacyId": DUAL, "setting": "inpatient"},
            {"pharmacyId": DUAL, "setting": "outpatient"},
        ],
    }


@dataclass
class RemsClient:
    """Plain requests against the running service; keeps the test bodies short."""

    base_url: str
    clock: FakeClock
    session: requests.Session = field(default_factory=requests.Session)

    def post(
        self, path: str, body: dict[str, Any], key: str | None = None, **params: str
    ) -> requests.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.session.post(
            self.base_url + path,
            json=body,
            headers=headers,
            params=params,
            timeout=HTTP_TIMEOUT_SECONDS,
        )

    def get(self, path: str, **params: str) -> requests.Response:
        return self.session.get(self.base_url + path, params=params, timeout=HTTP_TIMEOUT_SECONDS)

    def enroll(self, **overrides: Any) -> str:
        response = self.post("/patients/enrollments", enrollment_body(self.clock.now, **overrides))
        assert response.status_code == 201, response.text
        return str(response.json()["remsId"])

    def submit_psf(self, rems_id: str, **overrides: Any) -> requests.Response:
        return self.post("/psfs", psf_body(self.clock.now, rems_id=rems_id, **overrides))

    def rda(self, rems_id: str, **overrides: Any) -> dict[str, Any]:
        response = self.post(
            "/dispense-authorizations", rda_body(self.clock.now, rems_id, **overrides)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def override(self, rems_id: str, key: str | None = None, **overrides: Any) -> requests.Response:
        return self.post("/overrides", override_body(self.clock.now, rems_id, **overrides), key=key)

    def status(self, rems_id: str) -> dict[str, Any]:
        response = self.get(f"/patients/{rems_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def identity(name: str = "Doe", **overrides: Any) -> dict[str, Any]:
    return {
        "name": {"family": name, "given": "Alex"},
        "birthDate": "1980-05-17",
        "sex": "female",
        "postalCode": "02139",
        **overrides,
    }


def enrollment_body(now: datetime, **overrides: Any) -> dict[str, Any]:
    baseline_days_ago = overrides.pop("baseline_days_ago", 2)
    value = overrides.pop("anc", 2100)
    body: dict[str, Any] = {
        "patient": identity(overrides.pop("name", "Doe")),
        "prescriberNpi": PRESCRIBER_NPI,
        "signer": {"role": "prescriber", "id": PRESCRIBER_NPI},
        "ancResults": [
            {"valuePerUL": value, "collected": iso(now - timedelta(days=baseline_days_ago))}
        ],
        "designations": {"ben": False, "hospice": False},
    }
    body.update(overrides)
    return body


def psf_body(now: datetime, rems_id: str, **overrides: Any) -> dict[str, Any]:
    value = overrides.pop("anc", 2100)
    body: dict[str, Any] = {
        "patient": identity(remsId=rems_id),
        "prescriberNpi": PRESCRIBER_NPI,
        "signer": {"role": "designee", "id": DESIGNEE_ID},
        "reportingPeriod": now.strftime("%Y-%m"),
        "ancResults": [{"valuePerUL": value, "collected": iso(now - timedelta(days=1))}],
        "monitoringFrequency": "weekly",
        "treatmentStatus": "continue",
        "designations": {"ben": False, "hospice": False},
        "labsMissed": False,
    }
    body.update(overrides)
    return body


def rda_body(now: datetime, rems_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pharmacyId": OUTPATIENT,
        "remsId": rems_id,
        "dispenseId": "disp-1",
        "daysSupply": 7,
        "setting": "outpatient",
        "requestedAt": iso(now),
    }
    body.update(overrides)
    return body


def override_body(now: datetime, rems_id: str, **overrides: Any) -> dict[str, Any]:
    body = rda_body(now, rems_id)
    body.update(
        {
            "dispenseRationale": "PSF not yet filed; ANC drawn today is normal",
            "prescriberNpi": PRESCRIBER_NPI,
            "currentAnc": {"valuePerUL": 2000, "collected": iso(now)},
        }
    )
    body.update(overrides)
    return body


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seed_path(tmp_path: Path) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed_document()), encoding="utf-8")
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "rems.sqlite"


@pytest.fixture
def rems(db_path: Path, seed_path: Path, clock: FakeClock) -> Iterator[RemsClient]:
    with BackgroundServer(
        make_app(db_path, seed_path, clock=clock, insecure_admin=True, rules=TEST_RULES)
    ) as base_url:
        yield RemsClient(base_url, clock)
