"""`rems-adapter watch` against a real FHIR server (sekmet-fhir on 127.0.0.1).

Each test seeds synthetic clozapine histories with a transaction Bundle on a fresh server, runs
watch cycles with a fixed clock, and checks the DetectedIssues on the server.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.cli import main
from adapter.ehr import FhirClient, RetryPolicy, SmartBackendServices, Transport
from tests.conftest import SmartKey
from tests.fhir_server import SekmetServer
from tests.watch.conftest import (
    AS_OF,
    DECISION_SYSTEM,
    Harness,
    by_status,
    decisions,
    finding,
    put,
    read,
    seed,
)
from tests.watch.seeding import History, bundle, created_ids

pytestmark = pytest.mark.integration

PENDING_ON = date(2025, 8, 12)  # the day after the last result; AS_OF is that day, 12:00 UTC


def mild() -> History:
    return History(anc=[2000] * 10 + [1200], pending_on=PENDING_ON)


def moderate() -> History:
    return History(anc=[2000] * 10 + [800], pending_on=PENDING_ON)


def normal() -> History:
    return History(anc=[2000] * 11)


def patient_of(ids: dict[str, str], history: History) -> str:
    return ids[history.urns["Patient"][0]]


def last_result(ids: dict[str, str], history: History) -> str:
    return ids[history.urns["Observation"][-1]]


def export(server: SekmetServer, out: Path) -> Path:
    """Everything on the server as NDJSON, for batch mode to decide the same inputs."""
    lines = []
    for kind in ("Observation", "MedicationDispense", "MedicationRequest"):
        url: str | None = f"{server.base_url}/{kind}?_count=1000"
        while url:
            page = requests.get(url, timeout=30).json()
            lines += [json.dumps(e["resource"]) for e in page.get("entry", [])]
            url = next((x["url"] for x in page["link"] if x["relation"] == "next"), None)
    out.write_text("\n".join(lines) + "\n")
    return out


def test_once_writes_what_batch_mode_decides_and_a_replay_writes_nothing(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    histories = [mild(), moderate(), normal()]
    ids = seed(watch_server, histories)
    low, interrupted, fine = (patient_of(ids, h) for h in histories)
    state = tmp_path / "state.sqlite"
    argv = ["watch", "--fhir-base", watch_server.base_url, "--once", "--state", str(state)]
    argv += ["--as-of", AS_OF.isoformat()]

    assert main(argv) == 0

    assert by_status(watch_server, low) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }
    # ANC below 1000: the month's PSF needs the prescriber's rationale (clinical-rules 3).
    assert by_status(watch_server, interrupted) == {
        "final": [
            "anc-moderate-neutropenia",
            "dispense-not-authorized",
            "psf-prescriber-action-required",
        ]
    }
    assert by_status(watch_server, fine) == {}
    for issue in decisions(watch_server, low):
        assert issue["patient"]["reference"] == low
        assert issue["author"]["reference"] == "Device/rems-adapter"
        assert issue["identifiedDateTime"] == "2025-08-12T12:00:00Z"
        evidence = [d["reference"] for e in issue["evidence"] for d in e["detail"]]
        assert evidence == [last_result(ids, histories[0])]
    (refused,) = [
        i for i in decisions(watch_server, interrupted) if finding(i) == "dispense-not-authorized"
    ]
    assert refused["implicated"] == [{"reference": ids[histories[1].urns["MedicationDispense"][0]]}]
    assert [c["coding"][0]["code"] for c in refused["evidence"][0]["code"]] == [
        "treatment-interrupted"
    ]

    # the same identifiers batch mode derives from the same resources: one decision engine
    out = tmp_path / "batch"
    source = export(watch_server, tmp_path / "export.ndjson")
    assert (
        main(["run", "--source", str(source), "--out", str(out), "--as-of", AS_OF.isoformat()]) == 0
    )
    batch_ids = {
        json.loads(line)["identifier"][0]["value"]
        for line in (out / "DetectedIssue.ndjson").read_text().splitlines()
    }
    server_ids = {
        i["identifier"][0]["value"] for p in (low, interrupted) for i in decisions(watch_server, p)
    }
    assert server_ids == batch_ids

    # a replay: six polls (one page each), no write, nothing new on the server
    harness = Harness(watch_server, state)
    report = harness.cycle()
    assert dict(harness.transport.counts) == {"GET": 6}
    assert (report.new_versions, report.patients_decided, report.issues_created) == (0, 0, 0)
    assert len(decisions(watch_server, low)) == 2
    harness.close()


def test_a_corrected_result_withdraws_the_old_decisions_and_writes_new_ones(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    harness.cycle()
    before = {i["id"]: finding(i) for i in decisions(watch_server, patient)}

    result = read(watch_server, last_result(ids, history))
    result["status"] = "corrected"
    result["valueQuantity"]["value"] = 1300
    put(watch_server, result)
    report = harness.cycle()

    assert report.withdrawn == 2 and report.issues_created == 2
    now = {i["id"]: i for i in decisions(watch_server, patient)}
    assert {now[k]["status"] for k in before} == {"cancelled"}
    assert all("Withdrawn (cancelled)" in now[k]["detail"] for k in before)
    fresh = [i for k, i in now.items() if k not in before]
    assert sorted(finding(i) for i in fresh) == ["anc-mild-neutropenia", "dispense-authorized"]
    assert all(i["status"] == "final" and "1,300" in i["detail"] for i in fresh)
    harness.transport.reset()
    assert harness.cycle().issues_created == 0
    assert harness.transport.counts["POST"] == harness.transport.counts["PUT"] == 0
    harness.close()


def test_a_result_entered_in_error_withdraws_its_decisions_as_entered_in_error(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = History(anc=[2000] * 10 + [1200])  # no dispense waiting: one ANC decision
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    harness.cycle()
    assert by_status(watch_server, patient) == {"final": ["anc-mild-neutropenia"]}

    result = read(watch_server, last_result(ids, history))
    result["status"] = "entered-in-error"
    put(watch_server, result)
    harness.cycle()

    assert by_status(watch_server, patient) == {"entered-in-error": ["anc-mild-neutropenia"]}
    harness.close()


@pytest.mark.parametrize(
    ("status", "withdrawn_as"),
    [("entered-in-error", "entered-in-error"), ("cancelled", "cancelled")],
)
def test_a_dispense_withdrawn_on_the_server_withdraws_its_decision(
    watch_server: SekmetServer, tmp_path: Path, status: str, withdrawn_as: str
) -> None:
    """The pharmacy marks the awaited dispense entered-in-error (or cancels it) on the EHR: the
    decision about it is withdrawn there with the matching status, the ANC finding stands, and
    nothing is decided anew about that dispense."""
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    harness.cycle()
    assert by_status(watch_server, patient) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }

    dispense = read(watch_server, ids[history.urns["MedicationDispense"][0]])
    dispense["status"] = status
    put(watch_server, dispense)
    report = harness.cycle()

    assert report.withdrawn == 1 and report.issues_created == 0
    assert by_status(watch_server, patient) == {
        withdrawn_as: ["dispense-authorized"],
        "final": ["anc-mild-neutropenia"],
    }
    harness.transport.reset()
    assert harness.cycle().issues_created == 0  # a replay changes nothing
    assert harness.transport.counts["POST"] == harness.transport.counts["PUT"] == 0
    harness.close()


def test_a_prescriber_answer_on_the_server_re_decides_to_authorized_override(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = moderate()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    prescriber = ids[history.urns["Practitioner"][0]]
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    harness.cycle()
    (refused,) = [
        i for i in decisions(watch_server, patient) if finding(i) == "dispense-not-authorized"
    ]

    refused["mitigation"] = [
        {
            "action": {"text": "Benefit outweighs risk; continue with daily ANC."},
            "date": "2025-08-12T10:00:00Z",
            "author": {"reference": prescriber},
        }
    ]
    put(watch_server, refused)
    report = harness.cycle()

    assert report.withdrawn == 1 and report.issues_created == 1
    assert by_status(watch_server, patient) == {
        "cancelled": ["dispense-not-authorized"],
        "final": [
            "anc-moderate-neutropenia",
            "dispense-authorized-override",
            "psf-prescriber-action-required",
        ],
    }
    (override,) = [
        i for i in decisions(watch_server, patient) if finding(i) == "dispense-authorized-override"
    ]
    cited = [d["reference"] for e in override["evidence"] for d in e["detail"]]
    assert f"DetectedIssue/{refused['id']}" in cited  # the answer that authorized it
    harness.close()


def test_a_restart_on_the_same_state_processes_nothing_twice(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = moderate()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    state = tmp_path / "state.sqlite"

    class DownForWrites(requests.Session):
        """The server stops answering writes: the process "dies" before writing back."""

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:
            if method == "POST":
                raise requests.ConnectionError("connection refused")
            return super().request(method, url, *args, **kw)

    crashed = Harness(watch_server, state)
    crashed.client.transport = Transport(
        session=DownForWrites(), retry=RetryPolicy(max_attempts=1, max_total_seconds=1)
    )
    with pytest.raises(Exception, match="could not connect"):
        crashed.cycle()
    crashed.close()
    assert decisions(watch_server, patient) == []

    restarted = Harness(watch_server, state)
    report = restarted.cycle()
    # the polls had been kept: nothing read again is new, yet the patient is still decided
    assert report.new_versions == 0 and report.patients_decided == 1
    assert report.issues_created == 3  # the ANC, the dispense and the PSF routing finding
    restarted.close()

    again = Harness(watch_server, state)
    report = again.cycle()
    assert (report.new_versions, report.patients_decided, report.issues_created) == (0, 0, 0)
    assert dict(again.transport.counts) == {"GET": 6}
    assert len(decisions(watch_server, patient)) == 3
    again.close()


def test_linking_the_dispense_does_not_trigger_a_new_decision(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    history = mild()
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    dispense_ref = ids[history.urns["MedicationDispense"][0]]
    harness = Harness(watch_server, tmp_path / "state.sqlite", link_dispense=True)

    assert harness.cycle().dispenses_linked == 1
    (decision,) = [
        i for i in decisions(watch_server, patient) if finding(i) == "dispense-authorized"
    ]
    dispense = read(watch_server, dispense_ref)
    assert dispense["detectedIssue"] == [{"reference": f"DetectedIssue/{decision['id']}"}]
    assert dispense["meta"]["versionId"] == "2"

    report = harness.cycle()  # our own edit comes back from the poll: not new input
    assert (report.patients_decided, report.issues_created, report.withdrawn) == (0, 0, 0)
    assert len(decisions(watch_server, patient)) == 2
    harness.close()


def test_per_patient_mode_polls_only_the_group_members(
    watch_server: SekmetServer, tmp_path: Path
) -> None:
    histories = [mild(), moderate()]
    ids = seed(watch_server, histories)
    member, other = (patient_of(ids, h) for h in histories)
    group = requests.post(
        f"{watch_server.base_url}/Group",
        json={
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": member}}],
        },
        timeout=10,
    ).json()
    harness = Harness(watch_server, tmp_path / "state.sqlite", group=f"Group/{group['id']}")

    harness.cycle()

    assert by_status(watch_server, member) == {
        "final": ["anc-mild-neutropenia", "dispense-authorized"]
    }
    assert decisions(watch_server, other) == []
    assert harness.transport.counts["GET"] == 1 + 6  # the Group, then six searches for one member
    harness.close()


def test_watch_authenticates_with_smart_backend_services_es384(
    smart_fhir_server: SekmetServer,
    smart_keys: dict[str, SmartKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = smart_keys["ES384"]
    key_file = tmp_path / "es384.pem"
    key_file.write_bytes(key.private_pem)
    monkeypatch.setenv("REMS_ADAPTER_SMART_KEY_FILE", str(key_file))  # the secret: from the env
    config = tmp_path / "watch.toml"
    config.write_text(
        f"""
