"""The SQLite state store (the default: ``--state rems-adapter.sqlite``).

- WAL journal: readers (metrics, the worklist) never block the writer, and several processes
  can share one file on one machine.
- ``synchronous=FULL`` (the default for every connection): a commit is on disk when it
  returns. ``NORMAL`` in WAL mode survives a process crash but may lose the last commits on a
  power cut or an OS crash; since ``202 Accepted`` (and an MLLP ``AA``) tells the sender it
  may forget the result, the inbox write must survive those too. The cost is one fsync per
  commit. Workers and outbox performers, whose lost commit is simply redone, use ``NORMAL`` on
  their own connections (`relax_durability_for_this_thread`): in WAL mode that survives a
  process crash, and the next FULL commit of any connection makes it durable too.
- One connection per thread (sqlite3 objects are not shared between threads); writes take the
  lock up front (``BEGIN IMMEDIATE``) so two writers never deadlock on a lock upgrade, and wait
  up to ``busy_timeout`` for each other.
- Inbox writes (`put_items`) are one multi-row ``INSERT`` per ``_ROWS_PER_INSERT`` items rather
  than one statement per item, and returns no rows; a call that fits one statement, outside
  any transaction, is that statement alone (SQLite makes it one transaction, committed, with
  its fsync, before the statement finishes; a write statement takes the write lock when it
  starts, as ``BEGIN IMMEDIATE`` does). sqlite3 releases the interpreter lock for every step
  of a statement (every row read): a batch of items is then one release instead of two per
  item, which matters to the MLLP group commit's thread among busy connection threads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapter.store.base import INBOX_PARKED, INBOX_PENDING, NewItem, StateError
from adapter.store.sql import SqlStore

#: How long a writer waits for another's lock before the store reports an error (ms).
BUSY_TIMEOUT_MS = 30_000

#: Inbox rows per INSERT statement: 6 bound values each (SQLite allows 32,766 per statement);
#: each row count is one statement in the connection's cache (128 statements).
_ROWS_PER_INSERT = 64
_INSERT_ITEMS = [
    "INSERT INTO inbox (dedup_key, source, patient, state, body, received_at) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    + " ON CONFLICT (dedup_key) DO NOTHING"
    for rows in range(_ROWS_PER_INSERT + 1)
]


class SqliteStore(SqlStore):
    dialect = "sqlite"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StateError(
                f"cannot create the folder of the state file: {error.strerror}", where=self.where
            ) from error
        self.migrate()

    @property
    def where(self) -> str:
        return str(self.path)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise StateError("the state store is closed", where=self.where)
        try:
            connection = sqlite3.connect(
                str(self.path),
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,  # used by its own thread only; closed by close()
            )
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as error:
            raise StateError(f"cannot open the state file: {error}", where=self.where) from error
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def relax_durability_for_this_thread(self) -> None:
        self._local.synchronous = "NORMAL"
        self._guard(self._run, self._connection(), "PRAGMA synchronous=NORMAL", ())

    def _begin(self, connection: Any) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def _commit(self, connection: Any) -> None:
        connection.execute("COMMIT")

    def _rollback(self, connection: Any) -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")

    def _run(self, connection: Any, sql: str, params: Sequence[Any]) -> Any:
        return connection.execute(sql, tuple(params))

    def _wrap(self, error: Exception) -> StateError | None:
        if isinstance(error, StateError):
            return error
        if isinstance(error, sqlite3.Error):
            # sqlite3 messages name tables and constraints, never bound values
            return StateError(f"the state store failed: {error}", where=self.where)
        return None

    def put_items(self, items: Sequence[NewItem]) -> list[bool]:
        if not items:
            return []
        step = _ROWS_PER_INSERT
        chunks = [items[at : at + step] for at in range(0, len(items), step)]
        if len(chunks) == 1 and not getattr(self._local, "depth", 0):
            return self._guard(self._put_chunk, chunks[0])  # type: ignore[no-any-return]
        with self.transaction():
            return [new for chunk in chunks for new in self._guard(self._put_chunk, chunk)]

    def _put_chunk(self, items: Sequence[NewItem]) -> list[bool]:
        """One INSERT of `items` (outside a transaction: its own, committed when it returns);
        for each, whether it is new. The statement returns no rows (each row read would be one
        more release of the interpreter lock): when it inserted as many rows as there are
        distinct keys, every first occurrence is new; otherwise (a key sent again) the new rows
        are the keys' `inserted` highest ids (AUTOINCREMENT: an id is larger than any before;
        inbox rows are never deleted)."""
        params: list[Any] = []
        for item in items:
            state = INBOX_PENDING if item.patient is not None else INBOX_PARKED
            params += (item.key, item.source, item.patient, state, item.body, item.received_at)
        connection = self._connection()
        inserted = connection.execute(_INSERT_ITEMS[len(items)], params).rowcount
        keys = list(dict.fromkeys(item.key for item in items))
        if inserted == len(keys):
            fresh = set(keys)
        elif inserted <= 0:
            fresh = set()
        else:
            marks = ", ".join(["?"] * len(keys))
            rows = connection.execute(
                f"SELECT dedup_key FROM inbox WHERE dedup_key IN ({marks}) "
                "ORDER BY id DESC LIMIT ?",
                (*keys, inserted),
            ).fetchall()
            fresh = {str(row[0]) for row in rows}
        out = []
        for item in items:
            out.append(item.key in fresh)
            fresh.discard(item.key)  # the same key twice in one call: the first one is new
        return out

    def _has_table(self, name: str) -> bool:
        return (
            self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
            is not None
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local.connection = None
