"""A listener on 127.0.0.1 (port 0) answering through the real HL7 v2 receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import hl7

from adapter.hl7v2.oru import OruMessage
from adapter.hl7v2.receive import Receiver
from adapter.mllp.client import MllpClient
from adapter.mllp.server import Limits, MllpServer
from tests.hl7v2.kit import receiver


class MemoryStore:
    """Deduplicates on MSH-3|MSH-4|MSH-10 like the inbox does (listener tests only; the
    durable inbox is tested with `serve`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: dict[str, OruMessage] = {}
        self.calls = 0

    def __call__(self, message: OruMessage) -> None:
        with self.lock:
            self.calls += 1
            self.messages.setdefault(message.header.key, message)


class ReceiverHandler:
    def __init__(self, recv: Receiver) -> None:
        self.recv = recv

    def on_message(self, payload: bytes) -> bytes | None:
        return self.recv(payload).ack

    def on_bad_frame(self, reason: str, head: bytes) -> bytes | None:
        return self.recv.bad_frame(reason, head).ack


@contextmanager
def listening(store: object = None, **limits: object) -> Iterator[MllpServer]:
    store = store if store is not None else MemoryStore()
    handler = ReceiverHandler(receiver(store))  # type: ignore[arg-type]
    server = MllpServer("127.0.0.1", 0, handler, Limits(**limits))  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: MllpServer, timeout: float = 10.0) -> MllpClient:
    host, port = server.address
    return MllpClient(host, port, timeout=timeout)


def msa(ack: bytes) -> tuple[str, str]:
    segment = hl7.parse(ack.decode()).segment("MSA")
    return str(segment[1]), str(segment[2])
