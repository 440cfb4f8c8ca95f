"""Fixtures of the report tests: the demo run once (its report.html and outputs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapter.cli import main


@dataclass(frozen=True)
class DemoRun:
    out: Path
    report: Path
    status: list[dict[str, Any]]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    status = [json.loads(line) for line in (out / "status.ndjson").read_text().splitlines() if line]
    return DemoRun(out, out / "report.html", status)
