"""PSF acceptance over HTTP: who may sign what, and when a rationale is required."""

from __future__ import annotations

import pytest

from .conftest import PRESCRIBER_NPI, RemsClient, identity

PRESCRIBER = {"role": "prescriber", "id": PRESCRIBER_NPI}
BEN = {"ben": True, "hospice": False}


def test_routine_psf_from_designee_is_accepted(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id)

    assert response.status_code == 201, response.text
    assert response.json()["remsId"] == rems_id
    assert response.json()["completedAt"] == "2021-12-01T12:00:00.000000Z"


def test_psf_without_rems_id_matches_the_enrolled_identity(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    body_patient = identity()  # no remsId; same name, birth date, sex, postal code

    response = rems.submit_psf(rems_id, patient=body_patient)

    assert response.status_code == 201, response.text
    assert response.json()["remsId"] == rems_id


def test_psf_for_unknown_patient_is_rejected(rems: RemsClient) -> None:
    response = rems.submit_psf("RP00000099")

    assert response.status_code == 422
    assert response.json()["reasons"] == ["patient-not-enrolled"]


def test_psf_with_wrong_birth_date_for_the_rems_id_is_rejected(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id, patient=identity(remsId=rems_id, birthDate="1981-05-17"))

    assert response.json()["reasons"] == ["patient-identity-mismatch"]


@pytest.mark.parametrize(("anc", "needs_rationale"), [(1000, False), (999, True)])
def test_general_population_rationale_threshold_is_1000(
    rems: RemsClient, anc: int, needs_rationale: bool
) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id, anc=anc)

    if needs_rationale:
        assert response.status_code == 422
        assert response.json()["reasons"] == ["rationale-required"]
    else:
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(("anc", "needs_rationale"), [(500, False), (499, True)])
def test_ben_rationale_threshold_is_500(rems: RemsClient, anc: int, needs_rationale: bool) -> None:
    rems_id = rems.enroll(designations=BEN)

    response = rems.submit_psf(rems_id, anc=anc, signer=PRESCRIBER, designations=BEN)

    if needs_rationale:
        assert response.json()["reasons"] == ["rationale-required"]
    else:
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(("earlier", "needs_rationale"), [(1000, False), (400, True)])
def test_any_reported_anc_below_the_level_needs_a_rationale(
    rems: RemsClient, earlier: int, needs_rationale: bool
) -> None:
    # The period's earlier result counts, not only the latest: a month with a severe result
    # is not the designee's to sign after the count recovered.
    from datetime import timedelta

    from .conftest import iso

    rems_id = rems.enroll()
    results = [
        {"valuePerUL": earlier, "collected": iso(rems.clock.now - timedelta(days=3))},
        {"valuePerUL": 2100, "collected": iso(rems.clock.now - timedelta(days=1))},
    ]

    response = rems.submit_psf(rems_id, ancResults=results)

    if needs_rationale:
        assert response.json()["reasons"] == ["rationale-required"]
    else:
        assert response.status_code == 201, response.text


def test_missed_labs_need_a_rationale(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id, labsMissed=True, ancResults=[], signer=PRESCRIBER)

    assert response.json()["reasons"] == ["rationale-required"]


def test_no_anc_and_labs_not_missed_is_anc_missing(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id, ancResults=[])

    assert response.json()["reasons"] == ["anc-missing"]


def test_rationale_from_designee_is_refused_and_from_prescriber_accepted(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rationale = "Benefit outweighs risk; hematology consulted"

    by_designee = rems.submit_psf(rems_id, anc=900, treatmentRationale=rationale)
    by_prescriber = rems.submit_psf(
        rems_id, anc=900, treatmentRationale=rationale, signer=PRESCRIBER
    )

    assert by_designee.status_code == 422
    assert by_designee.json()["reasons"] == ["signer-not-permitted"]
    assert by_prescriber.status_code == 201, by_prescriber.text


@pytest.mark.parametrize(
    "designations", [{"ben": True, "hospice": False}, {"ben": False, "hospice": True}]
)
def test_designations_only_from_the_prescriber(
    rems: RemsClient, designations: dict[str, bool]
) -> None:
    rems_id = rems.enroll()

    by_designee = rems.submit_psf(rems_id, designations=designations)
    by_prescriber = rems.submit_psf(rems_id, designations=designations, signer=PRESCRIBER)

    assert by_designee.json()["reasons"] == ["signer-not-permitted"]
    assert by_prescriber.status_code == 201, by_prescriber.text


def test_designee_cannot_drop_a_recorded_ben_designation(rems: RemsClient) -> None:
    rems_id = rems.enroll(designations=BEN)

    response = rems.submit_psf(rems_id)  # designee, ben false

    assert response.json()["reasons"] == ["signer-not-permitted"]


def test_every_reason_is_listed(rems: RemsClient) -> None:
    rems_id = rems.enroll()

    response = rems.submit_psf(rems_id, anc=400, reportingPeriod="2022-01", designations=BEN)

    assert response.json()["reasons"] == [
        "reporting-period-in-future",
        "rationale-required",
        "signer-not-permitted",
    ]
