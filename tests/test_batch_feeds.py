"""Clinical-rules section 1 through `rems-adapter run`: "When the Observation carries no
effective time, the collection time is that of the DiagnosticReport that lists it in `result`
(`effective[x]`), else of its `specimen` (`Specimen.collection.collected[x]`); with none of them
the result is unevaluable." The official R4 example Bundle-101 (a CBC whose collection time
sits on the DiagnosticReport) is read as a lab system sends it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests import scenario_kit as k
from tests.r4_artefacts import examples_dir

PID = "p-feed"


def _undated_anc(oid: str, value: float, **kwargs: Any) -> k.Resource:
    obs = k.anc(PID, "2026-01-20", value, oid=oid, **kwargs)
    del obs["effectiveDateTime"]
    return obs


def _report(rid: str, results: list[str], effective: str | None, **extra: Any) -> k.Resource:
    report: k.Resource = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
        "subject": {"reference": f"Patient/{PID}"},
        "issued": "2026-01-21T15:00:00Z",
        "result": [{"reference": f"Observation/{oid}"} for oid in results],
        **extra,
    }
    if effective is not None:
        report["effectiveDateTime"] = effective
    return report


def _specimen(sid: str, collected: str) -> k.Resource:
    return {
        "resourceType": "Specimen",
        "id": sid,
        "subject": {"reference": f"Patient/{PID}"},
        "collection": {"collectedDateTime": collected},
    }


def _findings(result: k.Result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for issue in result.issues:
        out.setdefault(k.finding_code(issue) or "", []).extend(k.evidence_refs(issue))
    return out


CASES = [
    pytest.param(
        [_undated_anc("o1", 800), _report("r1", ["o1"], "2026-01-19T07:30:00Z")],
        "2026-01-19T07:30:00Z",
        id="from-the-diagnostic-report",
    ),
    pytest.param(
        [
            _undated_anc("o1", 800, specimen="s1"),
            _specimen("s1", "2026-01-18T06:00:00Z"),
        ],
        "2026-01-18T06:00:00Z",
        id="from-the-observation-specimen",
    ),
    pytest.param(
        [
            _undated_anc("o1", 800),
            _report("r1", ["o1"], None, specimen=[{"reference": "Specimen/s1"}]),
            _specimen("s1", "2026-01-18T06:00:00Z"),
        ],
        "2026-01-18T06:00:00Z",
        id="from-the-report-specimen",
    ),
    pytest.param(
        [
            _undated_anc("o1", 800, specimen="s1"),
            _specimen("s1", "2026-01-18T06:00:00Z"),
            _report("r1", ["o1"], "2026-01-19T07:30:00Z"),
        ],
        "2026-01-19T07:30:00Z",
        id="the-report-comes-before-the-specimen",
    ),
]


@pytest.mark.parametrize(("resources", "collected"), CASES)
def test_collection_time_from_report_or_specimen(tmp_path: Path, resources, collected) -> None:
    history = [*k.on_clozapine(PID, "2026-01-05", "2026-01-05"), *resources]
    result = k.run_batch(tmp_path, history, k.as_of("2026-01-21"))
    findings = _findings(result)
    assert "anc-unevaluable" not in findings
    assert findings["anc-moderate-neutropenia"] == ["Observation/o1"]
    assert result.status_for(PID)["latestAnc"]["collected"] == collected


@pytest.mark.parametrize(
    "resources",
    [
        [_undated_anc("o1", 800)],
        [_undated_anc("o1", 800), _report("r1", ["o1"], None)],
        [_undated_anc("o1", 800, specimen="missing")],
        # another patient's report never dates this result
        [
            _undated_anc("o1", 800),
            _report("r1", ["o1"], "2026-01-19T07:30:00Z", subject={"reference": "Patient/x"}),
        ],
        # two reports that disagree: not guessed
        [
            _undated_anc("o1", 800),
            _report("r1", ["o1"], "2026-01-19T07:30:00Z"),
            _report("r2", ["o1"], "2026-01-18T07:30:00Z"),
        ],
    ],
    ids=["nothing", "report-without-time", "unknown-specimen", "other-patient", "disagree"],
)
def test_without_any_collection_time_the_result_is_unevaluable(tmp_path: Path, resources) -> None:
    history = [*k.on_clozapine(PID, "2026-01-05", "2026-01-05"), *resources]
    result = k.run_batch(tmp_path, history, k.as_of("2026-01-21"))
    findings = _findings(result)
    assert "anc-moderate-neutropenia" not in findings
    assert findings["anc-unevaluable"] == ["Observation/o1"]


def test_official_r4_bundle_101_yields_an_anc_finding(tmp_path: Path) -> None:
    """The FHIR R4 example CBC: ANC r9 (751-8, 0.9 x10*9/L = 900 cells/uL) has no effective time;
    its DiagnosticReport says 2011-03-04T08:30:00+11:00."""
    source = tmp_path / "Bundle-101.json"
    shutil.copy(examples_dir() / "Bundle-101.json", source)
    out = tmp_path / "out"
    code, messages = k.invoke(
        ["run", "--source", str(source), "--out", str(out), "--as-of", "2011-03-05T12:00:00Z"]
    )
    assert code == 0, messages
    result = k.load_outputs(out, code, source, messages)
    findings = _findings(result)
    assert "anc-unevaluable" not in findings
    assert findings["anc-moderate-neutropenia"] == ["Observation/r9"]
    (issue,) = result.issues
    assert "ANC 900 cells/uL" in issue["detail"]
    # The derivation parts (r7 WBC, r8 neutrophil %) are not used: the collection has r9.
    assert issue["patient"]["reference"] == "Patient/pat2"
