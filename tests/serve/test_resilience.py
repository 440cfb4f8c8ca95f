"""Outages and restarts: an EHR answering 503, timing out, or losing answers for a while; serve
restarted with work in flight. Everything received is delivered once after recovery."""

from __future__ import annotations

import time

import pytest
import requests

from tests.serve.faulty_proxy import FaultyProxy
from tests.serve.kit import codes, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration


def _patients(stock_server, n: int) -> list[str]:
    ids = seed(stock_server.base_url, [recent_history([2100, 2000]) for _ in range(n)])
    return [v for v in ids.values() if v.startswith("Patient/")]


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("fault", ["503", "hang", "lose"])
def test_an_ehr_outage_delays_but_never_loses_or_duplicates(
    fault, serve_factory, stock_server, tmp_path
):
    patients = _patients(stock_server, 3)
    with FaultyProxy(stock_server.root_url) as proxy:
        serve = serve_factory(ehr_url=f"{proxy.url}/fhir", read_timeout=1.0)
        proxy.mode = fault
        for patient in patients:
            assert serve.push(lab_result(patient, 1200)).status_code == 202  # EHR down: still 202
        _wait(lambda: proxy.by_mode.get(fault, 0) >= 3)
        if fault != "lose":
            assert requests.get(f"{serve.url}/readyz", timeout=30).status_code == 503
            assert all(issues(stock_server.base_url, p) == [] for p in patients)
        time.sleep(1.0)
        proxy.mode = "pass"
        serve.settle(timeout=90)
        for patient in patients:
            assert codes(issues(stock_server.base_url, patient)) == ["anc-mild-neutropenia"]
        assert serve.metric('rems_adapter_upstream_errors_total{system="ehr"}') >= 1
        assert serve.metric("rems_adapter_outbox_depth") == 0
        assert serve.metric("rems_adapter_inbox_depth") == 0
        _wait(lambda: requests.get(f"{serve.url}/readyz", timeout=30).status_code == 200)


def test_a_restart_with_work_in_flight_delivers_it_once(serve_factory, stock_server, tmp_path):
    patients = _patients(stock_server, 4)
    state = tmp_path / "restart.sqlite"
    with FaultyProxy(stock_server.root_url) as proxy:
        first = serve_factory(ehr_url=f"{proxy.url}/fhir", state=state)
        proxy.mode = "503"
        for patient in patients:
            assert first.push(lab_result(patient, 1200)).status_code == 202
        _wait(lambda: proxy.by_mode.get("503", 0) >= 2)
        first.stop()
        proxy.mode = "pass"
        second = serve_factory(ehr_url=f"{proxy.url}/fhir", state=state)
        second.settle(timeout=90)
        for patient in patients:
            assert codes(issues(stock_server.base_url, patient)) == ["anc-mild-neutropenia"]
        # and a third start finds nothing left to do and writes nothing again
        second.stop()
        third = serve_factory(ehr_url=f"{proxy.url}/fhir", state=state)
        third.settle()
        for patient in patients:
            assert len(issues(stock_server.base_url, patient)) == 1
