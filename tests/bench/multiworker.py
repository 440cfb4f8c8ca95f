"""Benchmark (not a test): several workers on one PostgreSQL state, and PostgreSQL itself.

    python -m tests.bench.multiworker [--only pgbench,store,serve] [--workers 1,2,4]
                                      [--seconds 8] [--results 400] [--patients 40]

Starts its own private PostgreSQL (tests/setup/postgres.py, with pg_stat_statements) and prints:

1. pgbench: single-row INSERT transactions per second (each one a durable commit) with 1, 2, 4
   and 8 clients, and rows per second with 10 rows per transaction: the ceiling of durable
   writes on this machine, the number every other figure is compared with.
2. store: the pipeline's store traffic for one result, run by 1, 2 and 4 worker processes on
   one database with no EHR at all (intake put, durable; then, relaxed as the pipeline's
   workers are: claim the patient; mark done, enqueue the DetectedIssue write, append the
   audit record, keep the patient state, end the lease in one transaction; claim the effect;
   complete it). Results per second, ratio to one worker, statements, commits and WAL fsyncs
   per result (counted by the server: pg_stat_statements, pg_stat_database, pg_stat_wal).
3. serve: 1, 2 and 4 `rems-adapter serve` processes (2 worker and 2 outbox threads each) on
   one PostgreSQL against stock sekmet-fhir: results pushed by 8 client threads, spread across
   the processes, until every DetectedIssue is stored on the EHR; results per second, ratio to
   one process, the database's statements, commits and WAL fsyncs per result, and the CPU
   each part used per result (serve processes, the EHR, PostgreSQL: /proc), which on 2 cores
   bounds the rate.

The machine has 2 cores shared with other jobs; run with `nice -n 10` and read the ratios
(measured in the same run) rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.setup.postgres import PostgresServer, start_postgres

BENCH_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_utility": "on",
}

# ------------------------------------------------------------------ 1. pgbench


@dataclass(frozen=True)
class PgbenchFigure:
    clients: int
    rows_per_transaction: int
    tps: float

    @property
    def rows_per_second(self) -> float:
        return self.tps * self.rows_per_transaction


def pgbench(server: PostgresServer, dsn: str, clients: int, rows: int, seconds: int) -> float:
    """Transactions per second of `rows` single-row INSERTs each (pgbench, custom script)."""
    script = server.root / f"insert-{rows}.sql"
    body = ["\\set k random(1, 1000000000)", "BEGIN;"]
    body += ["INSERT INTO bench_writes (k, at) VALUES (:k, now());"] * rows
    body += ["COMMIT;"]
    script.write_text("\n".join(body) + "\n")
    script.chmod(0o644)
    done = subprocess.run(
        [
            str(server.bin_dir / "pgbench"),
            "--no-vacuum",
            "--client",
            str(clients),
            "--jobs",
            str(clients),
            "--time",
            str(seconds),
            "--file",
            str(script),
            dsn,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


def pgbench_figures(server: PostgresServer, seconds: int) -> list[PgbenchFigure]:
    dsn = server.create_database("pgbench")
    server.execute(
        "CREATE TABLE bench_writes (id BIGSERIAL PRIMARY KEY, k BIGINT, at TIMESTAMPTZ)",
        database=dsn.rsplit("/", 1)[1],
    )
    figures = []
    for clients in (1, 2, 4, 8):
        figures.append(PgbenchFigure(clients, 1, pgbench(server, dsn, clients, 1, seconds)))
    figures.append(PgbenchFigure(4, 10, pgbench(server, dsn, 4, 10, seconds)))
    server.drop_database(dsn)
    return figures


# ------------------------------------------------------------------ 2. the store alone

T_BASE = 1_800_000_000.0


def _store_worker(
    dsn: str, index: int, workers: int, results: int, patients: int, out: Any
) -> None:
    """One worker process: intake its share of the results, then decide and perform until
    the whole store is drained (claims and effects of every process's results)."""
    from adapter.store import AuditRecord, NewEffect, NewItem
    from adapter.store.postgres import PostgresStore

    intake = PostgresStore(dsn, pool_max=1)  # durable: a 202 is answered after it
    store = PostgresStore(dsn, pool_max=2)  # deciding and performing: a lost commit is redone
    store.relax_durability_for_this_thread()
    holder = f"bench-{index}"
    clock = time.time
    mine = [n for n in range(results) if n % workers == index]
    decided = performed = 0
    deadline = time.monotonic() + 600
    # intake and work interleaved, as a serve process does: a push, then whatever is due
    pending = list(mine)
    while time.monotonic() < deadline:
        if pending:
            n = pending.pop(0)
            patient = f"Patient/p{n % patients}"
            body = f'{{"resourceType":"Observation","id":"o{n}"}}'
            intake.put_items(
                [NewItem(f"Observation/o{n}/_history/1", "push", patient, body, clock())]
            )
        claim = store.claim_patient(holder, clock(), 60)
        if claim is not None:
            with store.transaction():
                store.complete_items(claim, [i.id for i in claim.items], clock())
                store.put_effects(
                    [
                        NewEffect(
                            f"issue:{i.key}", "fhir-write", claim.patient, "{}", i.received_at
                        )
                        for i in claim.items
                    ],
                    clock(),
                )
                store.append_audit(
                    AuditRecord(claim.patient, clock(), "local", "0", "0", (), ("bench",))
                )
                store.set_patient_state(claim.patient, {"hydrated": True}, clock())
                store.release_lease(claim.lease, holder)
            decided += len(claim.items)
        effects = store.claim_effects(holder, clock(), 60, 10)
        for effect in effects:
            store.complete_effect(effect.id, clock(), '{"id":"x"}')
        performed += len(effects)
        if not pending and claim is None and not effects:
            if store.inbox_depth() == 0 and store.outbox_depth() == 0:
                break
    out.put((index, decided, performed, store.round_trips + intake.round_trips))
    store.close()
    intake.close()


@dataclass(frozen=True)
class StoreFigure:
    workers: int
    results: int
    seconds: float
    statements: int
    commits: int
    syncs: int
    #: counted by the stores themselves: statements, BEGIN/COMMIT and connection checks
    round_trips: int = 0

    @property
    def per_second(self) -> float:
        return self.results / self.seconds

    @property
    def statements_per_result(self) -> float:
        return self.statements / self.results

    @property
    def commits_per_result(self) -> float:
        return self.commits / self.results


def server_counts(server: PostgresServer, dsn: str) -> tuple[int, int, int]:
    """(statements executed, transactions committed) in `dsn`'s database, and WAL flushes to
    disk (fsyncs, the whole server: one per durable commit or group of commits), by the server."""
    database = dsn.rsplit("/", 1)[1]
    [(statements,)] = server.execute(
        "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s "
        f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{database}'"
    )
    server.execute("SELECT pg_stat_force_next_flush()", database=database)
    [(commits,)] = server.execute(
        f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'"
    )
    [(syncs,)] = server.execute("SELECT wal_sync FROM pg_stat_wal")
    return int(str(statements)), int(str(commits)), int(str(syncs))


def store_figure(server: PostgresServer, workers: int, results: int, patients: int) -> StoreFigure:
    from adapter.store.postgres import PostgresStore

    dsn = server.create_database("store")
    PostgresStore(dsn).close()  # migrations applied before the clock starts
    server.execute("SELECT pg_stat_statements_reset()")
    before = server_counts(server, dsn)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [
        context.Process(target=_store_worker, args=(dsn, n, workers, results, patients, out))
        for n in range(workers)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    reports = [out.get(timeout=900) for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    after = server_counts(server, dsn)
    decided = sum(r[1] for r in reports)
    performed = sum(r[2] for r in reports)
    if decided != results or performed != results:
        raise RuntimeError(f"{workers} workers: decided {decided}, performed {performed}")
    server.drop_database(dsn)
    return StoreFigure(
        workers,
        results,
        seconds,
        *(after[n] - before[n] for n in range(3)),
        round_trips=sum(r[3] for r in reports),
    )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each live process has used so far (/proc/PID/stat)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples (a process born in between counts whole)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# ------------------------------------------------------------------ 3. serve processes


@dataclass(frozen=True)
class ServeFigure:
    workers: int
    results: int
    seconds: float
    statements: int
    commits: int
    syncs: int
    issues: int
    #: CPU seconds used during the run by the serve processes, the EHR and PostgreSQL
    cpu_serve: float = 0.0
    cpu_ehr: float = 0.0
    cpu_postgres: float = 0.0

    @property
    def per_second(self) -> float:
        return self.results / self.seconds

    def cpu_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.results


def serve_figure(
    server: PostgresServer,
    ehr: Any,
    folder: Any,
    workers: int,
    results: int,
    patients: int,
) -> ServeFigure:
    """`workers` serve processes on a new database; `results` pushed by 8 client threads
    spread across them; the clock runs from the first push until the shared inbox and outbox
    are empty (every DetectedIssue stored on the EHR)."""
    import random
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from adapter.store.postgres import PostgresStore
    from tests.multiworker.kit import Cluster, plan
    from tests.serve.kit import recent_history, seed

    ehr_url = ehr.base_url
    dsn = server.create_database("serve")
    ids = seed(ehr_url, [recent_history([2100, 2000, 1900]) for _ in range(patients)])
    people = sorted(v for v in ids.values() if v.startswith("Patient/"))
    pushed = plan(people, max(1, results // patients), random.Random(workers))[:results]
    group = Cluster(ehr_url, dsn, Path(folder), env={"REMS_ADAPTER_LOG_LEVEL": "WARNING"})
    poller = PostgresStore(dsn, pool_max=1)
    try:
        group.start(workers)
        server.execute("SELECT pg_stat_statements_reset()")
        before = server_counts(server, dsn)
        postmaster = int(
            (server.data_dir / "postmaster.pid").read_text().split()[0]
            if (server.data_dir / "postmaster.pid").exists()
            else 0
        )

        def sample() -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
            serving = [w.process.pid for w in group.workers if w.process is not None]
            return (
                cpu_seconds(serving),
                cpu_seconds([ehr.process.pid]),
                cpu_seconds(children(postmaster)),
            )

        cpu_before = sample()
        polls = 0
        started = time.perf_counter()
        live = group.live()

        def push(n: int) -> None:
            live[n % len(live)].push(pushed[n]).raise_for_status()

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(push, range(len(pushed))))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            polls += 1
            if poller.inbox_depth() == 0 and poller.outbox_depth() == 0:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        cpu_after = sample()
        after = server_counts(server, dsn)
        [(issues,)] = server.execute(
            "SELECT count(*) FROM outbox WHERE kind LIKE '%issue%' AND state = 'done'",
            database=dsn.rsplit("/", 1)[1],
        )
    finally:
        group.stop()
        poller.close()
    server.drop_database(dsn)
    statements = after[0] - before[0] - 2 * polls  # less the benchmark's own depth polls
    return ServeFigure(
        workers,
        len(pushed),
        seconds,
        statements,
        after[1] - before[1] - 2 * polls,
        after[2] - before[2],
        int(str(issues)),
        *(used(cpu_before[n], cpu_after[n]) for n in range(3)),
    )


def serve_figures(
    server: PostgresServer,
    workers: list[int],
    results: int,
    patients: int,
    say: Callable[[str], None],
) -> None:
    import tempfile

    from tests.serve.conftest import start_stock_sekmet

    ehr = start_stock_sekmet()
    try:
        say(
            f"\n== serve: {results} pushed results, {patients} new patients each run, "
            "N serve processes (2 worker + 2 outbox threads each) on one PostgreSQL, stock sekmet"
        )
        base = None
        for count in workers:
            with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
                figure = serve_figure(server, ehr, folder, count, results, patients)
            base = base or figure
            say(
                f"workers {count}  results/s {figure.per_second:>6.1f}"
                f"  x{figure.per_second / base.per_second:.2f} vs 1 worker"
                f"  DB statements/result {figure.statements / figure.results:5.1f}"
                f"  commits/result {figure.commits / figure.results:4.1f}"
                f"  WAL fsyncs/result {figure.syncs / figure.results:4.1f}"
                f"  (DetectedIssue writes performed: {figure.issues})"
            )
            total = figure.cpu_serve + figure.cpu_ehr + figure.cpu_postgres
            say(
                f"           CPU ms/result: serve {figure.cpu_ms(figure.cpu_serve):5.1f}"
                f"  EHR (sekmet) {figure.cpu_ms(figure.cpu_ehr):5.1f}"
                f"  PostgreSQL {figure.cpu_ms(figure.cpu_postgres):5.1f}"
                f"  -> at most {2 * figure.results / total:5.1f} results/s on 2 cores"
            )
    finally:
        ehr.stop()


# ------------------------------------------------------------------ report


def run(
    sections: set[str],
    workers: list[int],
    seconds: int,
    results: int,
    patients: int,
    say: Callable[[str], None] = print,
) -> None:
    server = start_postgres(settings=BENCH_SETTINGS)
    try:
        # created in the postgres database, pg_stat_statements counts every database's
        server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        version = server.execute("SHOW server_version")[0][0]
        say(f"PostgreSQL {version}, private server on 127.0.0.1:{server.port} (fsync on)")
        ceiling = 0.0
        if "pgbench" in sections:
            say("\n== pgbench: durable single-row INSERT transactions")
            for figure in pgbench_figures(server, seconds):
                ceiling = max(ceiling, figure.tps if figure.rows_per_transaction == 1 else 0)
                say(
                    f"clients {figure.clients}  rows/transaction {figure.rows_per_transaction:>2}"
                    f"  transactions/s {figure.tps:>8.0f}  rows/s {figure.rows_per_second:>8.0f}"
                )
        if "store" in sections:
            say(f"\n== store only: {results} results, {patients} patients, N worker processes")
            base = None
            for count in workers:
                figure = store_figure(server, count, results, patients)
                base = base or figure
                syncs_per_s = figure.syncs / figure.seconds
                share = f" ({syncs_per_s / ceiling:.0%} of pgbench's best tps)" if ceiling else ""
                say(
                    f"workers {count}  results/s {figure.per_second:>7.1f}"
                    f"  x{figure.per_second / base.per_second:.2f} vs 1 worker"
                    f"  round trips/result {figure.round_trips / figure.results:5.1f}"
                    f"  statements/result {figure.statements_per_result:5.1f}"
                    f"  commits/result {figure.commits_per_result:4.1f}"
                    f"  WAL fsyncs/result {figure.syncs / figure.results:4.1f}"
                    f"  fsyncs/s {syncs_per_s:6.0f}{share}"
                )
        if "serve" in sections:
            serve_figures(server, workers, results, patients, say)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="pgbench,store,serve")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--results", type=int, default=400)
    parser.add_argument("--patients", type=int, default=40)
    args = parser.parse_args(argv)
    run(
        set(args.only.split(",")),
        [int(n) for n in args.workers.split(",")],
        args.seconds,
        args.results,
        args.patients,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
