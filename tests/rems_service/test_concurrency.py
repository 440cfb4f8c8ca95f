"""Concurrent overrides are serialised: the limit holds when requests race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .conftest import RemsClient

PSF_WINDOW_DAYS = 37
RACING_REQUESTS = 8


def test_racing_overrides_never_exceed_the_limit(rems: RemsClient) -> None:
    rems_id = rems.enroll()
    rems.clock.advance(days=PSF_WINDOW_DAYS + 1)

    def one(number: int) -> bool:
        response = rems.override(rems_id, key=f"race-{number}", dispenseId=f"race-{number}")
        assert response.status_code == 200, response.text
        return bool(response.json()["granted"])

    with ThreadPoolExecutor(max_workers=RACING_REQUESTS) as pool:
        outcomes = list(pool.map(one, range(RACING_REQUESTS), timeout=30))

    assert outcomes.count(True) == 3
    assert rems.status(rems_id)["limitedOverridesInWindow"] == 3
