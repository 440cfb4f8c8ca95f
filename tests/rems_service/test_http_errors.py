"""Bad input gets a JSON error with reason codes, never a 5xx, and never echoes patient data."""

from __future__ import annotations

from .conftest import RemsClient, enrollment_body


def test_malformed_json_is_400(rems: RemsClient) -> None:
    response = rems.session.post(
        rems.base_url + "/psfs",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["reasons"] == ["json-invalid"]


def test_nan_is_not_json(rems: RemsClient) -> None:
    response = rems.session.post(
        rems.base_url + "/psfs",
        data=b'{"x": NaN}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["reasons"] == ["json-invalid"]


def test_absurdly_nested_json_is_400_not_500(rems: RemsClient) -> None:
    response = rems.session.post(
        rems.base_url + "/psfs",
        data=b"[" * 200_000 + b"]" * 200_000,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["reasons"] == ["json-invalid"]


def test_non_json_media_type_is_415(rems: RemsClient) -> None:
    response = rems.session.post(rems.base_url + "/psfs", data="a=b", timeout=10)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported-media-type"


def test_schema_violation_names_the_field_but_not_the_value(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now)
    body["patient"]["birthDate"] = "17/05/1980"
    body["patient"]["name"]["family"] = ""

    response = rems.post("/patients/enrollments", body)

    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "invalid-request"
    assert error["reasons"] == ["schema-violation"]
    assert "$.patient.birthDate" in error["message"]
    assert "$.patient.name.family" in error["message"]
    assert "17/05/1980" not in error["message"]


def test_missing_field_is_named(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now)
    del body["prescriberNpi"]

    response = rems.post("/patients/enrollments", body)

    assert "'prescriberNpi' is a required property" in response.json()["message"]


def test_date_time_without_offset_is_refused(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now)
    body["ancResults"][0]["collected"] = "2021-11-30T08:00:00"

    assert rems.post("/patients/enrollments", body).status_code == 400


def test_unknown_path_and_wrong_method_are_json(rems: RemsClient) -> None:
    missing = rems.get("/nowhere")
    wrong_method = rems.get("/psfs")

    assert (missing.status_code, missing.json()["reasons"]) == (404, ["not-found"])
    assert (wrong_method.status_code, wrong_method.json()["reasons"]) == (
        405,
        ["method-not-allowed"],
    )


def test_oversized_body_is_413(rems: RemsClient) -> None:
    response = rems.session.post(
        rems.base_url + "/psfs",
        data=b"[" + b"1," * 600_000 + b"1]",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 413
    assert response.json()["reasons"] == ["payload-too-large"]


def test_as_of_must_be_rfc3339(rems: RemsClient) -> None:
    response = rems.post("/patients/enrollments", enrollment_body(rems.clock.now), asOf="yesterday")

    assert response.status_code == 400
    assert response.json()["reasons"] == ["as-of-invalid"]


def test_as_of_evaluates_the_request_at_that_instant(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now, baseline_days_ago=40)

    now = rems.post("/patients/enrollments", body)
    earlier = rems.post("/patients/enrollments", body, asOf="2021-11-01T12:00:00Z")

    assert now.json()["reasons"] == ["baseline-anc-too-old"]
    assert earlier.status_code == 201
    assert earlier.json()["enrolledAt"] == "2021-11-01T12:00:00.000000Z"


def test_unknown_patient_status_is_404(rems: RemsClient) -> None:
    assert rems.get("/patients/RP00000009").status_code == 404
    assert rems.get("/patients/not-an-id").json()["reasons"] == ["not-found"]


def test_health(rems: RemsClient) -> None:
    assert rems.get("/health").json() == {"status": "ok", "database": "ok"}
