"""The HTTP server of `serve`: waitress, in a thread, stoppable (bounded)."""

from __future__ import annotations

import errno
import threading
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.server import TcpWSGIServer, create_server

from adapter.errors import ConfigurationError

_LOOP_SLICE_SECONDS = 0.05


class HttpServer:
    """`app` on host:port (port 0: a free one; `port` tells which after start)."""

    def __init__(
        self, app: Flask, host: str, port: int, *, threads: int = 8, where: str = "--listen"
    ):
        self._map: dict[int, Any] = {}
        try:
            server = create_server(
                app,
                map=self._map,
                host=host,
                port=port,
                threads=threads,
                ident="rems-adapter",
                clear_untrusted_proxy_headers=True,
            )
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {error.strerror or error}"
                + (" (in use)" if error.errno == errno.EADDRINUSE else ""),
                where=where,
            ) from error
        if not isinstance(server, TcpWSGIServer):  # pragma: no cover - one address, one socket
            raise ConfigurationError(f"{host} does not give one TCP socket", where=where)
        self._server = server
        self.host = host
        self.port = int(server.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wasyncore.loop(timeout=_LOOP_SLICE_SECONDS, map=self._map, count=1)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._server.task_dispatcher.shutdown(timeout=int(timeout))
        wasyncore.close_all(self._map)
