"""MLLP end-to-end fixtures: one stock sekmet-fhir 0.1.1 per test module (tests/serve)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.conftest import start_stock_sekmet


@pytest.fixture(scope="module")
def ehr() -> Iterator[Any]:
    server = start_stock_sekmet()
    try:
        yield server
    finally:
        server.stop()
