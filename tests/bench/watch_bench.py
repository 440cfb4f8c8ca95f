"""Benchmark (not a test): `watch` against a local sekmet-fhir with 1,000 patients x 50 results.

    python -m tests.bench.watch_bench [--patients 1000] [--results 50] [--page-size 1000]

Seeds synthetic histories (weekly ANC, weekly 7-day supply, one prescription; about 4% of results
low; every 10th patient has a dispense awaiting a decision) with transaction Bundles, then runs:
  1. the first cycle (everything is new),
  2. a replay cycle (nothing new),
  3. an incremental cycle after one more result for every 10th patient.
For each it prints the HTTP requests the watcher sent (counted in the transport, retries
included), the new ANC results it processed, requests per new ANC and the cycle time.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from adapter.ehr import FhirClient
from adapter.mappings_loader import load_reference_data
from adapter.watch.config import EvaluationSettings, WatchSettings
from adapter.watch.state import StateStore
from adapter.watch.watcher import CycleReport, Watcher
from tests.fhir_server import start_sekmet
from tests.watch.conftest import CountingTransport
from tests.watch.seeding import History, bundle, created_ids

PATIENTS_PER_BUNDLE = 20


def values(rng: random.Random, count: int) -> list[float]:
    return [
        float(rng.randint(1000, 1499)) if rng.random() < 0.04 else float(rng.randint(1800, 5000))
        for _ in range(count)
    ]


def seed(base: str, histories: list[History]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for start in range(0, len(histories), PATIENTS_PER_BUNDLE):
        request = bundle(histories[start : start + PATIENTS_PER_BUNDLE])
        response = requests.post(base, json=request, timeout=600)
        response.raise_for_status()
        ids.update(created_ids(response.json(), request))
    return ids


def line(name: str, report: CycleReport, transport: CountingTransport) -> str:
    per_anc = transport.total / report.new_anc if report.new_anc else float("nan")
    methods = ", ".join(f"{m} {n}" for m, n in sorted(transport.counts.items()))
    return (
        f"{name:<12} requests {transport.total:>5} ({methods}); new ANC {report.new_anc:>6}; "
        f"requests/new ANC {per_anc:.4f}; patients decided {report.patients_decided:>5}; "
        f"DetectedIssues created {report.issues_created:>5}; cycle {report.seconds:.2f}s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--results", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    workdir = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    server = start_sekmet(workdir=workdir / "sekmet")
    try:
        first_day = datetime(2025, 6, 2).date()
        pending_on = first_day + timedelta(weeks=args.results - 1, days=1)
        histories = [
            History(
                anc=values(rng, args.results),
                start=first_day,
                pending_on=pending_on if index % 10 == 0 else None,
            )
            for index in range(args.patients)
        ]
        started = time.monotonic()
        ids = seed(server.base_url, histories)
        print(
            f"seeded {args.patients} patients x {args.results} results "
            f"({len(ids)} resources) in {time.monotonic() - started:.1f}s"
        )
        as_of = datetime.combine(pending_on, datetime.min.time(), UTC) + timedelta(hours=12)
        transport = CountingTransport()
        client = FhirClient(server.base_url, transport=transport)
        state = workdir / "state.sqlite"
        watcher = Watcher(
            client,
            StateStore(state),
            load_reference_data(),
            WatchSettings(state=state, page_size=args.page_size),
            EvaluationSettings(as_of=as_of),
        )
        print(line("first cycle", watcher.cycle(), transport))
        transport.reset()
        print(line("replay", watcher.cycle(), transport))

        late = [h for index, h in enumerate(histories) if index % 10 == 5]
        for history in late:
            history.anc = [*history.anc, values(rng, 1)[0]]
        more = []
        for history in late:
            observation = bundle([History(anc=[history.anc[-1]], start=pending_on)])["entry"][3]
            observation["resource"]["subject"] = {"reference": ids[history.urns["Patient"][0]]}
            more.append(observation)
        response = requests.post(
            server.base_url,
            json={"resourceType": "Bundle", "type": "transaction", "entry": more},
            timeout=600,
        )
        response.raise_for_status()
        transport.reset()
        print(line("incremental", watcher.cycle(), transport))
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
