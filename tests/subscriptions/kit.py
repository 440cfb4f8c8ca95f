"""Helpers of the notification tests: a stock sekmet that gives up on deliveries quickly, and an
in-process `serve` with the Subscriptions extension (polling off: no poll source runs)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from adapter.decide import LocalBackend
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import PipelineSettings, WorkerSettings
from adapter.pipeline import RetryPolicy as OutboxRetry
from adapter.pipeline.notify import NotifyConfig
from adapter.serve.notify import Notifications
from adapter.serve.service import Service
from adapter.store.sqlite import SqliteStore
from adapter.subscriptions.resources import SubscriptionPlan, TopicPlan
from adapter.watch.writeback import ensure_author_device
from tests.fhir_server import free_port
from tests.serve.conftest import fast_client

ANC = "Observation?code=http://loinc.org|751-8"
SECRET_HEADER = "X-Rems-Adapter-Notify-Secret"
SECRET = "notify-secret-for-tests"
TOPIC = TopicPlan(
    url="https://rems-adapter.github.io/fhir/SubscriptionTopic/observation",
    resource_type="Observation",
    basic_id="rems-adapter-observation-topic",
)


@dataclass
class NotifyServe:
    """serve with only the notify source (and the worker, the outbox), on a free port."""

    ehr_url: str
    state: Path
    plans: Callable[[str], tuple[SubscriptionPlan, ...]]
    topics: tuple[TopicPlan, ...] = ()
    endpoint_base: str | None = None  # what the EHR calls (a proxy); default: serve itself
    maintain_seconds: float = 1.0
    fallback_seconds: float = 1.0
    gap_grace_seconds: float = 0.5
    secret: tuple[str, str] | None = (SECRET_HEADER, SECRET)
    port: int = field(default_factory=free_port)
    service: Service | None = None
    extension: Notifications | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NotifyServe:
        store = SqliteStore(self.state)
        store.bind_ehr(self.ehr_url)
        device = fast_client(self.ehr_url)
        try:
            ensure_author_device(device, "test")
        finally:
            device.close()
        endpoint = f"{self.endpoint_base or self.url}/notify"
        config = NotifyConfig(
            plans=self.plans(endpoint),
            topics=self.topics,
            maintain_interval_seconds=self.maintain_seconds,
            fallback_interval_seconds=self.fallback_seconds,
            overlap_seconds=5.0,
            gap_grace_seconds=self.gap_grace_seconds,
        )
        self.extension = Notifications(config, self.secret)
        worker = WorkerSettings(retry_seconds=0.05, retry_max_seconds=0.5)
        self.service = Service(
            store,
            load_reference_data(),
            LocalBackend(),
            ehr=lambda: fast_client(self.ehr_url),
            pipeline=PipelineSettings(
                worker=worker,
                retry=OutboxRetry(first_seconds=0.05, max_seconds=0.5, max_attempts=200),
            ),
            port=self.port,
            extensions=[self.extension],
        )
        self.service.start()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service.store.close()
            self.service = None

    def metric(self, name: str, labels: str = "") -> float:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


def secret_headers() -> dict[str, str]:
    return {SECRET_HEADER: SECRET, "Content-Type": "application/fhir+json"}


def subscriptions(base: str, endpoint: str) -> list[dict[str, Any]]:
    page = requests.get(f"{base}/Subscription", params={"url": endpoint}, timeout=10).json()
    return [e["resource"] for e in page.get("entry", [])]


def wait_for(test: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.1)
