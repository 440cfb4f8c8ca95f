"""`watch` creates the Device its DetectedIssues name as author, once, on a stock server."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from adapter.cli import main
from tests.fhir_server import SekmetServer
from tests.watch.conftest import AS_OF, seed
from tests.watch.test_watch_integration import mild

pytestmark = pytest.mark.integration


def test_watch_creates_the_author_device_once(watch_server: SekmetServer, tmp_path: Path) -> None:
    seed(watch_server, [mild()])
    argv = [
        "watch",
        "--fhir-base",
        watch_server.base_url,
        "--state",
        str(tmp_path / "state.sqlite"),
        "--once",
        "--as-of",
        AS_OF.isoformat(),
    ]
    assert main(argv) == 0
    device = requests.get(f"{watch_server.base_url}/Device/rems-adapter", timeout=10)
    assert device.status_code == 200
    assert device.json()["deviceName"][0]["name"] == "rems-adapter"
    issues = requests.get(f"{watch_server.base_url}/DetectedIssue", timeout=10).json()
    authors = {e["resource"]["author"]["reference"] for e in issues.get("entry", [])}
    assert authors == {"Device/rems-adapter"}

    assert main(argv) == 0  # a second run finds the Device and leaves it as it is
    again = requests.get(f"{watch_server.base_url}/Device/rems-adapter", timeout=10).json()
    assert again["meta"]["versionId"] == device.json()["meta"]["versionId"]
