"""Smoke-sized run of the benchmark workload generator and harness (no timing assertions)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import responses

from tests.bench import run, workload


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_workload_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = workload.generate(tmp_path / "a", patients=3, seed=7)
    workload.generate(tmp_path / "b", patients=3, seed=7)
    workload.generate(tmp_path / "c", patients=3, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert first.patients == 3


def test_workload_is_a_mixed_bulk_export_with_anc_results_one_in_twenty(tmp_path: Path) -> None:
    stats = workload.generate(tmp_path, observations=3000, seed=1)
    assert stats.observations >= 3000
    assert 19 <= stats.observations / stats.anc_related <= 21
    expected_files = {f"{kind}.ndjson" for kind in ("Patient", "Observation", "MedicationDispense")}
    assert expected_files <= {p.name for p in tmp_path.iterdir()}
    kinds = {json.loads(line)["resourceType"] for line in (tmp_path / "Observation.ndjson").open()}
    assert kinds == {"Observation"}
    dispenses = [json.loads(line) for line in (tmp_path / "MedicationDispense.ndjson").open()]
    clozapine = [
        d for d in dispenses if d["medicationCodeableConcept"]["coding"][0]["code"] == "2626"
    ]
    assert all("daysSupply" in d for d in clozapine)
    assert any(d["status"] == "completed" for d in clozapine)
    assert stats.pending == sum(d["status"] != "completed" for d in dispenses)


@responses.activate
def test_load_server_puts_every_resource_in_transactions(tmp_path: Path) -> None:
    stats = workload.generate(tmp_path, patients=1, seed=3)
    responses.add(responses.POST, "http://127.0.0.1:9/fhir", json={}, status=200)

    sent = workload.load_server("http://127.0.0.1:9/fhir/", tmp_path, batch_size=500)

    bundles = [json.loads(call.request.body) for call in responses.calls]
    entries = [entry for bundle in bundles for entry in bundle["entry"]]
    assert sent == stats.resources == len(entries)
    assert {bundle["type"] for bundle in bundles} == {"transaction"}
    assert all(len(bundle["entry"]) <= 500 for bundle in bundles)
    first = entries[0]
    assert first["request"] == {
        "method": "PUT",
        "url": f"{first['resource']['resourceType']}/{first['resource']['id']}",
    }
    order = [entry["resource"]["resourceType"] for entry in entries]
    assert order.index("Patient") < order.index("Observation")


@responses.activate
def test_load_server_names_the_failing_file(tmp_path: Path) -> None:
    workload.generate(tmp_path, patients=1, seed=3)
    responses.add(responses.POST, "http://127.0.0.1:9/fhir", status=422)
    with pytest.raises(RuntimeError, match=r"Organization\.ndjson failed with HTTP 422"):
        workload.load_server("http://127.0.0.1:9/fhir", tmp_path)


def test_benchmark_harness_prints_every_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run.main(
        ["--sizes", "2000", "--repeat", "1", "--naive-sample", "200", "--work", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    for heading in ("Throughput", "Scaling", "Naive baseline", "Core", "Where", "Targets"):
        assert any(line.startswith(heading) for line in printed.splitlines()), heading
    for target in ("throughput:", "naive:", "scaling:", "memory:"):
        assert f"  {target}" in printed
    rows = [line for line in printed.splitlines() if re.match(r"\s*\d[\d,]* ", line)]
    assert len(rows) == 5  # one row for this size in each of the five tables
    assert list(tmp_path.iterdir()) == []  # the export is removed afterwards
