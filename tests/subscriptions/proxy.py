"""A loopback HTTP proxy between the EHR and the subscriber that can lose notifications (tests).

Every request is forwarded to `target` (same method, path suffix, headers and body) unless
`drop(method, path, body)` says to lose it: the proxy then answers 200 as if delivered, the way a
notification is lost in practice (a load balancer, a restart), so the EHR does not retry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

Drop = Callable[[str, str, bytes], bool]
_HOP = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


class LossyProxy:
    def __init__(self, target: str, drop: Drop | None = None) -> None:
        self.target = target.rstrip("/")
        self.drop: Drop = drop or (lambda method, path, body: False)
        self.fail: Callable[[], bool] = lambda: False  # True: answer 503 (the subscriber is down)
        self.dropped: list[tuple[str, str, bytes]] = []
        self.forwarded: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.fail():
                    self._answer(503, b"{}")
                    return
                with proxy._lock:
                    lose = proxy.drop(self.command, self.path, body)
                    if lose:
                        proxy.dropped.append((self.command, self.path, body))
                if lose:
                    self._answer(200, b"{}")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    answer = requests.request(
                        self.command,
                        proxy.target + self.path,
                        data=body,
                        headers=headers,
                        timeout=30,
                    )
                    status, content = answer.status_code, answer.content
                except requests.RequestException:
                    status, content = 502, b"{}"
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path, status))
                self._answer(status, content)

            def _answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LossyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
