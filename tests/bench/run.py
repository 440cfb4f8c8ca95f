"""Benchmarks of batch mode at scale: ``python -m tests.bench.run [--sizes N,N,...] [--quick]``.

For each size (in Observations) it writes a seeded export with :mod:`tests.bench.workload`, then
measures, each in a fresh process (:mod:`tests.bench.measure`), on that same input:

- the floor: read and orjson-parse every NDJSON line, nothing else;
- batch mode: ``run_batch`` (what ``rems-adapter run`` does) end to end, outputs written;
- the naive baseline: each resource of a sample validated with its ``fhir.resources.R4B`` model;
- the core alone: ``evaluate_patient`` over every patient, per ANC assessed.

Every figure is printed next to the baseline it is compared with, from the same run; nothing here
asserts a time. Peak memory is the measuring process's resident-set high-water mark (``VmHWM``
in /proc/self/status; it includes the interpreter and imports; the "ready" figure is the mark
before the measured part started). Not ``ru_maxrss``: on Linux it inherits the parent's mark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.workload import AS_OF_TEXT, generate

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
THROUGHPUT_TARGET = 0.5  # batch speed / floor speed
NAIVE_EXPECTED = 10.0  # naive time per resource / batch time per resource
SCALING_TOLERANCE = 0.20  # time per Observation within 20% of the smallest size
MEMORY_LIMIT_MB = 300
#: One measurement may not run longer than this (a bounded loop, even at 1M Observations).
MEASURE_TIMEOUT_S = 1800


@dataclass
class SizeResult:
    target: int
    observations: int
    resources: int
    patients: int
    anc_related: int
    megabytes: float
    generate_s: float
    floor: dict[str, Any]
    batch: dict[str, Any]
    naive: dict[str, Any]
    core: dict[str, Any]
    stages: dict[str, Any]

    @property
    def ratio(self) -> float:
        return float(self.floor["seconds"]) / float(self.batch["seconds"])

    @property
    def us_per_observation(self) -> float:
        return 1e6 * float(self.batch["seconds"]) / self.observations

    @property
    def peak_mb(self) -> float:
        return float(self.batch["rss_peak_kib"]) / 1024

    @property
    def naive_ratio(self) -> float:
        batch_per_resource = float(self.batch["seconds"]) / self.resources
        return self.naive_us / (1e6 * batch_per_resource)

    @property
    def naive_us(self) -> float:
        return 1e6 * float(self.naive["seconds"]) / max(int(self.naive["items"]), 1)


def measure(mode: str, *args: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its last stdout line is the JSON figures."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.measure", mode, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=MEASURE_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measure {mode} failed ({completed.returncode}): {completed.stderr}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def best_of(repeat: int, mode: str, *args: str) -> dict[str, Any]:
    """The fastest of ``repeat`` runs (least disturbed by the machine); the highest memory mark."""
    runs = [measure(mode, *args) for _ in range(repeat)]
    best = min(runs, key=lambda figures: float(figures["seconds"]))
    best["rss_peak_kib"] = max(int(figures["rss_peak_kib"]) for figures in runs)
    best["runs"] = repeat
    return best


def bench_size(target: int, work: Path, seed: int, repeat: int, naive_limit: int) -> SizeResult:
    export = work / f"export-{target}"
    began = time.perf_counter()
    stats = generate(export, observations=target, seed=seed)
    generate_s = time.perf_counter() - began
    floor = best_of(repeat, "floor", str(export))
    batch = best_of(repeat, "batch", str(export))
    stride = max(1, stats.resources // naive_limit)
    naive = measure("naive", str(export), str(stride), str(naive_limit))
    core = measure("core", str(export))
    stages = best_of(repeat, "stages", str(export))
    result = SizeResult(
        target=target,
        observations=stats.observations,
        resources=stats.resources,
        patients=stats.patients,
        anc_related=stats.anc_related,
        megabytes=stats.bytes_written / 1e6,
        generate_s=generate_s,
        floor=floor,
        batch=batch,
        naive=naive,
        core=core,
        stages=stages,
    )
    for path in export.iterdir():
        path.unlink()
    export.rmdir()
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs{memory}; Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    lines = [line, "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def _stage_row(r: SizeResult) -> tuple[str, ...]:
    per = 1e6 / r.resources
    parse = float(r.floor["seconds"])
    sources = float(r.stages["sources_s"])
    collect = float(r.stages["collect_s"])
    total = float(r.batch["seconds"])
    return (
        f"{r.observations:,}",
        f"{per * parse:.2f}",
        f"{per * (sources - parse):.2f}",
        f"{per * (collect - sources):.2f}",
        f"{per * (total - collect):.2f}",
        f"{per * total:.2f}",
    )


def report(results: Sequence[SizeResult], seed: int, repeat: int) -> str:
    first = results[0]
    out = [
        f"Machine: {machine()}",
        f"Workload: seed {seed}, evaluated as of {AS_OF_TEXT}; floor and batch best of {repeat} "
        "run(s), each measurement in a fresh process; memory = peak resident set (VmHWM) of "
        "that process.",
        "",
        "Throughput (batch = adapter.batch.run.run_batch end to end; floor = read + orjson.loads "
        "of every line)",
    ]
    out += _table(
        (
            "Observations",
            "resources",
            "patients",
            "MB",
            "floor s",
            "batch s",
            "floor obs/s",
            "batch obs/s",
            "batch/floor",
        ),
        [
            (
                f"{r.observations:,}",
                f"{r.resources:,}",
                f"{r.patients:,}",
                f"{r.megabytes:,.0f}",
                f"{r.floor['seconds']:.2f}",
                f"{r.batch['seconds']:.2f}",
                f"{r.observations / r.floor['seconds']:,.0f}",
                f"{r.observations / r.batch['seconds']:,.0f}",
                f"{r.ratio:.2f}x",
            )
            for r in results
        ],
    )
    out += ["", "Scaling (batch; relative to the smallest size in this run)"]
    out += _table(
        (
            "Observations",
            "us/obs",
            "vs first",
            "peak MB",
            "ready MB",
            "floor peak MB",
            "patients",
            "decisions",
            "issues",
        ),
        [
            (
                f"{r.observations:,}",
                f"{r.us_per_observation:.2f}",
                f"{r.us_per_observation / first.us_per_observation:.2f}x",
                f"{r.peak_mb:.0f}",
                f"{r.batch['rss_ready_kib'] / 1024:.0f}",
                f"{r.floor['rss_peak_kib'] / 1024:.0f}",
                f"{r.batch['patients']:,}",
                f"{r.batch['decisions']:,}",
                f"{r.batch['issues']:,}",
            )
            for r in results
        ],
    )
    out += [
        "",
        "Naive baseline (a sample of the same export, each resource orjson-parsed and validated "
        "with its fhir.resources.R4B model)",
    ]
    out += _table(
        ("Observations", "sampled", "naive us/res", "batch us/res", "naive/batch"),
        [
            (
                f"{r.observations:,}",
                f"{r.naive['items']:,}",
                f"{r.naive_us:.1f}",
                f"{1e6 * r.batch['seconds'] / r.resources:.2f}",
                f"{r.naive_ratio:.1f}x",
            )
            for r in results
        ],
    )
    out += [
        "",
        "Core (evaluate_patient over every patient of the export, inputs already collected)",
    ]
    out += _table(
        ("Observations", "patients", "ANCs assessed", "core s", "us/ANC", "us/patient"),
        [
            (
                f"{r.observations:,}",
                f"{r.core['patients']:,}",
                f"{r.core['items']:,}",
                f"{r.core['seconds']:.3f}",
                f"{1e6 * r.core['seconds'] / max(r.core['items'], 1):.1f}",
                f"{1e6 * r.core['seconds'] / max(r.core['patients'], 1):.0f}",
            )
            for r in results
        ],
    )
    out += [
        "",
        "Where batch time goes (us per resource; stages measured cumulatively, best of each: "
        "parse = floor, read = source reader minus floor, collect = collector minus source "
        "reader, decide+write = batch minus collector)",
    ]
    out += _table(
        ("Observations", "parse", "read", "collect", "decide+write", "batch"),
        [_stage_row(r) for r in results],
    )
    worst_ratio = min(r.ratio for r in results)
    worst_naive = min(r.naive_ratio for r in results)
    drift = max(abs(r.us_per_observation / first.us_per_observation - 1) for r in results)
    peak = max(r.peak_mb for r in results)
    out += [
        "",
        "Targets (ratios against baselines from this run)",
        f"  throughput: lowest batch/floor {worst_ratio:.2f}x (target >= {THROUGHPUT_TARGET}x): "
        f"{_verdict(worst_ratio >= THROUGHPUT_TARGET)}",
        f"  naive: lowest naive/batch per resource {worst_naive:.1f}x (expected > "
        f"{NAIVE_EXPECTED:.0f}x): {_verdict(worst_naive > NAIVE_EXPECTED)}",
        f"  scaling: time per Observation varies by at most {100 * drift:.0f}% across sizes "
        f"(target within {100 * SCALING_TOLERANCE:.0f}%): {_verdict(drift <= SCALING_TOLERANCE)}",
        f"  memory: highest batch peak {peak:.0f} MB (target under {MEMORY_LIMIT_MB} MB at 1M): "
        f"{_verdict(peak < MEMORY_LIMIT_MB)}",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description="Benchmarks of batch mode at scale."
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated sizes in Observations (default 10000,100000,1000000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="10000 Observations only, fewer repeats"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=None, help="runs per timing (best of)")
    parser.add_argument("--naive-sample", type=int, default=None, help="resources to validate")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    else:
        sizes = [DEFAULT_SIZES[0]] if args.quick else list(DEFAULT_SIZES)
    repeat = args.repeat or (1 if args.quick else 3)
    naive_limit = args.naive_sample or (2_000 if args.quick else 20_000)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rems-bench-", dir=args.work) as scratch:
        results = []
        for size in sizes:
            print(f"... {size:,} Observations", file=sys.stderr, flush=True)
            results.append(bench_size(size, Path(scratch), args.seed, repeat, naive_limit))
    print(report(results, args.seed, repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
