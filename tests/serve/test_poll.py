"""serve's poll source (the watch cycle) on stock sekmet-fhir: what the EHR holds is decided by
the pipeline and written once, across a restart; serve stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fhir_server import free_port
from tests.serve.kit import codes, issues, queue_depths, recent_history, seed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _serve(base_url: str, tmp_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMS_ADAPTER_")}
    env["REMS_ADAPTER_WATCH_INTERVAL_SECONDS"] = "1"
    env["REMS_ADAPTER_WATCH_STATE"] = str(tmp_path / "poll.sqlite")
    argv = [
        sys.executable,
        "-m",
        "adapter",
        "serve",
        "--fhir-base",
        base_url,
        "--listen",
        f"127.0.0.1:{port}",
        "--state",
        str(tmp_path / "state.sqlite"),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_polled_results_are_decided_once_across_a_restart(stock_server, tmp_path):
    ids = seed(stock_server.base_url, [recent_history([2100, 2000, 1200])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    port = free_port()
    log = tmp_path / "serve.log"
    process = _serve(stock_server.base_url, tmp_path, port, log)
    try:
        _wait(lambda: "anc-mild-neutropenia" in codes(issues(stock_server.base_url, patient)))
        _wait(
            lambda: (
                'rems_adapter_results_received_total{source="poll"} 3.0'
                in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            )
        )
        # Everything received has taken effect (interfaces.md: both depths 0) before the stop:
        # an effect still in the outbox would rightly be written by the restarted process.
        _wait(lambda: queue_depths(f"http://127.0.0.1:{port}") == (0.0, 0.0))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        first = sorted(i["id"] for i in issues(stock_server.base_url, patient))
        process = _serve(stock_server.base_url, tmp_path, port, log)
        _wait(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok)
        time.sleep(3)  # a few poll cycles: nothing new to write
        assert sorted(i["id"] for i in issues(stock_server.base_url, patient)) == first
        assert len(first) == len(set(codes(issues(stock_server.base_url, patient))))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        keep = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
        if keep:
            (Path(keep) / f"serve-poll-{os.getpid()}.log").write_bytes(log.read_bytes())
    assert "Traceback" not in log.read_text()
