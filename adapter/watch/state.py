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
from contextlib import contextmanager, suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from adapter.core.labs import numeric_version
from adapter.errors import ConfigurationError
from adapter.errors import StateError as _StateError
from adapter.fhir.values import read_instant_or_none
from adapter.store.sql import version_of as version_of  # one reading of meta, shared

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
CREATE TABLE IF NOT EXISTS decisions (
    identifier TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_patient ON decisions (patient);
CREATE TABLE IF NOT EXISTS undated (
    id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    specimen TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    PRIMARY KEY (type, id)
);
"""


class StateError(_StateError):
    """The state file cannot be opened, is corrupt or belongs to another schema (exit 5)."""


class ForeignStateError(ConfigurationError):
    """The state file belongs to another EHR (exit 3): never used against this one."""


def normal_base(url: str) -> str:
    return url.rstrip("/")


def instant_of(raw: str) -> datetime | None:
    return read_instant_or_none(raw)


def is_newer(candidate: tuple[str, str], held: tuple[str, str]) -> bool:
    """Whether version `candidate` (versionId, lastUpdated) is later than `held`."""
    (cand_v, cand_t), (held_v, held_t) = candidate, held
    cand_n, held_n = numeric_version(cand_v), numeric_version(held_v)
    if cand_n is not None and held_n is not None:
        return cand_n > held_n
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
                    f"state schema {row[0]}, this version needs {SCHEMA_VERSION}", where=str(path)
                )
        except sqlite3.Error as error:
            raise StateError(
                f"cannot open the watch state (corrupt or not a state file?): {error}",
                where=str(path),
            ) from error

    # -- what the state belongs to -------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def bind(self, base_url: str, fingerprint: str) -> bool:
        """Tie the state to the EHR `base_url` (refusing another one: ForeignStateError) and
        record the mappings and settings `fingerprint`. True when the fingerprint changed since
        the state was written: every patient it knows is then marked to be decided again."""
        try:
            with self.step():
                held = self._meta("ehr_base_url")
                if held is None:
                    self._set_meta("ehr_base_url", normal_base(base_url))
                elif held != normal_base(base_url):
                    raise ForeignStateError(
                        f"this state file belongs to the EHR at {held}, not "
                        f"{normal_base(base_url)}; use another --state file for this EHR "
                        "(nothing was done)",
                        where=str(self.path),
                    )
                if self._meta("decisions_recorded") is None:
                    # a state file from before the decisions record: what it holds of ours is
                    # the best record of what was decided
                    self.db.execute(
                        "INSERT OR IGNORE INTO decisions SELECT identifier, patient, id, body "
                        "FROM resources WHERE type = 'DetectedIssue' AND identifier IS NOT NULL "
                        "AND patient IS NOT NULL"
                    )
                    self._set_meta("decisions_recorded", "1")
                before = self._meta("fingerprint")
                changed = before is not None and before != fingerprint
                self._set_meta("fingerprint", fingerprint)
                if changed:
                    self.db.execute(
                        "INSERT OR IGNORE INTO dirty SELECT DISTINCT patient FROM resources "
                        "WHERE patient IS NOT NULL"
                    )
                return changed
        except sqlite3.Error as error:
            raise StateError(f"cannot read the watch state: {error}", where=str(self.path)) from (
                error
            )

    def base_url(self) -> str | None:
        return self._meta("ehr_base_url")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def step(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StateError(f"cannot write the watch state: {error}", where=str(self.path)) from (
                error
            )
        try:
            yield
        except sqlite3.Error as error:
            self._rollback()
            raise StateError(f"the watch state failed: {error}", where=str(self.path)) from error
        except BaseException:
            self._rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StateError(f"cannot write the watch state: {error}", where=str(self.path)) from (
                error
            )

    def _rollback(self) -> None:
        with suppress(sqlite3.Error):  # the transaction may be gone already
            self.db.execute("ROLLBACK")

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
        return _loads(row[0], self.path) if row else None

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
            resource = _loads(body, self.path)
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

    # -- what the adapter decided (the record reconcile restores from) --------------------------

    def record_decision(self, identifier: str, patient: str, resource: dict[str, Any]) -> None:
        """What the adapter last wrote for decision `identifier` (final or withdrawn)."""
        self.db.execute(
            "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
            (identifier, patient, str(resource["id"]), orjson.dumps(resource)),
        )

    def decision(self, identifier: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT body FROM decisions WHERE identifier = ?", (identifier,)
        ).fetchone()
        return _loads(row[0], self.path) if row else None

    def decisions_of(self, patients: Iterable[str]) -> list[tuple[str, str, dict[str, Any]]]:
        """(identifier, patient, resource as the adapter wrote it) for the patients."""
        out = []
        for patient in patients:
            for identifier, body in self.db.execute(
                "SELECT identifier, body FROM decisions WHERE patient = ? ORDER BY 1", (patient,)
            ):
                out.append((str(identifier), patient, _loads(body, self.path)))
        return out

    def decided_patients(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT DISTINCT patient FROM decisions")]

    # -- results without an effective time, to be dated by their report or specimen ---------

    def add_undated(self, rid: str, patient: str, specimen: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO undated VALUES (?, ?, ?)", (rid, patient, specimen))

    def undated(self, limit: int) -> list[tuple[str, str, str | None]]:
        return [
            (str(rid), str(patient), str(spec) if spec is not None else None)
            for rid, patient, spec in self.db.execute(
                "SELECT id, patient, specimen FROM undated ORDER BY 1 LIMIT ?", (limit,)
            )
        ]

    def clear_undated(self, ids: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM undated WHERE id = ?", ((i,) for i in ids))

    # -- quarantined versions (reported once, never re-fetched into the rules) -----------------

    def quarantined(self, kind: str, rid: str, version: tuple[str, str]) -> bool:
        row = self.db.execute(
            "SELECT version, last_updated FROM quarantine WHERE type = ? AND id = ?", (kind, rid)
        ).fetchone()
        return row is not None and (str(row[0]), str(row[1])) == version

    def quarantine(self, kind: str, rid: str, version: tuple[str, str]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?)", (kind, rid, *version)
        )

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


def _loads(raw: object, path: Path | None = None) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if isinstance(raw, bytes | str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise StateError("a stored resource is corrupt", where=str(path) if path else None)
    return value
