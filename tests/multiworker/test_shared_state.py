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
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.multiworker.kit import by_identifier
from tests.serve.kit import FINDING_SYSTEM, all_of, lab_result, recent_history, seed

pytestmark = pytest.mark.integration

LAB_SYSTEM = "urn:oid:2.16.840.1.113883.3.999.1"
#: general population categories (clinical-rules): >= 1500 normal, 1000-1499 mild, 500-999
#: moderate; severe is left out so that no result interrupts the others' meaning
EXPECTED = {
    2300.0: None,
    1400.0: "anc-mild-neutropenia",
    1900.0: None,
    1100.0: "anc-mild-neutropenia",
    800.0: "anc-moderate-neutropenia",
}
ANC_CODES = {
    "anc-mild-neutropenia",
    "anc-moderate-neutropenia",
    "anc-severe-neutropenia",
    "anc-ben-neutropenia",
    "anc-unevaluable",
}


def plan(patients: list[str], per_patient: int, rng: random.Random) -> list[dict[str, Any]]:
    """Results collected hourly over the last hours, pushed in a shuffled order."""
    now = datetime.now(UTC).replace(microsecond=0)
    values = list(EXPECTED)
    results = []
    for p, patient in enumerate(patients):
        for k in range(per_patient):
            when = now - timedelta(hours=per_patient - k, minutes=p)
            value = values[(p + k) % len(values)]
            results.append(lab_result(patient, value, when=when, accession=f"acc-{p}-{k}"))
    rng.shuffle(results)
    return results


def finding_code(issue: dict[str, Any]) -> str:
    return next(c["code"] for c in issue["code"]["coding"] if c.get("system") == FINDING_SYSTEM)


def check_every_result_took_effect_once(base_url: str, pushed: list[dict[str, Any]]) -> None:
    issues = all_of(base_url, "DetectedIssue")
    twice = {key: len(found) for key, found in by_identifier(issues).items() if len(found) > 1}
    assert twice == {}, f"decision identifiers on the server more than once: {twice}"
    accession_of = {}
    for observation in all_of(base_url, "Observation"):
        for identifier in observation.get("identifier", []):
            if identifier.get("system") == LAB_SYSTEM:
                accession_of[f"Observation/{observation['id']}"] = identifier["value"]
    cited: dict[str, list[str]] = {}
    for issue in issues:
        code = finding_code(issue)
        if issue["status"] != "final" or code not in ANC_CODES:
            continue
        for evidence in issue.get("evidence", []):
            for detail in evidence.get("detail", []):
                accession = accession_of.get(detail.get("reference", ""))
                if accession is not None:
                    cited.setdefault(accession, []).append(code)
    expected = {
        result["identifier"][0]["value"]: [code]
        for result in pushed
        if (code := EXPECTED[result["valueQuantity"]["value"]]) is not None
    }
    assert expected, "the plan has no non-normal result"
    assert cited == expected


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
