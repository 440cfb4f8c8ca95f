"""What only the SQLite store promises: WAL, synchronous=FULL, clear errors for bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapter.errors import EXIT_UPSTREAM, Kind
from adapter.store import DEFAULT_STATE, StateError, open_store
from adapter.store.sqlite import SqliteStore


def test_the_file_is_in_wal_mode_with_full_synchronous_commits(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        connection = store._connection()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError) as caught:
        SqliteStore(path)
    assert caught.value.kind is Kind.STATE and caught.value.exit_code == EXIT_UPSTREAM
    assert caught.value.where == str(path)


def test_a_folder_in_the_way_is_a_state_error(tmp_path: Path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(StateError, match="folder"):
        SqliteStore(tmp_path / "blocker" / "s.sqlite")


def test_open_store_picks_sqlite_for_a_path(tmp_path: Path):
    store = open_store(str(tmp_path / "x.sqlite"))
    try:
        assert store.dialect == "sqlite" and store.where.endswith("x.sqlite")
    finally:
        store.close()
    assert DEFAULT_STATE.endswith(".sqlite")


def test_another_process_sees_the_commit(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    try:
        store.set_watermark("q", "v1")
        other = sqlite3.connect(path)
        assert other.execute("SELECT value FROM watermarks").fetchall() == [("v1",)]
        other.close()
    finally:
        store.close()
