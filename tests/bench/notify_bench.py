"""Benchmark (not a test): latency from a result created on the EHR to its DetectedIssue on the
EHR, through Subscription notifications versus through polling, in one run on one server.

    python -m tests.bench.notify_bench [--patients 30] [--poll-interval 5] [--probe 0.05]

sekmet-fhir 0.1.1 on 127.0.0.1 (with the DetectedIssue search parameters the `watch` cycle needs,
so both paths run against the same server). Each path gets its own patients, seeded with a
normal history and warmed up with one decided result (so a patient's history is already known,
as in steady state); then, one at a time, a low ANC result is created on the EHR and the clock
runs until a DetectedIssue of that patient citing it is on the EHR (probed every `--probe`
seconds), each created after a random pause of up to one poll interval (results do not
arrive in step with the poll cycle). Paths:

- ``rest-hook``: serve with an R4 rest-hook Subscription (full resource, ``PUT /notify/...``);
- ``backport``: serve with a Backport Subscription (id-only: serve reads the focus);
- ``poll``: the watch cycle every `--poll-interval` seconds (the poll path of the adapter).

Prints p50 / p99 / max per path and the ratio of each notification path's p50 to the polling
p50 (the baseline, measured in the same run). With N samples p99 is the largest but one for
N >= 100, and the maximum below that: read it as a tail, not a percentile.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from adapter.ehr import FhirClient
from adapter.mappings_loader import load_reference_data
from adapter.subscriptions.resources import SubscriptionPlan
from adapter.watch.config import EvaluationSettings, WatchSettings
from adapter.watch.state import StateStore
from adapter.watch.watcher import Watcher
from tests.fhir_server import start_sekmet
from tests.serve.kit import lab_result, recent_history, seed
from tests.subscriptions.kit import ANC, SECRET, SECRET_HEADER, TOPIC, NotifyServe

HEADER = f"{SECRET_HEADER}: {SECRET}"


def _patients(base: str, count: int) -> list[str]:
    out = []
    for _ in range(count):
        ids = seed(base, [recent_history([2100, 2000, 1900])])
        out.append(next(v for v in ids.values() if v.startswith("Patient/")))
    return out


def _create(base: str, resource: dict[str, Any]) -> str:
    answer = requests.post(f"{base}/Observation", json=resource, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _cites(base: str, patient: str, observation: str) -> bool:
    page = requests.get(
        f"{base}/DetectedIssue", params={"patient": patient, "_count": "100"}, timeout=30
    ).json()
    for entry in page.get("entry") or []:
        for evidence in entry["resource"].get("evidence") or []:
            for detail in evidence.get("detail") or []:
                if detail.get("reference") == f"Observation/{observation}":
                    return True
    return False


def _measure(
    base: str, patients: list[str], probe: float, timeout: float, spread: float
) -> list[float]:
    # warm up: one result each, decided (the patient's history is then known, as in steady state)
    warm = [(patient, _create(base, lab_result(patient, 1400))) for patient in patients]
    for patient, seen in warm:
        _wait(lambda p=patient, o=seen: _cites(base, p, o), probe, timeout)  # type: ignore[misc]
    rng = random.Random(12)
    latencies = []
    for patient in patients:
        # results arrive at random moments, not in step with the poll cycle
        time.sleep(rng.uniform(0, spread))
        started = time.monotonic()
        observation = _create(base, lab_result(patient, 1200))
        _wait(lambda p=patient, o=observation: _cites(base, p, o), probe, timeout)  # type: ignore[misc]
        latencies.append(time.monotonic() - started)
    return latencies


def _wait(test: Any, probe: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise SystemExit(f"no DetectedIssue within {timeout}s")
        time.sleep(probe)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _notify(base: str, workdir: Path, plan: str, patients: list[str], args: Any) -> list[float]:
    def plans(endpoint: str) -> tuple[SubscriptionPlan, ...]:
        if plan == "rest-hook":
            return (
                SubscriptionPlan(
                    "rest-hook", "Observation", endpoint, criteria=ANC, headers=(HEADER,)
                ),
            )
        return (
            SubscriptionPlan(
                "backport",
                "Observation",
                endpoint,
                criteria=ANC,
                topic=TOPIC.url,
                content="id-only",
                headers=(HEADER,),
            ),
        )

    serve = NotifyServe(
        base,
        workdir / f"{plan}.sqlite",
        plans=plans,
        topics=(TOPIC,) if plan == "backport" else (),
        maintain_seconds=3600.0,
    ).start()
    try:
        endpoint = f"{serve.url}/notify"
        _wait(
            lambda: any(
                e["resource"].get("status") == "active"
                for e in requests.get(f"{base}/Subscription", params={"url": endpoint}, timeout=10)
                .json()
                .get("entry", [])
            ),
            0.1,
            30,
        )
        return _measure(base, patients, args.probe, args.timeout, args.poll_interval)
    finally:
        serve.stop()
        # the EHR keeps notifying a stopped subscriber otherwise: turn it off
        for entry in (
            requests.get(f"{base}/Subscription", params={"url": f"{serve.url}/notify"}, timeout=10)
            .json()
            .get("entry", [])
        ):
            resource = {**entry["resource"], "status": "off"}
            requests.put(f"{base}/Subscription/{resource['id']}", json=resource, timeout=10)


def _poll(base: str, workdir: Path, patients: list[str], args: Any) -> list[float]:
    state = workdir / "watch.sqlite"
    stop = threading.Event()

    def loop() -> None:  # the watch cycle, in its own thread (SQLite state: one thread)
        watcher = Watcher(
            FhirClient(base),
            StateStore(state),
            load_reference_data(),
            WatchSettings(state=state, interval_seconds=args.poll_interval),
            EvaluationSettings(),
        )
        while not stop.is_set():
            watcher.cycle()
            stop.wait(args.poll_interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        return _measure(base, patients, args.probe, args.timeout, args.poll_interval)
    finally:
        stop.set()
        thread.join(timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--patients", type=int, default=30, help="results measured per path")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--probe", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    server = start_sekmet(workdir=workdir / "sekmet")
    results: dict[str, list[float]] = {}
    try:
        base = server.base_url
        groups = {
            name: _patients(base, args.patients) for name in ("rest-hook", "backport", "poll")
        }
        print(
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} sekmet-fhir 0.1.1, {args.patients} results "
            f"per path, probe every {args.probe}s, poll interval {args.poll_interval}s"
        )
        results["poll"] = _poll(base, workdir, groups["poll"], args)
        results["rest-hook"] = _notify(base, workdir, "rest-hook", groups["rest-hook"], args)
        results["backport"] = _notify(base, workdir, "backport", groups["backport"], args)
    finally:
        server.stop()
    baseline = statistics.median(results["poll"])
    for name in ("rest-hook", "backport", "poll"):
        values = results[name]
        p50 = statistics.median(values)
        print(
            f"{name:<10} p50 {p50:7.3f}s  p99 {_quantile(values, 0.99):7.3f}s  "
            f"max {max(values):7.3f}s  p50/poll p50 {p50 / baseline:6.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
