"""Retries never count twice; state survives a restart of the service on the same database."""

from __future__ import annotations

from pathlib import Path

from adapter.rems_service import BackgroundServer, make_app

from .conftest import FakeClock, RemsClient, enrollment_body, override_body

PSF_WINDOW_DAYS = 37


def test_retried_override_with_the_same_key_is_replayed_not_counted(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)

    first = rems.override(rems_id, key="ovr-key-1")
    retry = rems.override(rems_id, key="ovr-key-1")

    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 1


def test_same_dispense_with_a_new_key_returns_the_first_grant(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)

    first = rems.override(rems_id, key="a").json()
    rems.clock.advance(days=1)
    second = rems.override(rems_id, key="b").json()

    assert second == first
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 1


def test_reusing_a_key_for_a_different_request_is_refused(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)
    rems.override(rems_id, key="k", dispenseId="d-1")

    reused = rems.override(rems_id, key="k", dispenseId="d-2")

    assert reused.status_code == 422
    assert reused.json()["reasons"] == ["idempotency-key-reused"]
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 1


def test_retried_enrollment_returns_the_same_rems_id(rems: RemsClient) -> None:
    body = enrollment_body(rems.clock.now)
    first = rems.post("/patients/enrollments", body, key="enroll-1")
    retry = rems.post("/patients/enrollments", body, key="enroll-1")

    assert first.status_code == retry.status_code == 201
    assert retry.json()["remsId"] == first.json()["remsId"]


def test_invalid_idempotency_key_is_a_400(rems: RemsClient) -> None:
    response = rems.post("/overrides", override_body(rems.clock.now, "RP00000001"), key="x" * 256)

    assert response.status_code == 400
    assert response.json()["reasons"] == ["idempotency-key-invalid"]


def test_state_survives_a_restart(db_path: Path, seed_path: Path) -> None:
    clock = FakeClock()
    with BackgroundServer(make_app(db_path, seed_path, clock=clock)) as url:
        before = RemsClient(url, clock)
        rems_id = before.enroll()
        clock.advance(days=PSF_WINDOW_DAYS + 1)
        for dispense in ("d-1", "d-2", "d-3"):
            assert before.override(rems_id, key=dispense, dispenseId=dispense).json()["granted"]
        first_reply = before.override(rems_id, key="d-1", dispenseId="d-1").json()

    # Same file, new process state; the seed is applied again and changes nothing.
    with BackgroundServer(make_app(db_path, seed_path, clock=clock)) as url:
        after = RemsClient(url, clock)
        assert after.status(rems_id)["limitedOverridesInWindow"] == 3
        assert after.override(rems_id, key="d-1", dispenseId="d-1").json() == first_reply
        fourth = after.override(rems_id, key="d-4", dispenseId="d-4").json()
        assert fourth["reasons"] == ["override-limit-reached"]
        assert after.enroll(name="Roe") == "RP00000002"
