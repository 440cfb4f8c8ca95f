"""Watch mode, interfaces.md section 2: "Only open problems stay `final`: an
`anc-monitoring-overdue` finding that a later usable result answers is withdrawn as
`cancelled`"."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import requests

from tests.fhir_server import SekmetServer
from tests.watch.conftest import Harness, by_status, decisions, finding, seed
from tests.watch.seeding import LOINC, History

pytestmark = pytest.mark.integration


def _observation(patient: str, collected: str, value: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": collected,
        "valueQuantity": {
            "value": value,
            "unit": "/uL",
            "system": "http://unitsofmeasure.org",
            "code": "/uL",
        },
    }


def test_an_overdue_finding_answered_by_a_later_result_is_cancelled(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    # Weekly results from 2025-06-02 to 06-23, then nothing: overdue on 2025-08-12.
    history = History(anc=[2000] * 4, start=date(2025, 6, 2))
    ids = seed(watch_server, [history])
    patient = ids[history.urns["Patient"][0]]
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    harness.cycle()
    assert "anc-monitoring-overdue" in by_status(watch_server, patient)["final"]

    response = requests.post(
        f"{watch_server.base_url}/Observation",
        json=_observation(patient, "2025-08-11T08:00:00Z", 2100),
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text[:300]
    report = harness.cycle()

    assert report.withdrawn >= 1
    statuses = by_status(watch_server, patient)
    assert statuses["cancelled"].count("anc-monitoring-overdue") == 1
    assert "anc-monitoring-overdue" not in statuses.get("final", [])
    (cancelled,) = [
        i
        for i in decisions(watch_server, patient)
        if finding(i) == "anc-monitoring-overdue" and i["status"] == "cancelled"
    ]
    assert cancelled["identifier"]  # the same DetectedIssue, updated, never deleted
    again = harness.cycle()  # a replay changes nothing
    assert (again.issues_created, again.withdrawn) == (0, 0)
    harness.close()
