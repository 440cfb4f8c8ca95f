"""The MLLP listener over a real socket on 127.0.0.1: ACKs, concurrency, bad senders."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from adapter.mllp.client import MllpError
from adapter.mllp.framing import END, START, Frame, frame
from adapter.mllp.server import _POLL, Limits, MllpServer
from tests.hl7v2.kit import obr, obx, oru, sample
from tests.mllp.kit import MemoryStore, client, listening, msa

ANC = "751-8^ANC^LN"


def _wait_for(predicate, limit: float = 10.0) -> bool:
    """Polls `predicate` (bounded); the tests assert what happened, never how long it took."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_the_nist_cbc_over_mllp_gets_its_ack():
    store = MemoryStore()
    with listening(store) as server, client(server) as lab:
        ack = lab.send(sample("nist-lri-gu-002-cbc.hl7"))
    assert msa(ack) == ("AA", "NIST-LRI-GU-002.00")  # MSH-15 AL, but one AA by default
    (message,) = store.messages.values()
    assert len(message.results) == 3


def test_several_connections_at_once_each_message_one_ack():
    store = MemoryStore()
    errors: list[BaseException] = []

    def sender(number: int) -> None:
        try:
            with client(server) as lab:
                for index in range(15):
                    control = f"C{number}-{index}"
                    ack = lab.send(oru(obr(), obx(1, ANC, "2"), control=control))
                    assert msa(ack) == ("AA", control)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with listening(store) as server:
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert server.stats.connections == 6
    assert errors == []
    assert len(store.messages) == 90


def test_a_repeated_control_id_is_acknowledged_again_and_stored_once():
    store = MemoryStore()
    raw = oru(obr(), obx(1, ANC, "2"), control="DUP1")
    with listening(store) as server, client(server) as lab:
        assert msa(lab.send(raw)) == ("AA", "DUP1")
        assert msa(lab.send(raw)) == ("AA", "DUP1")
    assert len(store.messages) == 1


def test_bytes_without_a_start_block_get_ar_and_the_connection_keeps_serving():
    with listening() as server, client(server) as lab:
        lab.send_raw(oru(obr(), obx(1, ANC, "2"), control="NOSTART") + END)
        assert msa(lab.receive()) == ("AR", "NOSTART")
        assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="OK1"))) == ("AA", "OK1")


def test_an_oversize_message_gets_ar_and_the_next_one_is_served():
    with listening(max_message_bytes=2000) as server, client(server) as lab:
        big = oru(obr(), *[obx(i, ANC, "2") for i in range(1, 200)], control="BIG")
        assert msa(lab.send(big)) == ("AR", "BIG")
        assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="SMALL"))) == ("AA", "SMALL")


def test_malformed_segments_get_ae_and_the_listener_keeps_serving():
    store = MemoryStore()
    with listening(store) as server, client(server) as lab:
        bad = oru(obr(), "OBX|1|NM|751-8^ANC^LN||1,5||||||F", control="BAD1")
        assert msa(lab.send(bad)) == ("AE", "BAD1")
        assert msa(lab.send(b"\x00\x01 not hl7 at all")) == ("AR", "")
        assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="GOOD"))) == ("AA", "GOOD")
    assert list(store.messages) == ["LAB|NORTHLAB|GOOD"]


def test_a_client_that_disconnects_mid_message_stores_nothing():
    store = MemoryStore()
    with listening(store) as server:
        host, port = server.address
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(START + oru(obr(), obx(1, ANC, "2"), control="HALF")[:80])
        assert _wait_for(lambda: server.stats.dropped_partial == 1)
        with client(server) as lab:  # the listener is still there
            assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="NEXT"))) == ("AA", "NEXT")
    assert list(store.messages) == ["LAB|NORTHLAB|NEXT"]


def test_an_idle_connection_is_closed_by_the_listener():
    with listening(idle_timeout=0.3) as server, client(server) as lab:
        assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="I1")))[0] == "AA"
        with pytest.raises(MllpError, match="closed"):
            lab.receive()  # nothing more sent: the listener hangs up


def test_a_trickling_sender_cannot_hold_a_connection():
    with listening(message_timeout=0.5, idle_timeout=60) as server:
        host, port = server.address
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(START + b"MSH|")
            closed = False
            for _ in range(200):  # one byte every 50 ms: never idle, never done
                try:
                    raw.sendall(b"x")
                except OSError:
                    closed = True
                    break
                time.sleep(0.05)
            assert closed or raw.recv(10) == b""
        assert server.stats.dropped_partial >= 1


