"""Polling with two `serve` processes on one PostgreSQL state: one polls at a time (the store's
`poll` lease), the other takes over when the poller is SIGKILLed (once the lease expires), and
what the EHR holds is decided and written once (issue 14, item 1)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from adapter.serve.poll import POLL_LEASE
from adapter.store.postgres import PostgresStore
from tests.multiworker.kit import ServeProcess, by_identifier
from tests.serve.kit import all_of, codes, issues, recent_history, seed

pytestmark = pytest.mark.integration

#: the poll lease is max(3 intervals, 60 s): the take-over waits for it, bounded here
TAKEOVER_S = 180.0


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s")


def _polled(worker: ServeProcess) -> float:
    text = requests.get(f"{worker.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('rems_adapter_results_received_total{source="poll"}'):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_one_worker_polls_at_a_time_and_another_takes_over(
    stock_ehr, postgres_dsn: str, tmp_path: Path
):
    def worker(n: int) -> ServeProcess:
        return ServeProcess(
            stock_ehr.base_url,
            postgres_dsn,
            tmp_path / f"serve-{n}.log",
            env={
                "REMS_ADAPTER_WATCH_INTERVAL_SECONDS": "1",
                "REMS_ADAPTER_WATCH_STATE": str(tmp_path / f"poll-{n}.sqlite"),
            },
            poll=True,
        )

    first_ids = seed(stock_ehr.base_url, [recent_history([2100, 2000, 1200])])
    first = next(v for v in first_ids.values() if v.startswith("Patient/"))
    store = PostgresStore(postgres_dsn, pool_max=1)
    poller, other = worker(0).start(), None
    try:
        _wait(lambda: store.lease_holder(POLL_LEASE, time.time()) is not None, 60, "a poller")
        holder = store.lease_holder(POLL_LEASE, time.time())
        _wait(
            lambda: "anc-mild-neutropenia" in codes(issues(stock_ehr.base_url, first)),
            60,
            "the first patient's finding",
        )
        other = worker(1).start()
        time.sleep(5)  # several poll intervals with both running
        assert store.lease_holder(POLL_LEASE, time.time()) == holder
        assert _polled(other) == 0.0 and _polled(poller) > 0.0  # only the lease holder polls
        poller.kill()  # its lease stays until it expires
        second_ids = seed(stock_ehr.base_url, [recent_history([2100, 1900, 1300])])
        second = next(v for v in second_ids.values() if v.startswith("Patient/"))
        _wait(
            lambda: "anc-mild-neutropenia" in codes(issues(stock_ehr.base_url, second)),
            TAKEOVER_S,
            "the take-over",
        )
        assert store.lease_holder(POLL_LEASE, time.time()) not in (None, holder)
        assert _polled(other) > 0.0
        _wait(lambda: store.inbox_depth() == 0 and store.outbox_depth() == 0, 60, "settled")
        everything = all_of(stock_ehr.base_url, "DetectedIssue")
        assert {k: len(v) for k, v in by_identifier(everything).items() if len(v) > 1} == {}
        assert codes(issues(stock_ehr.base_url, first)).count("anc-mild-neutropenia") == 1
        assert codes(issues(stock_ehr.base_url, second)).count("anc-mild-neutropenia") == 1
    finally:
        for process in (poller, other):
            if process is not None:
                process.stop()
        store.close()
        keep = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
        if keep:
            for path in tmp_path.glob("serve-*.log"):
                (Path(keep) / f"multiworker-poll-{path.name}").write_bytes(path.read_bytes())
