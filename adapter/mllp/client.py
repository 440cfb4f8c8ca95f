"""A small MLLP client: send a message, wait for its ACK (tests, the benchmark, operators)."""

from __future__ import annotations

import socket
import time

from adapter.errors import UpstreamError
from adapter.mllp.framing import BadFrame, Decoder, frame


class MllpError(UpstreamError):
    """The MLLP peer could not be reached, closed the connection or sent no ACK in time."""


class MllpClient:
    def __init__(
        self, host: str, port: int, timeout: float = 10.0, max_ack_bytes: int = 1_048_576
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._decoder = Decoder(max_ack_bytes)
        self._socket: socket.socket | None = None
        self._pending: list[bytes] = []

    def connect(self) -> MllpClient:
        try:
            self._socket = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as error:
            raise MllpError(
                f"cannot connect: {error.strerror or error}", where=f"{self.host}:{self.port}"
            ) from error
        return self

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> MllpClient:
        return self.connect()

    def __exit__(self, *_: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are (no framing): for tests of broken senders."""
        if self._socket is None:
            self.connect()
        assert self._socket is not None
        try:
            self._socket.sendall(data)
        except OSError as error:
            raise MllpError(f"send failed: {error.strerror or error}") from error

    def receive(self) -> bytes:
        """The next framed payload from the peer (an ACK)."""
        assert self._socket is not None
        deadline = time.monotonic() + self.timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MllpError("no ACK in time", where=f"{self.host}:{self.port}")
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(65536)
            except TimeoutError as error:
                raise MllpError("no ACK in time", where=f"{self.host}:{self.port}") from error
            except OSError as error:
                raise MllpError(f"receive failed: {error.strerror or error}") from error
            if not data:
                raise MllpError("the peer closed the connection", where=f"{self.host}:{self.port}")
            for event in self._decoder.feed(data):
                if isinstance(event, BadFrame):
                    raise MllpError(f"bad reply: {event.reason}")
                self._pending.append(event.payload)
        return self._pending.pop(0)

    def send(self, message: bytes | str) -> bytes:
        """Frame and send `message` (CR-separated segments; LF is turned into CR), return the
        ACK payload."""
        payload = message.encode("utf-8") if isinstance(message, str) else message
        payload = payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        self.send_raw(frame(payload))
        return self.receive()
