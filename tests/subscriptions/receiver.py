"""A tiny HTTP endpoint on 127.0.0.1 that records what a FHIR server notifies (tests only).

It stands in for the subscriber when a test checks the EHR side (the keeper, the server's real
notification shapes); the service tests use `rems-adapter serve` itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Records every request; answers `status` (settable) with an empty JSON body."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def seen(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(
        self, test: Callable[[Received], bool], timeout: float = 30.0, count: int = 1
    ) -> list[Received]:
        """The first `count` requests passing `test`, waiting (bounded) for them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.seen() if test(r)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waited {timeout}s for {count} request(s); saw "
                    f"{[(r.method, r.path) for r in self.seen()]}"
                )
            time.sleep(0.05)


def wait_until(test: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.1)
