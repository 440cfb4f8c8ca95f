"""Several real `rems-adapter serve` processes on one PostgreSQL state (tests and benchmark).

`ServeProcess` runs the installed command line in its own process (so SIGKILL is real), pushed
to over HTTP on 127.0.0.1. `Cluster` starts N of them on one state, spreads pushes across the
live ones (a lab behind a load balancer: a push that finds its worker dead goes to another),
and waits, bounded, until the shared inbox and outbox are empty.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from adapter.store.postgres import PostgresStore
from tests.serve.kit import FINDING_SYSTEM, all_of, lab_result
from tests.setup.postgres import free_port

#: `python -m adapter` (the same as the installed `rems-adapter`), run from the checkout.
COMMAND = [sys.executable, "-m", "adapter"]
CHECKOUT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0

#: Short leases and retries, so that a dead worker's claims move within seconds in tests.
FAST_ENV = {
    "REMS_ADAPTER_SERVE_LEASE_SECONDS": "3",
    "REMS_ADAPTER_SERVE_RETRY_FIRST_SECONDS": "0.05",
    "REMS_ADAPTER_SERVE_RETRY_MAX_SECONDS": "0.5",
    "REMS_ADAPTER_SERVE_MAX_ATTEMPTS": "400",
    "REMS_ADAPTER_INBOUND_RATE_PER_SECOND": "0",
}


@dataclass
class ServeProcess:
    """One `rems-adapter serve` on a free port of 127.0.0.1 (`--no-poll` unless `poll`)."""

    ehr_url: str
    state: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    poll: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S, *, wait: bool = True) -> ServeProcess:
        """Start the process; with `wait`, until /healthz answers (bounded)."""
        self.port = free_port()
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("REMS_ADAPTER_")
        }
        environment.update(FAST_ENV)
        environment.update(self.env)
        command = [
            *COMMAND,
            "serve",
            "--fhir-base",
            self.ehr_url,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            self.state,
            *([] if self.poll else ["--no-poll"]),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=CHECKOUT
            )
        if not wait:
            return self
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"serve did not answer within {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (leases, open transactions, HTTP requests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then wait (bounded); SIGKILL if it does not stop. The exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def push(self, resource: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{self.url}/fhir/Observation",
            data=json.dumps(resource),
            headers={"Content-Type": "application/fhir+json"},
            timeout=30,
        )


@dataclass
class Cluster:
    """N serve processes on one PostgreSQL state, against one EHR."""

    ehr_url: str
    dsn: str
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[ServeProcess] = field(default_factory=list)
    #: pushes that found their worker down or failing and were sent to another
    refused: int = 0
    _next: int = 0

    def start(self, count: int) -> Cluster:
        for n in range(count):
            self.add(n)
        return self

    def add(self, n: int | None = None) -> ServeProcess:
        n = len(self.workers) if n is None else n
        worker = ServeProcess(
            self.ehr_url, self.dsn, self.folder / f"serve-{n}.log", env=dict(self.env)
        )
        self.workers.append(worker.start())
        return worker

    def restart(self, worker: ServeProcess, *, wait: bool = True) -> ServeProcess:
        """A new process in place of `worker` (same state, a new port), as a supervisor would."""
        replacement = ServeProcess(
            self.ehr_url, self.dsn, worker.log_path, env=dict(self.env)
        ).start(wait=wait)
        self.workers[self.workers.index(worker)] = replacement
        return replacement

    def live(self) -> list[ServeProcess]:
        return [worker for worker in self.workers if worker.alive]

    def push(self, resource: dict[str, Any], attempts: int = 10) -> ServeProcess:
        """Push to the next live worker in turn; one that is down or answers 5xx is skipped,
        as a load balancer would. The worker that accepted it (202)."""
        last = ""
        for _ in range(attempts):
            live = self.live()
            if not live:
                raise RuntimeError("no live serve process to push to")
            worker = live[self._next % len(live)]
            self._next += 1
            try:
                answer = worker.push(resource)
            except requests.ConnectionError as error:  # down, or still starting
                last = type(error).__name__
                self.refused += 1
                time.sleep(0.05)
                continue
            if answer.status_code == 202:
                return worker
            if answer.status_code < 500:
                raise AssertionError(f"push refused: {answer.status_code} {answer.text[:300]}")
            last = f"HTTP {answer.status_code}"
            self.refused += 1
        raise RuntimeError(f"no worker accepted the push after {attempts} attempts ({last})")

    def settle(self, timeout_s: float = 180.0) -> None:
        """Wait (bounded) until the shared inbox and outbox are empty and nothing is dead."""
        store = PostgresStore(self.dsn, pool_max=1)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if store.inbox_depth() == 0 and store.outbox_depth() == 0:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(
                    f"not settled in {timeout_s}s: inbox {store.inbox_depth()}, outbox "
                    f"{store.outbox_depth()}, dead {store.dead_letters()}\n{self.logs()}"
                )
            assert store.dead_letters() == 0, f"dead letters: {store.dead_letters()}"
            assert store.parked_items() == []
        finally:
            store.close()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_tail(2000)}" for w in self.workers)

    def stop(self) -> list[int | None]:
        """Stop every process; their logs join the suite's (REMS_ADAPTER_TEST_LOG_DIR), which
        tests/serve/test_no_phi_in_logs.py scans for the seeded patients."""
        codes = [worker.stop() for worker in self.workers]
        keep = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
        if keep:
            for path in sorted(self.folder.glob("serve-*.log")):
                target = Path(keep) / f"multiworker-{os.getpid()}-{id(self)}-{path.name}"
                target.write_bytes(path.read_bytes())
        return codes


def by_identifier(issues: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """DetectedIssues grouped by their decision identifier (system|value)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        for identifier in issue.get("identifier", []):
            key = f"{identifier.get('system')}|{identifier.get('value')}"
            out.setdefault(key, []).append(issue)
    return out


