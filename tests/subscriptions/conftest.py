"""Stock sekmet-fhir 0.1.1 for the Subscriptions tests (no search parameter added), whose
deliveries give up after two attempts (about 3 s), on 127.0.0.1 with its own empty database:
`stock_sekmet` per module (the keeper tests), `ehr` per test (the serve tests)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fhir_server import ensure_sekmet
from tests.serve.conftest import StockSekmet


@dataclass
class QuickSekmet(StockSekmet):
    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        settings["subscriptions"] = {"retries": 2}
        return settings


def start_quick(workdir: Path | None = None) -> QuickSekmet:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sekmet-subs-"))
    server = QuickSekmet(python=ensure_sekmet(), workdir=workdir)
    server.start()
    return server


@pytest.fixture(scope="module")
def stock_sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuickSekmet]:
    server = start_quick(Path(tmp_path_factory.mktemp("sekmet-stock")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ehr() -> Iterator[QuickSekmet]:
    server = start_quick()
    try:
        yield server
    finally:
        server.stop()
