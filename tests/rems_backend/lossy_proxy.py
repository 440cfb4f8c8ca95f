"""A proxy on 127.0.0.1 that forwards each request to the REMS service but, the first time it sees
a POST to a path, drops the answer: the service processed the request, the client never heard."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

FORWARDED_HEADERS = ("Content-Type", "Idempotency-Key", "Accept")


class _LossyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target
        self.lock = threading.Lock()
        self.dropped: set[str] = set()
        self.forwarded: list[tuple[str, str | None]] = []


class _Handler(BaseHTTPRequestHandler):
    server: _LossyServer

    def _forward(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {h: self.headers[h] for h in FORWARDED_HEADERS if self.headers.get(h)}
        answer = requests.request(
            method, self.server.target + self.path, data=body, headers=headers, timeout=10
        )
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.forwarded.append((path, headers.get("Idempotency-Key")))
            drop = method == "POST" and path not in self.server.dropped
            self.server.dropped.add(path)
        if drop:
            self.close_connection = True  # processed upstream; the answer is lost on the way
            return
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Idempotent-Replayed"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_POST(self) -> None:
        self._forward("POST")

    def do_GET(self) -> None:
        self._forward("GET")

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def lossy_proxy(target: str) -> Iterator[_LossyServer]:
    server = _LossyServer(target)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def url_of(server: _LossyServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
