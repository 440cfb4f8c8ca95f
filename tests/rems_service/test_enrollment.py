"""Patient enrollment over HTTP: the 30-day baseline window and what designees may enroll."""

from __future__ import annotations

import pytest

from .conftest import DESIGNEE_ID, OTHER_PRESCRIBER_NPI, PRESCRIBER_NPI, RemsClient, enrollment_body

DESIGNEE = {"role": "designee", "id": DESIGNEE_ID}


def test_baseline_drawn_30_days_ago_enrolls_and_counts_as_first_psf(rems: RemsClient) -> None:
    response = rems.post(
        "/patients/enrollments", enrollment_body(rems.clock.now, baseline_days_ago=30)
    )

    assert response.status_code == 201, response.text
    rems_id = response.json()["remsId"]
    assert rems_id == "RP00000001"
    status = rems.status(rems_id)
    assert status["psfCurrent"] is True
    assert status["treatmentStatus"] == "continue"
    assert status["monitoringFrequency"] == "weekly"


def test_baseline_drawn_31_days_ago_is_too_old(rems: RemsClient) -> None:
    response = rems.post(
        "/patients/enrollments", enrollment_body(rems.clock.now, baseline_days_ago=31)
    )

    assert response.status_code == 422
    assert response.json() == {
        "error": "enrollment-rejected",
        "reasons": ["baseline-anc-too-old"],
        "message": "enrollment not accepted: baseline-anc-too-old",
    }


def test_the_most_recent_baseline_is_the_one_that_counts(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now, baseline_days_ago=45)
    recent = {"valuePerUL": 1900, "collected": "2021-11-25T08:00:00Z"}
    body["ancResults"].append(recent)

    assert rems.post("/patients/enrollments", body).status_code == 201


def test_designee_may_enroll_a_general_population_patient(rems: RemsClient) -> None:
    response = rems.post("/patients/enrollments", enrollment_body(rems.clock.now, signer=DESIGNEE))

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("designation", ["ben", "hospice"])
def test_designee_cannot_enroll_ben_or_hospice_patients(rems: RemsClient, designation: str) -> None:
    designations = {"ben": False, "hospice": False, designation: True}
    body = enrollment_body(rems.clock.now, signer=DESIGNEE, designations=designations)

    response = rems.post("/patients/enrollments", body)

    assert response.status_code == 422
    assert response.json()["reasons"] == ["signer-not-permitted"]


@pytest.mark.parametrize("designation", ["ben", "hospice"])
def test_prescriber_enrolls_ben_or_hospice_patients(rems: RemsClient, designation: str) -> None:
    designations = {"ben": False, "hospice": False, designation: True}
    body = enrollment_body(rems.clock.now, designations=designations)

    assert rems.post("/patients/enrollments", body).status_code == 201


def test_designee_signs_only_for_the_prescriber_who_added_them(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now, signer=DESIGNEE, prescriberNpi=OTHER_PRESCRIBER_NPI)

    response = rems.post("/patients/enrollments", body)

    assert response.status_code == 422
    assert response.json()["reasons"] == ["signer-not-permitted"]


def test_uncertified_prescriber_cannot_enroll(rems: RemsClient) -> None:
    npi = "1003000126"
    signer = {"role": "prescriber", "id": npi}
    body = enrollment_body(rems.clock.now, prescriberNpi=npi, signer=signer)

    response = rems.post("/patients/enrollments", body)

    assert response.status_code == 422
    assert response.json()["reasons"] == ["prescriber-not-certified"]


def test_low_baseline_needs_a_rationale_from_the_prescriber(rems: RemsClient) -> None:
    without = rems.post("/patients/enrollments", enrollment_body(rems.clock.now, anc=900))
    by_designee = rems.post(
        "/patients/enrollments",
        enrollment_body(rems.clock.now, anc=900, signer=DESIGNEE, treatmentRationale="benefit"),
    )
    by_prescriber = rems.post(
        "/patients/enrollments",
        enrollment_body(rems.clock.now, anc=900, treatmentRationale="benefit outweighs risk"),
    )

    assert without.json()["reasons"] == ["rationale-required"]
    assert by_designee.json()["reasons"] == ["signer-not-permitted"]
    assert by_prescriber.status_code == 201


def test_the_same_patient_cannot_enroll_twice(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    again = rems.post("/patients/enrollments", enrollment_body(rems.clock.now))

    assert again.status_code == 409
    assert again.json()["reasons"] == ["patient-already-enrolled"]
    assert rems.status(rems_id)["remsId"] == rems_id


def test_prescriber_signature_must_be_the_prescribers_own(rems: RemsClient) -> None:
    signer = {"role": "prescriber", "id": OTHER_PRESCRIBER_NPI}
    body = enrollment_body(rems.clock.now, signer=signer, prescriberNpi=PRESCRIBER_NPI)

    assert rems.post("/patients/enrollments", body).json()["reasons"] == ["signer-not-permitted"]
