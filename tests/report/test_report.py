"""The report from the decisions: history, worklist groups, self-contained deterministic HTML,
and `run --report` (no browser here; tests/report/test_browser.py opens it)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path

import pytest

from adapter.batch.run import BatchSettings, run_batch
from adapter.cli import main
from adapter.core.evaluate import Context, Evaluation
from adapter.core.findings import Finding
from adapter.core.history import patient_history
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.demo.command import DEMO_AS_OF, demo_sources
from adapter.mappings_loader import load_reference_data
from adapter.report.chart import chart_spec
from adapter.report.view import GROUPS, PatientView, build_views

from .conftest import DemoRun

DATA = load_reference_data(None)


@dataclass
class Observed:
    """What run_batch hands its observer (every batch), as the report sees it."""

    inputs: list[PatientInputs] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    decisions: list[DispenseDecision] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    context: Context | None = None

    def __call__(self, inputs, evaluations, context, decisions, findings) -> None:  # type: ignore[no-untyped-def]
        self.inputs += inputs
        self.evaluations += evaluations
        self.decisions += decisions
        self.findings += findings
        self.context = context


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Observed:
    out = tmp_path_factory.mktemp("batch")
    observed = Observed()
    result = run_batch(
        BatchSettings(tuple(demo_sources()), out, DEMO_AS_OF, UTC), DATA, observe=observed
    )
    assert list(result.evaluations) == observed.evaluations  # the same decisions, observed
    assert list(result.decisions) == observed.decisions
    return observed


@pytest.fixture(scope="module")
def views(demo: Observed) -> dict[str, PatientView]:
    assert demo.context is not None
    built = build_views(demo.inputs, demo.evaluations, demo.context, demo.decisions, demo.findings)
    return {view.key: view for view in built}


def test_the_history_replays_exactly_the_decisions(demo: Observed) -> None:
    assert demo.context is not None
    for inputs, evaluation in zip(demo.inputs, demo.evaluations, strict=True):
        history = patient_history(inputs, evaluation, demo.context)
        assert history.state == evaluation.timeline.state, inputs.patient
        assert history.assessments == evaluation.timeline.assessments, inputs.patient
        assert history.next_due == evaluation.status.next_due
        used = [p for p in history.results if p.kind in ("direct", "derived")]
        assert [p.value_per_ul for p in used] == [
            a.anc.value_per_ul for a in evaluation.timeline.assessments
        ]


def test_severe_excursion_awaiting_the_prescriber_is_an_ongoing_span(
    views: dict[str, PatientView],
) -> None:
    view = views["demo-15"]  # severe 380 on 02-09, now 1800: the prescriber must decide
    spans = {(s.kind, s.start, s.end, s.label) for s in view.history.spans}
    assert ("excursion", date(2026, 2, 9), None, "severe-neutropenia") in spans
    assert ("interruption", date(2026, 2, 9), None, "treatment interrupted") in spans
    assert view.group == "not-authorized"
    assert "prescriber" in view.flags
    assert any("prescriber's decision" in reason for reason in view.reasons)


def test_recovered_excursions_end_and_frequency_steps_follow_the_results(
    views: dict[str, PatientView],
) -> None:
    view = views["demo-12"]  # moderate in January, >= 1500 on 02-09: weekly for 4 weeks
    excursions = [s for s in view.history.spans if s.kind == "excursion"]
    assert excursions and all(s.end is not None for s in excursions)
    assert excursions[-1].label == "moderate-neutropenia"
    steps = view.history.frequency
    assert "daily" in {s.frequency for s in steps}
    assert steps[-1].frequency == view.frequency
    assert all(a.end <= b.start for a, b in itertools.pairwise(steps))


def test_unevaluable_and_withdrawn_results_are_kept_and_marked(
    views: dict[str, PatientView],
) -> None:
    unevaluable = [p for p in views["demo-27"].history.results if p.kind == "unevaluable"]
    assert len(unevaluable) == 1
    assert unevaluable[0].reported[0].unit == "10*3/uL"
    assert unevaluable[0].value_per_ul is None
    withdrawn = [p for p in views["demo-24"].history.results if p.kind == "withdrawn"]
    assert len(withdrawn) == 1
    assert "entered in error" in withdrawn[0].note
    assert withdrawn[0].reported[0].value is not None  # what was withdrawn, as reported


def test_a_restart_after_a_long_gap_is_a_new_course(views: dict[str, PatientView]) -> None:
    courses = views["demo-29"].history.courses  # 40 days without clozapine
    assert [c.restart for c in courses] == [False, True]


def test_every_patient_on_clozapine_is_on_the_worklist_once_in_group_order(
    demo: Observed, views: dict[str, PatientView]
) -> None:
    on = {e.patient.removeprefix("Patient/") for e in demo.evaluations if e.on_clozapine}
    assert set(views) == on
    assert demo.context is not None
    ordered = build_views(
        demo.inputs, demo.evaluations, demo.context, demo.decisions, demo.findings
    )
    rank = [g for g, _ in GROUPS]
    assert [rank.index(v.group) for v in ordered] == sorted(rank.index(v.group) for v in ordered)
    for view in ordered:
        assert view.group == view.flags[0]
        assert view.reasons and view.notes


def test_groups_follow_the_decisions(demo: Observed, views: dict[str, PatientView]) -> None:
    by_patient = {d.dispense.patient.removeprefix("Patient/"): d for d in demo.decisions}
    for key, view in views.items():
        decision = by_patient.get(key)
        refused = decision is not None and decision.outcome in ("not-authorized", "pending")
        assert ("not-authorized" in view.flags) == refused, key
        status = next(e.status for e in demo.evaluations if e.patient == view.patient)
        assert ("overdue" in view.flags) == status.overdue, key
        assert ("repeat" in view.flags) == (status.repeat_by is not None), key
    assert views["demo-20"].group == "not-authorized" and "overdue" in views["demo-20"].flags
    assert views["demo-07"].hospice and views["demo-07"].frequency == "every-6-months"
    assert views["demo-31"].due_state == "grace"


def test_thresholds_are_the_patients_table(views: dict[str, PatientView]) -> None:
    def bands(view: PatientView) -> list[int]:
        spec = chart_spec(view.history, DATA.protocol, view.population, UTC)  # type: ignore[arg-type]
        values = spec["vconcat"][0]["layer"][0]["data"]["values"]
        return [band["lo"] for band in values]

    assert bands(views["demo-01"]) == [1500, 1000, 500, 0]
    ben = views["demo-17"]
    assert bands(ben) == [1000, 500, 0]
    assert ben.ben_baseline is not None
    layers = ben.history and chart_spec(ben.history, DATA.protocol, "ben", UTC)["vconcat"][0]
    texts = str(layers)
    assert "BEN baseline" in texts
    assert "BEN baseline" not in str(
        chart_spec(views["demo-01"].history, DATA.protocol, "general", UTC)
    )


def test_the_report_is_self_contained_and_deterministic(demo_run: DemoRun, tmp_path: Path) -> None:
    html = demo_run.report.read_text(encoding="utf-8")
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "report.html").read_bytes() == demo_run.report.read_bytes()
    # Nothing to fetch: no external script, style, font or image; only the SVG namespaces.
    assert not re.search(r"<script[^>]+src=|<link\b|@import|@font-face|<img\b", html)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    # Every patient on clozapine has a worklist row and a chart.
    for row in demo_run.status:
        key = row["patient"].removeprefix("Patient/")
        assert f'data-patient="{key}"' in html
        assert f'id="patient-{key}"' in html
    assert html.count("<svg xmlns") == len(demo_run.status)
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids must be unique across the inlined charts"


def test_run_writes_the_report_with_the_same_decisions(tmp_path: Path, demo_run: DemoRun) -> None:
    report = tmp_path / "worklist.html"
    code = main(
        [
            "run",
            *(arg for source in demo_sources() for arg in ("--source", source)),
            "--out",
            str(tmp_path / "out"),
            "--as-of",
            DEMO_AS_OF.isoformat(),
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert code == 0
    assert report.read_bytes() == demo_run.report.read_bytes()
    assert (
        report.stat().st_mode & 0o777 == (tmp_path / "out" / "status.ndjson").stat().st_mode & 0o777
    )


@pytest.mark.parametrize(
    ("target", "message"), [("folder", "is a folder"), ("missing/r.html", "does not exist")]
)
def test_a_bad_report_path_is_a_usage_error(
    tmp_path: Path, target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    code = main(
        [
            "run",
            "--source",
            demo_sources()[0],
            "--out",
            str(tmp_path / "out"),
            "--report",
            str(tmp_path / target),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--report" in err and message in err
    assert "Traceback" not in err


def test_result_kinds_have_their_own_shapes(views: dict[str, PatientView]) -> None:
    """Not colour: each kind of result is its own shape, given per mark (no shared scale)."""

    def shapes(key: str) -> dict[str, set[str]]:
        view = views[key]
        spec = chart_spec(view.history, DATA.protocol, view.population, UTC)  # type: ignore[arg-type]
        found: dict[str, set[str]] = {}
        for panel in spec["vconcat"]:
            for layer in panel["layer"]:
                if layer["encoding"].get("shape", {}).get("field") == "shape":
                    for item in layer["data"]["values"]:
                        found.setdefault(item["kind"], set()).add(item["shape"])
        return found

    assert shapes("demo-27")["unevaluable"] == {"M-1,-1L1,1M1,-1L-1,1"}
    assert shapes("demo-24")["withdrawn"] == {"square"}
    assert shapes("demo-24")["ANC"] == {"circle"}
    assert shapes("demo-22")["derived ANC"] == {"diamond"}