[fhir]
base_url = "{smart_fhir_server.base_url}"
auth = "smart"
[fhir.smart]
client_id = "{key.client_id}"
algorithm = "ES384"
scope = "system/*.*"
key_id = "{key.public_jwk["kid"]}"
[watch]
state = "{tmp_path / "state.sqlite"}"
"""
    )
    history = mild()
    request = bundle([history])
    auth = SmartBackendServices(
        client_id=key.client_id,
        private_key_pem=key.private_pem,
        algorithm="ES384",
        scope="system/*.*",
        key_id=key.public_jwk["kid"],
    )
    client = FhirClient(smart_fhir_server.base_url, auth=auth)
    headers = dict(auth.headers(client.transport, smart_fhir_server.base_url))
    response = requests.post(smart_fhir_server.base_url, json=request, headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:300]
    patient = created_ids(response.json(), request)[history.urns["Patient"][0]]
    # without a token the server refuses: the watcher's access below is the SMART grant's
    assert requests.get(f"{smart_fhir_server.base_url}/Patient", timeout=10).status_code == 401

    assert main(["watch", "--config", str(config), "--once", "--as-of", AS_OF.isoformat()]) == 0

    found = client.search(
        "DetectedIssue", {"patient": patient, "identifier": f"{DECISION_SYSTEM}|"}
    ).matches
    assert sorted(finding(i) for i in found) == ["anc-mild-neutropenia", "dispense-authorized"]
    client.close()


def test_logs_carry_counts_not_patients_or_values(
    watch_server: SekmetServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = moderate()
    ids = seed(watch_server, [history])
    harness = Harness(watch_server, tmp_path / "state.sqlite")
    with caplog.at_level(logging.DEBUG, logger="adapter"):
        harness.cycle()
        harness.cycle()
    harness.close()
    assert caplog.records  # the transport logs each request line at DEBUG
    for ref in ids.values():
        assert ref.split("/")[1] not in caplog.text
    # no bodies, no search values (the port in a URL may contain any digits: not checked)
    assert "valueQuantity" not in caplog.text and "751-8" not in caplog.text


def test_loop_mode_stops_cleanly_on_sigterm(watch_server: SekmetServer, tmp_path: Path) -> None:
    seed(watch_server, [mild()])
    command = [sys.executable, "-m", "adapter", "watch", "--fhir-base", watch_server.base_url]
    command += ["--state", str(tmp_path / "state.sqlite"), "--interval", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        seen = ""
        while "cycle:" not in seen and time.monotonic() < deadline:
            seen = process.stderr.readline()  # the first cycle's summary (log, INFO)
        assert "cycle:" in seen
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("use_include", [True, False])
def test_a_dispense_naming_its_medication_by_reference_is_decided(
    watch_server: SekmetServer, tmp_path: Path, use_include: bool
) -> None:
    history = History(anc=[2000] * 10 + [1200])
    ids = seed(watch_server, [history])
    patient = patient_of(ids, history)
    medication = requests.post(
        f"{watch_server.base_url}/Medication",
        json={"resourceType": "Medication", "code": {"text": "Clozapine 100 mg tablet"}},
        timeout=10,
    ).json()
    pending = requests.post(
        f"{watch_server.base_url}/MedicationDispense",
        json={
            "resourceType": "MedicationDispense",
            "status": "in-progress",
            "medicationReference": {"reference": f"Medication/{medication['id']}"},
            "subject": {"reference": patient},
            "daysSupply": {"value": 7},
            "whenPrepared": "2025-08-12T09:00:00Z",
        },
        timeout=10,
    ).json()
    harness = Harness(watch_server, tmp_path / "state.sqlite", use_include=use_include)

    report = harness.cycle()

    assert report.medications_read == (0 if use_include else 1)
    (decision,) = [
        i for i in decisions(watch_server, patient) if finding(i).startswith("dispense-")
    ]
    assert decision["implicated"] == [{"reference": f"MedicationDispense/{pending['id']}"}]
    harness.close()
