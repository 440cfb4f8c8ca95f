"""Fixtures of the multi-worker tests: stock sekmet-fhir (no search-parameter patch), a new
PostgreSQL database (tests/conftest.py `postgres_dsn`), and a cluster of serve processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.multiworker.kit import Cluster
from tests.serve.conftest import StockSekmet, start_stock_sekmet


@pytest.fixture
def stock_ehr() -> Iterator[StockSekmet]:
    server = start_stock_sekmet()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(
    stock_ehr: StockSekmet, postgres_dsn: str, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(workers: int, **env: str) -> Cluster:
        group = Cluster(stock_ehr.base_url, postgres_dsn, tmp_path, env=env)
        made.append(group)
        return group.start(workers)

    yield make
    for group in made:
        group.stop()
