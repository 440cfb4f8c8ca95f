"""The service issue's fault injection, on PostgreSQL with two workers (issues 11 and 14).

1,000 results are streamed to two `serve` processes sharing one PostgreSQL state, against stock
sekmet-fhir; every 50 results one of them, chosen at random, is SIGKILLed and restarted (20
times in all), so that results are accepted, claimed, decided and written while processes die.
Pushes that find their worker dead or dying go to the other one (and are re-sent if the answer
was lost: the same result again has one effect). Once the shared inbox and outbox are empty,
every non-normal result is cited by exactly one final DetectedIssue and no decision identifier
is on the server twice: none lost, none doubled.
"""

from __future__ import annotations

import random

import pytest

from adapter.store.postgres import PostgresStore
from tests.multiworker.test_shared_state import check_every_result_took_effect_once, plan
from tests.serve.fault_run import run
from tests.serve.kit import recent_history, seed

pytestmark = pytest.mark.integration

RESULTS = 1000
PATIENTS = 50
KILLS = 20


def test_a_thousand_results_while_workers_are_killed_twenty_times(cluster, stock_ehr):
    rng = random.Random(14)
    ids = seed(stock_ehr.base_url, [recent_history([2100, 2000, 1900]) for _ in range(PATIENTS)])
    patients = sorted(v for v in ids.values() if v.startswith("Patient/"))
    pushed = plan(patients, RESULTS // PATIENTS, rng)
    assert len(pushed) == RESULTS
    group = cluster(2)
    every = RESULTS // KILLS
    kills = 0
    for n, result in enumerate(pushed, start=1):
        group.push(result, attempts=600)  # bounded: 30 s with no worker up
        if n % every == 0 and kills < KILLS:
            victim = rng.choice(group.live())
            victim.kill()
            kills += 1
            # restarted at once, like a supervisor; pushes go to the other one meanwhile
            group.restart(victim, wait=False)
    assert kills == KILLS
    group.settle(timeout_s=600)
    check_every_result_took_effect_once(stock_ehr.base_url, pushed)


def test_the_service_fault_injection_run_on_postgresql(postgres_dsn: str, tmp_path):
    """tests/serve/test_fault_injection.py's run, as it is, with the state on PostgreSQL."""
    report = run(
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
