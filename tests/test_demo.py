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
    assert "Patient" in printed and "Next due" in printed and "Dispense" in printed
    assert "not-authorized" in printed and "OVERDUE" in printed
    assert str(tmp_path) in printed


def test_demo_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name)]) == 0
    for name in ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_demo_without_out_uses_a_fresh_temporary_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    folder = Path(printed.strip().splitlines()[-1].removeprefix("Outputs in "))
    assert (folder / "status.ndjson").is_file()
