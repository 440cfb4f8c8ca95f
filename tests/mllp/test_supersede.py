"""Which result received again replaces the EHR's copy (adapter.pipeline.worker._superseded):
a change that is not older; a late original never undoes a correction or a withdrawal, and a
resend not yet released never replaces a released result."""

from __future__ import annotations

import pytest

from adapter.pipeline.worker import _superseded


def _result(status: str, value: float | None, issued: str | None = None) -> dict[str, object]:
    resource: dict[str, object] = {"resourceType": "Observation", "status": status}
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": "10^9/L"}
    if issued is not None:
        resource["issued"] = issued
    return resource


T1, T2 = "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"


@pytest.mark.parametrize(
    ("held", "received", "replaces"),
    [
        (_result("final", 0.8, T1), _result("final", 0.8, T2), False),  # no change
        (_result("final", 0.8, T1), _result("corrected", 1.8, T2), True),
        (_result("final", 0.8, T1), _result("entered-in-error", None, T2), True),
        (_result("corrected", 1.8, T2), _result("final", 0.8, T1), False),  # late original
        (_result("corrected", 1.8), _result("final", 0.8), False),  # no dates: by status
        (_result("entered-in-error", None), _result("final", 0.8), False),
        (_result("preliminary", 0.8), _result("final", 0.9), True),
        (_result("final", 0.8), _result("final", 0.9), True),  # same status, new value
        (_result("final", 0.8, T1), _result("final", 0.9, T1), True),  # same time: by status
        # a resend not yet released never replaces a released copy or a withdrawal
        (_result("final", 0.4, T1), _result("preliminary", 1.9, T2), False),
        (_result("corrected", 0.4, T1), _result("registered", None, T2), False),
        (_result("entered-in-error", None, T1), _result("preliminary", 0.4, T2), False),
        (_result("preliminary", 0.4, T1), _result("preliminary", 0.5, T2), True),
    ],
)
def test_a_result_received_again(held, received, replaces):
    assert _superseded(held, received) is replaces
