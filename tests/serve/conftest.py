"""Service tests: stock sekmet-fhir 0.1.1 (no search-parameter patch) and an in-process serve.

`stock_server` is a fresh, empty server per test module (its own database). `Serve` assembles a
`Service` on a SQLite state file against it, the way `rems-adapter serve` does, on a free port.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.decide import Backend, LocalBackend
from adapter.ehr import FhirClient, RetryPolicy, Timeouts, Transport
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import PipelineSettings, WorkerSettings
from adapter.pipeline import RetryPolicy as OutboxRetry
from adapter.serve.app import HttpSettings
from adapter.serve.extensions import Extension
from adapter.serve.service import Service
from adapter.store import Store
from adapter.store.sqlite import SqliteStore
from adapter.watch.writeback import ensure_author_device
from tests.fhir_server import SekmetServer, ensure_sekmet


@dataclass
class StockSekmet(SekmetServer):
    """sekmet-fhir as shipped: no search parameters added (DetectedIssue has none)."""

    search_parameters: bool = False


def start_stock_sekmet(workdir: Path | None = None) -> StockSekmet:
    server = StockSekmet(
        python=ensure_sekmet(), workdir=workdir or Path(tempfile.mkdtemp(prefix="sekmet-stock-"))
    )
    return server.start()


@pytest.fixture
def stock_server() -> Iterator[StockSekmet]:
    server = start_stock_sekmet()
    try:
        yield server
    finally:
        server.stop()


def fast_client(base_url: str, read_timeout: float = 5.0) -> FhirClient:
    """A client that gives up quickly (the outbox retries, not the client)."""
    transport = Transport(
        timeouts=Timeouts(2.0, read_timeout),
        retry=RetryPolicy(max_attempts=1, max_total_seconds=5),
    )
    return FhirClient(base_url, transport=transport)


@dataclass
class Serve:
    """An in-process serve (a restart = stop() then a new Serve on the same state file)."""

    ehr_url: str
    state: Path
    backend: Backend = field(default_factory=LocalBackend)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    retry: OutboxRetry = field(
        default_factory=lambda: OutboxRetry(first_seconds=0.05, max_seconds=0.5, max_attempts=200)
    )
    read_timeout: float = 5.0
    #: serve's extensions (the command adds them from the settings; tests name them)
    extensions: list[Extension] = field(default_factory=list)
    service: Service | None = None
    store: Store | None = None

    def start(self) -> Serve:
        self.store = SqliteStore(self.state)
        self.store.bind_ehr(self.ehr_url)
        device = fast_client(self.ehr_url)
        try:
            ensure_author_device(device, "test")
        except Exception:
            pass  # the EHR may be down on purpose; the Device is made when it is back
        finally:
            device.close()
        worker = replace(self.worker, retry_seconds=0.05, retry_max_seconds=0.5)
        self.service = Service(
            self.store,
            load_reference_data(),
            self.backend,
            ehr=lambda: fast_client(self.ehr_url, self.read_timeout),
            pipeline=PipelineSettings(worker=worker, retry=self.retry),
            http=self.http,
            extensions=self.extensions,
        )
        self.service.start()
        return self

    @property
    def url(self) -> str:
        assert self.service is not None
        return self.service.url

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def metric(self, name: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if not line.startswith("#") and head == name:
                return float(value)
        return 0.0

    def push(self, resource: dict[str, Any], **headers: str) -> requests.Response:
        return requests.post(
            f"{self.url}/fhir/Observation",
            data=json.dumps(resource),
            headers={"Content-Type": "application/fhir+json", **headers},
            timeout=30,
        )

    def settle(self, timeout: float = 60.0) -> None:
        """Wait (bounded) until the inbox and outbox are empty."""
        import time

        assert self.store is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.inbox_depth() == 0 and self.store.outbox_depth() == 0:
                return
            time.sleep(0.05)
        raise AssertionError(
            f"not settled in {timeout}s: inbox {self.store.inbox_depth()}, "
            f"outbox {self.store.outbox_depth()}, dead {self.store.dead_letters()}"
        )


@pytest.fixture
def serve_factory(stock_server: StockSekmet, tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def make(**kwargs: Any) -> Serve:
        kwargs.setdefault("ehr_url", stock_server.base_url)
        kwargs.setdefault("state", tmp_path / "state.sqlite")
        serve = Serve(**kwargs).start()
        started.append(serve)
        return serve

    yield make
    for serve in started:
        serve.stop()
