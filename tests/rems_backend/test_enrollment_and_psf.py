"""The adapter and the reference REMS service over real HTTP: enrollment and PSF rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.rems_backend.conftest import Service
from tests.rems_backend.kit import PRESCRIBER_NPI, World, enroll_directly, rows, run
from tests.rems_service.conftest import TEST_RULES

T = datetime(2021, 12, 31, 12, 0, tzinfo=UTC)


@pytest.mark.integration
@pytest.mark.parametrize(("age_days", "enrolled"), [(30, True), (31, False)])
def test_enrollment_window_30_days_accepted_31_rejected(
    rems: Service, tmp_path: Path, age_days: int, enrolled: bool
) -> None:
    world = World()
    world.anc(T - timedelta(days=age_days, hours=4), 2100)
    dispense = world.dispense(T - timedelta(hours=1), status="preparation")

    out = run(world, tmp_path, T, rems.url)

    form = out.form()
    assert form["signerRole"] == "designee"
    authorization = out.authorization(dispense)
    assert authorization["backend"] == "rems"
    patients = rows(rems.db, "SELECT rems_id FROM patients")
    if enrolled:
        assert form["state"] == "accepted"
        assert len(patients) == 1
        assert authorization["outcome"] == "authorized"
        assert authorization["authorizationNumber"].startswith("RDA-20211231-")
        [issue] = out.findings("dispense-authorized")
        assert authorization["authorizationNumber"] in issue["detail"]
    else:
        assert form["state"] == "rejected"
        assert patients == []
        [rejected] = out.findings("psf-rejected")
        assert "baseline-anc-too-old" in rejected["detail"]
        assert (authorization["outcome"], authorization["reasons"]) == (
            "not-authorized",
            ["patient-not-enrolled"],
        )
        assert authorization["authorizationNumber"] is None


@pytest.mark.integration
@pytest.mark.parametrize("designation", ["benign-ethnic-neutropenia", "hospice"])
def test_designee_never_enrolls_ben_or_hospice_the_prescriber_does(
    rems: Service, tmp_path: Path, designation: str
) -> None:
    world = World()
    world.designation(designation, T - timedelta(days=60))
    world.anc(T - timedelta(days=9), 1800)
    world.anc(T - timedelta(days=2), 1900)
    dispense = world.dispense(T - timedelta(hours=1), status="preparation")

    first = run(world, tmp_path / "1", T, rems.url)

    assert (first.form()["state"], first.form()["signerRole"]) == (
        "awaiting-prescriber",
        "prescriber",
    )
    [action] = first.findings("psf-prescriber-action-required")
    assert action["code"]["coding"][0]["code"] == "VALIDAT"
    assert rows(rems.db, "SELECT * FROM patients") == [], "nothing is sent for the prescriber"
    assert first.authorization(dispense)["reasons"] == ["patient-not-enrolled"]

    world.keep_issues(first)
    later = T + timedelta(hours=2)
    world.answer(
        action["id"], "Practitioner/dr", later - timedelta(hours=1), "Designation confirmed"
    )
    second = run(world, tmp_path / "2", later, rems.url)

    assert second.form()["state"] == "accepted"
    [psf] = rows(rems.db, "SELECT signer_role, signer_id, ben, hospice FROM psfs")
    assert (psf["signer_role"], psf["signer_id"]) == ("prescriber", PRESCRIBER_NPI)
    assert bool(psf["ben"]) == (designation == "benign-ethnic-neutropenia")
    assert bool(psf["hospice"]) == (designation == "hospice")
    assert second.authorization(dispense)["outcome"] == "authorized"
    assert second.findings("psf-prescriber-action-required") == []


def _enrolled_on_therapy(
    rems: Service, start: datetime, record_rems_id: bool = True, weekly_results: bool = True
) -> World:
    """Enrolled by the prescriber at `start`; weekly supplies and weekly ANCs since (a routine
    history: no ANC deadline passes without a result, so no labs are missed for the period).
    With `record_rems_id` off the site never recorded the REMS id on the Patient (this call then
    enrolls nobody)."""
    rems_id = enroll_directly(rems.url, start) if record_rems_id else None
    world = World(rems_id=rems_id)
    world.anc(start - timedelta(days=1), 2000)
    for week in range(0, 5):
        world.dispense(start + timedelta(days=7 * week), days=7)
        if week and weekly_results:
            world.anc(start + timedelta(days=7 * week - 1), 2000)
    return world


@pytest.mark.integration
def test_routine_psf_is_submitted_by_the_designee(rems: Service, tmp_path: Path) -> None:
    start = T - timedelta(days=35)
    world = _enrolled_on_therapy(rems, start)
    world.anc(T - timedelta(days=1), 2300)

    out = run(world, tmp_path, T, rems.url)

    assert (out.form()["state"], out.form()["signerRole"]) == ("accepted", "designee")
    stored = rows(rems.db, "SELECT signer_role, reporting_period FROM psfs WHERE kind = 'psf'")
    assert [(r["signer_role"], r["reporting_period"]) for r in stored] == [("designee", "2021-12")]


@pytest.mark.integration
def test_a_psf_is_sent_again_in_the_month_only_when_something_changed(
    rems: Service, tmp_path: Path
) -> None:
    start = T - timedelta(days=35)
    world = _enrolled_on_therapy(rems, start)
    world.anc(T - timedelta(days=3), 2300)
    run(world, tmp_path / "1", T - timedelta(days=2), rems.url)

    unchanged = run(world, tmp_path / "2", T - timedelta(days=1), rems.url)
    assert unchanged.form()["state"] == "accepted"
    assert len(rows(rems.db, "SELECT * FROM psfs WHERE kind = 'psf'")) == 1

    world.anc(T - timedelta(hours=5), 2400)
    changed = run(world, tmp_path / "3", T, rems.url)
    assert changed.form()["state"] == "accepted"
    stored = rows(rems.db, "SELECT latest_anc_per_ul FROM psfs WHERE kind = 'psf' ORDER BY id")
    assert [r["latest_anc_per_ul"] for r in stored] == [2300, 2400]


@pytest.mark.integration
def test_a_patient_enrolled_elsewhere_is_found_by_identity(rems: Service, tmp_path: Path) -> None:
    enroll_directly(rems.url, T - timedelta(days=35))
    world = _enrolled_on_therapy(rems, T - timedelta(days=35), record_rems_id=False)
    world.anc(T - timedelta(days=1), 2300)
    dispense = world.dispense(T - timedelta(hours=1), status="preparation")

    out = run(world, tmp_path, T, rems.url)

    assert out.form()["state"] == "accepted"  # enrollment refused as a duplicate; PSF matched
    assert len(rows(rems.db, "SELECT * FROM patients")) == 1
    assert out.authorization(dispense)["outcome"] == "authorized"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("latest", "why"),
    [
        (900, "ANC 900"),  # below 1000 (general population)
        (None, "labs were missed"),  # no ANC since the weekly one was due
    ],
)
def test_rationale_goes_to_the_prescriber_and_is_submitted_after_their_answer(
    rems: Service, tmp_path: Path, latest: int | None, why: str
) -> None:
    start = T - timedelta(days=35)
    world = _enrolled_on_therapy(rems, start, weekly_results=latest is not None)
    if latest is not None:
        world.anc(T - timedelta(days=1), latest)

    first = run(world, tmp_path / "1", T, rems.url)

    assert first.form()["treatmentRationaleRequired"] is True
    assert first.form()["state"] == "awaiting-prescriber"
    [action] = first.findings("psf-prescriber-action-required")
    assert why in action["detail"]
    assert rows(rems.db, "SELECT * FROM psfs WHERE kind = 'psf'") == []

    world.keep_issues(first)
    rationale = "Benefit outweighs risk; repeat ANC ordered, hematology consulted"
    world.answer(action["id"], "Practitioner/dr", T + timedelta(minutes=30), rationale)
    second = run(world, tmp_path / "2", T + timedelta(hours=1), rems.url)

    assert (second.form()["state"], second.form()["signerRole"]) == ("accepted", "prescriber")
    [psf] = rows(rems.db, "SELECT signer_role, treatment_rationale FROM psfs WHERE kind = 'psf'")
    assert (psf["signer_role"], psf["treatment_rationale"]) == ("prescriber", rationale)


@pytest.mark.integration
def test_a_pharmacists_answer_is_not_a_prescriber_rationale(rems: Service, tmp_path: Path) -> None:
    start = T - timedelta(days=35)
    world = _enrolled_on_therapy(rems, start)
    world.anc(T - timedelta(days=1), 900)
    first = run(world, tmp_path / "1", T, rems.url)
    [action] = first.findings("psf-prescriber-action-required")

    world.keep_issues(first)
    world.answer(action["id"], "Practitioner/pharmacist", T + timedelta(minutes=5), "Looks fine")
    second = run(world, tmp_path / "2", T + timedelta(hours=1), rems.url)

    assert second.form()["state"] == "awaiting-prescriber"
    assert rows(rems.db, "SELECT * FROM psfs WHERE kind = 'psf'") == []


@pytest.mark.integration
def test_unseeded_service_answers_not_certified_and_not_enrolled(tmp_path: Path) -> None:
    from adapter.rems_service import BackgroundServer, make_app

    world = World()
    world.anc(T - timedelta(days=2), 2100)
    dispense = world.dispense(T - timedelta(hours=1), status="preparation")
    with BackgroundServer(make_app(tmp_path / "empty.sqlite", rules=TEST_RULES)) as url:
        out = run(world, tmp_path, T, url)
    assert out.form()["state"] == "rejected"
    [rejected] = out.findings("psf-rejected")
    assert "prescriber is not certified" in rejected["detail"]
    assert [c["coding"][0]["code"] for c in rejected["evidence"][0]["code"]] == [
        "prescriber-not-certified"
    ]
    assert out.authorization(dispense)["reasons"] == ["patient-not-enrolled"]
