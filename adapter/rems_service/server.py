"""Serving the WSGI app with waitress, in the foreground (CLI) or a background thread (tests)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import waitress
from flask import Flask
from waitress import wasyncore
from waitress.server import TcpWSGIServer, create_server

from .app import make_app

log = logging.getLogger(__name__)

DEFAULT_THREADS = 4
_LOOP_SLICE_SECONDS = 0.05


def serve(
    port: int,
    db_path: str,
    seed: str | None = None,
    host: str = "127.0.0.1",
    *,
    rules: str | Path | None = None,
    admin_token: str | None = None,
) -> None:
    """Run the reference REMS service until interrupted (`rems-adapter rems-server`)."""
    app = make_app(db_path, seed, rules=rules, admin_token=admin_token)
    log.info("REMS service listening on http://%s:%d (database %s)", host, port, db_path)
    waitress.serve(app, host=host, port=port, threads=DEFAULT_THREADS, ident="rems-adapter")


class BackgroundServer:
    """A real HTTP server on 127.0.0.1 and a free port, in a daemon thread; for tests.

        with BackgroundServer(make_app(db)) as base_url:
            requests.get(f"{base_url}/health")

    waitress's own run() loops until the process ends; here the loop runs in short bounded
    slices so stop() ends it, and sockets are closed only after the loop has left select().
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", threads: int = DEFAULT_THREADS) -> None:
        self._socket_map: dict[int, Any] = {}
        server = create_server(app, map=self._socket_map, host=host, port=0, threads=threads)
        if not isinstance(server, TcpWSGIServer):  # pragma: no cover - one host gives one socket
            raise ValueError(f"{host} does not give a single TCP socket; pass one IP address")
        self._server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rems-service", daemon=True)
        self.base_url = f"http://{host}:{server.getsockname()[1]}"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wasyncore.loop(timeout=_LOOP_SLICE_SECONDS, map=self._socket_map, count=1)

    def start(self) -> str:
        self._thread.start()
        return self.base_url

    def stop(self, timeout_seconds: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout_seconds)
        self._server.task_dispatcher.shutdown(timeout=int(timeout_seconds))
        wasyncore.close_all(self._socket_map)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
