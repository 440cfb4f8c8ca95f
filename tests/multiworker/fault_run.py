"""Fault injection on PostgreSQL with several workers (issue 14; issue 11's run, scaled out).

    python -m tests.multiworker.fault_run [--results 1000] [--kills 20] [--workers 2]
                                          [--patients 50] [--seed 14]

Starts a private PostgreSQL and stock sekmet-fhir on 127.0.0.1, seeds patients, starts
`--workers` serve processes on one PostgreSQL state and streams `--results` lab results to them
(spread in turn; a push that finds its worker dead goes to another). Every results/kills
pushes, one worker chosen at random is SIGKILLed and restarted at once (as a supervisor
would), `--kills` times in all. Then it waits until the shared inbox and outbox are empty and
checks the EHR: every non-normal result cited by exactly one final DetectedIssue with its
category's code, no decision identifier twice. Prints the figures; exit 1 on a problem.
tests/multiworker/test_faults.py runs it smaller in the suite.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.multiworker.kit import Cluster, check_every_result_took_effect_once, plan
from tests.serve.kit import recent_history, seed


@dataclass
class FaultReport:
    results: int
    workers: int
    kills: int
    starts: int
    seconds: float
    pushes_refused: int

    def summary(self) -> str:
        return (
            f"{self.results} results pushed to {self.workers} serve processes on one PostgreSQL "
            f"while one was SIGKILLed {self.kills} times ({self.starts} starts in all), "
            f"{self.pushes_refused} pushes sent again to another worker, settled in "
            f"{self.seconds:.1f} s; every non-normal result has exactly one DetectedIssue"
        )


def run(
    ehr_url: str,
    dsn: str,
    folder: Path,
    *,
    results: int,
    kills: int,
    workers: int,
    patients: int,
    rng: random.Random,
) -> FaultReport:
    """Raises AssertionError naming what was lost or doubled."""
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    ids = seed(ehr_url, [recent_history([2100, 2000, 1900]) for _ in range(patients)])
    people = sorted(v for v in ids.values() if v.startswith("Patient/"))
    pushed = plan(people, max(1, results // patients), rng)[:results]
    group = Cluster(ehr_url, dsn, folder)
    try:
        group.start(workers)
        starts = workers
        every = max(1, len(pushed) // max(1, kills))
        done = 0
        for n, result in enumerate(pushed, start=1):
            group.push(result, attempts=600)  # bounded: 30 s with no worker up
            if n % every == 0 and done < kills:
                victim = rng.choice(group.live())
                victim.kill()
                done += 1
                group.restart(victim, wait=False)  # pushes go to the others meanwhile
                starts += 1
        group.settle(timeout_s=600)
        check_every_result_took_effect_once(ehr_url, pushed)
        return FaultReport(
            len(pushed), workers, done, starts, time.monotonic() - started, group.refused
        )
    finally:
        group.stop()


def main(argv: list[str] | None = None) -> int:
    from tests.serve.conftest import start_stock_sekmet
    from tests.setup.postgres import start_postgres

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    database = start_postgres()
    try:
        ehr = start_stock_sekmet()
        try:
            with tempfile.TemporaryDirectory(prefix="multiworker-faults-") as folder:
                try:
                    report = run(
                        ehr.base_url,
                        database.create_database("faults"),
                        Path(folder),
                        results=args.results,
                        kills=args.kills,
                        workers=args.workers,
                        patients=args.patients,
                        rng=random.Random(args.seed),
                    )
                except AssertionError as problem:
                    print(f"seed {args.seed}: FAILED: {str(problem)[:3000]}", flush=True)
                    return 1
                print(f"seed {args.seed}: {report.summary()}", flush=True)
        finally:
            ehr.stop()
    finally:
        database.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
