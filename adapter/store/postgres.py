"""The PostgreSQL state store (``--state postgresql://user@host/db``): several workers, one state.

Same schema and statements as SQLite (`adapter.store.sql`); what PostgreSQL adds:

- Connection pooling (psycopg_pool): the threads of one process share a few connections; a
  transaction holds one connection from ``BEGIN`` to ``COMMIT``, a statement outside a
  transaction borrows one for itself (autocommit). A borrowed connection idle for a while is
  checked first, so a database restart costs at most the calls on connections in use just
  then; a busy connection goes without the extra round trip.
- Migrations under a session advisory lock (`MIGRATION_LOCK`): workers that start together
  apply each migration once, the others wait and then see it applied.
- Per-patient claims without blocking, in one statement: the oldest pending patients without
  a live lease; the first whose transaction-level advisory lock is free
  (``pg_try_advisory_xact_lock``: a patient another worker is claiming right now is skipped,
  never queued behind); its lease taken; its pending items. The lease row (with its expiry) is
  what keeps the patient exclusive while it is decided, and hands it over when a worker dies.
  Outbox effects are claimed with ``FOR UPDATE SKIP LOCKED``, also in one statement.
- Several inbox items put together first take transaction advisory locks on their keys, in one
  global order, so two workers given the same items in other orders never deadlock on the
  unique index.
- Durability: commits wait for the WAL flush (PostgreSQL's default), except on threads that
  called `relax_durability_for_this_thread` (workers and outbox performers, whose lost commit
  is redone): their connections come from a second pool set to ``synchronous_commit=off``.

Errors: every psycopg error is a `StateError` naming the SQLSTATE and PostgreSQL's primary
message (never its DETAIL, which can quote a row's values) and the DSN without its password.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from adapter.errors import ConfigurationError
from adapter.store.base import (
    INBOX_PENDING,
    OUTBOX_PENDING,
    Claim,
    Effect,
    NewItem,
    StateError,
    patient_lease,
)
from adapter.store.sql import _INBOX_COLUMNS, _OUTBOX_COLUMNS, SqlStore, _effect, _item

#: Session advisory lock held while migrations are checked and applied ("rems" in ASCII).
MIGRATION_LOCK = 0x72656D73
#: First key of the transaction advisory locks taken while claiming a patient.
CLAIM_LOCK_SPACE = 0x7265

#: First key of the transaction advisory locks on inbox keys while several are put together.
ITEM_LOCK_SPACE = 0x7266

#: Connections per process (psycopg_pool min/max) and how long a caller waits for one (s).
POOL_MIN = 1
POOL_MAX = 10
POOL_TIMEOUT_S = 30.0
#: A borrowed connection idle this long (s) is checked before use; a busier one is not.
CHECK_IDLE_S = 2.0
CONNECT_TIMEOUT_S = 10
#: A patient claim looks at this many candidates (oldest pending first) before giving up,
#: and tries again this many times when another worker took the lease in between.
CLAIM_CANDIDATES = 20
CLAIM_ATTEMPTS = 5

# The claim, in one statement. `candidates` is materialised in arrival order, so the advisory
# lock is tried on one candidate at a time as LIMIT pulls them (not on all of them); the lease
# upsert takes a free or expired lease (or renews the holder's own) and the outer query returns
# (patient, lease name or NULL, the pending items' columns or NULLs).
_CLAIM_TAIL = (
    "lease AS (INSERT INTO leases (name, holder, expires_at) "
    "SELECT 'patient:' || patient, ?, ? FROM chosen "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "expires_at = excluded.expires_at "
    "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder RETURNING name) "
    "SELECT c.patient, l.name, "
    + ", ".join(f"i.{column.strip()}" for column in _INBOX_COLUMNS.split(","))
    + " FROM chosen c LEFT JOIN lease l ON TRUE "
    "LEFT JOIN inbox i ON l.name IS NOT NULL AND i.patient = c.patient AND i.state = ? "
    "ORDER BY i.id"
)
_CLAIM = (
    "WITH candidates AS MATERIALIZED (SELECT patient, min(id) AS first FROM ("
    "SELECT i.patient, i.id FROM inbox i WHERE i.state = ? AND i.patient IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'patient:' || i.patient "
    f"AND l.expires_at > ?) ORDER BY i.id LIMIT {CLAIM_CANDIDATES}) AS pending "
    "GROUP BY patient ORDER BY first), "
    "chosen AS MATERIALIZED (SELECT patient FROM candidates "
    f"WHERE pg_try_advisory_xact_lock({CLAIM_LOCK_SPACE}, hashtext(patient)) LIMIT 1), "
    + _CLAIM_TAIL
)
_CLAIM_NAMED = (
    "WITH chosen AS MATERIALIZED (SELECT patient FROM (SELECT ?::text AS patient) AS named "
    f"WHERE pg_try_advisory_xact_lock({CLAIM_LOCK_SPACE}, hashtext(patient))), " + _CLAIM_TAIL
)


class _Rows:
    """A statement's rows, fetched before its connection went back to the pool."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchall(self) -> list[tuple[Any, ...]]:
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest


