"""A stock sekmet-fhir 0.1.1 for the Subscriptions tests: no search parameter added (the
launcher is given an empty Bundle), its own empty database, on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fhir_server import SekmetServer, ensure_sekmet

EMPTY = {"resourceType": "Bundle", "type": "collection", "entry": []}


class StockSekmet(SekmetServer):
    def settings(self) -> dict[str, object]:
        settings = super().settings()
        settings["subscriptions"] = {"retries": 2}  # fail fast: two attempts then `error`
        return settings


def start_stock(workdir: Path) -> SekmetServer:
    server = StockSekmet(python=ensure_sekmet(), workdir=workdir)
    # the launcher registers what this file lists: nothing, so the server is stock
    import tests.fhir_server as fs

    saved = fs.DETECTEDISSUE_SEARCH_PARAMETERS
    fs.DETECTEDISSUE_SEARCH_PARAMETERS = EMPTY
    try:
        return server.start()
    finally:
        fs.DETECTEDISSUE_SEARCH_PARAMETERS = saved


@pytest.fixture(scope="module")
def stock_sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    server = start_stock(Path(tmp_path_factory.mktemp("sekmet-stock")))
    try:
        assert json.loads((server.workdir / "search-parameters.json").read_text()) == EMPTY
        yield server
    finally:
        server.stop()
