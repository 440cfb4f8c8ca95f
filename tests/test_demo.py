"""`rems-adapter demo`: the implementation agrees with the hand-derived expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.cli import main

EXPECTED = json.loads(
    (Path(__file__).parent.parent / "adapter" / "demo" / "expected.json").read_text()
)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("expected", EXPECTED["patients"], ids=lambda e: e["patient"])
def test_demo_patient_matches_hand_derived_outcome(demo_out: Path, expected: dict) -> None:
    status = {row["patient"]: row for row in _lines(demo_out / "status.ndjson")}
    row = status[expected["patient"]]
    for key, value in expected["status"].items():
        assert row[key] == value, f"{key}: {expected['why']}"
    authorizations = {a["dispense"]: a for a in _lines(demo_out / "authorizations.ndjson")}
    for dispense in expected.get("dispenses", []):
        got = authorizations[dispense["dispense"]]
        assert got["outcome"] == dispense["outcome"], expected["why"]
        assert sorted(got["reasons"]) == sorted(dispense["reasons"]), expected["why"]


def test_demo_prints_a_pharmacist_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = next(line for line in lines if line.startswith("Patient"))
    for column in ("Pop.", "ANC/µL", "Collected", "Recommend.", "Next ANC due", "Dispense"):
        assert column in header
    by_patient = {line.split()[0]: line for line in lines if line.startswith("demo-")}
    notes = {}
    for index, line in enumerate(lines):
        if line.startswith("demo-"):
            follow = [f.strip() for f in lines[index + 1 : index + 3] if f.startswith(" ")]
            notes[line.split()[0]] = " ".join(follow)
    # population and hospice marked; due dates inside the grace period marked
    assert by_patient["demo-17"].split()[1] == "BEN"
    assert by_patient["demo-07"].split()[1] == "H" and "hospice" in notes["demo-07"]
    assert by_patient["demo-01"].split()[1] == "-"
    assert "2026-03-01 grace" in by_patient["demo-27"]
    assert "2026-02-24 OVERDUE" in by_patient["demo-20"]
    assert "INTERRUPT" in by_patient["demo-10"] and "REFUSED" in by_patient["demo-10"]
    # hematology consult and repeat-by only where they apply
    assert "hematology consult" in notes["demo-10"] and "repeat ANC by" in notes["demo-10"]
    assert "treatment-interrupted" in notes["demo-10"]
    assert notes["demo-05"] == ""
    assert "overridden: treatment-interrupted" in notes["demo-28"]
    assert str(tmp_path) in printed
    assert "Read 2177 resources in " in printed


def test_demo_formats_csv_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import csv

    assert main(["demo", "--out", str(tmp_path), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    row = {r["patient"]: r for r in records}["demo-27"]
    assert row["dueState"] == "grace" and row["population"] == "general"
    assert {r["patient"]: r for r in records}["demo-17"]["population"] == "ben"
    assert main(["demo", "--out", str(tmp_path), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["patient"] for r in parsed] == [r["patient"] for r in records]
    assert {r["patient"]: r for r in parsed}["demo-10"]["reasons"] == "treatment-interrupted"


def test_demo_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name)]) == 0
    for name in ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_demo_without_out_reuses_one_folder_in_the_user_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folders = []
    for _ in range(2):
        assert main(["demo"]) == 0
        printed = capsys.readouterr().out
        folders.append(Path(printed.strip().splitlines()[-1].removeprefix("Outputs in ")))
    assert folders[0] == folders[1] == tmp_path / "cache" / "rems-adapter" / "demo"
    assert (folders[0] / "status.ndjson").is_file()
