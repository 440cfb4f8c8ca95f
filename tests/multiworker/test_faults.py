"""The service issue's fault injection, on PostgreSQL (issues 11 and 14).

- `tests/multiworker/fault_run.py` in the suite: results streamed to two `serve` processes on
  one PostgreSQL state while one of them, at random, is SIGKILLed and restarted; smaller than
  `python -m tests.multiworker.fault_run` (1,000 results, 20 kills), whose figures are in
  BENCHMARKS.md.
- serve's own run (`tests/serve/fault_run.py`, one process killed and restarted), as it is,
  with `--state postgresql://`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adapter.store.postgres import PostgresStore
from tests.multiworker import fault_run as cluster_faults
from tests.serve import fault_run as serve_faults

pytestmark = pytest.mark.integration


def test_results_streamed_to_two_workers_while_they_are_killed(
    stock_ehr, postgres_dsn: str, tmp_path: Path
):
    report = cluster_faults.run(
        stock_ehr.base_url,
        postgres_dsn,
        tmp_path,
        results=300,
        kills=10,
        workers=2,
        patients=30,
        rng=random.Random(14),
    )
    assert report.kills == 10 and report.starts == 12 and report.results == 300


def test_the_service_fault_injection_run_on_postgresql(postgres_dsn: str, tmp_path: Path):
    report = serve_faults.run(
        results=40,
        kills=4,
        patients=8,
        rng=random.Random(7),
        workdir=tmp_path,
        state=postgres_dsn,
    )
    assert report.ok, report.summary()
    assert report.kills == 4 and report.starts == 5
    assert report.issues_found == report.expected_issues == 40
    assert report.duplicates == 0 and report.missing == 0
    store = PostgresStore(postgres_dsn)  # the state really was on PostgreSQL
    try:
        assert store._count("SELECT count(*) FROM inbox") >= 40
        assert store.inbox_depth() == 0 and store.outbox_depth() == 0
    finally:
        store.close()
