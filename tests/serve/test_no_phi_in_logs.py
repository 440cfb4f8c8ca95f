"""No log line of the suite names a seeded patient: names, birth dates, identifiers.

This test drives serve through its noisy paths at DEBUG (bad pushes quoting a person's data in
the wrong place, an EHR refusing writes, an EHR down) and scans every log file of the suite so
far (tests/conftest.py keeps them); the session fixture scans them all again at the very end."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from tests.serve.faulty_proxy import FaultyProxy
from tests.serve.kit import SEEDED_PHI, lab_result, recent_history, seed
from tests.serve.phi_scan import leaks, tokens

pytestmark = pytest.mark.integration


def test_no_seeded_person_appears_in_any_log(
    serve_factory, stock_server, suite_log: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="adapter")
    ids = seed(stock_server.base_url, [recent_history([2100, 2000]) for _ in range(2)])
    patients = [v for v in ids.values() if v.startswith("Patient/")]
    name, mrn = SEEDED_PHI[0], SEEDED_PHI[2]
    with FaultyProxy(stock_server.root_url) as proxy:
        serve = serve_factory(ehr_url=f"{proxy.url}/fhir", read_timeout=1.0)
        # a person's data where it does not belong: errors must name the path, not the value
        bad = lab_result(patients[0], 1200)
        bad["valueQuantity"]["value"] = name
        bad["status"] = {"text": mrn}
        assert serve.push(bad).status_code == 422
        person = {
            "resourceType": "Patient",
            "id": patients[0].split("/")[1],
            "name": [{"family": name}],
            "birthDate": f"born {mrn}",
        }
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": person}, {"resource": lab_result(patients[1], 1300)}],
        }
        answer = requests.post(f"{serve.url}/fhir", json=bundle, timeout=30)
        assert answer.status_code == 202
        assert name not in answer.text and mrn not in answer.text
        proxy.mode = "refuse"
        assert serve.push(lab_result(patients[0], 1250)).status_code == 202
        serve.settle()
        proxy.mode = "503"
        assert serve.push(lab_result(patients[1], 1240)).status_code == 202
        requests.get(f"{serve.url}/readyz", timeout=30)
        proxy.mode = "pass"
        serve.settle()
    assert tokens(suite_log) >= set(SEEDED_PHI[:3])
    (suite_log / "this-test-caplog.log").write_text(caplog.text, encoding="utf-8")
    assert caplog.text  # the noisy paths did log
    assert leaks(suite_log) == []


def test_the_scan_finds_a_planted_leak(tmp_path: Path):
    (tmp_path / "seeded-phi.txt").write_text("Quorvathplanted\n1961-02-03\n", encoding="utf-8")
    (tmp_path / "a.log").write_text("adapter INFO all fine\n", encoding="utf-8")
    assert leaks(tmp_path) == []
    (tmp_path / "b.log").write_text("adapter ERROR patient Quorvathplanted failed\n")
    (tmp_path / "c.log").write_text("adapter DEBUG DEMO0001\n")
    assert leaks(tmp_path) == ["b.log: Quorvathplanted", "c.log: DEMO0001"]
