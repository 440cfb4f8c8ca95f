"""The adapter and the reference REMS service over real HTTP: dispense authorization rules."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.rems_backend.conftest import Service
from tests.rems_backend.kit import (
    World,
    enroll_directly,
    patient_status,
    rows,
    run,
)
from tests.rems_backend.lossy_proxy import lossy_proxy, url_of

E = datetime(2021, 1, 4, 12, 0, tzinfo=UTC)  # when the prescriber enrolled the patient
BEN = "benign-ethnic-neutropenia"


def _ben_patient(rems: Service) -> World:
    """Enrolled BEN patient: every monthly PSF needs the prescriber, so none is sent unless they
    answer; the enrollment form is the last PSF on record."""
    world = World(rems_id=enroll_directly(rems.url, E, ben=True))
    world.designation(BEN, E - timedelta(days=60))
    world.anc(E - timedelta(days=3), 1800)
    world.anc(E - timedelta(days=1), 1900)
    world.dispense(E, days=7)
    return world


@pytest.mark.integration
@pytest.mark.parametrize(
    ("days_since_psf", "outcome"), [(37, "authorized"), (38, "not-authorized")]
)
def test_rda_needs_a_psf_within_37_days(
    rems: Service, tmp_path: Path, days_since_psf: int, outcome: str
) -> None:
    world = _ben_patient(rems)
    now = E + timedelta(days=days_since_psf)
    world.anc(now - timedelta(days=1), 1700)
    dispense = world.dispense(now - timedelta(hours=1), status="preparation")

    out = run(world, tmp_path, now, rems.url)

    assert out.form()["state"] == "awaiting-prescriber"
    authorization = out.authorization(dispense)
    assert authorization["outcome"] == outcome
    if outcome == "not-authorized":
        assert authorization["reasons"] == ["psf-overdue"]
        [issue] = out.findings("dispense-not-authorized")
        assert [c["coding"][0]["code"] for c in issue["evidence"][0]["code"]] == ["psf-overdue"]
        assert issue["implicated"] == [{"reference": dispense}]


def _sixth_day(rems: Service, anc: int) -> tuple[World, datetime, str]:
    """An enrolled patient on day 6 of clozapine, an ANC of `anc` that morning and a dispense
    awaiting a decision: the world, the clock and the dispense."""
    world = World(rems_id=enroll_directly(rems.url, E))
    world.anc(E - timedelta(days=1), 2000)
    world.dispense(E, days=7)
    now = E + timedelta(days=6)
    world.anc(now - timedelta(hours=6), anc)
    return world, now, world.dispense(now - timedelta(hours=1), status="preparation")


@pytest.mark.integration
def test_an_interrupted_status_denies_the_dispense(rems: Service, tmp_path: Path) -> None:
    world, now, dispense = _sixth_day(rems, 400)  # severe: interrupt, rationale needed
    first = run(world, tmp_path / "1", now, rems.url)
    assert first.form()["treatmentStatus"] == "interrupt"
    assert first.form()["state"] == "awaiting-prescriber"
    [action] = first.findings("psf-prescriber-action-required")
    # The REMS still holds the enrollment PSF (continue) and grants; the ANC history does not.
    held = first.authorization(dispense)
    assert (held["outcome"], held["reasons"], held["authorizationNumber"]) == (
        "not-authorized",
        ["treatment-interrupted"],
        None,
    )
    [issue] = first.findings("dispense-not-authorized")
    assert "the REMS granted authorization" in issue["detail"]

    world.keep_issues(first)
    later = now + timedelta(hours=1)
    world.answer(action["id"], "Practitioner/dr", later - timedelta(minutes=10), "Clozapine held")
    second = run(world, tmp_path / "2", later, rems.url)

    assert second.form()["state"] == "accepted"
    authorization = second.authorization(dispense)
    assert (authorization["outcome"], authorization["reasons"]) == (
        "not-authorized",
        ["treatment-interrupted"],
    )


@pytest.mark.integration
def test_a_dispense_read_in_part_is_not_sent_to_the_rems(rems: Service, tmp_path: Path) -> None:
    # Its performer unreadable, the request would name the site's default pharmacy: the REMS
    # could grant a supply the dispense does not describe. Decided, not asked, and said why.
    world, now, dispense = _sixth_day(rems, 2100)
    world.resources[-1]["performer"] = {"actor": {"reference": "Organization/org-out"}}
    out = run(world, tmp_path, now, rems.url)
    authorization = out.authorization(dispense)
    assert (authorization["outcome"], authorization["authorizationNumber"]) == (
        "not-authorized",
        None,
    )
    [issue] = out.findings("dispense-not-authorized")
    assert "could not be read whole (MedicationDispense.performer)" in issue["detail"]


@pytest.mark.integration
@pytest.mark.parametrize(("days", "outcome"), [(7, "authorized"), (14, "not-authorized")])
def test_inpatient_pharmacy_discharge_limit(
    rems: Service, tmp_path: Path, days: int, outcome: str
) -> None:
    world = World(rems_id=enroll_directly(rems.url, E))
    world.anc(E - timedelta(days=1), 2000)
    world.dispense(E, days=7)
    now = E + timedelta(days=6)
    world.anc(now - timedelta(hours=6), 2100)
    dispense = world.dispense(
        now - timedelta(hours=1),
        status="preparation",
        days=days,
        setting="discharge",
        pharmacy="org-in",
    )

    out = run(world, tmp_path, now, rems.url)

    assert out.form()["state"] == "accepted"  # routine: the designee's PSF keeps it current
    authorization = out.authorization(dispense)
    assert (authorization["outcome"], authorization["setting"]) == (outcome, "discharge")
    if outcome == "not-authorized":
        assert authorization["reasons"] == ["supply-exceeds-limit"]


def _override_round(
    world: World, rems: Service, folder: Path, day: datetime
) -> tuple[str, dict[str, object]]:
    """A dispense the REMS denies (no current PSF), the pharmacist's EMAUTH answer, and the run
    that turns it into an override request. Returns the dispense and its authorization."""
    world.anc(day - timedelta(days=1), 1500)
    dispense = world.dispense(day - timedelta(hours=1), status="preparation")
    denied = run(world, folder / "a", day, rems.url)
    assert denied.authorization(dispense)["reasons"] == ["psf-overdue"]
    [issue] = denied.findings("dispense-not-authorized")
    world.keep_issues(denied)
    world.answer(
        issue["id"],
        "Practitioner/pharmacist",
        day + timedelta(minutes=10),
        "PSF is with the prescriber; today's ANC is normal",
        action="EMAUTH",
    )
    decided = run(world, folder / "b", day + timedelta(hours=1), rems.url)
    world.keep_issues(decided)
    world.hand_over(dispense, day + timedelta(hours=2))
    return dispense, decided.authorization(dispense)


@pytest.mark.integration
def test_pharmacist_overrides_limited_to_three_in_a_rolling_year(
    rems: Service, tmp_path: Path
) -> None:
    world = _ben_patient(rems)
    rems_id = world.rems_id
    assert rems_id is not None
    days = [E + timedelta(days=n) for n in (40, 70, 100, 130, 405)]
    results = []
    for index, day in enumerate(days):
        _, authorization = _override_round(world, rems, tmp_path / str(index), day)
        results.append((authorization["outcome"], authorization["reasons"]))
        if authorization["outcome"] == "authorized-override":
            assert str(authorization["authorizationNumber"]).startswith("OVR-")
        counted = patient_status(rems.url, rems_id, day + timedelta(hours=1))
        results[-1] += (counted["limitedOverridesInWindow"],)

    assert results == [
        ("authorized-override", [], 1),
        ("authorized-override", [], 2),
        ("authorized-override", [], 3),
        ("not-authorized", ["psf-overdue", "override-limit-reached"], 3),
        # a year after the first override it no longer counts: two in the window
        ("authorized-override", [], 3),
    ]


@pytest.mark.integration
def test_override_cites_the_pharmacist_and_a_rerun_is_not_counted_again(
    rems: Service, tmp_path: Path
) -> None:
    world = _ben_patient(rems)
    day = E + timedelta(days=40)
    world.anc(day - timedelta(days=1), 1500)
    dispense = world.dispense(day - timedelta(hours=1), status="preparation")
    denied = run(world, tmp_path / "a", day, rems.url)
    [issue] = denied.findings("dispense-not-authorized")
    world.keep_issues(denied)
    world.answer(issue["id"], "Practitioner/ph", day, "Prescriber reached by phone", "EMAUTH")

    decided = run(world, tmp_path / "b", day + timedelta(hours=1), rems.url)
    before = rows(rems.db, "SELECT kind, granted FROM decisions ORDER BY id")
    again = run(world, tmp_path / "c", day + timedelta(hours=1), rems.url)

    assert decided.authorization(dispense)["outcome"] == "authorized-override"
    [override] = decided.findings("dispense-authorized-override")
    assert override["implicated"] == [{"reference": dispense}]
    assert "Prescriber reached by phone" in override["detail"]
    assert {"reference": f"DetectedIssue/{issue['id']}"} in override["evidence"][0]["detail"]
    assert [i["id"] for i in decided.withdrawn()] == [issue["id"]]
    assert [tuple(r) for r in before] == [("rda", 0), ("rda", 0), ("override", 1)]
    assert rows(rems.db, "SELECT count(*) FROM decisions")[0][0] == len(before)
    assert again.authorizations == decided.authorizations
    assert again.issues == decided.issues


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
def test_rems_down_then_back_pending_then_decided_and_retries_not_counted_twice(
    rems: Service, tmp_path: Path
) -> None:
    world = World(rems_id=enroll_directly(rems.url, E))
    world.anc(E - timedelta(days=1), 2000)
    world.dispense(E, days=7)
    now = E + timedelta(days=6)
    world.anc(now - timedelta(hours=6), 2100)
    dispense = world.dispense(now - timedelta(hours=1), status="preparation")
    down = f"http://127.0.0.1:{_closed_port()}"

    first = run(world, tmp_path / "1", now, down, "--rems-attempts", "2")

    assert first.form()["state"] == "prepared"  # not sent: the REMS did not answer
    assert first.authorization(dispense)["outcome"] == "pending"
    [pending] = first.findings("dispense-authorization-pending")
    assert pending["severity"] == "moderate"
    assert "Do not dispense" in pending["detail"]
    assert rows(rems.db, "SELECT * FROM psfs WHERE kind = 'psf'") == []

    world.keep_issues(first)
    later = now + timedelta(hours=1)
    with lossy_proxy(rems.url) as proxy:
        second = run(world, tmp_path / "2", later, url_of(proxy))

    authorization = second.authorization(dispense)
    assert authorization["outcome"] == "authorized"
    assert [i["id"] for i in second.withdrawn()] == [pending["id"]]
    assert second.form()["state"] == "accepted"
    # Each POST's first answer was lost and the client asked again with the same key...
    posts = [(path, key) for path, key in proxy.forwarded if key is not None]
    paths = [path for path, _ in posts]
    assert paths == ["/psfs", "/psfs", "/dispense-authorizations", "/dispense-authorizations"]
    assert posts[0][1] == posts[1][1] and posts[2][1] == posts[3][1]
    # ... and the service counted each once.
    assert len(rows(rems.db, "SELECT * FROM psfs WHERE kind = 'psf'")) == 1
    assert len(rows(rems.db, "SELECT * FROM decisions")) == 1


@pytest.mark.integration
def test_an_emauth_answer_not_written_by_a_pharmacist_is_not_sent_as_an_override(
    rems: Service, tmp_path: Path
) -> None:
    """CR 4: only a pharmacist's EMAUTH is an override request; the patient's (or anyone's who
    is not a Practitioner) is not sent to the REMS, and the denial stands."""
    world = _ben_patient(rems)
    day = E + timedelta(days=40)
    world.anc(day - timedelta(days=1), 1500)
    dispense = world.dispense(day - timedelta(hours=1), status="preparation")
    denied = run(world, tmp_path / "a", day, rems.url)
    [issue] = denied.findings("dispense-not-authorized")
    world.keep_issues(denied)
    before = rows(rems.db, "SELECT kind, granted FROM decisions ORDER BY id")
    world.answer(issue["id"], f"Patient/{world.patient_id}", day, "I need my tablets", "EMAUTH")

    decided = run(world, tmp_path / "b", day + timedelta(hours=1), rems.url)

    authorization = decided.authorization(dispense)
    assert (authorization["outcome"], authorization["reasons"]) == (
        "not-authorized",
        ["psf-overdue"],
    )
    kinds = [tuple(r) for r in rows(rems.db, "SELECT kind, granted FROM decisions ORDER BY id")]
    assert "override" not in [kind for kind, _ in kinds]
    assert kinds[: len(before)] == [tuple(r) for r in before]
