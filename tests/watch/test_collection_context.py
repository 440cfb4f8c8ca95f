"""Results without an effective time (issue 8 item 6, clinical-rules section 1), in `watch` on a
stock sekmet-fhir: dated by the DiagnosticReport that lists them, else by their Specimen, as
batch mode dates them (adapter.fhir.read.collection_time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fhir_server import SekmetServer
from tests.watch.conftest import Harness, finding
from tests.watch.seeding import History, bundle, created_ids
from tests.watch.test_state_and_stock import ours
from tests.watch.test_watch_integration import PENDING_ON

pytestmark = pytest.mark.integration


def _last_result(request: dict[str, Any], history: History) -> dict[str, Any]:
    urn = history.urns["Observation"][-1]
    return next(e for e in request["entry"] if e["fullUrl"] == urn)["resource"]


def _entry(urn: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": urn,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def test_undated_results_are_dated_by_their_report_or_specimen(
    stock_server: SekmetServer, tmp_path: Path
) -> None:
    by_report, by_specimen, undated = (
        History(anc=[2000] * 10 + [1200], pending_on=PENDING_ON) for _ in range(3)
    )
    request = bundle([by_report, by_specimen, undated])
    for history in (by_report, by_specimen, undated):
        _last_result(request, history).pop("effectiveDateTime")
    collected = "2025-08-11T08:00:00Z"
    report_urn, specimen_urn = "urn:uuid:report-1", "urn:uuid:specimen-1"
    request["entry"].append(
        _entry(
            report_urn,
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "CBC with differential"},
                "subject": {"reference": by_report.urns["Patient"][0]},
                "effectiveDateTime": collected,
                "result": [{"reference": by_report.urns["Observation"][-1]}],
            },
        )
    )
    request["entry"].append(
        _entry(
            specimen_urn,
            {
                "resourceType": "Specimen",
                "subject": {"reference": by_specimen.urns["Patient"][0]},
                "collection": {"collectedDateTime": collected},
            },
        )
    )
    _last_result(request, by_specimen)["specimen"] = {"reference": specimen_urn}
    response = requests.post(stock_server.base_url, json=request, timeout=60)
    assert response.status_code == 200, response.text[:300]
    ids = created_ids(response.json(), request)

    # a crash between the poll and the look-up loses nothing: the undated results are kept
    # with the poll, and looked up by the next cycle
    state = tmp_path / "state.sqlite"
    crashed = Harness(stock_server, state, discover=True)
    crashed.watcher._date_undated = lambda report: None  # type: ignore[method-assign]
    crashed.watcher._decide = lambda clock, report: None  # type: ignore[method-assign]
    crashed.cycle()
    assert len(crashed.store.undated(10)) == 3
    crashed.close()

    harness = Harness(stock_server, state, discover=True)
    report = harness.cycle()
    assert report.collection_context_read == 2  # one report, one specimen: bounded reads
    assert harness.store.undated(10) == []  # looked up once
    harness.close()

    for history in (by_report, by_specimen):
        patient = ids[history.urns["Patient"][0]]
        issues = ours(stock_server, patient)
        codes = sorted(finding(i) for i in issues)
        assert "anc-mild-neutropenia" in codes and "anc-unevaluable" not in codes, codes
        (anc,) = [i for i in issues if finding(i) == "anc-mild-neutropenia"]
        assert [d["reference"] for d in anc["evidence"][0]["detail"]] == [
            ids[history.urns["Observation"][-1]]
        ]
    lost = sorted(finding(i) for i in ours(stock_server, ids[undated.urns["Patient"][0]]))
    assert "anc-unevaluable" in lost and "anc-mild-neutropenia" not in lost
