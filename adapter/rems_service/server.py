"""Serving the WSGI app with waitress, in the foreground (CLI) or a background thread (tests)."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.server import TcpWSGIServer, create_server

from adapter.errors import ConfigurationError

from .app import make_app

log = logging.getLogger(__name__)

DEFAULT_THREADS = 4
_LOOP_SLICE_SECONDS = 0.05


@dataclass(frozen=True)
class ServerOptions:
    """What `rems-adapter rems-server` runs with (adapter.settings section rems_server)."""

    port: int
    db: str
    seed: str | None = None
    host: str = "127.0.0.1"
    rules: str | Path | None = None
    admin_token: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    insecure_admin: bool = False
    #: How the user named host, port and db (a flag, a variable, a key), for error messages.
    where: Mapping[str, str] = field(default_factory=dict)


def serve(
    port: int,
    db_path: str,
    seed: str | None = None,
    host: str = "127.0.0.1",
    *,
    rules: str | Path | None = None,
    admin_token: str | None = None,
    token: str | None = None,
    insecure_admin: bool = False,
) -> None:
    """Run the reference REMS service until interrupted (`rems-adapter rems-server`)."""
    serve_options(
        ServerOptions(
            port=port,
            db=db_path,
            seed=seed,
            host=host,
            rules=rules,
            admin_token=admin_token,
            token=token,
            insecure_admin=insecure_admin,
        )
    )


def serve_options(options: ServerOptions) -> None:
    """Run until interrupted. A port in use or an address that cannot be bound is a
    ConfigurationError naming it; database, seed and rules errors are their own kinds."""
    app = make_app(
        options.db,
        options.seed,
        rules=options.rules,
        admin_token=options.admin_token,
        token=options.token,
        insecure_admin=options.insecure_admin,
    )
    try:
        server = create_server(
            app, host=options.host, port=options.port, threads=DEFAULT_THREADS, ident="rems-adapter"
        )
    except OSError as error:
        name = options.where.get("port" if error.errno == errno.EADDRINUSE else "host", "--host")
        raise ConfigurationError(
            f"cannot listen on {options.host}:{options.port}: {error.strerror or error}",
            where=name,
        ) from error
    log.info(
        "REMS service listening on http://%s:%d (database %s)",
        options.host,
        options.port,
        options.db,
    )
    try:
        server.run()
    finally:
        server.close()


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
