"""The scenario kit builds valid FHIR R4 resources (checked with the R4B models), so a scenario
failure is never a malformed test input."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k


def _all_kinds() -> list[k.Resource]:
    pid = "kit"
    res = k.on_clozapine(pid, "2026-01-05", "2026-02-16", designations=(k.BEN, k.HOSPICE))
    res += [
        k.anc(pid, "2026-02-16", 1.2, code="10*3/uL", specimen="s1", period=True),
        k.anc(pid, "2026-02-17", 1.2, code=None, unit="K/uL"),
        k.wbc(pid, "2026-02-16", 4.0),
        k.percent(pid, "2026-02-16", 30, loinc="770-8"),
        k.pending_dispense(pid, "2026-02-16", category="discharge"),
        k.pending_dispense(pid, "2026-02-17", status="in-progress"),
        k.designation(pid, k.HOSPICE, kind="Flag"),
    ]
    issue = k.prior_issue(pid, "anc-mild-neutropenia", ["o1"], "2026-02-16")
    res += [k.prescriber_rationale(issue, "2026-02-17"), k.pharmacist_override(issue, "2026-02-17")]
    return res


@pytest.mark.parametrize("resource", _all_kinds(), ids=lambda r: f"{r['resourceType']}-{r['id']}")
def test_builders_produce_valid_r4_resources(resource: k.Resource) -> None:
    module = importlib.import_module(f"fhir.resources.R4B.{resource['resourceType'].lower()}")
    model = getattr(module, resource["resourceType"])
    model.model_validate(json.loads(json.dumps(resource)))


def test_add_months_clamps_to_month_end() -> None:
    assert k.add_months("2026-01-31", 1) == "2026-02-28"
    assert k.add_months("2024-01-31", 1) == "2024-02-29"
    assert k.add_months("2026-12-15", 1) == "2027-01-15"
    assert k.add_months("2026-02-16", 6) == "2026-08-16"


@pytest.mark.parametrize("fmt", ["ndjson", "bundle", "folder", "shuffled"])
def test_write_source_keeps_every_resource(tmp_path: Path, fmt: str) -> None:
    resources = _all_kinds()
    path = k.write_source(tmp_path, resources, fmt)
    if fmt == "bundle":
        found = [e["resource"] for e in json.loads(path.read_text())["entry"]]
    else:
        files = sorted(path.glob("*.ndjson")) if path.is_dir() else [path]
        found = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    key = lambda r: (r["resourceType"], r["id"], r.get("meta", {}).get("versionId"))  # noqa: E731
    assert sorted(map(key, found)) == sorted(map(key, resources))