def test_connections_beyond_the_limit_are_closed_and_later_ones_served():
    with listening(max_connections=2) as server:
        first, second = client(server).connect(), client(server).connect()
        try:
            assert msa(first.send(oru(obr(), obx(1, ANC, "2"), control="A")))[0] == "AA"
            assert msa(second.send(oru(obr(), obx(1, ANC, "2"), control="B")))[0] == "AA"
            third = client(server, timeout=5).connect()
            with pytest.raises(MllpError):
                third.send(oru(obr(), obx(1, ANC, "2"), control="C"))
            third.close()
            assert server.stats.refused == 1
        finally:
            first.close()
        assert _wait_for(lambda: server.stats.active == 1)
        with client(server) as fourth:
            assert msa(fourth.send(oru(obr(), obx(1, ANC, "2"), control="D")))[0] == "AA"
        second.close()


def test_a_handler_that_raises_ends_that_connection_only():
    class Broken:
        def on_message(self, payload: bytes) -> bytes | None:
            if b"BOOM" in payload:
                raise RuntimeError("defect")
            return b"MSH|^~\\&|X\rMSA|AA|fine\r"

        def on_bad_frame(self, reason: str, head: bytes) -> bytes | None:
            return None

    from adapter.mllp.server import MllpServer

    server = MllpServer("127.0.0.1", 0, Broken()).start()
    try:
        with client(server) as lab, pytest.raises(MllpError):
            lab.send(b"MSH|BOOM")
        with client(server) as lab:
            assert lab.send(b"MSH|ok").endswith(b"MSA|AA|fine\r")
        assert server.stats.handler_errors == 1
    finally:
        server.stop()


def test_two_messages_in_one_write_get_two_acks_in_order():
    with listening() as server, client(server) as lab:
        lab.send_raw(
            frame(oru(obr(), obx(1, ANC, "2"), control="P1"))
            + frame(oru(obr(), obx(1, ANC, "2"), control="P2"))
        )
        assert msa(lab.receive()) == ("AA", "P1")
        assert msa(lab.receive()) == ("AA", "P2")


def test_stop_ends_every_connection():
    with listening() as server:
        lab = client(server).connect()
        assert msa(lab.send(oru(obr(), obx(1, ANC, "2"), control="S1")))[0] == "AA"
    # the listener stopped: its connection is gone
    with pytest.raises(MllpError):
        lab.send(oru(obr(), obx(1, ANC, "2"), control="S2"))
    lab.close()
    assert server.stats.active == 0


class _SlowReader:
    """A socket whose send buffer takes only part of an ACK (a sender that is not reading)."""

    def __init__(self, takes: int | None) -> None:
        self.takes = takes  # bytes the first send takes; None: it times out
        self.sent = b""
        self.timeouts: list[float] = []

    def send(self, data: bytes) -> int:
        if self.takes is None:
            raise TimeoutError
        self.sent += data[: self.takes]
        return min(self.takes, len(data))

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)


@pytest.mark.parametrize("takes", [None, 0, 7])
def test_an_ack_the_send_buffer_cannot_take_at_once_is_sent_whole_within_the_send_timeout(takes):
    class Handler:
        def on_message(self, payload: bytes) -> bytes:
            return b"MSA|AA|" + payload

        def on_bad_frame(self, reason: str, head: bytes) -> None:
            return None

    server = MllpServer("127.0.0.1", 0, Handler(), Limits(send_timeout=3.0))
    sock = _SlowReader(takes)
    assert server._answer(sock, Frame(b"X" * 100), "peer")  # type: ignore[arg-type]
    assert sock.sent == frame(b"MSA|AA|" + b"X" * 100)
    assert sock.timeouts == [3.0, _POLL]  # the send timeout, then the poll timeout again


def test_an_ack_that_fits_is_one_send_with_the_timeout_untouched():
    class Handler:
        def on_message(self, payload: bytes) -> bytes:
            return b"MSA|AA|1"

        def on_bad_frame(self, reason: str, head: bytes) -> None:
            return None

    server = MllpServer("127.0.0.1", 0, Handler(), Limits())
    sock = _SlowReader(10_000)
    assert server._answer(sock, Frame(b"MSH"), "peer")  # type: ignore[arg-type]
    assert sock.sent == frame(b"MSA|AA|1") and sock.timeouts == []
