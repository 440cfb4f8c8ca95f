"""Fault injection: stream lab results to `rems-adapter serve` while SIGKILLing it at random.

    python -m tests.serve.fault_run [--results 1000] [--kills 20] [--patients 100] [--seed N]

A real sekmet-fhir (stock, no search-parameter patch) on 127.0.0.1, seeded with patients on
clozapine; `rems-adapter serve` runs as a child process on a SQLite state file and a fixed port.
A pusher sends every result until it gets its 202 (a lab retries what was not acknowledged),
while a killer SIGKILLs serve at random moments (at least --kills times) and starts it again at
once. At the end serve settles (inbox and outbox empty) and the EHR is checked: every result is
on the EHR once (forwarded), and every expected DetectedIssue is there exactly once, none lost.

Every loop is bounded in count and time; every process started is killed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.fhir_server import free_port
from tests.serve.conftest import start_stock_sekmet
from tests.serve.kit import (
    FINDING_SYSTEM,
    all_of,
    lab_result,
    queue_depths,
    recent_history,
    seed,
)

ROOT = Path(__file__).resolve().parents[2]
ACCESSION_SYSTEM = "urn:oid:2.16.840.1.113883.3.999.1"


@dataclass
class Report:
    results: int
    kills: int = 0
    starts: int = 0
    push_attempts: int = 0
    acknowledged: int = 0
    seconds: float = 0.0
    expected_issues: int = 0
    issues_found: int = 0
    duplicates: int = 0
    missing: int = 0
    forwarded_once: int = 0
    forwarded_duplicates: int = 0
    log: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"{self.results} results pushed ({self.push_attempts} attempts, "
            f"{self.acknowledged} acknowledged) while serve was SIGKILLed {self.kills} times "
            f"({self.starts} starts) in {self.seconds:.1f} s; DetectedIssues expected "
            f"{self.expected_issues}, found {self.issues_found}, duplicates {self.duplicates}, "
            f"missing {self.missing}; results on the EHR once {self.forwarded_once}, "
            f"duplicated {self.forwarded_duplicates}"
            + ("" if self.ok else "; PROBLEMS: " + "; ".join(self.problems))
        )


class ServeProcess:
    def __init__(self, base_url: str, state: Path | str, port: int, log: Path) -> None:
        self.base_url = base_url
        self.state = state
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REMS_ADAPTER_")},
            "REMS_ADAPTER_SERVE_LEASE_SECONDS": "3",
            "REMS_ADAPTER_SERVE_RETRY_FIRST_SECONDS": "0.2",
            "REMS_ADAPTER_SERVE_RETRY_MAX_SECONDS": "2",
            "REMS_ADAPTER_SERVE_MAX_ATTEMPTS": "1000",
            "REMS_ADAPTER_FHIR_MAX_ATTEMPTS": "2",
            "REMS_ADAPTER_FHIR_READ_TIMEOUT": "10",
            "REMS_ADAPTER_INBOUND_RATE_PER_SECOND": "0",
        }
        argv = [
            sys.executable,
            "-m",
            "adapter",
            "serve",
            "--fhir-base",
            self.base_url,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            str(self.state),
            "--no-poll",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}; see {self.log}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve not healthy within {timeout}s; see {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def run(
    results: int,
    kills: int,
    patients: int,
    rng: random.Random,
    workdir: Path,
    state: str | None = None,
) -> Report:
    """`state`: a postgresql:// DSN (issue 14) instead of a SQLite file in `workdir`."""
    report = Report(results=results)
    started = time.monotonic()
    server = start_stock_sekmet(workdir / "sekmet")
    serve: ServeProcess | None = None
    try:
        ids = seed(server.base_url, [recent_history([2100, 2000]) for _ in range(patients)])
        people = [v for v in ids.values() if v.startswith("Patient/")]
        now = time.time()
        pushed = []
        for n in range(results):
            patient = people[n % len(people)]
            # distinct collection times per patient, all in the last few days
            when = time.gmtime(now - 3600 - (n // len(people)) * 600)
            from datetime import UTC, datetime

            result = lab_result(
                patient,
                1200 + (n % 7) * 10,
                when=datetime(*when[:6], tzinfo=UTC),
                accession=f"fault-{n:05d}",
            )
            pushed.append(result)
        report.log = workdir / "serve.log"
        serve = ServeProcess(
            server.base_url, state or workdir / "state.sqlite", free_port(), report.log
        )
        serve.start()
        done = threading.Event()
        lock = threading.Lock()

        def push_all() -> None:
            for result in pushed:
                for _ in range(1000):  # bounded: a lab retries until acknowledged
                    report.push_attempts += 1
                    try:
                        with lock:
                            url = serve.url  # type: ignore[union-attr]
                        answer = requests.post(
                            f"{url}/fhir/Observation",
                            json=result,
                            headers={"Content-Type": "application/fhir+json"},
                            timeout=10,
                        )
                        if answer.status_code == 202:
                            report.acknowledged += 1
                            break
                    except requests.RequestException:
                        pass
                    time.sleep(0.05)
                else:
                    report.problems.append(f"{result['identifier'][0]['value']} never acknowledged")
            done.set()

        pusher = threading.Thread(target=push_all, daemon=True)
        pusher.start()
        deadline = time.monotonic() + 1800
        while (report.kills < kills or not done.is_set()) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 2.0) if report.kills < kills else 0.5)
            if report.kills < kills:
                serve.kill()
                report.kills += 1
                serve.start()
        pusher.join(timeout=60)
        settle_deadline = time.monotonic() + 600
        while time.monotonic() < settle_deadline:
            depths = queue_depths(serve.url)
            if depths == (0.0, 0.0):
                break
            time.sleep(0.2)
        else:
            report.problems.append("serve did not settle within 600 s")
        report.starts = serve.starts
        serve.stop()
        _check(report, server.base_url, pushed)
    finally:
        if serve is not None:
            serve.stop()
        server.stop()
        keep = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
        if keep and report.log is not None and report.log.exists():
            target = Path(keep) / f"serve-fault-run-{os.getpid()}-{int(started)}.log"
            target.write_bytes(report.log.read_bytes())
    report.seconds = time.monotonic() - started
    return report


