"""Pharmacist overrides over HTTP: preconditions and the limit across a rolling year."""

from __future__ import annotations

import re
from datetime import timedelta

from .conftest import INPATIENT, PRESCRIBER_NPI, RemsClient, iso

PSF_WINDOW_DAYS = 37
PRESCRIBER = {"role": "prescriber", "id": PRESCRIBER_NPI}


def overdue_patient(rems: RemsClient) -> str:
    rems_id = rems.enroll()
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)
    assert rems.rda(rems_id)["reasons"] == ["psf-overdue"]
    return rems_id


def granted(rems: RemsClient, rems_id: str, dispense: str, **overrides: object) -> bool:
    response = rems.override(rems_id, dispenseId=dispense, **overrides)
    assert response.status_code == 200, response.text
    return bool(response.json()["granted"])


def test_override_when_no_psf_is_available(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)

    response = rems.override(rems_id)

    body = response.json()
    assert body["granted"] is True
    assert body["override"] is True
    assert re.fullmatch(r"OVR-\d{8}-\d{6}", body["authorizationNumber"])


def test_override_refused_while_a_current_psf_exists(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    assert rems.override(rems_id).json()["reasons"] == ["psf-current"]


def test_override_needs_enrollment_certified_prescriber_and_current_anc(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)
    stale_anc = {"valuePerUL": 2000, "collected": iso(rems.clock.now - timedelta(days=10))}

    not_enrolled = rems.override("RP00000077").json()["reasons"]
    uncertified = rems.override(rems_id, prescriberNpi="1003000126").json()["reasons"]
    stale = rems.override(rems_id, currentAnc=stale_anc).json()["reasons"]
    low = rems.override(rems_id, currentAnc={"valuePerUL": 800, "collected": iso(rems.clock.now)})
    blank = rems.override(rems_id, dispenseRationale="   ").json()["reasons"]

    assert not_enrolled == ["patient-not-enrolled"]
    assert uncertified == ["prescriber-not-certified"]
    assert stale == ["anc-not-current"]  # weekly monitoring: 7 days + 2 grace; this one is older
    assert low.json()["reasons"] == ["anc-below-threshold"]
    assert blank == ["dispense-rationale-required"]


def test_override_does_not_lift_an_interruption(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.submit_psf(rems_id, treatmentStatus="interrupt", signer=PRESCRIBER)
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)

    assert rems.override(rems_id).json()["reasons"] == ["treatment-interrupted"]


def test_three_overrides_per_rolling_year_for_outpatient_pharmacies(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)
    first_override_day = rems.clock.now
    for dispense in ("d-1", "d-2", "d-3"):
        assert granted(rems, rems_id, dispense)
        rems.clock.advance(days=1)

    # Day 364 after the first override: still inside the rolling 365 days.
    rems.clock.now = first_override_day
    rems.clock.advance(days=364)
    denied = rems.override(rems_id, dispenseId="d-4").json()
    assert denied["granted"] is False
    assert denied["reasons"] == ["override-limit-reached"]
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 3

    # Day 365: the first override has left the window.
    rems.clock.advance(days=1)
    assert granted(rems, rems_id, "d-5")
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 3


def test_denied_overrides_do_not_count(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)
    for dispense in ("d-1", "d-2"):
        assert not granted(rems, rems_id, dispense, dispenseRationale=" ")

    assert rems.status(rems_id)["limitedOverridesInWindow"] == 0


def test_inpatient_only_pharmacy_overrides_are_not_limited(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)
    for number in range(5):
        setting = {"pharmacyId": INPATIENT, "setting": "inpatient"}
        assert granted(rems, rems_id, f"inpt-{number}", **setting)

    assert rems.status(rems_id)["limitedOverridesInWindow"] == 0


def test_override_respects_the_discharge_limit(rems: RemsClient) -> None:
    rems_id = overdue_patient(rems)
    discharge = {"pharmacyId": INPATIENT, "setting": "discharge", "daysSupply": 14}

    assert rems.override(rems_id, **discharge).json()["reasons"] == ["supply-exceeds-limit"]
