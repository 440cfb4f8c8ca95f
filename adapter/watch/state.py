"""Durable watch state in SQLite: watermarks, the relevant resources seen, patients to re-decide.

One ``step()`` is one SQLite transaction: a page's resources, the watermark it advances and the
patients it touches commit together, so a crash never leaves a watermark ahead of the data it
stands for. A patient stays in ``dirty`` until its decisions are written back; after a restart
the unfinished patients are decided again (conditional creates make that harmless).

Watermarks are the server's raw ``meta.lastUpdated`` strings. Resources are keyed by type/id
with their versionId, so a version already seen is never processed twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from adapter.fhir.values import read_instant_or_none

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watermarks (query TEXT PRIMARY KEY, last_updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    patient TEXT,
    identifier TEXT,
    base_version TEXT,
    body BLOB NOT NULL,
    PRIMARY KEY (type, id)
);
CREATE INDEX IF NOT EXISTS resources_patient ON resources (patient);
CREATE INDEX IF NOT EXISTS resources_identifier ON resources (identifier)
    WHERE identifier IS NOT NULL;
CREATE TABLE IF NOT EXISTS dirty (patient TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS rechecks (patient TEXT PRIMARY KEY, due TEXT NOT NULL);
"""


class StateError(RuntimeError):
    """The state file cannot be opened or belongs to another schema."""


def version_of(resource: dict[str, Any]) -> tuple[str, str]:
    """(versionId, raw lastUpdated); either may be empty on servers without versioning."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return "", ""
    return _text(meta.get("versionId")), _text(meta.get("lastUpdated"))


def _text(value: object) -> str:
    # Only primitives: str() of a nested value could quote a person's data or exhaust the stack.
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


def instant_of(raw: str) -> datetime | None:
    return read_instant_or_none(raw)


def is_newer(candidate: tuple[str, str], held: tuple[str, str]) -> bool:
    """Whether version `candidate` (versionId, lastUpdated) is later than `held`."""
    (cand_v, cand_t), (held_v, held_t) = candidate, held
    if cand_v.isdigit() and held_v.isdigit():
        return int(cand_v) > int(held_v)
    if cand_v and cand_v == held_v:
        return False
    cand_i, held_i = instant_of(cand_t), instant_of(held_t)
    if cand_i is not None and held_i is not None:
        return cand_i > held_i
    return (cand_v, cand_t) != (held_v, held_t)  # cannot order them: a change is a change


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE in step())
            self.db = sqlite3.connect(str(path), isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StateError(
                    f"{path}: state schema {row[0]}, this version needs {SCHEMA_VERSION}"
                )
        except sqlite3.Error as error:
            raise StateError(f"{path}: cannot open the watch state: {error}") from error

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def step(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- watermarks ----------------------------------------------------------------------------

    def watermark(self, query: str) -> str | None:
        row = self.db.execute(
            "SELECT last_updated FROM watermarks WHERE query = ?", (query,)
        ).fetchone()
        return str(row[0]) if row else None

    def set_watermark(self, query: str, raw: str) -> None:
        self.db.execute(
            "INSERT INTO watermarks VALUES (?, ?) "
            "ON CONFLICT (query) DO UPDATE SET last_updated = excluded.last_updated",
            (query, raw),
        )

    # -- resources -----------------------------------------------------------------------------

    def held_version(self, kind: str, rid: str) -> tuple[str, str] | None:
        row = self.db.execute(
            "SELECT version, last_updated FROM resources WHERE type = ? AND id = ?", (kind, rid)
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def upsert(
        self,
        resource: dict[str, Any],
        patient: str | None,
        identifier: str | None = None,
        base_version: str | None = None,
    ) -> None:
        version, updated = version_of(resource)
        self.db.execute(
            "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                resource["resourceType"],
                resource["id"],
                version,
                updated,
                patient,
                identifier,
                base_version,
                orjson.dumps(resource),
            ),
        )

    def delete(self, kind: str, rid: str) -> None:
        self.db.execute("DELETE FROM resources WHERE type = ? AND id = ?", (kind, rid))

    def resource(self, kind: str, rid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT body FROM resources WHERE type = ? AND id = ?", (kind, rid)
        ).fetchone()
        return _loads(row[0]) if row else None

    def base_version(self, kind: str, rid: str) -> str | None:
        row = self.db.execute(
            "SELECT base_version FROM resources WHERE type = ? AND id = ?", (kind, rid)
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def patient_resources(self, patient: str) -> list[dict[str, Any]]:
        """Everything held for the patient, as the rules should see it: a version we made only to
        link a decision (``base_version``) reads as the version it was made from, so our own edit
        never looks like new input."""
        out = []
        for body, base in self.db.execute(
            "SELECT body, base_version FROM resources WHERE patient = ? ORDER BY type, id",
            (patient,),
        ):
            resource = _loads(body)
            if base is not None:
                resource.setdefault("meta", {})["versionId"] = base
            out.append(resource)
        return out

    def has_identifier(self, identifier: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM resources WHERE identifier = ? LIMIT 1", (identifier,)
        ).fetchone()
        return row is not None

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            row = self.db.execute("SELECT COUNT(*) FROM resources").fetchone()
        else:
            row = self.db.execute(
                "SELECT COUNT(*) FROM resources WHERE type = ?", (kind,)
            ).fetchone()
        return int(row[0])

    # -- patients to decide --------------------------------------------------------------------

    def mark_dirty(self, patients: Iterable[str]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO dirty VALUES (?)", ((patient,) for patient in patients)
        )

    def dirty(self) -> list[str]:
        return [str(row[0]) for row in self.db.execute("SELECT patient FROM dirty ORDER BY 1")]

    def clear_dirty(self, patients: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM dirty WHERE patient = ?", ((p,) for p in patients))

    def set_recheck(self, patient: str, due: date | None) -> None:
        if due is None:
            self.db.execute("DELETE FROM rechecks WHERE patient = ?", (patient,))
        else:
            self.db.execute(
                "INSERT INTO rechecks VALUES (?, ?) "
                "ON CONFLICT (patient) DO UPDATE SET due = excluded.due",
                (patient, due.isoformat()),
            )

    def due_rechecks(self, today: date) -> list[str]:
        return [
            str(row[0])
            for row in self.db.execute(
                "SELECT patient FROM rechecks WHERE due <= ? ORDER BY 1", (today.isoformat(),)
            )
        ]


def _loads(raw: bytes) -> dict[str, Any]:
    value = orjson.loads(raw)
    assert isinstance(value, dict)
    return value
