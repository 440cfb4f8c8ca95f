"""The Prometheus metrics whose names interfaces.md s.4 fixes (prometheus-client).

Each service has its own registry (several in one test process). The depths are read from the
store at each scrape: they count the whole store, shared by every worker.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapter.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: from receipt of a result to its DetectedIssue stored on the EHR.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Depths(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "rems_adapter_inbox_depth",
            "Results received and not yet decided (the whole state store; parked ones not counted)",
            value=self.store.inbox_depth(),
        )
        yield GaugeMetricFamily(
            "rems_adapter_outbox_depth",
            "Effects (DetectedIssue writes, REMS calls) not yet performed (the whole store)",
            value=self.store.outbox_depth(),
        )
        yield GaugeMetricFamily(
            "rems_adapter_dead_letters",
            "Effects given up on, waiting for an operator (rems-adapter outbox list)",
            value=self.store.dead_letters(),
        )


class Metrics:
    def __init__(self, store: Store | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.results_received = Counter(
            "rems_adapter_results_received",
            "Results received, by source",
            ["source"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "rems_adapter_decisions",
            "DetectedIssues decided (new ones), by finding code",
            ["code"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "rems_adapter_upstream_errors",
            "Failed requests to upstream systems, by system",
            ["system"],
            registry=self.registry,
        )
        self.end_to_end = Histogram(
            "rems_adapter_end_to_end_seconds",
            "From receipt of a result to its DetectedIssue stored on the EHR",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for source in ("push", "notify", "poll", "mllp"):
            self.results_received.labels(source)
        for system in ("ehr", "rems"):
            self.upstream_errors.labels(system)
        if store is not None:
            self.registry.register(_Depths(store))

    def received(self, source: str) -> None:
        self.results_received.labels(source).inc()

    def decided(self, code: str) -> None:
        self.decisions.labels(code).inc()

    def upstream_error(self, system: str) -> None:
        self.upstream_errors.labels(system).inc()

    def stored(self, seconds: float) -> None:
        self.end_to_end.observe(max(seconds, 0.0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