LAB_SYSTEM = "urn:oid:2.16.840.1.113883.3.999.1"
#: general population categories (clinical-rules): >= 1500 normal, 1000-1499 mild, 500-999
#: moderate; severe is left out so that no result interrupts the others' meaning
EXPECTED = {
    2300.0: None,
    1400.0: "anc-mild-neutropenia",
    1900.0: None,
    1100.0: "anc-mild-neutropenia",
    800.0: "anc-moderate-neutropenia",
}
ANC_CODES = {
    "anc-mild-neutropenia",
    "anc-moderate-neutropenia",
    "anc-severe-neutropenia",
    "anc-ben-neutropenia",
    "anc-unevaluable",
}


def plan(patients: list[str], per_patient: int, rng: random.Random) -> list[dict[str, Any]]:
    """Results collected hourly over the last hours, pushed in a shuffled order."""
    now = datetime.now(UTC).replace(microsecond=0)
    tag = f"{rng.getrandbits(32):08x}"  # accessions unique across plans on one EHR
    values = list(EXPECTED)
    results = []
    for p, patient in enumerate(patients):
        for k in range(per_patient):
            when = now - timedelta(hours=per_patient - k, minutes=p)
            value = values[(p + k) % len(values)]
            results.append(lab_result(patient, value, when=when, accession=f"acc-{tag}-{p}-{k}"))
    rng.shuffle(results)
    return results


def finding_code(issue: dict[str, Any]) -> str:
    return next(c["code"] for c in issue["code"]["coding"] if c.get("system") == FINDING_SYSTEM)


def check_every_result_took_effect_once(base_url: str, pushed: list[dict[str, Any]]) -> None:
    issues = all_of(base_url, "DetectedIssue")
    twice = {key: len(found) for key, found in by_identifier(issues).items() if len(found) > 1}
    assert twice == {}, f"decision identifiers on the server more than once: {twice}"
    accession_of = {}
    for observation in all_of(base_url, "Observation"):
        for identifier in observation.get("identifier", []):
            if identifier.get("system") == LAB_SYSTEM:
                accession_of[f"Observation/{observation['id']}"] = identifier["value"]
    cited: dict[str, list[str]] = {}
    for issue in issues:
        code = finding_code(issue)
        if issue["status"] != "final" or code not in ANC_CODES:
            continue
        for evidence in issue.get("evidence", []):
            for detail in evidence.get("detail", []):
                accession = accession_of.get(detail.get("reference", ""))
                if accession is not None:
                    cited.setdefault(accession, []).append(code)
    expected = {
        result["identifier"][0]["value"]: [code]
        for result in pushed
        if (code := EXPECTED[result["valueQuantity"]["value"]]) is not None
    }
    assert expected, "the plan has no non-normal result"
    assert cited == expected
