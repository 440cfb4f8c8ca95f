"""MLLP benchmark (not a test): messages per second with ACKs over loopback, and ACK latency.

    python -m tests.mllp.bench [--messages 400] [--connections 1,4,8,16] [--work DIR]

For each number of concurrent connections, each connection sends its messages one after the
other (an MLLP sender waits for each ACK before the next message), every message a distinct
ORU^R01 (a CBC: WBC, ANC, neutrophil %). Two set-ups are measured in the same run:

- baseline: the listener and the HL7 v2 receiver with a store that keeps nothing (parse, map,
  ACK: the cost without durability);
- durable: `serve`'s MLLP source: the SQLite state store (WAL, synchronous=FULL: each commit
  is on disk), the intake, the group commit (several connections' writes in one transaction).

Printed: messages/s, p50/p99/max ACK latency (ms), commits (durable: how many transactions the
group commit needed), and the durable/baseline throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from adapter.hl7v2.oru import Options
from adapter.hl7v2.receive import Receiver
from adapter.mappings_loader import load_hl7v2_tables
from adapter.mllp.client import MllpClient
from adapter.mllp.server import Limits, MllpServer
from adapter.pipeline.intake import Intake
from adapter.pipeline.mllp_source import MllpSettings, MllpSource
from adapter.store import open_store
from tests.hl7v2.kit import AUTHORITY, CODES


def message(connection: int, index: int) -> bytes:
    control = f"B{connection:03d}{index:06d}"
    lines = [
        f"MSH|^~\\&|BENCHLAB|NORTH|REMS|PHARM|20260301090000-0800||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||MRN{connection}-{index % 50}^^^NORTH&{AUTHORITY}&ISO^MR||Doe^Jane||19800101|F",
        f"OBR|1|P{control}^LAB|F{control}^LAB|57021-8^CBC^LN|||20260301083000-0800",
        "OBX|1|NM|6690-2^WBC^LN||4.5|10*3/uL^^UCUM|||||F",
        "OBX|2|NM|751-8^ANC^LN||1.9|10*3/uL^^UCUM|||||F",
        "OBX|3|NM|770-8^Neutrophils %^LN||42|%^^UCUM|||||F",
    ]
    return ("\r".join(lines) + "\r").encode()


def options() -> Options:
    return Options(AUTHORITY, None, ZoneInfo("UTC"), CODES, frozenset({"P"}))


class _Handler:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def on_message(self, payload: bytes) -> bytes | None:
        return self.receiver(payload).ack

    def on_bad_frame(self, reason: str, head: bytes) -> bytes | None:
        return self.receiver.bad_frame(reason, head).ack


def _drive_here(
    address: tuple[str, int], connections: int, messages: int
) -> tuple[float, list[float]]:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(connections + 1)

    def sender(number: int) -> None:
        try:
            with MllpClient(*address, timeout=30) as client:
                barrier.wait()
                for index in range(messages):
                    payload = message(number, index)
                    start = time.perf_counter()
                    ack = client.send(payload)
                    latencies[number].append(time.perf_counter() - start)
                    if b"MSA|AA|" not in ack:
                        raise RuntimeError(f"not AA: {ack[:200]!r}")
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, [value for values in latencies for value in values]


def drive(address: tuple[str, int], connections: int, messages: int) -> tuple[float, list[float]]:
    """The senders run in their own process (as a lab's engine would), so that they do not
    share the listener's interpreter lock."""
    command = [
        sys.executable, "-m", "tests.mllp.bench", "--drive", f"{address[0]}:{address[1]}",
        "--connections", str(connections), "--messages", str(messages),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout)
    return float(result["elapsed"]), [float(value) for value in result["latencies"]]


def _row(label: str, connections: int, elapsed: float, latencies: list[float], extra: str) -> float:
    rate = len(latencies) / elapsed
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{label:9} {connections:5d} {len(latencies):7d} {rate:9.0f} "
        f"{statistics.median(ordered) * 1000:8.2f} {p99 * 1000:8.2f} {ordered[-1] * 1000:8.2f}  "
        f"{extra}",
        flush=True,
    )
    return rate


def run_baseline(connections: int, messages: int) -> float:
    receiver = Receiver(load_hl7v2_tables(), options(), lambda _: None)
    server = MllpServer("127.0.0.1", 0, _Handler(receiver), Limits(max_connections=64)).start()
    try:
        elapsed, latencies = drive(server.address, connections, messages)
    finally:
        server.stop()
    return _row("baseline", connections, elapsed, latencies, "")


def run_durable(connections: int, messages: int, work: Path) -> float:
    path = work / f"bench-{connections}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = open_store(str(path))
    source = MllpSource(
        Intake(store),
        store,
        load_hl7v2_tables(),
        MllpSettings("127.0.0.1", 0, options(), Limits(max_connections=64), match_interval=3600),
    )
    source.start()
    try:
        elapsed, latencies = drive(source.address, connections, messages)
        commits = source.commit.commits
    finally:
        source.stop()
        store.close()
    return _row(
        "durable", connections, elapsed, latencies, f"{commits} commits for {len(latencies)} msgs"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="messages per connection")
    parser.add_argument("--connections", default="1,4,8,16")
    parser.add_argument("--work", type=Path, default=None, help="folder for the state files")
    parser.add_argument("--drive", default=None, help=argparse.SUPPRESS)  # the sender process
    args = parser.parse_args(argv)
    if args.drive:
        host, _, port = args.drive.rpartition(":")
        elapsed, latencies = _drive_here((host, int(port)), int(args.connections), args.messages)
        print(json.dumps({"elapsed": elapsed, "latencies": latencies}))
        return
    counts = [int(value) for value in args.connections.split(",")]
    with tempfile.TemporaryDirectory(dir=args.work) as folder:
        print(
            f"{'setup':9} {'conns':>5} {'msgs':>7} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8}"
        )
        runners: list[tuple[int, Callable[[], float], Callable[[], float]]] = [
            (
                count,
                lambda count=count: run_baseline(count, args.messages),
                lambda count=count: run_durable(count, args.messages, Path(folder)),
            )
            for count in counts
        ]
        for count, baseline, durable in runners:
            base = baseline()
            kept = durable()
            print(f"{'':9} {count:5d} durable/baseline throughput {kept / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
