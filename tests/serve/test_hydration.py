"""A push for a patient the adapter has not seen: their history is read from the EHR (bounded
searches), so a push-only deployment decides on the full history."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from adapter.pipeline import WorkerSettings
from tests.serve.faulty_proxy import FaultyProxy
from tests.serve.kit import codes, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration

# Prepared yesterday (09:00 UTC): a dispense prepared today at 09:00 lies after the clock when
# the test runs before 09:00 UTC, and the service then rightly leaves it for later.
_YESTERDAY = date.today() - timedelta(days=1)


def _seed_pending(stock_server) -> str:
    history = replace(recent_history([2100, 2000, 1900]), pending_on=_YESTERDAY)
    ids = seed(stock_server.base_url, [history])
    return next(v for v in ids.values() if v.startswith("Patient/"))


def test_a_push_for_an_unseen_patient_decides_on_the_history_read_from_the_ehr(
    serve_factory, stock_server
):
    patient = _seed_pending(stock_server)
    with FaultyProxy(stock_server.root_url) as proxy:
        serve = serve_factory(ehr_url=f"{proxy.url}/fhir")
        before = proxy.requests
        assert serve.push(lab_result(patient, 1800)).status_code == 202
        serve.settle()
        # the pending dispense is known only from the EHR's history: it is decided
        assert "dispense-authorized" in codes(issues(stock_server.base_url, patient))
        first = proxy.requests - before
        # bounded: a read of the Patient, one search per kind (one page each here), the
        # forwarded result, the DetectedIssue write (read + PUT) and the readiness probe
        assert first <= 15, first
        # a second result for the same patient reads no history again
        before = proxy.requests
        assert serve.push(lab_result(patient, 1750)).status_code == 202
        serve.settle()
        assert proxy.requests - before <= 4
    assert serve.store is not None
    [*_, last] = serve.store.audit(patient)
    assert any(i.startswith("MedicationDispense/") for i in last.inputs)
    assert any(i.startswith("MedicationRequest/") for i in last.inputs)


def test_without_hydration_the_history_is_not_read(serve_factory, stock_server):
    patient = _seed_pending(stock_server)
    serve = serve_factory(worker=WorkerSettings(hydrate=False))
    assert serve.push(lab_result(patient, 1800)).status_code == 202
    serve.settle()
    assert "dispense-authorized" not in codes(issues(stock_server.base_url, patient))
