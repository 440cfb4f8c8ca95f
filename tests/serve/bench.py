"""Benchmark (not a test): from a lab's push to its DetectedIssue stored on the FHIR server.

    python -m tests.serve.bench [--results 1000] [--patients 100] [--concurrency 8]

Stock sekmet-fhir on 127.0.0.1; serve in this process on a SQLite state file (WAL,
synchronous=FULL), forwarding on, local backend. Two passes over fresh patients:

- latency: one result at a time; per result, receipt -> DetectedIssue stored on the EHR (the
  outbox's own clock, the `rems_adapter_end_to_end_seconds` measurement, taken raw here);
- throughput: `--concurrency` labs pushing at once; results per second from the first push to
  the last DetectedIssue stored.

Beside them, measured in the same run: the EHR's own write time for a DetectedIssue (a PUT
straight to the server, no adapter) and for the adapter's requests as it sent them. Ratios are
against that baseline. Run with `nice -n 10`; the figures go in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from adapter.decide import LocalBackend
from adapter.ehr import FhirClient, RetryPolicy, Timeouts, Transport
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import PipelineSettings, WorkerSettings
from adapter.serve.app import HttpSettings
from adapter.serve.service import Service
from adapter.store.sqlite import SqliteStore
from adapter.watch.writeback import ensure_author_device
from tests.serve.conftest import start_stock_sekmet
from tests.serve.kit import lab_result, recent_history, seed


class TimedTransport(Transport):
    """Records the duration of every request by (method, resource type)."""

    samples: dict[tuple[str, str], list[float]]
    lock = threading.Lock()

    def __init__(self, samples: dict[tuple[str, str], list[float]]) -> None:
        super().__init__(timeouts=Timeouts(5, 30), retry=RetryPolicy(max_attempts=2))
        self.samples = samples

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        answer = super().send(method, url, **kwargs)
        took = time.perf_counter() - started
        kind = url.split("/fhir/", 1)[-1].split("/", 1)[0].split("?", 1)[0] or "(base)"
        with self.lock:
            self.samples.setdefault((method, kind), []).append(took)
        return answer


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def baseline_put(base_url: str, n: int) -> list[float]:
    """The EHR's own write time: PUT a DetectedIssue under a new id, straight to the server."""
    out = []
    with requests.Session() as session:
        for _ in range(n):
            rid = f"bench-{uuid.uuid4().hex}"
            body = {
                "resourceType": "DetectedIssue",
                "id": rid,
                "status": "final",
                "patient": {"reference": "Patient/none"},
                "detail": "baseline write",
            }
            started = time.perf_counter()
            answer = session.put(
                f"{base_url}/DetectedIssue/{rid}",
                json=body,
                headers={"Content-Type": "application/fhir+json"},
                timeout=30,
            )
            out.append(time.perf_counter() - started)
            assert answer.status_code in (200, 201), answer.status_code
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    server = start_stock_sekmet(folder / "sekmet")
    samples: dict[tuple[str, str], list[float]] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    try:
        baseline = baseline_put(server.base_url, 200)
        store = SqliteStore(folder / "state.sqlite")
        store.bind_ehr(server.base_url)
        client = FhirClient(server.base_url)
        ensure_author_device(client, "bench")
        client.close()
        service = Service(
            store,
            load_reference_data(),
            LocalBackend(),
            ehr=lambda: FhirClient(server.base_url, transport=TimedTransport(samples)),
            pipeline=PipelineSettings(worker=WorkerSettings(), workers=4, performers=4),
            http=HttpSettings(rate_per_second=0),
        )
        original = service.pipeline.metrics.stored

        def stored(seconds: float) -> None:
            with lock:
                latencies.append(seconds)
            original(seconds)

        service.pipeline.metrics.stored = stored  # type: ignore[method-assign]
        service.start()
        url = service.url
        session = requests.Session()

        def push(result: dict[str, Any]) -> None:
            answer = session.post(
                f"{url}/fhir/Observation",
                json=result,
                headers={"Content-Type": "application/fhir+json"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text[:200]

        def wait_for(count: int, timeout: float = 900) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with lock:
                    if len(latencies) >= count:
                        return
                time.sleep(0.005)
            raise SystemExit(f"only {len(latencies)} of {count} DetectedIssues stored in time")

        def results_for(n: int) -> list[dict[str, Any]]:
            ids = seed(
                server.base_url, [recent_history([2100, 2000]) for _ in range(args.patients)]
            )
            people = [v for v in ids.values() if v.startswith("Patient/")]
            now = time.time()
            from datetime import UTC, datetime

            out = []
            for i in range(n):
                when = datetime.fromtimestamp(now - 3600 - (i // len(people)) * 600, UTC)
                out.append(lab_result(people[i % len(people)], 1200 + (i % 7) * 10, when=when))
            return out

        # latency: one at a time (the first result of each patient reads its history)
        sequential = results_for(args.results)
        for n, result in enumerate(sequential, 1):
            push(result)
            wait_for(n)
        latency = list(latencies)
        first_of_patient = latency[: args.patients]
        steady = latency[args.patients :]
        ehr = {key: list(values) for key, values in samples.items()}

        # throughput: several labs at once
        with lock:
            latencies.clear()
        concurrent = results_for(args.results)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(push, concurrent))
        accepted = time.perf_counter() - started
        wait_for(len(concurrent))
        elapsed = time.perf_counter() - started
        service.stop()
        store.close()
    finally:
        server.stop()

    put = ehr.get(("PUT", "DetectedIssue"), [])
    forward = ehr.get(("POST", "Observation"), [])
    base50 = statistics.median(baseline)
    print("serve benchmark: push -> DetectedIssue stored on stock sekmet-fhir (127.0.0.1)")
    print(f"  {args.results} results, {args.patients} patients; SQLite WAL synchronous=FULL")
    print(
        f"  latency, one at a time: p50 {ms(quantile(latency, 0.5))}, p99 "
        f"{ms(quantile(latency, 0.99))}, max {ms(max(latency))} "
        f"(ratio to the EHR's own write p50: {quantile(latency, 0.5) / base50:.1f}x)"
    )
    print(
        f"    first result of a patient (history read): p50 {ms(quantile(first_of_patient, 0.5))}"
        f", p99 {ms(quantile(first_of_patient, 0.99))}; later results: p50 "
        f"{ms(quantile(steady, 0.5))}, p99 {ms(quantile(steady, 0.99))}"
    )
    print(
        f"  EHR write time, straight PUT of a DetectedIssue (baseline): p50 {ms(base50)}, p99 "
        f"{ms(quantile(baseline, 0.99))}"
    )
    print(
        f"  EHR time of the adapter's requests: PUT DetectedIssue p50 {ms(quantile(put, 0.5))}"
        f" p99 {ms(quantile(put, 0.99))}; forwarded Observation (conditional create) p50 "
        f"{ms(quantile(forward, 0.5))} p99 {ms(quantile(forward, 0.99))}"
    )
    print(
        f"  throughput, {args.concurrency} labs at once: {len(concurrent) / elapsed:.1f} "
        f"results/s stored ({len(concurrent) / accepted:.1f}/s accepted); latency p50 "
        f"{ms(quantile(latencies, 0.5))}, p99 {ms(quantile(latencies, 0.99))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
