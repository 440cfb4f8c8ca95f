"""A real FHIR R4 server for integration tests: sekmet-fhir, in its own virtualenv, on 127.0.0.1.

`ensure_sekmet()` creates `tests/.artefacts/sekmet-venv` and installs the pinned sekmet-fhir into
it when missing (its dependencies, FastAPI and friends, never enter the project's environment).
`SekmetServer.start()` writes a settings file, registers the search parameters sekmet lacks
(see `sekmet_launcher.py`), starts it on a free port and waits (bounded) until it answers.

Used by the session fixtures in `tests/conftest.py`; usable from a benchmark script too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

SEKMET_REQUIREMENT = "sekmet-fhir==0.1.1"
TESTS_DIR = Path(__file__).resolve().parent
ARTEFACTS = TESTS_DIR / ".artefacts"
DEFAULT_VENV = ARTEFACTS / "sekmet-venv"
LAUNCHER = TESTS_DIR / "sekmet_launcher.py"
INSTALL_TIMEOUT_S = 600
STARTUP_TIMEOUT_S = 30.0

DI = "DetectedIssue"


def _search_parameter(code: str, kind: str, expression: str, *targets: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "SearchParameter",
        "url": f"https://rems-adapter.github.io/fhir/SearchParameter/{DI}-{code}",
        "name": code,
        "status": "active",
        "code": code,
        "base": [DI],
        "type": kind,
        "expression": expression,
    }
    if targets:
        resource["target"] = list(targets)
    return resource


#: What sekmet-fhir 0.1.1 lacks and the adapter needs: DetectedIssue search (R4 core parameters,
#: plus `status`, which R4 does not define for DetectedIssue but R5 does and we rely on).
DETECTEDISSUE_SEARCH_PARAMETERS: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"resource": sp}
        for sp in (
            _search_parameter("identifier", "token", f"{DI}.identifier"),
            _search_parameter("patient", "reference", f"{DI}.patient", "Patient"),
            _search_parameter("code", "token", f"{DI}.code"),
            _search_parameter("status", "token", f"{DI}.status"),
            _search_parameter("implicated", "reference", f"{DI}.implicated"),
            _search_parameter("author", "reference", f"{DI}.author"),
            _search_parameter(
                "identified", "date", f"{DI}.identifiedDateTime | {DI}.identifiedPeriod"
            ),
        )
    ],
}


class SekmetUnavailable(RuntimeError):
    """sekmet-fhir could not be installed or started; the message says why and where to look."""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_sekmet(venv: Path = DEFAULT_VENV) -> Path:
    """The sekmet virtualenv's python, creating the venv and installing sekmet-fhir if needed.

    Serialised with a lock file so that two test runs sharing the checkout do not both build it."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        if os.name != "nt":
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _install(venv)


def _install(venv: Path) -> Path:
    python = _venv_python(venv)
    marker = venv / f".installed-{SEKMET_REQUIREMENT}"
    if marker.exists() and python.exists():
        return python
    if venv.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted run
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", SEKMET_REQUIREMENT],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SekmetUnavailable(f"timed out after {INSTALL_TIMEOUT_S}s: {step}") from exc
        if done.returncode != 0:
            raise SekmetUnavailable(
                f"failed ({done.returncode}): {' '.join(step)}\n{done.stderr[-3000:]}"
            )
    marker.write_text(SEKMET_REQUIREMENT + "\n")
    return python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmartClientRegistration:
    """A SMART Backend Services client registered with sekmet's token endpoint."""

    client_id: str
    public_jwk: dict[str, Any]
    scopes: str = "system/*.*"


@dataclass
class SekmetServer:
    """One running sekmet-fhir process. `base_url` is the FHIR base (…/fhir)."""

    python: Path
    workdir: Path
    smart_clients: list[SmartClientRegistration] = field(default_factory=list)
    token_lifetime: int = 3600
    #: False: a stock sekmet-fhir (no DetectedIssue search parameters registered)
    search_parameters: bool = True
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.root_url}/auth/token"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sekmet.log"

    def settings(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"types": ["none"]}
        if self.smart_clients:
            auth = {
                "types": ["smart"],
                "token_lifetime": self.token_lifetime,
                "smart_clients": [
                    {"client_id": c.client_id, "jwks": {"keys": [c.public_jwk]}, "scopes": c.scopes}
                    for c in self.smart_clients
                ],
            }
        return {
            # base_url drives the links sekmet writes (paging, Location) and the token audience
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "db_path": str(self.workdir / "sekmet.db"),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet.pem"),
            "server_auth": auth,
            # the simulator would answer our MedicationRequests with its own dispenses
            "simulator": {"enabled": False},
            "log_inbound": False,  # no per-request traffic log: faster, and no bodies on disk
        }

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> SekmetServer:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # YAML is a superset of JSON: sekmet reads this with yaml.safe_load
        config = self.workdir / "settings.yaml"
        config.write_text(json.dumps(self.settings(), indent=2))
        search_parameters = self.workdir / "search-parameters.json"
        registered = (
            DETECTEDISSUE_SEARCH_PARAMETERS
            if self.search_parameters
            else {"resourceType": "Bundle", "type": "collection", "entry": []}
        )
        search_parameters.write_text(json.dumps(registered, indent=2))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.python),
                    str(LAUNCHER),
                    "--config",
                    str(config),
                    "--search-parameters",
                    str(search_parameters),
                ],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SekmetUnavailable(
                    f"sekmet exited with {self.process.returncode}; log:\n{self._log_tail()}"
                )
            try:
                if requests.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise SekmetUnavailable(f"sekmet not ready within {timeout_s}s; log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_sekmet(
    smart_clients: list[SmartClientRegistration] | None = None,
    workdir: Path | None = None,
    token_lifetime: int = 3600,
    search_parameters: bool = True,
) -> SekmetServer:
    """Install if needed, then start a fresh server (empty database) and wait until it answers."""
    python = ensure_sekmet()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sekmet-"))
    server = SekmetServer(
        python=python,
        workdir=workdir,
        smart_clients=list(smart_clients or []),
        token_lifetime=token_lifetime,
        search_parameters=search_parameters,
    )
    return server.start()
