"""The MLLP listener: TCP on 127.0.0.1 (or the configured address), several connections at once,
one thread each, everything bounded.

- ``handler.on_message(payload)`` is called for each well-framed message, in order, on the
  connection's thread; it returns the ACK payload to send (or None: send nothing). It is the
  handler's job to store before it returns, so an ACK sent means the message is stored.
- ``handler.on_bad_frame(reason, head)`` answers bytes that were not one good frame (oversize,
  no start block, unterminated).
- Bounds: ``max_connections`` at once (more are closed at once, the sender retries), an idle
  timeout per connection, a time limit for one message to arrive once it has started (a
  trickling sender cannot hold a slot), ``max_message_bytes`` per frame, a send timeout.
- A handler that raises, a client that disconnects mid-message or sends garbage only ends that
  connection (a partial frame is dropped: nothing was acknowledged, the sender resends).
  The listener itself only stops on :meth:`MllpServer.stop`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from adapter.errors import ConfigurationError
from adapter.mllp.framing import BadFrame, Decoder, Frame, frame

log = logging.getLogger("rems_adapter.mllp")

_POLL = 0.2  # seconds between checks of the stop flag and the timeouts


class Handler(Protocol):
    def on_message(self, payload: bytes) -> bytes | None: ...

    def on_bad_frame(self, reason: str, head: bytes) -> bytes | None: ...


@dataclass
class Limits:
    max_connections: int = 32
    idle_timeout: float = 300.0
    message_timeout: float = 30.0
    max_message_bytes: int = 1_048_576
    send_timeout: float = 10.0


@dataclass
class Stats:
    """Counters (thread-safe through ``lock``): what the listener saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: int = 0
    active: int = 0
    refused: int = 0
    messages: int = 0
    bad_frames: int = 0
    dropped_partial: int = 0
    handler_errors: int = 0

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


class MllpServer:
    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.limits = limits or Limits()
        self.clock = clock
        self.stats = Stats()
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)

    @property
    def address(self) -> tuple[str, int]:
        if self._socket is None:
            return self.host, self.port
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> MllpServer:
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(max(16, self.limits.max_connections))
            listener.settimeout(_POLL)
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self.port}: {error.strerror or error}",
                where="--mllp",
            ) from error
        self._socket = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name="mllp-accept", daemon=True)
        self._acceptor.start()
        log.info("mllp listening on %s:%s", *self.address)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._socket is not None:
            self._socket.close()
        with self._lock:
            connections = list(self._connections.values())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = self.clock() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - self.clock()))

    def __enter__(self) -> MllpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------ accepting

    def _accept_loop(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                sock, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if self._stop.is_set():
                    return
                log.warning("mllp accept failed: %s", error.strerror or error)
                time.sleep(_POLL)
                continue
            if not self._slots.acquire(blocking=False):
                self.stats.add("refused")
                log.warning(
                    "mllp connection refused: %s connections already open",
                    self.limits.max_connections,
                )
                sock.close()
                continue
            self.stats.add("connections")
            thread = threading.Thread(
                target=self._serve, args=(sock, peer), name="mllp-connection", daemon=True
            )
            with self._lock:
                self._connections[id(sock)] = (sock, thread)
            thread.start()

    # ------------------------------------------------------------ one connection

    def _serve(self, sock: socket.socket, peer: tuple[object, ...]) -> None:
        self.stats.add("active")
        decoder = Decoder(self.limits.max_message_bytes)
        where = f"{peer[0]}:{peer[1]}" if len(peer) >= 2 else "?"
        try:
            sock.settimeout(_POLL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            last = self.clock()
            started: float | None = None
            while not self._stop.is_set():
                now = self.clock()
                if started is not None and now - started > self.limits.message_timeout:
                    log.warning(
                        "mllp %s: a message took over %ss to arrive; closed",
                        where,
                        self.limits.message_timeout,
                    )
                    self.stats.add("dropped_partial")
                    return
                if now - last > self.limits.idle_timeout:
                    log.info("mllp %s: idle for %ss; closed", where, self.limits.idle_timeout)
                    return
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as error:
                    log.info("mllp %s: connection error (%s)", where, error.strerror or error)
                    if decoder.in_frame:
                        self.stats.add("dropped_partial")
                    return
                if not data:
                    if decoder.in_frame:
                        self.stats.add("dropped_partial")
                        log.info("mllp %s: disconnected mid-message; nothing stored", where)
                    return
                last = self.clock()
                for event in decoder.feed(data):
                    if not self._answer(sock, event, where):
                        return
                started = (started or last) if decoder.in_frame else None
        finally:
            try:
                sock.close()
            finally:
                with self._lock:
                    self._connections.pop(id(sock), None)
                self.stats.add("active", -1)
                self._slots.release()

    def _answer(self, sock: socket.socket, event: Frame | BadFrame, where: str) -> bool:
        """Handle one event and send its reply; False ends the connection."""
        try:
            if isinstance(event, Frame):
                self.stats.add("messages")
                reply = self.handler.on_message(event.payload)
            else:
                self.stats.add("bad_frames")
                log.warning("mllp %s: %s", where, event.reason)
                reply = self.handler.on_bad_frame(event.reason, event.head)
        except Exception as error:  # the handler's defect must not end the listener
            self.stats.add("handler_errors")
            log.error(
                "mllp %s: handler failed (%s); connection closed", where, type(error).__name__
            )
            return False
        if reply is None:
            return True
        data = frame(reply)
        try:
            # an ACK fits the socket's send buffer: one send, without changing the timeout
            # (two system calls a message); only a sender that does not read waits longer
            try:
                sent = sock.send(data)
            except TimeoutError:
                sent = 0
            if sent < len(data):
                sock.settimeout(self.limits.send_timeout)
                try:
                    sock.sendall(data[sent:])
                finally:
                    with contextlib.suppress(OSError):
                        sock.settimeout(_POLL)
        except OSError as error:
            log.info("mllp %s: ACK not sent (%s)", where, error.strerror or error)
            return False
        return True