def _check(report: Report, base_url: str, pushed: list[dict]) -> None:
    issues = all_of(base_url, "DetectedIssue")
    mild = [
        i
        for i in issues
        if any(
            c.get("code") == "anc-mild-neutropenia" and c.get("system") == FINDING_SYSTEM
            for c in i["code"]["coding"]
        )
    ]
    identifiers = Counter(i["identifier"][0]["value"] for i in issues)
    report.duplicates = sum(n - 1 for n in identifiers.values() if n > 1)
    # every result gives one mild-neutropenia finding citing it (as forwarded to the EHR)
    observations = all_of(base_url, "Observation")
    by_accession: dict[str, list[str]] = {}
    for o in observations:
        for ident in o.get("identifier") or []:
            if ident.get("system") == ACCESSION_SYSTEM:
                by_accession.setdefault(ident["value"], []).append(f"Observation/{o['id']}")
    expected = {r["identifier"][0]["value"] for r in pushed}
    report.forwarded_once = sum(1 for a in expected if len(by_accession.get(a, [])) == 1)
    report.forwarded_duplicates = sum(len(v) - 1 for a, v in by_accession.items() if len(v) > 1)
    cited = Counter(
        d["reference"] for i in mild for e in i.get("evidence") or [] for d in e.get("detail") or []
    )
    report.expected_issues = len(expected)
    report.issues_found = len(mild)
    refs = {a: v[0] for a, v in by_accession.items() if v}
    report.missing = sum(1 for a in expected if cited.get(refs.get(a, ""), 0) == 0)
    if report.duplicates:
        report.problems.append(f"{report.duplicates} duplicated DetectedIssues")
    if report.missing:
        report.problems.append(f"{report.missing} results without their DetectedIssue")
    if report.forwarded_duplicates or report.forwarded_once != len(expected):
        report.problems.append("results not on the EHR exactly once")
    if report.issues_found != report.expected_issues:
        report.problems.append(
            f"{report.issues_found} mild-neutropenia DetectedIssues for {len(expected)} results"
        )
    if report.acknowledged != len(pushed):
        report.problems.append(f"{report.acknowledged} of {len(pushed)} acknowledged")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed_value = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    with tempfile.TemporaryDirectory(prefix="fault-run-") as folder:
        report = run(
            args.results, args.kills, args.patients, random.Random(seed_value), Path(folder)
        )
        print(f"seed {seed_value}: {report.summary()}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
