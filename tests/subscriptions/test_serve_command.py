"""`rems-adapter serve --no-poll` as deployed, configured from the environment only
(``[subscriptions]``), against stock sekmet-fhir: it makes its topic and Subscription, and a new
low ANC on the EHR becomes a DetectedIssue through the notification alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.fhir_server import free_port
from tests.serve.kit import codes, issues, lab_result, recent_history, seed
from tests.subscriptions.conftest import QuickSekmet
from tests.subscriptions.kit import wait_for

pytestmark = pytest.mark.integration

RA = Path(sys.executable).with_name("rems-adapter")


def test_serve_from_the_environment_decides_through_a_backport_notification(
    ehr: QuickSekmet, tmp_path: Path
) -> None:
    ids = seed(ehr.base_url, [recent_history([2100, 2000, 1900])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REMS_ADAPTER_")},
        "REMS_ADAPTER_SUBSCRIPTIONS_ENABLED": "true",
        "REMS_ADAPTER_SUBSCRIPTIONS_KIND": "backport",
        "REMS_ADAPTER_SUBSCRIPTIONS_CREATE_TOPIC": "true",
        "REMS_ADAPTER_SUBSCRIPTIONS_CONTENT": "id-only",
        "REMS_ADAPTER_SUBSCRIPTIONS_HEARTBEAT_SECONDS": "5",
        "REMS_ADAPTER_SUBSCRIPTIONS_SECRET": "from-the-environment",
    }
    command = [
        str(RA),
        "serve",
        "--fhir-base",
        ehr.base_url,
        "--listen",
        f"127.0.0.1:{port}",
        "--no-poll",
        "--state",
        str(tmp_path / "state.sqlite"),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        endpoint = f"http://127.0.0.1:{port}/notify"

        def active() -> list[dict[str, object]]:
            page = requests.get(
                f"{ehr.base_url}/Subscription", params={"url": endpoint}, timeout=10
            ).json()
            return [
                e["resource"] for e in page.get("entry", []) if e["resource"]["status"] == "active"
            ]

        [subscription] = wait_for(active, timeout=60, what="serve's Subscription active")
        header = subscription["channel"]["header"]  # type: ignore[index]
        assert header == ["X-Rems-Adapter-Notify-Secret: from-the-environment"]
        requests.post(f"{ehr.base_url}/Observation", json=lab_result(patient, 700), timeout=10)
        found = wait_for(
            lambda: codes(issues(ehr.base_url, patient)), timeout=60, what="a DetectedIssue"
        )
        assert "anc-moderate-neutropenia" in found
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'rems_adapter_results_received_total{source="notify"} 1.0' in metrics
        assert 'rems_adapter_results_received_total{source="poll"} 0.0' in metrics
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 0, output[-2000:]
    assert "from-the-environment" not in output  # the secret is never logged
