"""A REMS that answers 503 or times out for a while: the dispense is `pending` (said so on the
EHR), decided once the REMS is back, and the pending finding withdrawn; every DetectedIssue once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from adapter.decide.rems import DEFAULT_REMS_ID_SYSTEM, RemsDecider, RemsSettings
from adapter.mappings_loader import load_reference_data
from adapter.rems import RetryPolicy, Timeouts
from tests.decide.golden import reference_rems
from tests.rems_backend.kit import OUTPATIENT_PHARMACY, enroll_directly
from tests.serve.faulty_proxy import FaultyProxy
from tests.serve.kit import FINDING_SYSTEM, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration

# Prepared yesterday (09:00 UTC): a dispense prepared today at 09:00 lies after the clock when
# the test runs before 09:00 UTC, and the service then rightly leaves it for later.
_YESTERDAY = date.today() - timedelta(days=1)


def _enrolled(base_url: str, patient: str, rems_id: str) -> None:
    """The EHR's Patient carries the REMS patient id (the prescriber enrolled them)."""
    url = f"{base_url}/{patient}"
    resource = requests.get(url, timeout=10).json()
    resource.setdefault("identifier", []).append(
        {"system": DEFAULT_REMS_ID_SYSTEM, "value": rems_id}
    )
    answer = requests.put(url, json=resource, timeout=10)
    assert answer.status_code in (200, 201), answer.text


def _wait(predicate, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _code(issue: dict) -> str:
    return next(c["code"] for c in issue["code"]["coding"] if c.get("system") == FINDING_SYSTEM)


@pytest.mark.parametrize("fault", ["503", "hang"])
def test_a_rems_outage_leaves_the_dispense_pending_then_decided_once(
    fault, serve_factory, stock_server, tmp_path
):
    history = replace(recent_history([2100, 2000, 1900]), pending_on=_YESTERDAY)
    ids = seed(stock_server.base_url, [history])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    with reference_rems(tmp_path) as rems_url, FaultyProxy(rems_url) as proxy:
        _enrolled(stock_server.base_url, patient, enroll_directly(rems_url, datetime.now(UTC)))
        settings = RemsSettings(
            url=proxy.url,
            pharmacy_id=OUTPATIENT_PHARMACY,
            timeouts=Timeouts(connect=1.0, read=1.0),
            retry=RetryPolicy(max_attempts=1),
        )
        backend = RemsDecider(settings, load_reference_data().protocol, UTC)
        serve = serve_factory(backend=backend)
        proxy.mode = fault
        assert serve.push(lab_result(patient, 1800)).status_code == 202

        def pending() -> list[dict]:
            return [
                i
                for i in issues(stock_server.base_url, patient)
                if _code(i) == "dispense-authorization-pending"
            ]

        _wait(lambda: bool(pending()))
        # still pending while the REMS is down: decided again and again, written once
        _wait(lambda: proxy.by_mode.get(fault, 0) >= 3)
        assert [i["status"] for i in pending()] == ["final"]
        assert serve.metric('rems_adapter_upstream_errors_total{system="rems"}') >= 1
        proxy.mode = "pass"
        deadline = datetime.now(UTC).timestamp() + 60
        while datetime.now(UTC).timestamp() < deadline:
            found = issues(stock_server.base_url, patient)
            decided = [
                i
                for i in found
                if _code(i).startswith("dispense-") and _code(i) != "dispense-authorization-pending"
            ]
            if decided and serve.store.inbox_depth() == 0 and serve.store.outbox_depth() == 0:
                break
            import time

            time.sleep(0.1)
        found = issues(stock_server.base_url, patient)
        by_code: dict[str, list[str]] = {}
        for issue in found:
            by_code.setdefault(_code(issue), []).append(issue["status"])
        assert by_code["dispense-authorization-pending"] == ["cancelled"], by_code
        decided = {
            c: s
            for c, s in by_code.items()
            if c.startswith("dispense-") and c != "dispense-authorization-pending"
        }
        assert len(decided) == 1 and list(decided.values()) == [["final"]], by_code
        identifiers = [i["identifier"][0]["value"] for i in found]
        assert len(identifiers) == len(set(identifiers))
