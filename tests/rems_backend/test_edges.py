"""What the rems backend does when the record lacks what a REMS request needs, and the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import responses

from adapter.cli import main
from tests.rems_backend.conftest import Service
from tests.rems_backend.kit import World, enroll_directly, iso, rows, run

E = datetime(2021, 3, 1, 12, 0, tzinfo=UTC)


def _on_therapy(rems: Service) -> World:
    world = World(rems_id=enroll_directly(rems.url, E))
    world.anc(E - timedelta(days=1), 2000)
    world.dispense(E, days=7)
    return world


@pytest.mark.integration
def test_no_pharmacy_identifier_unless_a_default_is_configured(
    rems: Service, tmp_path: Path
) -> None:
    world = _on_therapy(rems)
    now = E + timedelta(days=6)
    world.anc(now - timedelta(hours=5), 2100)
    dispense = world.dispense(now - timedelta(hours=1), status="preparation", pharmacy="unknown")

    without = run(world, tmp_path / "1", now, rems.url)
    assert without.authorization(dispense)["reasons"] == ["pharmacy-not-certified"]
    [issue] = without.findings("dispense-not-authorized")
    assert "names no pharmacy Organization" in issue["detail"]
    assert rows(rems.db, "SELECT * FROM decisions") == []

    configured = run(world, tmp_path / "2", now, rems.url, "--rems-pharmacy-id", "pharm-out")
    assert configured.authorization(dispense)["outcome"] == "authorized"


@pytest.mark.integration
def test_an_override_without_a_rationale_is_not_requested(rems: Service, tmp_path: Path) -> None:
    world = World(rems_id=enroll_directly(rems.url, E, hospice=True))
    world.designation("hospice", E - timedelta(days=30))
    world.anc(E - timedelta(days=1), 2000)
    world.dispense(E, days=7)
    now = E + timedelta(days=40)
    world.anc(now - timedelta(days=1), 2000)
    dispense = world.dispense(now - timedelta(hours=1), status="preparation")
    denied = run(world, tmp_path / "1", now, rems.url)
    [issue] = denied.findings("dispense-not-authorized")
    world.keep_issues(denied)
    world.answer(issue["id"], "Practitioner/ph", now + timedelta(minutes=5), "  ", "EMAUTH")

    second = run(world, tmp_path / "2", now + timedelta(hours=1), rems.url)

    assert second.authorization(dispense)["outcome"] == "not-authorized"
    [again] = second.findings("dispense-not-authorized")
    assert "without a dispense rationale" in again["detail"]
    assert rows(rems.db, "SELECT * FROM decisions WHERE kind = 'override'") == []


@pytest.mark.integration
def test_missing_identity_is_reported_by_element_never_by_value(
    rems: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World()
    del world.resources[0]["birthDate"]
    world.anc(E - timedelta(days=2), 2100)
    dispense = world.dispense(E - timedelta(hours=1), status="preparation")

    out = run(world, tmp_path, E, rems.url)

    assert out.form()["state"] == "prepared"
    assert out.authorization(dispense)["reasons"] == ["patient-not-enrolled"]
    err = capsys.readouterr().err
    assert "Patient/p1: no REMS enrollment sent: missing Patient.birthDate" in err
    assert "Doe" not in err and "02139" not in err
    assert rows(rems.db, "SELECT * FROM patients") == []


@pytest.mark.integration
def test_reruns_with_the_same_clock_are_byte_identical(rems: Service, tmp_path: Path) -> None:
    world = _on_therapy(rems)
    now = E + timedelta(days=6)
    world.anc(now - timedelta(hours=5), 2100)
    world.dispense(now - timedelta(hours=1), status="preparation")
    run(world, tmp_path, now, rems.url)
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    run(world, tmp_path, now, rems.url)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == first
    assert len(rows(rems.db, "SELECT * FROM decisions")) == 1  # the rerun was a replay


@pytest.mark.parametrize("url", ["rems.example.org", "ftp://rems.example.org", "http://h/?q=1"])
def test_a_bad_rems_url_is_a_usage_error(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = World().write(tmp_path)
    assert main(["run", "--source", str(source), "--out", str(tmp_path / "o"), "--rems", url]) == 2
    assert "--rems: the REMS base URL must" in capsys.readouterr().err


@responses.activate
def test_once_the_rems_is_down_the_run_stops_asking(tmp_path: Path) -> None:
    """No patient after the first waits out the retries again; nothing is silently passed."""
    anything = re.compile(r"http://rems\.test/.*")
    for method in (responses.GET, responses.POST):
        responses.add(method, anything, body=requests.exceptions.ConnectionError("down"))
    worlds = [World(patient_id=f"p{n}", rems_id=f"RP0000000{n}") for n in (1, 2)]
    dispenses = []
    for world in worlds:
        world.anc(E - timedelta(days=1), 2000)
        world.dispense(E - timedelta(days=5), days=7)
        dispenses.append(world.dispense(E - timedelta(hours=1), status="preparation"))
    merged = World(patient_id="p1")
    merged.resources = [r for world in worlds for r in world.resources]
    source = merged.write(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["run", "--source", str(source), "--out", str(out), "--as-of", iso(E)]

    assert main([*argv, "--rems", "http://rems.test", "--rems-attempts", "2"]) == 0

    assert len(responses.calls) == 2  # the first request's two attempts, then no more
    lines = (out / "authorizations.ndjson").read_text().splitlines()
    assert [
        ('"pending"' in line, dispense in line)
        for line, dispense in zip(lines, dispenses, strict=True)
    ] == [
        (True, True),
        (True, True),
    ]
    assert (out / "psf.ndjson").read_text().count('"state":"prepared"') == 2
    assert (out / "DetectedIssue.ndjson").read_text().count("dispense-authorization-pending") == 2
