"""`rems-adapter serve --mllp` killed with SIGKILL between receipt and ACK: the sender, with no
ACK, resends to the restarted service, and the result has exactly one effect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.mllp.client import MllpClient
from adapter.mllp.framing import frame
from adapter.store.sqlite import SqliteStore
from tests.fhir_server import free_port
from tests.hl7v2.kit import AUTHORITY
from tests.mllp.e2e_kit import oru_now, patient_with_mrn
from tests.mllp.kit import msa
from tests.serve.kit import all_of, codes, issues

pytestmark = pytest.mark.integration


class Process:
    """`python -m adapter serve` as an operator runs it."""

    def __init__(self, ehr_url: str, state: Path, mllp_port: int, log: Path) -> None:
        self.ehr_url, self.state, self.mllp_port, self.log = ehr_url, state, mllp_port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMS_ADAPTER_")}
        env.update(
            REMS_ADAPTER_MLLP_ASSIGNING_AUTHORITY=AUTHORITY,
            REMS_ADAPTER_MLLP_MATCH_INTERVAL="0.2",
        )
        argv = [
            sys.executable, "-m", "adapter", "serve", "--no-poll",
            "--fhir-base", self.ehr_url, "--listen", "127.0.0.1:0",
            "--state", str(self.state), "--mllp", f"127.0.0.1:{self.mllp_port}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.mllp_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("serve did not open its MLLP port: " + self.log.read_text()[-2000:])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def running(ehr: Any, tmp_path: Path) -> Iterator[Process]:
    process = Process(ehr.base_url, tmp_path / "state.sqlite", free_port(), tmp_path / "serve.log")
    try:
        yield process
    finally:
        process.stop()


def _settled(state: Path, timeout: float = 60.0) -> None:
    store = SqliteStore(state)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parked = [item for item in store.parked_items() if item.source == "mllp"]
            if not parked and store.inbox_depth() == 0 and store.outbox_depth() == 0:
                return
            time.sleep(0.1)
    finally:
        store.close()
    raise AssertionError("serve did not settle")


def _stored(state: Path, key: str) -> bool:
    store = SqliteStore(state)
    try:
        return store.item(key) is not None
    finally:
        store.close()


@pytest.mark.parametrize("when", ["at once", "5 ms later", "after the durable write"])
def test_sigkill_between_receipt_and_ack_then_resend_has_one_effect(running, ehr, when):
    mrn = f"MRN-K{len(when)}"
    control = f"K-{mrn}"
    patient = patient_with_mrn(ehr.base_url, mrn, [2100, 2000, 1900])
    message = oru_now(mrn, control, "0.8", filler=f"ACC-{mrn}")
    running.start()
    with socket.create_connection(("127.0.0.1", running.mllp_port), timeout=10) as sender:
        sender.sendall(frame(message))
        if when == "5 ms later":
            time.sleep(0.005)
        elif when == "after the durable write":
            key = f"mllp:LAB|NORTHLAB|{control}#1"
            for _ in range(600):  # bounded: until the inbox holds it
                if _stored(running.state, key):
                    break
                time.sleep(0.01)
            assert _stored(running.state, key)
        running.kill()  # the sender reads no ACK from this connection
    # no ACK read (or one the sender cannot trust): it resends to the restarted service
    running.start()
    with MllpClient("127.0.0.1", running.mllp_port, timeout=30) as lab:
        assert msa(lab.send(message)) == ("AA", f"K-{mrn}")
    _settled(running.state)
    found = [i for i in issues(ehr.base_url, patient) if i["status"] == "final"]
    assert [c for c in codes(found) if c.startswith("anc-")] == ["anc-moderate-neutropenia"]
    mapped = [
        o
        for o in all_of(ehr.base_url, "Observation")
        if o.get("subject", {}).get("reference") == patient
        and any("hl7v2-result" in i.get("system", "") for i in o.get("identifier", []))
    ]
    assert len(mapped) == 1
    response = requests.get(f"{ehr.base_url}/{patient}", timeout=10)
    assert response.status_code == 200
