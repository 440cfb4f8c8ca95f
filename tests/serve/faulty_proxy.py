"""A loopback HTTP proxy in front of a server that injects faults on demand (tests, fault runs).

    with FaultyProxy(target) as proxy:
        proxy.mode = "503"      # every request answered 503 Service Unavailable
        proxy.mode = "hang"     # every request held until the client gives up (a timeout)
        proxy.mode = "lose"     # forwarded, then the answer is lost (processed, never heard)
        proxy.mode = "refuse"   # writes of DetectedIssues answered 422; the rest forwarded
        proxy.mode = "pass"     # forwarded unchanged

Links and locations in answers are rewritten to the proxy, so paging stays on it.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import requests

SKIPPED = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
HANG_SECONDS = 30.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: FaultyProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        mode = proxy.mode
        with proxy.lock:
            proxy.requests += 1
            proxy.by_mode[mode] = proxy.by_mode.get(mode, 0) + 1
        refuse = (
            mode == "refuse"
            and self.command in ("PUT", "POST")
            and self.path.split("?")[0].rstrip("/").split("/")[-2:-1] == ["DetectedIssue"]
        ) or (
            mode == "refuse"
            and self.command == "POST"
            and self.path.split("?")[0].endswith("/DetectedIssue")
        )
        if mode == "503" or refuse:
            status, code = (422, "processing") if refuse else (503, "transient")
            payload = (
                '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"'
                + code
                + '"}]}'
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if mode == "hang":
            deadline = time.monotonic() + HANG_SECONDS
            while proxy.mode == "hang" and time.monotonic() < deadline and not proxy.closing:
                time.sleep(0.05)
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in SKIPPED}
        answer = requests.request(
            self.command, proxy.target + self.path, data=body, headers=headers, timeout=60
        )
        if mode == "lose":
            self.close_connection = True  # processed upstream; the answer is lost on the way
            return
        content = answer.content.replace(proxy.target.encode(), proxy.url.encode())
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() in SKIPPED or name.lower() == "content-encoding":
                continue
            self.send_header(name, value.replace(proxy.target, proxy.url))
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: object) -> None:
        return


class FaultyProxy:
    def __init__(self, target: str) -> None:
        """`target`: the server's root URL (scheme://host:port, no path)."""
        self.target = target.rstrip("/")
        self.mode = "pass"
        self.lock = threading.Lock()
        self.requests = 0
        self.by_mode: dict[str, int] = {}
        self.closing = False
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closing = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
