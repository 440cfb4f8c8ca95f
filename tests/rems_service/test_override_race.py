"""The override limit holds under real concurrency: a real clock, many rounds of 8 parallel
requests, in one service and across two `rems-server` processes on one database (issue: bad
input, item 4). The clock is read inside each request's write transaction (BEGIN IMMEDIATE),
so the count of earlier overrides and the new one are one atomic step."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from adapter.rems_service import BackgroundServer, make_app

from .conftest import TEST_RULES, FakeClock, enrollment_body, override_body, seed_document
from .test_serve_subprocess import _free_port

ROUNDS = 12
RACING = 8
LIMIT = 3
STARTUP_SECONDS = 30


def _enrolled_long_ago(db: Path, seed: Path, patients: int) -> list[str]:
    """Patients enrolled 40 days ago (no PSF available any more), written with a test server
    whose clock is set back; the race then runs on the production configuration."""
    past = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=40))
    ids = []
    with BackgroundServer(make_app(db, seed, clock=past, rules=TEST_RULES)) as url:
        for number in range(patients):
            body = enrollment_body(past.now)
            body["patient"]["name"]["family"] = f"Race{number:03d}"
            response = requests.post(f"{url}/patients/enrollments", json=body, timeout=10)
            assert response.status_code == 201, response.text
            ids.append(str(response.json()["remsId"]))
    return ids


def _race(urls: Sequence[str], rems_id: str, round_number: int) -> list[bool]:
    start = threading.Barrier(RACING)

    def one(number: int) -> bool:
        body = override_body(datetime.now(UTC), rems_id, dispenseId=f"r{round_number}-{number}")
        start.wait(timeout=10)
        response = requests.post(f"{urls[number % len(urls)]}/overrides", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return bool(response.json()["granted"])

    with ThreadPoolExecutor(max_workers=RACING) as pool:
        return list(pool.map(one, range(RACING), timeout=60))


def _granted_rows(db: Path, rems_id: str) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM decisions"
            " WHERE rems_id = ? AND kind = 'override' AND granted = 1",
            (rems_id,),
        ).fetchone()
    return int(count)


def test_parallel_overrides_on_one_service_with_a_real_clock(tmp_path: Path) -> None:
    seed, db = tmp_path / "seed.json", tmp_path / "rems.sqlite"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    patients = _enrolled_long_ago(db, seed, ROUNDS)
    with BackgroundServer(make_app(db), threads=RACING) as url:  # default rules, real clock
        for number, rems_id in enumerate(patients):
            outcomes = _race([url], rems_id, number)
            assert outcomes.count(True) == LIMIT, (number, outcomes)
            assert _granted_rows(db, rems_id) == LIMIT


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    seed, db = tmp_path / "seed.json", tmp_path / "rems.sqlite"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    _enrolled_long_ago(db, seed, 0)  # schema and actors
    processes, urls = [], []
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for _ in range(2):
            port = _free_port()
            command = [sys.executable, "-m", "adapter", "rems-server", "--port", str(port)]
            command += ["--db", str(db)]
            processes.append(
                subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_SECONDS
        for url in urls:
            while True:
                try:
                    requests.get(f"{url}/health", timeout=2).raise_for_status()
                    break
                except requests.RequestException:
                    assert time.monotonic() < deadline, "rems-server did not start"
                    time.sleep(0.1)
        yield db, urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def test_parallel_overrides_across_two_server_processes(
    two_servers: tuple[Path, list[str]], tmp_path: Path
) -> None:
    db, urls = two_servers
    patients = _enrolled_long_ago(db, tmp_path / "seed.json", ROUNDS)
    for number, rems_id in enumerate(patients):
        outcomes = _race(urls, rems_id, number)
        assert outcomes.count(True) == LIMIT, (number, outcomes)
        assert _granted_rows(db, rems_id) == LIMIT


def test_as_of_is_off_by_default(tmp_path: Path) -> None:
    seed, db = tmp_path / "seed.json", tmp_path / "rems.sqlite"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    (rems_id,) = _enrolled_long_ago(db, seed, 1)
    with BackgroundServer(make_app(db)) as url:
        now = datetime.now(UTC)
        late = override_body(now, rems_id, dispenseId="late")
        far = (now - timedelta(days=400)).isoformat().replace("+00:00", "Z")
        refused = requests.post(f"{url}/overrides", json=late, params={"asOf": far}, timeout=10)
        assert refused.status_code == 400
        assert refused.json()["reasons"] == ["as-of-not-allowed"]
        # a client's own clock (within minutes of the service's) is tolerated and ignored
        close = (now + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
        taken = requests.post(f"{url}/overrides", json=late, params={"asOf": close}, timeout=10)
        assert taken.status_code == 200, taken.text
        decided = datetime.fromisoformat(taken.json()["decidedAt"].replace("Z", "+00:00"))
        assert abs(decided - datetime.now(UTC)) < timedelta(seconds=30)
