"""Durable state in SQLite: one short write transaction per request, WAL for concurrent reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapter.errors import StateError

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prescribers (
    npi TEXT PRIMARY KEY,
    assessment_completed_on TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS designees (
    designee_id TEXT NOT NULL,
    prescriber_npi TEXT NOT NULL REFERENCES prescribers (npi),
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (designee_id, prescriber_npi)
);
CREATE TABLE IF NOT EXISTS pharmacies (
    pharmacy_id TEXT NOT NULL,
    setting TEXT NOT NULL CHECK (setting IN ('inpatient', 'outpatient')),
    name TEXT,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (pharmacy_id, setting)
);
-- identity_key is a hash of the normalised name, birth date, sex and postal code: enough to
-- match a PSF sent without a REMS id, without keeping names in clear.
CREATE TABLE IF NOT EXISTS patients (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rems_id TEXT UNIQUE,
    identity_key TEXT NOT NULL UNIQUE,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    prescriber_npi TEXT NOT NULL,
    enrolled_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS psfs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rems_id TEXT NOT NULL REFERENCES patients (rems_id),
    kind TEXT NOT NULL CHECK (kind IN ('enrollment', 'psf')),
    reporting_period TEXT NOT NULL,
    completed_at TEXT NOT NULL,
    prescriber_npi TEXT NOT NULL,
    signer_role TEXT NOT NULL,
    signer_id TEXT NOT NULL,
    treatment_status TEXT NOT NULL,
    monitoring_frequency TEXT NOT NULL,
    ben INTEGER NOT NULL,
    hospice INTEGER NOT NULL,
    labs_missed INTEGER NOT NULL,
    latest_anc_per_ul REAL,
    latest_anc_collected TEXT,
    treatment_rationale TEXT
);
CREATE INDEX IF NOT EXISTS psfs_by_patient ON psfs (rems_id, completed_at);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('rda', 'override')),
    pharmacy_id TEXT NOT NULL,
    rems_id TEXT NOT NULL,
    dispense_id TEXT NOT NULL,
    days_supply INTEGER NOT NULL,
    setting TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    granted INTEGER NOT NULL,
    counts_toward_limit INTEGER NOT NULL,
    authorization_number TEXT UNIQUE,
    reasons TEXT NOT NULL,
    response TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_patient ON decisions (rems_id, kind, granted, decided_at);
CREATE INDEX IF NOT EXISTS decisions_by_dispense ON decisions (pharmacy_id, dispense_id, kind);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key, endpoint)
);
"""


class StoreError(StateError, RuntimeError):
    """The database cannot be opened or has an unknown layout."""


class Store:
    """Opens one connection per request: sqlite3 connections must not cross threads, and
    opening a local file is cheap next to an HTTP round trip."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = str(db_path)

    def initialise(self) -> None:
        """Create the schema (idempotent) and switch the file to WAL."""
        try:
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_DDL)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot initialise REMS database {self.db_path}: {exc}") from exc
        if row is None or int(row["value"]) != SCHEMA_VERSION:
            raise StoreError(
                f"REMS database {self.db_path} has schema version {row and row['value']}, "
                f"this service needs {SCHEMA_VERSION}"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN ourselves, so the transaction spans exactly the
        # request (sqlite3's implicit transactions would not cover the reads).
        conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A serialised read-decide-write transaction: BEGIN IMMEDIATE takes the write lock up
        front, so two concurrent overrides cannot both see 2 of 3 used and both be granted."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def ping(self) -> bool:
        try:
            with self._connect() as conn:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True
