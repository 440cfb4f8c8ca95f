"""Whatever arrives, the receiver answers with one ACK and never raises (Hypothesis)."""

from __future__ import annotations

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hl7v2.kit import obr, obx, oru, receiver, sample

#: python-hl7 warns (deprecated `logger.warn`) on escape sequences it does not know
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SEEDS = [
    sample("nist-lri-gu-002-cbc.hl7"),
    sample("python-hl7-glucose.hl7"),
    oru(obr(), obx(1, "751-8^ANC^LN", "1.2"), obx(2, "770-8^N%^LN", "<^5", kind="SN")),
]
ALPHABET = b"|^~\\&\r0123456789.-+<>=ABCDEFGHMNOPRSTUXZ \x0b\x1c\xff"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        position = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        byte = draw(st.sampled_from(list(ALPHABET)))
        if action == "replace" and data:
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        elif action == "delete" and data:
            del data[position]
        elif action == "truncate":
            del data[position:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=300)))
def test_any_input_gets_one_ack_and_never_raises(raw):
    stored: list[object] = []
    reply = receiver(stored.append)(raw)
    assert reply.outcome in ("AA", "AE", "AR")
    assert (reply.outcome == "AA") == bool(stored)
    assert "internal error" not in (reply.reason or ""), reply.reason  # a defect, not a refusal
    if reply.ack is not None:
        ack = hl7.parse(reply.ack.decode())
        assert str(ack.segment("MSA")[1]) in ("AA", "AE", "AR", "CA", "CE", "CR")
