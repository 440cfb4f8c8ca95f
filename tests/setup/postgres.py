"""A private PostgreSQL for the tests and benchmarks: Debian's server, started by us.

`start_postgres()` runs `initdb` into a new temporary folder, starts the server on a free port
on 127.0.0.1 only (no Unix socket outside that folder, no system cluster touched) and waits,
bounded, until it answers. As root it runs everything as the `postgres` user through
`runuser -u postgres` (the server refuses to run as root), after handing it the folder. The
superuser has a random password (scram-sha-256), so the DSN exercises real authentication.

Installing Debian's `postgresql` when it is missing is `tests/setup/install-postgres.sh`
(called by `tests/run-all`); `ensure_installed()` runs it from Python too.

By hand (prints shell lines to eval; `stop` takes the folder it printed)::

    eval "$(.venv/bin/python -m tests.setup.postgres start)"   # exports REMS_TEST_PG_DSN
    .venv/bin/python -m tests.setup.postgres stop "$REMS_TEST_PG_DIR"
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SETUP_DIR = Path(__file__).resolve().parent
INSTALL_SCRIPT = SETUP_DIR / "install-postgres.sh"
STARTUP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 900.0
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started; the message says why and where to look."""


def _bin_dir() -> Path | None:
    """The newest Debian server binaries folder (/usr/lib/postgresql/N/bin), or PATH's."""

    def major(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def ensure_installed() -> Path:
    """The server binaries folder, installing Debian's postgresql first when it is missing."""
    bin_dir = _bin_dir()
    if bin_dir is not None and (bin_dir / "pg_ctl").exists():
        return bin_dir
    try:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresUnavailable(f"installing postgresql: over {INSTALL_TIMEOUT_S}s") from exc
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"{INSTALL_SCRIPT} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("postgresql installed, but no initdb found")
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class PostgresServer:
    """One private PostgreSQL server. `dsn` connects as the superuser to database postgres."""

    bin_dir: Path
    root: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    running: bool = False
    #: more server settings (name -> value), e.g. for a benchmark's pg_stat_statements
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def _command(self, *argv: str) -> list[str]:
        if _as_root():
            return ["runuser", "-u", SUPERUSER, "--", *argv]
        return list(argv)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = self._command(*argv)
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
                cwd=self.root,
                env={**os.environ, "LC_ALL": "C.UTF-8", "PGTZ": "UTC"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{' '.join(argv[:1])}: {exc}") from exc
        if done.returncode != 0:
            log = ""
            if self.log_path.exists():
                log = self.log_path.read_text(errors="replace")[-3000:]
            raise PostgresUnavailable(
                f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-2000:]}"
                f"{done.stderr[-3000:]}\n{log}"
            )
        return done

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> PostgresServer:
        self.port = self.port or free_port()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if _as_root():
            shutil.chown(self.root, SUPERUSER)
            for path in (self.socket_dir, pwfile):
                shutil.chown(path, SUPERUSER)
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
        )
        pwfile.unlink()
        self._pg_ctl_start(timeout_s)
        return self

    def _options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=200",
                "-c shared_buffers=64MB",
                "-c timezone=UTC",
                "-c log_timezone=UTC",
                # durability as in production: fsync and synchronous commit stay on
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ]
        )

    def _pg_ctl_start(self, timeout_s: float) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "--options",
            self._options(),
            "--wait",
            "--timeout",
            str(int(timeout_s)),
            "start",
        )
        self.running = True
        self._wait_ready(timeout_s)

    def restart(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Stop (fast: open connections are cut) and start again on the same port."""
        self._pg_ctl_stop()
        self._pg_ctl_start(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                self.execute("SELECT 1")
                return
            except Exception as exc:  # bounded retry while the server comes up
                last = str(exc)
            time.sleep(0.2)
        raise PostgresUnavailable(f"PostgreSQL did not answer on {self.port}: {last}")

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement as the superuser; its rows (none for a command)."""
        import psycopg

        with psycopg.connect(self.dsn_for(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _pg_ctl_stop(self) -> None:
        try:
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "--pgdata",
                str(self.data_dir),
                "--mode",
                "fast",
                "--wait",
                "stop",
            )
        finally:
            self.running = False

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            if self.running:
                self._pg_ctl_stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(
    root: Path | None = None, settings: dict[str, str] | None = None
) -> PostgresServer:
    """Install if needed, then start a private server in `root` (a new temporary folder).

    The folder is made directly under the system's temporary folder: the `postgres` user must
    be able to reach it, which pytest's per-user temporary folders (mode 0700) do not allow."""
    bin_dir = ensure_installed()
    # as root, under /tmp itself: a TMPDIR inside root's home is out of the postgres user's reach
    parent = "/tmp" if _as_root() and Path("/tmp").is_dir() else None
    folder = root or Path(tempfile.mkdtemp(prefix="rems-pg-", dir=parent))
    folder.chmod(0o755)
    server = PostgresServer(bin_dir=bin_dir, root=folder, settings=dict(settings or {}))
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        server = start_postgres()
        print(f"export REMS_TEST_PG_DSN='{server.dsn}'")
        print(f"export REMS_TEST_PG_DIR='{server.root}'")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        root = Path(argv[1])
        bin_dir = _bin_dir()
        if bin_dir is None:
            print("no PostgreSQL binaries found", file=sys.stderr)
            return 1
        PostgresServer(bin_dir=bin_dir, root=root, running=(root / "data").exists()).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
