"""`serve` answers GET / and GET /patients/{id} from its state, behind the inbound token:
headless Chromium opens them (every patient there, filter, a chart with points, bands and
tooltips, axe-core), against stock sekmet-fhir and an in-process service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.decide import LocalBackend
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import PipelineSettings, WorkerSettings
from adapter.pipeline import RetryPolicy as OutboxRetry
from adapter.serve.app import HttpSettings
from adapter.serve.service import Service
from adapter.serve.worklist import Worklist
from adapter.store.sqlite import SqliteStore
from adapter.watch.writeback import ensure_author_device
from tests.serve.conftest import StockSekmet, fast_client, start_stock_sekmet
from tests.serve.kit import lab_result, recent_history, seed

from .browser import axe_violations, browser, offline_page, screenshot

pytestmark = pytest.mark.integration

TOKEN = "worklist-test-token"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockSekmet]:
    server = start_stock_sekmet(Path(tmp_path_factory.mktemp("sekmet-worklist")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(
    ehr: StockSekmet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, dict[str, float]]]:
    """Three patients seeded on the EHR; one result pushed for each, decided by the service."""
    histories = [
        recent_history([2100, 2000, 1900]),
        recent_history([2200, 2300]),
        recent_history([1800]),
    ]
    ids = seed(ehr.base_url, histories)
    patients = [ids[history.urns["Patient"][0]] for history in histories]
    # the last patient (one seeded result) gets the severe result
    pushed = dict(zip(patients, (1200.0, 2100.0, 400.0), strict=True))
    store = SqliteStore(Path(tmp_path_factory.mktemp("state")) / "state.sqlite")
    store.bind_ehr(ehr.base_url)
    device = fast_client(ehr.base_url)
    try:
        ensure_author_device(device, "test")
    finally:
        device.close()
    service = Service(
        store,
        load_reference_data(),
        LocalBackend(),
        ehr=lambda: fast_client(ehr.base_url),
        pipeline=PipelineSettings(
            worker=replace(WorkerSettings(), retry_seconds=0.05, retry_max_seconds=0.5),
            retry=OutboxRetry(first_seconds=0.05, max_seconds=0.5, max_attempts=200),
        ),
        http=HttpSettings(token=TOKEN),
        extensions=[Worklist()],
    )
    service.start()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
        for patient, value in pushed.items():
            answer = requests.post(
                f"{service.url}/fhir/Observation",
                json=lab_result(patient, value),
                headers=auth,
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
        _settle(store)
        yield service, pushed
    finally:
        service.stop()
        store.close()


def _settle(store: SqliteStore, timeout: float = 90.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.inbox_depth() == 0 and store.outbox_depth() == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the service did not settle")


def test_the_pages_need_the_inbound_token(service: tuple[Service, dict[str, float]]) -> None:
    url = service[0].url
    for path in ("/", "/patients/anyone"):
        answer = requests.get(url + path, timeout=30)
        assert answer.status_code == 401
        assert answer.json()["resourceType"] == "OperationOutcome"
    wrong = requests.get(url + "/", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    page = requests.get(url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-store"
    missing = requests.get(
        url + "/patients/not-a-patient", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    with browser() as opened:
        yield opened


def test_worklist_and_patient_pages_in_chromium(
    service: tuple[Service, dict[str, float]], chrome: Any
) -> None:
    server, pushed = service
    requests_made: list[str] = []
    page = offline_page(
        chrome, requests_made, extra_http_headers={"Authorization": f"Bearer {TOKEN}"}
    )
    page.goto(server.url + "/")
    keys = page.eval_on_selector_all(
        "#worklist tbody tr[data-patient]", "rows => rows.map(r => r.dataset.patient)"
    )
    assert sorted(keys) == sorted(p.removeprefix("Patient/") for p in pushed)
    screenshot(page, "serve-worklist")

    severe = next(p for p, v in pushed.items() if v == 400.0).removeprefix("Patient/")
    page.fill("#filter-text", "severe")
    visible = page.eval_on_selector_all(
        "#worklist tbody tr[data-patient]:not([hidden])", "rows => rows.map(r => r.dataset.patient)"
    )
    assert visible == [severe]
    assert page.locator("#filter-count").inner_text() == "1 of 3 patients shown"

    page.click(f'#worklist a[href="patients/{severe}"]')
    page.wait_for_load_state()
    assert page.url == f"{server.url}/patients/{severe}"
    points = page.locator("figure.chart svg [aria-roledescription='point'][aria-label^='ANC ']")
    rows = page.locator("table.data[id^=results] tbody tr")
    assert points.count() == rows.count() == 2  # the seeded 1800 and the pushed 400
    labels = " ".join(page.locator("figure.chart svg text").all_text_contents())
    assert "severe neutropenia (< 500)" in labels and "normal (≥ 1,500)" in labels
    low = page.locator("figure.chart svg [aria-label^='ANC 400 cells/µL']")
    low.focus()
    tip = page.locator("#chart-tip")
    assert tip.is_visible()
    assert "reported 400.0 /uL" in tip.inner_text() and "source Observation/" in tip.inner_text()
    assert "interrupt clozapine" in page.locator("dl.facts").inner_text()
    screenshot(page, "serve-patient-severe", full_page=True)
    assert axe_violations(page) == []
    page.goto(server.url + "/")
    assert axe_violations(page) == []
    assert requests_made == []
    page.context.close()
