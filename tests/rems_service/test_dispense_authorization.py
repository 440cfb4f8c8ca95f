"""RDA over HTTP: certification, enrollment, treatment status, the 37-day PSF window, the
inpatient discharge limit."""

from __future__ import annotations

import re

import pytest

from .conftest import DUAL, INPATIENT, OUTPATIENT, PRESCRIBER_NPI, RemsClient

PRESCRIBER = {"role": "prescriber", "id": PRESCRIBER_NPI}


def test_granted_rda_carries_an_authorization_number(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    decision = rems.rda(rems_id)

    assert decision["granted"] is True
    assert decision["reasons"] == []
    assert re.fullmatch(r"RDA-20211201-\d{6}", decision["authorizationNumber"])
    assert decision["override"] is False


def test_authorization_numbers_are_unique(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    first = rems.rda(rems_id, dispenseId="d-1")["authorizationNumber"]
    second = rems.rda(rems_id, dispenseId="d-2")["authorizationNumber"]

    assert first != second


def test_uncertified_pharmacy_and_unknown_patient_are_both_reported(rems: RemsClient) -> None:
    decision = rems.rda("RP00000042", pharmacyId="nowhere")

    assert decision == {
        "dispenseId": "disp-1",
        "remsId": "RP00000042",
        "pharmacyId": "nowhere",
        "granted": False,
        "authorizationNumber": None,
        "reasons": ["pharmacy-not-certified", "patient-not-enrolled"],
        "override": False,
        "decidedAt": "2021-12-01T12:00:00.000000Z",
    }


@pytest.mark.parametrize(("days_after_psf", "granted"), [(37, True), (38, False)])
def test_psf_window_is_37_days(rems: RemsClient, days_after_psf: int, granted: bool) -> None:
    rems_id = rems.enroll()
    rems.clock.advance(days=5)
    assert rems.submit_psf(rems_id).status_code == 201

    rems.clock.advance(days=days_after_psf)
    decision = rems.rda(rems_id)

    assert decision["granted"] is granted
    assert decision["reasons"] == ([] if granted else ["psf-overdue"])


@pytest.mark.parametrize("status", ["interrupt", "discontinue"])
def test_interrupted_or_discontinued_treatment_denies(rems: RemsClient, status: str) -> None:
    rems_id = rems.enroll()
    stopped = rems.submit_psf(rems_id, treatmentStatus=status, signer=PRESCRIBER)
    assert stopped.status_code == 201, stopped.text

    decision = rems.rda(rems_id)

    assert decision["granted"] is False
    assert decision["reasons"] == ["treatment-interrupted"]


def test_resumed_treatment_is_authorized_again(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.submit_psf(rems_id, treatmentStatus="interrupt", signer=PRESCRIBER)
    rems.clock.advance(days=3)
    assert rems.submit_psf(rems_id, treatmentStatus="resume", signer=PRESCRIBER).status_code == 201

    assert rems.rda(rems_id)["granted"] is True


@pytest.mark.parametrize(("days", "granted"), [(7, True), (8, False)])
def test_inpatient_pharmacy_discharge_limit_is_7_days(
    rems: RemsClient, days: int, granted: bool
) -> None:
    rems_id = rems.enroll()

    decision = rems.rda(rems_id, pharmacyId=INPATIENT, setting="discharge", daysSupply=days)

    assert decision["granted"] is granted
    assert decision["reasons"] == ([] if granted else ["supply-exceeds-limit"])


@pytest.mark.parametrize("pharmacy", [OUTPATIENT, DUAL])
def test_outpatient_and_dual_pharmacies_have_no_discharge_limit(
    rems: RemsClient, pharmacy: str
) -> None:
    rems_id = rems.enroll()

    decision = rems.rda(rems_id, pharmacyId=pharmacy, setting="discharge", daysSupply=30)

    assert decision["granted"] is True


def test_inpatient_pharmacy_is_not_limited_for_inpatient_supplies(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    decision = rems.rda(rems_id, pharmacyId=INPATIENT, setting="inpatient", daysSupply=30)

    assert decision["granted"] is True


def test_decisions_before_enrollment_do_not_see_the_patient(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    earlier = rems.post(
        "/dispense-authorizations",
        {
            "pharmacyId": OUTPATIENT,
            "remsId": rems_id,
            "dispenseId": "d-early",
            "daysSupply": 7,
            "setting": "outpatient",
            "requestedAt": "2021-11-20T09:00:00Z",
        },
        asOf="2021-11-20T09:00:00Z",
    )

    assert earlier.json()["reasons"] == ["patient-not-enrolled"]
    assert earlier.json()["decidedAt"] == "2021-11-20T09:00:00.000000Z"
