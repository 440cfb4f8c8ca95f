"""The store contract runs against every implementation: one parametrised fixture.

`BACKENDS` maps a name to a factory ``(tmp_path) -> opener``; an opener returns a new `Store`
object on the same database each time it is called (a second process, or a restart, is a
second call). To run the contract on another implementation, add its factory here (the
PostgreSQL one starts Debian's postgresql privately and gives each test its own database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapter.store import Store
from adapter.store.postgres import PostgresStore
from adapter.store.sqlite import SqliteStore

Opener = Callable[[], Store]


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    path = tmp_path / "state.sqlite"
    return lambda: SqliteStore(path)


def _postgresql(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    # a new empty database on the session's private server, dropped after the test
    dsn: str = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresStore(dsn)


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Opener]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[Store] = []
    factory = BACKENDS[request.param](tmp_path, request)

    def opener() -> Store:
        store = factory()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()