def _without_password(dsn: str) -> str:
    """The DSN as a URL safe for messages (no password), or a ConfigurationError."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise ConfigurationError(
            "not a usable PostgreSQL DSN (expected postgresql://user@host:port/database)",
            where="--state",
        ) from error
    user = parts.get("user")
    host = parts.get("host") or "localhost"
    port = parts.get("port")
    database = parts.get("dbname") or ""
    netloc = f"{user}@{host}" if user else str(host)
    if port:
        netloc += f":{port}"
    return f"postgresql://{netloc}/{database}"


def _sql(statement: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    dialect = "postgresql"
    serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = POOL_MIN,
        pool_max: int = POOL_MAX,
        check_idle_s: float = CHECK_IDLE_S,
    ) -> None:
        super().__init__()
        self._check_idle_s = check_idle_s
        self._dsn = dsn
        self._where = _without_password(dsn)
        self._statements: dict[str, str] = {}
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._count_lock = threading.Lock()
        self._round_trips = 0
        # one direct connection first: its failure says why (refused, authentication, no such
        # database), where a pool would only time out; it then holds the migration lock
        try:
            lock_connection = psycopg.connect(
                dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as error:
            raise StateError(
                f"cannot connect to PostgreSQL: {_reason(error)}", where=self._where
            ) from error
        self._pool_max = max(pool_min, pool_max)
        self._pool = self._new_pool("rems-adapter-state", pool_min, dsn)
        self._relaxed_pool: ConnectionPool[Any] | None = None
        self._relaxed_lock = threading.Lock()
        try:
            try:
                self._pool.open(wait=True, timeout=POOL_TIMEOUT_S)
            except psycopg.Error as error:
                raise StateError(
                    f"cannot open the connection pool: {_reason(error)}", where=self._where
                ) from error
            self._migrate_locked(lock_connection)
        except BaseException:
            self._pool.close()
            raise
        finally:
            lock_connection.close()

    # ------------------------------------------------------------------ plumbing

    def _new_pool(self, name: str, size: int, dsn: str) -> ConnectionPool[Any]:
        return ConnectionPool(
            dsn,
            min_size=size,
            max_size=max(size, self._pool_max),
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            timeout=POOL_TIMEOUT_S,
            # a connection idle for a while is checked (an empty query) when borrowed: after a
            # database restart the pool replaces dead connections instead of failing calls
            check=self._check,
            reset=self._returned,
            name=name,
            open=False,
        )

    def relax_durability_for_this_thread(self) -> None:
        """This thread's commits stop waiting for the WAL flush (``synchronous_commit=off``):
        they run on a second pool whose connections are set so at connect time (no extra
        round trip). A PostgreSQL crash (not a worker's) may lose the last such commits (the
        WAL writer flushes them within a fraction of a second, and any durable commit flushes
        them with its own); what is lost is redone from the inbox and the outbox."""
        with self._relaxed_lock:
            if self._relaxed_pool is None:
                parts = conninfo.conninfo_to_dict(self._dsn)
                options = f"{parts.get('options') or ''} -c synchronous_commit=off".strip()
                pool = self._new_pool(
                    "rems-adapter-state-relaxed",
                    1,
                    conninfo.make_conninfo(self._dsn, options=options),
                )
                try:
                    pool.open(wait=True, timeout=POOL_TIMEOUT_S)
                except psycopg.Error as error:
                    pool.close()
                    raise StateError(
                        f"cannot open the connection pool: {_reason(error)}", where=self._where
                    ) from error
                self._relaxed_pool = pool
        self._local.relaxed = True

    def _pool_here(self) -> ConnectionPool[Any]:
        if getattr(self._local, "relaxed", False) and self._relaxed_pool is not None:
            return self._relaxed_pool
        return self._pool

    @property
    def where(self) -> str:
        return self._where

    @property
    def round_trips(self) -> int:
        """Statements sent to the server so far by this store (BEGIN and COMMIT included)."""
        return self._round_trips

    def _tick(self) -> None:
        with self._count_lock:
            self._round_trips += 1

    def _returned(self, connection: psycopg.Connection[Any]) -> None:
        self._last_used[connection] = time.monotonic()

    def _check(self, connection: psycopg.Connection[Any]) -> None:
        """Check a connection idle for `check_idle_s` or more (one round trip); one used just
        now is handed out as it is (a database restarted in between fails that one call, and
        the pool replaces the connection)."""
        last = self._last_used.get(connection)
        if last is not None and time.monotonic() - last < self._check_idle_s:
            return
        self._tick()
        ConnectionPool.check_connection(connection)

    def _migrate_locked(self, lock_connection: psycopg.Connection[Any]) -> None:
        try:
            lock_connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        except psycopg.Error as error:
            raise StateError(
                f"cannot take the migration lock: {_reason(error)}", where=self._where
            ) from error
        try:
            self.migrate()
        finally:
            with suppress(psycopg.Error):  # closing the connection releases it too
                lock_connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "connection", None) is not None:
            with super().transaction():  # joins the outer transaction
                yield
            return
        with ExitStack() as stack:
            try:
                connection = stack.enter_context(self._pool_here().connection())
            except psycopg.Error as error:  # the pool's wait ran out (PoolTimeout)
                raise StateError(
                    f"no PostgreSQL connection within {POOL_TIMEOUT_S:g}s: {_reason(error)}",
                    where=self._where,
                ) from error
            self._local.connection = connection
            try:
                with super().transaction():
                    yield
            finally:
                self._local.connection = None

    def _connection(self) -> Any:
        return getattr(self._local, "connection", None)

    def _begin(self, connection: Any) -> None:
        self._tick()
        connection.execute("BEGIN")

    def _commit(self, connection: Any) -> None:
        self._tick()
        connection.execute("COMMIT")

    def _rollback(self, connection: Any) -> None:
        if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._tick()
            connection.execute("ROLLBACK")

    def _run(self, connection: Any, sql: str, params: Sequence[Any]) -> Any:
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = _sql(sql)
        self._tick()
        if connection is None:  # its own transaction, on a connection borrowed for it
            with self._pool_here().connection() as borrowed:
                return self._fetch(borrowed.execute(statement, tuple(params)))
        return self._fetch(connection.execute(statement, tuple(params)))

    @staticmethod
    def _fetch(cursor: psycopg.Cursor[Any]) -> _Rows:
        if cursor.description is None:
            return _Rows([])
        return _Rows([tuple(row) for row in cursor.fetchall()])

    def _wrap(self, error: Exception) -> StateError | None:
        if isinstance(error, StateError):
            return error
        if isinstance(error, psycopg.Error):
            return StateError(f"the state store failed: {_reason(error)}", where=self._where)
        return None

    def _has_table(self, name: str) -> bool:
        row = self._one("SELECT to_regclass(?) IS NOT NULL", (name,))
        return bool(row and row[0])

    def close(self) -> None:
        self._pool.close()
        with self._relaxed_lock:
            if self._relaxed_pool is not None:
                self._relaxed_pool.close()
                self._relaxed_pool = None

    # ------------------------------------------------------------------ concurrency

    def put_items(self, items: Sequence[NewItem]) -> list[bool]:
        if len(items) < 2:
            return super().put_items(items)
        with self.transaction():
            # two workers handed the same items in other orders would deadlock on the unique
            # index; locking the keys first, in one global order, serialises them instead
            self._x(
                "SELECT pg_advisory_xact_lock(?, h) FROM (SELECT DISTINCT hashtext(k) AS h "
                "FROM unnest(?::text[]) AS k) AS keys ORDER BY h",
                (ITEM_LOCK_SPACE, [item.key for item in items]),
            )
            return super().put_items(items)

    def claim_patient(
        self, holder: str, now: float, lease_seconds: float, *, patient: str | None = None
    ) -> Claim | None:
        """One statement (one round trip, one commit): the oldest pending patients without a
        live lease, in arrival order; the first whose advisory lock is free (a patient being
        claimed by another worker right now is skipped, never waited for); its lease taken or
        renewed; its pending items. Lost a race for the lease: tried again, a bounded number of
        times."""
        for _attempt in range(CLAIM_ATTEMPTS):
            rows = self._all(
                _CLAIM_NAMED if patient else _CLAIM,
                self._claim_params(holder, now, lease_seconds, patient),
            )
            if not rows:
                return None  # nothing pending, or every candidate is being claimed
            name, leased = str(rows[0][0]), rows[0][1] is not None
            if leased and rows[0][2] is not None:
                items = tuple(_item(row[2:]) for row in rows)
                return Claim(name, holder, now + lease_seconds, items)
            if leased:  # the named patient has nothing pending: give the lease back
                self.release_lease(patient_lease(name), holder)
            if patient is not None:
                return None
        return None

    @staticmethod
    def _claim_params(
        holder: str, now: float, lease_seconds: float, patient: str | None
    ) -> tuple[Any, ...]:
        first = (patient,) if patient else (INBOX_PENDING, now)
        return (*first, holder, now + lease_seconds, now, INBOX_PENDING)

    def claim_effects(
        self, holder: str, now: float, lease_seconds: float, limit: int
    ) -> list[Effect]:
        """One statement: due effects, oldest first, at most one per patient and never behind
        an earlier pending effect of the same patient, locked with SKIP LOCKED (an effect
        another worker is claiming or finishing is passed over, never waited for) and leased
        to `holder`; `reclaimed` when an earlier holder's lease ran out on it."""
        rows = self._all(
            "WITH picked AS (SELECT o.id, o.holder AS previous FROM outbox o "
            "WHERE o.state = ? AND o.next_at <= ? "
            "AND (o.lease_until IS NULL OR o.lease_until <= ?) "
            "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.patient = o.patient "
            "AND p.state = ? AND p.id < o.id) "
            "ORDER BY o.id LIMIT ? FOR UPDATE OF o SKIP LOCKED) "
            "UPDATE outbox SET holder = ?, lease_until = ? FROM picked "
            "WHERE outbox.id = picked.id RETURNING "
            + ", ".join(f"outbox.{column.strip()}" for column in _OUTBOX_COLUMNS.split(","))
            + ", picked.previous",
            (OUTBOX_PENDING, now, now, OUTBOX_PENDING, limit, holder, now + lease_seconds),
        )
        claimed = [replace(_effect(row[:-1]), reclaimed=row[-1] is not None) for row in rows]
        return sorted(claimed, key=lambda effect: effect.id)


def _reason(error: BaseException) -> str:
    """SQLSTATE and primary message of a psycopg error; never its DETAIL (it can quote values)."""
    if not isinstance(error, psycopg.Error):
        return type(error).__name__
    state = error.sqlstate
    primary = error.diag.message_primary if state else None
    if not primary:
        # no server message (refused, authentication, a pool timeout): libpq's first line
        lines = str(error).strip().splitlines()
        primary = lines[0] if lines else type(error).__name__
    return f"{primary} (SQLSTATE {state})" if state else primary
