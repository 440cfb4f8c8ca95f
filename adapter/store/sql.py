"""The store's statements, written once for every SQL dialect (see `adapter.store.base`).

`SqlStore` implements the whole `Store` contract on top of four hooks a dialect provides: a
connection for the current thread, begin/commit/rollback, and how to run a statement (``?``
placeholders). The SQLite and PostgreSQL stores differ only in those hooks, the DDL token
``@SERIAL@`` and how they report their database's errors.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources as package_files
from typing import Any

import orjson

from adapter.store.base import (
    INBOX_DONE,
    INBOX_PARKED,
    INBOX_PENDING,
    OUTBOX_DEAD,
    OUTBOX_DONE,
    OUTBOX_PENDING,
    AuditRecord,
    Claim,
    Effect,
    ForeignStateError,
    InboxItem,
    NewEffect,
    NewItem,
    StateError,
    Store,
    patient_lease,
)

Row = tuple[Any, ...]

_INBOX_COLUMNS = "id, dedup_key, source, patient, body, received_at, state"
_OUTBOX_COLUMNS = (
    "id, effect_key, kind, patient, body, state, attempts, next_at, last_error, received_at, "
    "created_at, done_at, result"
)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped, in order."""
    folder = package_files.files("adapter.store").joinpath("migrations")
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number, _, rest = name.partition("_")
        if not number.isdigit():  # pragma: no cover - a packaging defect
            raise StateError(f"migration {name}: its name must start with a number")
        out.append((int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    out.sort()
    return out


def statements(sql: str) -> list[str]:
    """The statements of a migration file (comments dropped; no ';' inside a statement)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def normalise_base(url: str) -> str:
    return url.strip().rstrip("/")


def _loads(raw: Any) -> Any:
    if isinstance(raw, memoryview):
        raw = bytes(raw)
    return orjson.loads(raw)


def _item(row: Row) -> InboxItem:
    return InboxItem(
        id=int(row[0]),
        key=str(row[1]),
        source=str(row[2]),
        patient=None if row[3] is None else str(row[3]),
        body=None if row[4] is None else str(row[4]),
        received_at=float(row[5]),
        state=str(row[6]),
    )


def _effect(row: Row) -> Effect:
    return Effect(
        id=int(row[0]),
        key=str(row[1]),
        kind=str(row[2]),
        patient=None if row[3] is None else str(row[3]),
        body=str(row[4]),
        state=str(row[5]),
        attempts=int(row[6]),
        next_at=float(row[7]),
        last_error=None if row[8] is None else str(row[8]),
        received_at=None if row[9] is None else float(row[9]),
        created_at=float(row[10]),
        done_at=None if row[11] is None else float(row[11]),
        result=None if row[12] is None else str(row[12]),
    )


class SqlStore(Store):
    """Everything of the contract, in portable SQL; subclasses supply the dialect hooks."""

    #: The dialect's text for @SERIAL@ in migrations.
    serial: str = "INTEGER PRIMARY KEY"

    def __init__(self) -> None:
        self._local = threading.local()

    # ------------------------------------------------------------------ dialect hooks

    @abc.abstractmethod
    def _connection(self) -> Any:
        """This thread's DB-API connection (autocommit: transactions are explicit)."""

    @abc.abstractmethod
    def _begin(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _commit(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _rollback(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _run(self, connection: Any, sql: str, params: Sequence[Any]) -> Any:
        """Execute one statement with ``?`` placeholders; a cursor (fetchone/fetchall)."""

    @abc.abstractmethod
    def _wrap(self, error: Exception) -> StateError | None:
        """The StateError for a database error of this dialect, or None if it is not one."""

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def transaction(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        connection = self._connection()
        self._guard(self._begin, connection)
        self._local.depth = 1
        try:
            yield
        except BaseException:
            self._local.depth = 0
            try:
                self._rollback(connection)
            except Exception as error:  # the original error matters more
                if self._wrap(error) is None:
                    raise
            raise
        self._local.depth = 0
        self._guard(self._commit, connection)

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as error:
            wrapped = self._wrap(error)
            if wrapped is None:
                raise
            raise wrapped from error

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._guard(self._run, self._connection(), sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self._x(sql, params).fetchone()
        return None if row is None else tuple(row)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(row) for row in self._x(sql, params).fetchall()]

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self._one(sql, params)
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ schema

    def _meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM store_meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._x(
            "INSERT INTO store_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _has_table(self, name: str) -> bool:
        """Whether table `name` exists (dialects override with their catalogue)."""
        raise NotImplementedError

    def migrate(self) -> None:
        """Apply the migrations not applied yet, each in its own transaction; refuse a schema
        newer than this code knows."""
        shipped = migrations()
        newest = shipped[-1][0] if shipped else 0
        with self.transaction():
            if not self._has_table("store_meta"):
                current = 0
            else:
                raw = self._meta("schema_version")
                current = int(raw) if raw and raw.isdigit() else 0
        if current > newest:
            raise StateError(
                f"{self.where}: the state schema is version {current}; this adapter knows "
                f"versions up to {newest} (a newer adapter wrote it)"
            )
        for version, _name, sql in shipped:
            if version <= current:
                continue
            with self.transaction():
                for statement in statements(sql.replace("@SERIAL@", self.serial)):
                    self._x(statement)
                self._set_meta("schema_version", str(version))

    def schema_version(self) -> int:
        raw = self._meta("schema_version")
        return int(raw) if raw and raw.isdigit() else 0

    def ping(self) -> None:
        self._one("SELECT 1")

    # ------------------------------------------------------------------ the EHR

    def ehr_base(self) -> str | None:
        return self._meta("ehr_base_url")

    def bind_ehr(self, base_url: str) -> None:
        wanted = normalise_base(base_url)
        with self.transaction():
            held = self._meta("ehr_base_url")
            if held is None:
                self._set_meta("ehr_base_url", wanted)
                return
        if held != wanted:
            raise ForeignStateError(
                f"this state belongs to the EHR at {held}, not {wanted}: use another --state "
                "for this EHR (the state is never shared between EHRs)",
                where=self.where,
            )

    # ------------------------------------------------------------------ inbox

    def put_items(self, items: Sequence[NewItem]) -> list[bool]:
        out: list[bool] = []
        with self.transaction():
            for item in items:
                state = INBOX_PENDING if item.patient is not None else INBOX_PARKED
                row = self._one(
                    "INSERT INTO inbox (dedup_key, source, patient, state, body, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
                    (item.key, item.source, item.patient, state, item.body, item.received_at),
                )
                out.append(row is not None)
        return out

    def claim_patient(
        self, holder: str, now: float, lease_seconds: float, *, patient: str | None = None
    ) -> Claim | None:
        with self.transaction():
            if patient is None:
                candidates = self._all(
                    "SELECT i.patient FROM inbox i WHERE i.state = ? AND i.patient IS NOT NULL "
                    "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'patient:' || "
                    "i.patient AND l.expires_at > ?) "
                    "ORDER BY i.id LIMIT 20",
                    (INBOX_PENDING, now),
                )
                names = list(dict.fromkeys(str(row[0]) for row in candidates))
            else:
                names = [patient]
            for name in names:
                if not self.acquire_lease(patient_lease(name), holder, now, lease_seconds):
                    continue
                rows = self._all(
                    f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE patient = ? AND state = ? "
                    "ORDER BY id",
                    (name, INBOX_PENDING),
                )
                if not rows:
                    self.release_lease(patient_lease(name), holder)
                    continue
                return Claim(name, holder, now + lease_seconds, tuple(_item(r) for r in rows))
        return None

    def complete_items(self, claim: Claim, item_ids: Sequence[int], now: float) -> None:
        with self.transaction():
            for item_id in item_ids:
                self._x(
                    "UPDATE inbox SET state = ?, done_at = ? WHERE id = ? AND state = ?",
                    (INBOX_DONE, now, item_id, INBOX_PENDING),
                )

    def assign_parked(self, item_ids: Sequence[int], patient: str) -> None:
        with self.transaction():
            for item_id in item_ids:
                self._x(
                    "UPDATE inbox SET patient = ?, state = ? WHERE id = ? AND state = ?",
                    (patient, INBOX_PENDING, item_id, INBOX_PARKED),
                )

    def parked_items(self, limit: int = 1000) -> list[InboxItem]:
        rows = self._all(
            f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE state = ? ORDER BY id LIMIT ?",
            (INBOX_PARKED, limit),
        )
        return [_item(row) for row in rows]

    def item(self, key: str) -> InboxItem | None:
        row = self._one(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE dedup_key = ?", (key,))
        return None if row is None else _item(row)

    def inbox_depth(self) -> int:
        return self._count("SELECT COUNT(*) FROM inbox WHERE state = ?", (INBOX_PENDING,))

    # ------------------------------------------------------------------ leases

    def acquire_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        row = self._one(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at "
            "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder "
            "RETURNING holder",
            (name, holder, now + seconds, now),
        )
        return row is not None and str(row[0]) == holder

    def release_lease(self, name: str, holder: str) -> None:
        self._x("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str, now: float) -> str | None:
        row = self._one("SELECT holder FROM leases WHERE name = ? AND expires_at > ?", (name, now))
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ outbox

    def put_effects(self, effects: Sequence[NewEffect], now: float) -> list[bool]:
        out: list[bool] = []
        with self.transaction():
            for effect in effects:
                row = self._one(
                    "INSERT INTO outbox (effect_key, kind, patient, body, state, attempts, "
                    "next_at, received_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) "
                    "ON CONFLICT (effect_key) DO NOTHING RETURNING id",
                    (
                        effect.key,
                        effect.kind,
                        effect.patient,
                        effect.body,
                        OUTBOX_PENDING,
                        now,
                        effect.received_at,
                        now,
                    ),
                )
                out.append(row is not None)
        return out

    def claim_effects(
        self, holder: str, now: float, lease_seconds: float, limit: int
    ) -> list[Effect]:
        with self.transaction():
            rows = self._all(
                "SELECT o.id, o.holder FROM outbox o WHERE o.state = ? AND o.next_at <= ? "
                "AND (o.lease_until IS NULL OR o.lease_until <= ?) "
                "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.patient = o.patient "
                "AND p.state = ? AND p.id < o.id) "
                "ORDER BY o.id LIMIT ?",
                (OUTBOX_PENDING, now, now, OUTBOX_PENDING, limit),
            )
            claimed: list[Effect] = []
            for effect_id, previous in rows:
                row = self._one(
                    "UPDATE outbox SET holder = ?, lease_until = ? WHERE id = ? AND state = ? "
                    "AND (lease_until IS NULL OR lease_until <= ?) "
                    f"RETURNING {_OUTBOX_COLUMNS}",
                    (holder, now + lease_seconds, effect_id, OUTBOX_PENDING, now),
                )
                if row is not None:
                    claimed.append(replace(_effect(row), reclaimed=previous is not None))
        return claimed

    def complete_effect(self, effect_id: int, now: float, result: str | None = None) -> None:
        self._x(
            "UPDATE outbox SET state = ?, done_at = ?, result = ?, attempts = attempts + 1, "
            "holder = NULL, lease_until = NULL WHERE id = ?",
            (OUTBOX_DONE, now, result, effect_id),
        )

    def retry_effect(self, effect_id: int, error: str, next_at: float) -> None:
        self._x(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, "
            "holder = NULL, lease_until = NULL WHERE id = ? AND state = ?",
            (error, next_at, effect_id, OUTBOX_PENDING),
        )

    def dead_letter(self, effect_id: int, error: str, now: float) -> None:
        self._x(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, done_at = ?, "
            "holder = NULL, lease_until = NULL WHERE id = ?",
            (OUTBOX_DEAD, error, now, effect_id),
        )

    def replay_effect(self, effect_id: int, now: float) -> bool:
        row = self._one(
            "UPDATE outbox SET state = ?, attempts = 0, next_at = ?, done_at = NULL, "
            "holder = NULL, lease_until = NULL WHERE id = ? AND state = ? RETURNING id",
            (OUTBOX_PENDING, now, effect_id, OUTBOX_DEAD),
        )
        return row is not None

    def effect(self, effect_id: int) -> Effect | None:
        row = self._one(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (effect_id,))
        return None if row is None else _effect(row)

    def effect_by_key(self, key: str) -> Effect | None:
        row = self._one(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE effect_key = ?", (key,))
        return None if row is None else _effect(row)

    def effects(self, state: str, limit: int = 1000, *, after: int = 0) -> list[Effect]:
        rows = self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
            (state, after, limit),
        )
        return [_effect(row) for row in rows]

    def outbox_depth(self) -> int:
        return self._count("SELECT COUNT(*) FROM outbox WHERE state = ?", (OUTBOX_PENDING,))

    def dead_letters(self) -> int:
        return self._count("SELECT COUNT(*) FROM outbox WHERE state = ?", (OUTBOX_DEAD,))

    # ------------------------------------------------------------------ resources

    def upsert_resource(
        self,
        resource: dict[str, Any],
        patient: str | None,
        identifier: str | None = None,
        base_version: str | None = None,
    ) -> None:
        version, updated = version_of(resource)
        body = orjson.dumps(resource).decode()
        self._x(
            "INSERT INTO resources (type, id, version, last_updated, patient, identifier, "
            "base_version, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type, id) DO "
            "UPDATE SET version = excluded.version, last_updated = excluded.last_updated, "
            "patient = excluded.patient, identifier = excluded.identifier, "
            "base_version = excluded.base_version, body = excluded.body",
            (
                resource["resourceType"],
                resource["id"],
                version,
                updated,
                patient,
                identifier,
                base_version,
                body,
            ),
        )

    def resource(self, kind: str, rid: str) -> dict[str, Any] | None:
        row = self._one("SELECT body FROM resources WHERE type = ? AND id = ?", (kind, rid))
        return None if row is None else _as_dict(_loads(row[0]))

    def held_version(self, kind: str, rid: str) -> tuple[str, str] | None:
        row = self._one(
            "SELECT version, last_updated FROM resources WHERE type = ? AND id = ?", (kind, rid)
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def base_version(self, kind: str, rid: str) -> str | None:
        row = self._one("SELECT base_version FROM resources WHERE type = ? AND id = ?", (kind, rid))
        return None if row is None or row[0] is None else str(row[0])

    def delete_resource(self, kind: str, rid: str) -> None:
        self._x("DELETE FROM resources WHERE type = ? AND id = ?", (kind, rid))

    def patient_resources(self, patient: str) -> list[dict[str, Any]]:
        out = []
        for body, base in self._all(
            "SELECT body, base_version FROM resources WHERE patient = ? ORDER BY type, id",
            (patient,),
        ):
            resource = _as_dict(_loads(body))
            if base is not None:
                resource.setdefault("meta", {})["versionId"] = str(base)
            out.append(resource)
        return out

    def has_identifier(self, identifier: str) -> bool:
        return (
            self._one("SELECT 1 FROM resources WHERE identifier = ? LIMIT 1", (identifier,))
            is not None
        )

    def resource_count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._count("SELECT COUNT(*) FROM resources")
        return self._count("SELECT COUNT(*) FROM resources WHERE type = ?", (kind,))

    # ------------------------------------------------------------------ patients

    def patient_state(self, patient: str) -> dict[str, Any] | None:
        row = self._one("SELECT state FROM patients WHERE patient = ?", (patient,))
        return None if row is None else _as_dict(_loads(row[0]))

    def set_patient_state(self, patient: str, state: dict[str, Any], now: float) -> None:
        self._x(
            "INSERT INTO patients (patient, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (patient) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (patient, orjson.dumps(state).decode(), now),
        )

    def patients(self) -> list[str]:
        return [str(row[0]) for row in self._all("SELECT patient FROM patients ORDER BY patient")]

    def set_recheck(self, patient: str, due: str | None) -> None:
        self._x(
            "INSERT INTO patients (patient, state, recheck_due, updated_at) VALUES (?, '{}', ?, 0) "
            "ON CONFLICT (patient) DO UPDATE SET recheck_due = excluded.recheck_due",
            (patient, due),
        )

    def due_rechecks(self, today: str) -> list[str]:
        return [
            str(row[0])
            for row in self._all(
                "SELECT patient FROM patients WHERE recheck_due IS NOT NULL AND recheck_due <= ? "
                "ORDER BY patient",
                (today,),
            )
        ]

    # ------------------------------------------------------------------ watermarks

    def watermark(self, name: str) -> str | None:
        row = self._one("SELECT value FROM watermarks WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def set_watermark(self, name: str, value: str) -> None:
        self._x(
            "INSERT INTO watermarks (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # ------------------------------------------------------------------ audit

    def append_audit(self, record: AuditRecord) -> int:
        row = self._one(
            "INSERT INTO audit (patient, at, backend, rules_version, mappings_version, inputs, "
            "outcome, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                record.patient,
                record.at,
                record.backend,
                record.rules_version,
                record.mappings_version,
                orjson.dumps(list(record.inputs)).decode(),
                orjson.dumps(list(record.outcome)).decode(),
                orjson.dumps(record.extra).decode(),
            ),
        )
        assert row is not None
        return int(row[0])

    def audit(self, patient: str, limit: int = 1000) -> list[AuditRecord]:
        rows = self._all(
            "SELECT id, patient, at, backend, rules_version, mappings_version, inputs, outcome, "
            "extra FROM audit WHERE patient = ? ORDER BY id LIMIT ?",
            (patient, limit),
        )
        return [
            AuditRecord(
                id=int(row[0]),
                patient=str(row[1]),
                at=float(row[2]),
                backend=str(row[3]),
                rules_version=str(row[4]),
                mappings_version=str(row[5]),
                inputs=tuple(str(v) for v in _loads(row[6])),
                outcome=tuple(str(v) for v in _loads(row[7])),
                extra=_as_dict(_loads(row[8])),
            )
            for row in rows
        ]


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateError("the state store holds a value that is not a JSON object")
    return value


def version_of(resource: dict[str, Any]) -> tuple[str, str]:
    """(versionId, raw lastUpdated); either may be empty on servers without versioning."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return "", ""
    return _text(meta.get("versionId")), _text(meta.get("lastUpdated"))


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""
