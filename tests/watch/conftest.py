"""Watch test helpers: a fresh sekmet-fhir per test, seeding, a request-counting transport."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.ehr import FhirClient, RetryPolicy, Transport
from adapter.mappings_loader import load_reference_data
from adapter.watch.config import EvaluationSettings, WatchSettings
from adapter.watch.state import StateStore
from adapter.watch.watcher import Watcher
from adapter.watch.writeback import CONDITIONAL, EhrFeatures
from tests.fhir_server import SekmetServer, start_sekmet
from tests.watch.seeding import History, bundle, created_ids

AS_OF = datetime(2025, 8, 12, 12, 0, tzinfo=UTC)
FINDING_SYSTEM = "https://rems-adapter.github.io/fhir/CodeSystem/finding"
DECISION_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"


class CountingTransport(Transport):
    """Counts every HTTP request by method (retries included: each attempt is a request)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(retry=RetryPolicy(max_attempts=2, max_total_seconds=5), **kwargs)
        self.counts: Counter[str] = Counter()

    def send(self, method: str, url: str, **kwargs: Any) -> tuple[requests.Response, int]:
        response, attempts = super().send(method, url, **kwargs)
        self.counts[method] += attempts
        return response, attempts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()


@pytest.fixture
def stock_server() -> Iterator[SekmetServer]:
    """A fresh STOCK sekmet-fhir (no search-parameter patch: no DetectedIssue search at all)."""
    server = start_sekmet(
        workdir=Path(tempfile.mkdtemp(prefix="sekmet-stock-")), search_parameters=False
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def watch_server() -> Iterator[SekmetServer]:
    """A fresh, empty server per test: the watcher polls everything, so tests stay apart."""
    server = start_sekmet(workdir=Path(tempfile.mkdtemp(prefix="sekmet-watch-")))
    try:
        yield server
    finally:
        server.stop()


def seed(server: SekmetServer, histories: list[History]) -> dict[str, str]:
    """POST the histories as one transaction; urn -> "Type/id"."""
    request = bundle(histories)
    response = requests.post(server.base_url, json=request, timeout=60)
    assert response.status_code == 200, response.text[:500]
    return created_ids(response.json(), request)


class Harness:
    """A watcher on a state file, with its own counting transport (a restart = a new Harness)."""

    def __init__(
        self,
        server: SekmetServer,
        state: Path,
        *,
        discover: bool = False,
        features: EhrFeatures | None = None,
        reconcile_all: bool = False,
        **settings: Any,
    ) -> None:
        """`discover`: read the CapabilityStatement and create the author Device as `watch`
        does; otherwise conditional creates on the patched server, no extra requests."""
        self.transport = CountingTransport()
        self.client = FhirClient(server.base_url, transport=self.transport)
        self.store = StateStore(state)
        watch = replace(WatchSettings(state=state, overlap_seconds=120), **settings)
        if not discover and features is None:
            features = EhrFeatures(CONDITIONAL, True)
        self.watcher = Watcher(
            self.client,
            self.store,
            load_reference_data(),
            watch,
            EvaluationSettings(as_of=AS_OF),
            features=features,
            author=None if discover else "Device/rems-adapter",
            reconcile_all=reconcile_all,
        )

    def cycle(self) -> Any:
        return self.watcher.cycle()

    def close(self) -> None:
        self.store.close()
        self.client.close()


def finding(issue: dict[str, Any]) -> str:
    return next(c["code"] for c in issue["code"]["coding"] if c["system"] == FINDING_SYSTEM)


def decisions(server: SekmetServer, patient: str) -> list[dict[str, Any]]:
    """Our DetectedIssues for the patient on the server, oldest first."""
    response = requests.get(
        f"{server.base_url}/DetectedIssue",
        params={"patient": patient, "identifier": f"{DECISION_SYSTEM}|", "_count": "200"},
        headers={"Prefer": "handling=strict"},
        timeout=10,
    )
    assert response.status_code == 200, response.text[:300]
    return [e["resource"] for e in response.json().get("entry", [])]


def by_status(server: SekmetServer, patient: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for issue in decisions(server, patient):
        out.setdefault(issue["status"], []).append(finding(issue))
    return {status: sorted(codes) for status, codes in out.items()}


def read(server: SekmetServer, ref: str) -> dict[str, Any]:
    response = requests.get(f"{server.base_url}/{ref}", timeout=10)
    assert response.status_code == 200, response.text[:300]
    body: dict[str, Any] = response.json()
    return body


def put(server: SekmetServer, resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{server.base_url}/{resource['resourceType']}/{resource['id']}"
    response = requests.put(url, json=resource, timeout=10)
    assert response.status_code == 200, response.text[:300]
    body: dict[str, Any] = response.json()
    return body
