"""ACKs: MSA-2 = MSH-10, AA only after the store returned, ERR naming the reason and place,
enhanced acknowledgement (MSH-15/16) honoured."""

from __future__ import annotations

import hl7
import pytest

from adapter.errors import StateError
from adapter.hl7v2.oru import OruMessage
from tests.hl7v2.kit import obr, obx, oru, receiver, sample

ANC = "751-8^ANC^LN"


def _parsed(ack: bytes | None) -> hl7.Message:
    assert ack is not None
    return hl7.parse(ack.decode())


def test_aa_echoes_the_control_id_and_swaps_sender_and_receiver():
    stored: list[OruMessage] = []
    reply = receiver(stored.append)(oru(obr(), obx(1, ANC, "2"), control="CTRL-77"))
    ack = _parsed(reply.ack)
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "CTRL-77"
    msh = ack.segment("MSH")
    assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == (
        "REMS",
        "PHARM",
        "LAB",
        "NORTHLAB",
    )
    assert str(msh[9]) == "ACK^R01^ACK"
    assert str(msh[12]) == "2.5.1"
    assert len(stored) == 1


def test_ae_names_the_reason_and_location_in_err():
    stored: list[OruMessage] = []
    reply = receiver(stored.append)(oru(obr(), obx(1, ANC, "1,5"), control="C2"))
    ack = _parsed(reply.ack)
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("MSA")[2]) == "C2"
    err = ack.segment("ERR")
    assert str(err[2]) == "OBX^1^5^1"  # ERL: segment, sequence, field, repetition
    assert str(err[3]) == "102^Data type error^HL70357"
    assert str(err[4]) == "E"
    assert "not a number" in ack.unescape(str(err[7]))
    assert stored == []  # nothing stored: the lab fixes and resends


def test_a_reason_with_separators_is_escaped_in_the_ack():
    reply = receiver(lambda _: None)(sample("hl7apy-adt-a01.hl7"))
    ack = _parsed(reply.ack)
    assert len(ack.segments("ERR")) == 1
    assert "ORU^R01" in ack.unescape(str(ack.segment("ERR")[7]))


def test_aa_is_sent_only_after_the_store_returned():
    events: list[str] = []

    def store(message: OruMessage) -> None:
        events.append("stored")

    recv = receiver(store)
    reply = recv(oru(obr(), obx(1, ANC, "2")))
    events.append("acked")
    assert events == ["stored", "acked"] and reply.outcome == "AA" and reply.stored


@pytest.mark.parametrize("failure", [StateError("disk full"), OSError("I/O"), RuntimeError("x")])
def test_a_store_that_fails_gets_ar_and_the_sender_resends(failure):
    def store(message: OruMessage) -> None:
        raise failure

    reply = receiver(store)(oru(obr(), obx(1, ANC, "2"), control="C3"))
    ack = _parsed(reply.ack)
    assert str(ack.segment("MSA")[1]) == "AR" and str(ack.segment("MSA")[2]) == "C3"
    assert str(ack.segment("ERR")[3]).startswith("207^")
    assert not reply.stored
    assert "disk full" not in (reply.reason or "")  # the store's own words stay in its logs


@pytest.mark.parametrize(
    ("msh15", "msh16", "valid", "expected"),
    [
        ("", "", True, "AA"),  # original mode
        ("", "", False, "AE"),
        ("AL", "NE", True, "CA"),  # enhanced: the commit ACK, after the durable write
        ("AL", "NE", False, "CE"),
        ("AL", "AL", True, "CA"),
        ("ER", "NE", True, None),  # errors only: success is not acknowledged
        ("ER", "NE", False, "CE"),
        ("SU", "NE", True, "CA"),
        ("SU", "NE", False, None),
        ("NE", "NE", True, None),
        ("NE", "AL", True, "AA"),  # no commit ACK asked: the application ACK on the connection
        ("NE", "ER", True, None),
        ("NE", "ER", False, "AE"),
        ("", "AL", True, "CA"),  # enhanced mode, MSH-15 empty means AL
    ],
)
def test_enhanced_acknowledgement(msh15, msh16, valid, expected):
    """With `mllp.enhanced_acks` on, MSH-15/16 are honoured."""
    tail = f"|||{msh15}|{msh16}"
    value = "2" if valid else "1,5"
    stored: list[OruMessage] = []
    recv = receiver(stored.append, enhanced_acks=True)
    reply = recv(oru(obr(), obx(1, ANC, value), tail=tail))
    assert reply.outcome == ("AA" if valid else "AE")
    assert len(stored) == (1 if valid else 0)
    if expected is None:
        assert reply.ack is None
    else:
        assert str(_parsed(reply.ack).segment("MSA")[1]) == expected


def test_a_bad_frame_gets_ar_with_the_control_id_when_the_msh_can_be_read():
    recv = receiver(lambda _: None)
    reply = recv.bad_frame("message larger than 10 bytes", oru(obr(), control="BIG1")[:200])
    ack = _parsed(reply.ack)
    assert str(ack.segment("MSA")[1]) == "AR" and str(ack.segment("MSA")[2]) == "BIG1"
    reply = recv.bad_frame("bytes outside an MLLP frame (no start block)", b"garbage")
    assert str(_parsed(reply.ack).segment("MSA")[1]) == "AR"


def test_the_same_message_acked_twice_gives_the_same_ack():
    recv = receiver(lambda _: None)
    raw = oru(obr(), obx(1, ANC, "2"), control="C9")
    assert recv(raw).ack == recv(raw).ack  # deterministic ACK control id, fixed clock


@pytest.mark.parametrize("msh15", ["", "AL", "ER", "SU", "NE"])
@pytest.mark.parametrize("msh16", ["", "AL", "ER", "SU", "NE"])
@pytest.mark.parametrize("valid", [True, False])
def test_by_default_every_message_gets_one_original_mode_ack(msh15, msh16, valid):
    """interfaces.md 4: each message gets exactly one ACK, MSA-1 AA once stored (AE / AR for a
    bad message), whatever MSH-15/16 ask (the ELR NoAck profile sends NE|NE, LRI AL|NE)."""
    tail = f"|||{msh15}|{msh16}"
    value = "2" if valid else "1,5"
    stored: list[OruMessage] = []
    reply = receiver(stored.append)(oru(obr(), obx(1, ANC, value), tail=tail, control="ONE-1"))
    assert reply.ack is not None
    msa = _parsed(reply.ack).segment("MSA")
    assert (str(msa[1]), str(msa[2])) == ("AA" if valid else "AE", "ONE-1")
    assert len(stored) == (1 if valid else 0)


@pytest.mark.parametrize(
    "segments",
    [(), ("NTE|1||a note",)],
    ids=["msh-and-pid-only", "no-order"],
)
def test_an_oru_without_any_order_is_refused_with_its_reason(segments):
    """ORU^R01 requires an ORDER_OBSERVATION group (OBR): without one nothing can have been
    stored, so the ACK is AE with the reason in ERR, never AA."""
    stored: list[OruMessage] = []
    reply = receiver(stored.append)(oru(*segments, control="NO-OBR"))
    ack = _parsed(reply.ack)
    assert (str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])) == ("AE", "NO-OBR")
    assert str(ack.segment("ERR")[3]).startswith("100^")
    assert "OBR" in str(ack.segment("ERR")[7])
    assert stored == []
