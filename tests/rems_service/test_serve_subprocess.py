"""`serve()` (what `rems-adapter rems-server` calls) runs the service in its own process."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import requests

from .conftest import seed_document

STARTUP_SECONDS = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_health_and_keeps_state_in_the_db_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    db = tmp_path / "rems.sqlite"
    port = _free_port()
    code = (
        "import sys; from adapter.rems_service import serve; "
        "serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], insecure_admin=True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(db), str(seed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health is not None, f"service did not start: {process.stderr!r}"
        assert health.json() == {"status": "ok", "database": "ok"}
        pharmacy = {"pharmacyId": "pharm-x", "setting": "inpatient"}
        created = requests.post(
            f"http://127.0.0.1:{port}/admin/pharmacies", json=pharmacy, timeout=5
        )
        assert created.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=10)

    settings = [
        row[0] for row in _query(db, "SELECT setting FROM pharmacies WHERE pharmacy_id = ?")
    ]
    assert settings == ["inpatient"]


def _query(db: Path, sql: str) -> list[tuple[str]]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql, ("pharm-x",)))
