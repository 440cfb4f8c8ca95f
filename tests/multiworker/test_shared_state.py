"""Two and three `serve` processes on one PostgreSQL state, one SIGKILLed midway (issue 14).

Against stock sekmet-fhir 0.1.1 on 127.0.0.1. Patients are seeded with a short normal history;
lab results are pushed, each patient's out of collection order, spread across the workers; one
worker is SIGKILLed right after it accepted its share of the first half (so it dies with
accepted results, claims and effects in hand), and the rest goes to the others. Once the
shared inbox and outbox are empty: every non-normal result is cited by exactly one final
DetectedIssue with its category's finding code, and no decision identifier is on the server
twice.
"""

from __future__ import annotations

import random

import pytest

from tests.multiworker.kit import check_every_result_took_effect_once, plan
from tests.serve.kit import recent_history, seed

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_one_state_and_a_killed_one_loses_nothing(workers, cluster, stock_ehr):
    rng = random.Random(workers)
    ids = seed(stock_ehr.base_url, [recent_history([2100, 2000, 1900]) for _ in range(6)])
    patients = sorted(v for v in ids.values() if v.startswith("Patient/"))
    pushed = plan(patients, 5, rng)
    group = cluster(workers)
    victim = group.workers[0]
    half = len(pushed) // 2
    accepted: dict[int, int] = {}
    for result in pushed[:half]:
        worker = group.push(result)
        accepted[worker.port] = accepted.get(worker.port, 0) + 1
    assert len(accepted) == workers  # spread across all of them
    assert accepted[victim.port] > 0
    victim.kill()  # accepted results, claims and effects in hand: nothing is cleaned up
    for result in pushed[half:]:
        assert group.push(result) is not victim
    group.settle()
    check_every_result_took_effect_once(stock_ehr.base_url, pushed)
    assert [w.stop() for w in group.live()] == [0] * (workers - 1)  # the others stop cleanly
