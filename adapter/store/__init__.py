"""The durable state: inbox, outbox, leases, patient state, audit, watermarks, the EHR binding.

The contract is `adapter.store.base.Store` (read its docstring); `open_store` picks the
implementation from the DSN::

    rems-adapter.sqlite, /var/lib/rems/state.sqlite   SQLite (default; WAL, synchronous=FULL)
    postgresql://user@host/db                         PostgreSQL (psycopg 3; several workers)

The store has no clinical logic and the core has no storage.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from adapter.errors import ConfigurationError
from adapter.store.base import (
    AuditRecord,
    Claim,
    Effect,
    ForeignStateError,
    InboxItem,
    NewEffect,
    NewItem,
    StateError,
    Store,
)

#: The default --state.
DEFAULT_STATE = "rems-adapter.sqlite"


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def open_store(dsn: str) -> Store:
    """The store `dsn` names, migrated to the current schema. Raises StateError when it
    cannot be opened (exit 5) and ConfigurationError for an unusable DSN (exit 3)."""
    if is_postgres(dsn):
        # imported only when asked for: psycopg is needed for PostgreSQL only
        try:
            module = importlib.import_module("adapter.store.postgres")
        except ImportError as error:
            raise ConfigurationError(
                f"PostgreSQL state needs psycopg 3 ({error.name} is missing)", where="--state"
            ) from error
        store: Store = module.PostgresStore(dsn)
        return store
    from adapter.store.sqlite import SqliteStore

    return SqliteStore(Path(dsn))


__all__ = [
    "DEFAULT_STATE",
    "AuditRecord",
    "Claim",
    "Effect",
    "ForeignStateError",
    "InboxItem",
    "NewEffect",
    "NewItem",
    "StateError",
    "Store",
    "is_postgres",
    "open_store",
]
