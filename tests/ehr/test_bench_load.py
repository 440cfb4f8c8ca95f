"""The benchmark workload loads into a real FHIR server (sekmet-fhir on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.bench import workload
from tests.fhir_server import SekmetServer

pytestmark = pytest.mark.integration


def test_workload_loads_into_a_fhir_server_and_reads_back(
    fhir_server: SekmetServer, tmp_path: Path
) -> None:
    stats = workload.generate(tmp_path, patients=1, seed=11)

    sent = workload.load_server(fhir_server.base_url, tmp_path, batch_size=250)

    assert sent == stats.resources
    patient = requests.get(f"{fhir_server.base_url}/Patient/bench-0000000", timeout=10)
    assert patient.status_code == 200
    assert patient.json()["identifier"][0]["value"] == "BM00000000"
    found = requests.get(
        f"{fhir_server.base_url}/MedicationDispense",
        params={"subject": "Patient/bench-0000000", "_summary": "count"},
        timeout=10,
    )
    assert found.status_code == 200
    assert found.json()["total"] == stats.by_type["MedicationDispense"]
