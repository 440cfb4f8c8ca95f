"""Session fixtures: real sekmet-fhir servers on 127.0.0.1, started once, stopped at the end.

Shared by tests/ehr and tests/watch.

`postgres_server` is a private PostgreSQL (Debian's, installed when missing, started by
`tests/setup/postgres.py` with initdb into a temporary folder on a free port of 127.0.0.1);
`postgres_dsn` gives each test its own new, empty database on it, dropped afterwards.

`fhir_server` is open (no auth), like the servers `watch --fhir-base URL` runs against.
`smart_fhir_server` only accepts SMART Backend Services tokens; two clients are registered, one
with an ES384 key and one with an RS384 key (`smart_keys`). Each server has its own empty
database. Failing to install or start sekmet (or PostgreSQL) fails the tests that need it (never
a silent skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fhir_server import SekmetServer, SmartClientRegistration, start_sekmet
from tests.setup.postgres import PostgresServer, start_postgres


@dataclass(frozen=True)
class SmartKey:
    client_id: str
    algorithm: str
    private_pem: bytes
    public_jwk: dict[str, Any]


def _smart_key(client_id: str, algorithm: str) -> SmartKey:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SmartKey(client_id, algorithm, pem, {**jwk, "alg": algorithm, "kid": f"{client_id}-1"})


@pytest.fixture(scope="session")
def smart_keys() -> dict[str, SmartKey]:
    return {
        "ES384": _smart_key("rems-adapter-es384", "ES384"),
        "RS384": _smart_key("rems-adapter-rs384", "RS384"),
    }


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    server = start_sekmet(workdir=Path(tmp_path_factory.mktemp("sekmet-open")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smart_fhir_server(
    tmp_path_factory: pytest.TempPathFactory, smart_keys: dict[str, SmartKey]
) -> Iterator[SekmetServer]:
    registrations = [
        SmartClientRegistration(key.client_id, key.public_jwk) for key in smart_keys.values()
    ]
    server = start_sekmet(
        smart_clients=registrations, workdir=Path(tmp_path_factory.mktemp("sekmet-smart"))
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # PostgresUnavailable (cannot install or start) errors the tests that need it: never a skip
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A new empty database of its own for one test (its DSN), dropped after the test."""
    dsn = postgres_server.create_database()
    try:
        yield dsn
    finally:
        postgres_server.drop_database(dsn)


# ------------------------------------------------------------------ every log line, kept


@pytest.fixture(scope="session", autouse=True)
def suite_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every log record of the suite (any logger, any level that is emitted) goes to one file,
    and child processes that tests start put their logs beside it (REMS_ADAPTER_TEST_LOG_DIR):
    tests/serve/test_no_phi_in_logs.py scans them for the seeded patients."""
    import logging
    import os

    folder = tmp_path_factory.getbasetemp() / "suite-logs"
    folder.mkdir(exist_ok=True)
    handler = logging.FileHandler(folder / "pytest.log", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
    os.environ["REMS_ADAPTER_TEST_LOG_DIR"] = str(folder)
    try:
        yield folder
    finally:
        root.removeHandler(handler)
        handler.close()
        if previous is None:
            os.environ.pop("REMS_ADAPTER_TEST_LOG_DIR", None)
        else:
            os.environ["REMS_ADAPTER_TEST_LOG_DIR"] = previous
    from tests.serve.phi_scan import leaks

    found = leaks(folder)
    assert not found, f"PHI in the suite's logs ({folder}): {found[:10]}"
