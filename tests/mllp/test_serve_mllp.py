"""HL7 v2 over MLLP end to end: serve (in process, SQLite state) with its MLLP source against
stock sekmet-fhir 0.1.1 (tests/serve fixtures). Decisions written back to the EHR."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter import cli
from adapter.mappings_loader import load_reference_data
from adapter.mllp.client import MllpClient
from adapter.mllp.server import Limits
from adapter.pipeline import PipelineSettings
from adapter.pipeline.mllp_source import MllpSettings
from adapter.serve.mllp import MllpExtension
from adapter.serve.service import Service
from adapter.store.sqlite import SqliteStore
from adapter.watch.writeback import ensure_author_device
from tests.hl7v2.kit import SYSTEM, TABLES, options
from tests.mllp.e2e_kit import give_mrn, oru_now, patient_with_mrn
from tests.mllp.kit import msa
from tests.serve.conftest import Serve, fast_client
from tests.serve.kit import all_of, codes, issues, recent_history, seed

pytestmark = pytest.mark.integration


class MllpServe(Serve):
    """serve with the MLLP extension (the way `serve --mllp` assembles it)."""

    mllp: MllpExtension | None = None

    def start(self) -> MllpServe:
        self.store = SqliteStore(self.state)
        self.store.bind_ehr(self.ehr_url)
        device = fast_client(self.ehr_url)
        try:
            ensure_author_device(device, "test")
        finally:
            device.close()
        worker = replace(self.worker, retry_seconds=0.05, retry_max_seconds=0.5)
        settings = MllpSettings("127.0.0.1", 0, options(site_tz=UTC), Limits(), match_interval=0.2)
        self.mllp = MllpExtension(settings, TABLES)
        self.service = Service(
            self.store,
            load_reference_data(),
            self.backend,
            ehr=lambda: fast_client(self.ehr_url),
            pipeline=PipelineSettings(worker=worker, retry=self.retry),
            http=self.http,
            extensions=[self.mllp],
        )
        self.service.start()
        return self

    def parked(self) -> int:
        assert self.store is not None
        return len([item for item in self.store.parked_items() if item.source == "mllp"])

    def settle(self, timeout: float = 60.0) -> None:
        """Wait (bounded) until the matcher filed what it can, then until the pipeline is
        idle."""
        import time

        deadline = time.monotonic() + timeout
        while self.parked() and time.monotonic() < deadline:
            time.sleep(0.05)
        super().settle(timeout)

    def send(self, message: bytes) -> tuple[str, str]:
        assert self.mllp is not None and self.mllp.source is not None
        with MllpClient(*self.mllp.source.address, timeout=30) as lab:
            return msa(lab.send(message))


@pytest.fixture
def serve(ehr: Any, tmp_path: Path) -> Iterator[MllpServe]:
    started = MllpServe(ehr_url=ehr.base_url, state=tmp_path / "state.sqlite").start()
    try:
        yield started
    finally:
        started.stop()


def _open(found: list[dict[str, Any]]) -> list[str]:
    """The ANC findings still open (final); the PSF ones that come with a low ANC aside."""
    return [
        code
        for code in codes([issue for issue in found if issue.get("status") == "final"])
        if code.startswith("anc-")
    ]


def test_a_low_anc_over_mllp_is_decided_and_written_back_once(serve, ehr):
    patient = patient_with_mrn(ehr.base_url, "MRN-E1", [2100, 2000, 1900])
    assert serve.send(oru_now("MRN-E1", "E1-1", "0.8")) == ("AA", "E1-1")
    serve.settle()
    found = issues(ehr.base_url, patient)
    assert _open(found) == ["anc-moderate-neutropenia"]
    # the result was forwarded to the EHR: the evidence resolves there
    [issue] = [i for i in found if i["status"] == "final" and codes([i])[0].startswith("anc-")]
    for detail in issue["evidence"][0]["detail"]:
        kind, rid = detail["reference"].split("/")
        got = requests.get(f"{ehr.base_url}/{kind}/{rid}", timeout=10)
        assert got.status_code == 200 and got.json()["subject"]["reference"] == patient
    # the same message sent again: acknowledged again, no second effect
    assert serve.send(oru_now("MRN-E1", "E1-1", "0.8")) == ("AA", "E1-1")
    serve.settle()
    assert codes(issues(ehr.base_url, patient)) == codes(found)
    metrics = requests.get(f"{serve.url}/metrics", timeout=10).text
    # counted once: the duplicate is not a second result (serve counts distinct results)
    assert 'rems_adapter_results_received_total{source="mllp"} 1.0' in metrics


def test_a_correction_changes_the_decision(serve, ehr):
    patient = patient_with_mrn(ehr.base_url, "MRN-E2", [2100, 2000, 1900])
    assert serve.send(oru_now("MRN-E2", "E2-1", "0.8", filler="ACC2")) == ("AA", "E2-1")
    serve.settle()
    assert _open(issues(ehr.base_url, patient)) == ["anc-moderate-neutropenia"]
    # the lab corrects it (OBX-11 C, a new control id): the low finding is withdrawn
    assert serve.send(oru_now("MRN-E2", "E2-2", "1.8", "C", filler="ACC2")) == ("AA", "E2-2")
    serve.settle()
    assert "anc-moderate-neutropenia" not in _open(issues(ehr.base_url, patient))
    # one Observation on the EHR, now at its corrected version
    mapped = [
        o
        for o in all_of(ehr.base_url, "Observation")
        if o.get("subject", {}).get("reference") == patient
        and any("hl7v2-result" in i.get("system", "") for i in o.get("identifier", []))
    ]
    assert len(mapped) == 1 and mapped[0]["status"] == "corrected"


def test_a_withdrawal_removes_the_decision(serve, ehr):
    patient = patient_with_mrn(ehr.base_url, "MRN-E3", [2100, 2000, 1900])
    assert serve.send(oru_now("MRN-E3", "E3-1", "0.3", filler="ACC3"))[0] == "AA"
    serve.settle()
    assert _open(issues(ehr.base_url, patient)) == ["anc-severe-neutropenia"]
    assert serve.send(oru_now("MRN-E3", "E3-2", "", "W", filler="ACC3"))[0] == "AA"
    serve.settle()
    found = issues(ehr.base_url, patient)
    assert "anc-severe-neutropenia" not in _open(found)
    withdrawn = [i for i in found if codes([i]) == ["anc-severe-neutropenia"]]
    assert withdrawn and all(i["status"] == "entered-in-error" for i in withdrawn)


def test_an_unknown_patient_is_parked_then_decided_once_it_appears(serve, ehr, capsys):
    ids = seed(ehr.base_url, [recent_history([2100, 2000, 1900])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    assert serve.send(oru_now("MRN-E4", "E4-1", "0.8", filler="ACC4")) == ("AA", "E4-1")
    assert serve.mllp is not None and serve.mllp.source is not None
    source = serve.mllp.source
    assert source.match_parked() == 0  # the EHR knows no Patient with that identifier
    metrics = requests.get(f"{serve.url}/metrics", timeout=10).text
    assert "rems_adapter_mllp_unmatched 1.0" in metrics
    assert cli.main(["mllp", "unmatched", "--state", str(serve.state)]) == 0
    assert f"{SYSTEM}|MRN-E4  751-8" in capsys.readouterr().out
    assert issues(ehr.base_url, patient) == []  # never matched by guess
    give_mrn(ehr.base_url, patient, "MRN-E4")  # registration catches up
    serve.settle()  # the matcher's next pass (every 0.2 s here) files it
    assert _open(issues(ehr.base_url, patient)) == ["anc-moderate-neutropenia"]
    metrics = requests.get(f"{serve.url}/metrics", timeout=10).text
    assert "rems_adapter_mllp_unmatched 0.0" in metrics
