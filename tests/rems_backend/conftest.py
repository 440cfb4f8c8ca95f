"""The seeded reference REMS service on 127.0.0.1 (waitress in a thread)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapter.rems_service import BackgroundServer, make_app
from tests.rems_backend.kit import seed_document
from tests.rems_service.conftest import TEST_RULES


@dataclass(frozen=True)
class Service:
    url: str
    db: Path


def _service_clock() -> datetime:
    # Every request of the adapter carries asOf; a wrong service clock would show up as a failure.
    return datetime(2020, 6, 1, tzinfo=UTC)


@pytest.fixture
def rems(tmp_path: Path) -> Iterator[Service]:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    db = tmp_path / "rems.sqlite"
    with BackgroundServer(make_app(db, seed, clock=_service_clock, rules=TEST_RULES)) as url:
        yield Service(url, db)
