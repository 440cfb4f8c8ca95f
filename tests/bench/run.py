"""Benchmarks of batch mode at scale: ``python -m tests.bench.run [--sizes N,N,...] [--quick]``.

For each size (in Observations) it writes a seeded export with :mod:`tests.bench.workload` (or
reuses one kept under ``--exports DIR``), then measures, each in a fresh process
(:mod:`tests.bench.measure`), on that same input:

- the floor: read and orjson-parse every NDJSON line in one process, nothing else;
- batch mode: ``run_batch`` as ``rems-adapter run`` calls it (prefilter on, worker processes on
  every CPU), outputs written; the same with ``--strict``; the same on one process (up to 1M);
- the naive baseline: each resource of a sample validated with its ``fhir.resources.R4B`` model;
- the core alone: ``evaluate_patient`` over every patient, per ANC assessed (up to 1M: it holds
  the whole export's kept results in memory).

``--bundle-mb M`` also writes one Bundle of about M MB (entries from the largest export) and
measures batch mode on it (streamed) next to merely loading it whole with orjson.

Every measurement's input is read once, untimed, just before it (`warm`): on this machine idle
file pages are paged out after a minute, and no measurement should find its input on disk while
its baseline found it in memory. Every figure is printed next to the baseline it is compared
with, from the same run; nothing here asserts a time. Peak memory is the measuring process's
resident-set high-water mark (``VmHWM`` in /proc/self/status; it includes the interpreter and
imports; the "ready" figure is the mark before the measured part started). Not ``ru_maxrss``:
on Linux it inherits the parent's mark.
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
THROUGHPUT_TARGET = 1.5  # batch speed / floor speed, at 1M Observations and above
THROUGHPUT_FROM = 1_000_000
#: Sizes above this are measured once (not best of), without the core and stage breakdowns.
DETAIL_LIMIT = 1_000_000
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
    strict: dict[str, Any]
    single: dict[str, Any] | None
    naive: dict[str, Any]
    core: dict[str, Any] | None
    stages: dict[str, Any] | None

    @property
    def ratio(self) -> float:
        return float(self.floor["seconds"]) / float(self.batch["seconds"])

    @property
    def strict_ratio(self) -> float:
        return float(self.floor["seconds"]) / float(self.strict["seconds"])

    @property
    def workers_mb(self) -> float:
        return float(self.batch["children_peak_kib"]) / 1024

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


def warm(path: Path) -> None:
    """Read the input once, untimed, so that every measurement starts with it in the page
    cache: this machine's kernel pages out file pages idle for a minute (DAMON `pageout`, at up
    to 128 MB/s), and a measurement that found part of its input on disk (~400 MB/s) would be
    judged against one that did not. The 10M export (11 GB) is read whole each time; its end
    may still be cold again by the time a measurement reaches it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb", buffering=0) as handle:
            while handle.read(8 * 1024 * 1024):
                pass


def measure(mode: str, *args: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter, its input warmed first; its last stdout line is
    the JSON figures."""
    if args and Path(args[0]).exists():
        warm(Path(args[0]))
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
    return _best([measure(mode, *args) for _ in range(repeat)])


def in_turn(repeat: int, setups: Sequence[tuple[str, ...]]) -> list[dict[str, Any]]:
    """Each setup (a mode and its arguments) measured `repeat` times, in turn (A B C A B C...),
    the best of each: a drift of the machine's speed then touches every setup alike, so the
    ratios between them hold better than between setups measured one after the other."""
    runs: list[list[dict[str, Any]]] = [[] for _ in setups]
    for _ in range(repeat):
        for index, (mode, *args) in enumerate(setups):
            runs[index].append(measure(mode, *args))
    return [_best(figures) for figures in runs]


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    repeat = len(runs)
    best = min(runs, key=lambda figures: float(figures["seconds"]))
    for mark in ("rss_peak_kib", "children_peak_kib"):
        if mark in best:
            best[mark] = max(int(figures[mark]) for figures in runs)
    best["runs"] = repeat
    return best


def _export(target: int, work: Path, seed: int, keep: Path | None) -> tuple[Path, Any, float]:
    """The export of `target` Observations: generated in `work`, or reused from / kept in
    `keep` (generating 10M Observations takes ~11 GB and ~10 minutes)."""
    folder = (keep or work) / f"export-{target}-seed{seed}"
    saved = folder.with_suffix(".stats.json")
    if keep is not None and saved.exists():
        return folder, json.loads(saved.read_text()), 0.0
    began = time.perf_counter()
    stats = generate(folder, observations=target, seed=seed)
    figures = {
        "observations": stats.observations,
        "resources": stats.resources,
        "patients": stats.patients,
        "anc_related": stats.anc_related,
        "bytes_written": stats.bytes_written,
    }
    if keep is not None:
        saved.write_text(json.dumps(figures))
    return folder, figures, time.perf_counter() - began


def bench_size(
    target: int,
    work: Path,
    seed: int,
    repeat: int,
    naive_limit: int,
    keep: Path | None = None,
    repeat_large: int = 1,
) -> SizeResult:
    export, stats, generate_s = _export(target, work, seed, keep)
    detail = target <= DETAIL_LIMIT
    times = repeat if detail else repeat_large
    setups: list[tuple[str, ...]] = [
        ("floor", str(export)),
        ("batch", str(export)),
        ("batch", str(export), "strict"),
    ]
    if detail:
        setups.append(("batch", str(export), "1"))
    measured = in_turn(times, setups)
    floor, batch, strict = measured[:3]
    single = measured[3] if detail else None
    stride = max(1, stats["resources"] // naive_limit)
    naive = measure("naive", str(export), str(stride), str(naive_limit))
    core = measure("core", str(export)) if detail else None
    stages = best_of(repeat, "stages", str(export)) if detail else None
    result = SizeResult(
        target=target,
        observations=stats["observations"],
        resources=stats["resources"],
        patients=stats["patients"],
        anc_related=stats["anc_related"],
        megabytes=stats["bytes_written"] / 1e6,
        generate_s=generate_s,
        floor=floor,
        batch=batch,
        strict=strict,
        single=single,
        naive=naive,
        core=core,
        stages=stages,
    )
    if keep is None:
        for path in export.iterdir():
            path.unlink()
        export.rmdir()
    return result


@dataclass
class BundleResult:
    megabytes: float
    entries: int
    load: dict[str, Any]
    batch: dict[str, Any]


def write_bundle(export: Path, path: Path, megabytes: int) -> int:
    """One collection Bundle of about `megabytes` MB, entries from the export's files in turn
    (written streaming). Returns the number of entries."""
    limit = megabytes * 1_000_000
    files = sorted(export.glob("*.ndjson"), key=lambda p: p.stat().st_size)
    written = entries = 0
    with path.open("wb") as out:
        out.write(b'{"resourceType":"Bundle","type":"collection","entry":[\n')
        for source in files:
            with source.open("rb") as handle:
                for line in handle:
                    if written >= limit:
                        break
                    line = line.strip()
                    if not line:
                        continue
                    chunk = (b",\n" if entries else b"") + b'{"resource":' + line + b"}"
                    out.write(chunk)
                    written += len(chunk)
                    entries += 1
        out.write(b"\n]}\n")
    return entries


def bench_bundle(export: Path, work: Path, megabytes: int) -> BundleResult:
    path = work / f"bundle-{megabytes}mb.json"
    entries = write_bundle(export, path, megabytes)
    try:
        load = measure("load", str(path))
        batch = measure("batch", str(path))
        return BundleResult(path.stat().st_size / 1e6, entries, load, batch)
    finally:
        path.unlink()


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
    assert r.stages is not None
    per = 1e6 / r.resources
    parse = float(r.floor["seconds"])
    sources = float(r.stages["sources_s"])
    collect = float(r.stages["collect_s"])
    total = float(r.single["seconds"]) if r.single is not None else float(r.batch["seconds"])
    return (
        f"{r.observations:,}",
        f"{per * parse:.2f}",
        f"{per * (sources - parse):.2f}",
        f"{per * (collect - sources):.2f}",
        f"{per * (total - collect):.2f}",
        f"{per * total:.2f}",
    )


def _mb(figures: dict[str, Any], mark: str = "rss_peak_kib") -> str:
    return f"{float(figures[mark]) / 1024:.0f}"


def report(
    results: Sequence[SizeResult],
    seed: int,
    repeat: int,
    bundle: BundleResult | None = None,
    repeat_large: int = 1,
) -> str:
    first = results[0]
    detailed = [r for r in results if r.core is not None]
    out = [
        f"Machine: {machine()}",
        f"Workload: seed {seed}, evaluated as of {AS_OF_TEXT}; best of {repeat} run(s) up to "
        f"{DETAIL_LIMIT:,} Observations, of {repeat_large} above (floor, batch, strict and 1 job "
        "measured in turn, round after round); each measurement in a fresh process; "
        "memory = peak resident set (VmHWM) of that process, and of its largest worker.",
        "",
        "Throughput (floor = read + orjson.loads of every line, one process; batch = "
        "adapter.batch.run.run_batch as `rems-adapter run` calls it, on every CPU; strict = "
        "the same with --strict; 1 job = prefilter on one process; CPU = user + system seconds of "
        "the measured part, workers included)",
    ]
    out += _table(
        (
            "Observations",
            "resources",
            "MB",
            "floor s",
            "batch s",
            "batch/floor",
            "strict s",
            "strict/floor",
            "strict cost",
            "1 job s",
            "1 job/floor",
            "floor CPU s",
            "batch CPU s",
            "CPU floor/batch",
        ),
        [
            (
                f"{r.observations:,}",
                f"{r.resources:,}",
                f"{r.megabytes:,.0f}",
                f"{r.floor['seconds']:.2f}",
                f"{r.batch['seconds']:.2f}",
                f"{r.ratio:.2f}x",
                f"{r.strict['seconds']:.2f}",
                f"{r.strict_ratio:.2f}x",
                f"{r.strict['seconds'] / r.batch['seconds']:.2f}x",
                f"{r.single['seconds']:.2f}" if r.single else "-",
                f"{r.floor['seconds'] / r.single['seconds']:.2f}x" if r.single else "-",
                f"{r.floor['cpu_s']:.2f}",
                f"{r.batch['cpu_s']:.2f}",
                f"{r.floor['cpu_s'] / r.batch['cpu_s']:.2f}x",
            )
            for r in results
        ],
    )
    out += [
        "",
        "Scaling and memory (batch; time relative to the smallest size in this run; peak MB of "
        "the main process, of its largest worker, and of --strict's)",
    ]
    out += _table(
        (
            "Observations",
            "us/obs",
            "vs first",
            "peak MB",
            "worker MB",
            "strict MB",
            "strict worker MB",
            "floor MB",
            "skipped",
            "on clozapine",
            "decisions",
            "issues",
        ),
        [
            (
                f"{r.observations:,}",
                f"{r.us_per_observation:.2f}",
                f"{r.us_per_observation / first.us_per_observation:.2f}x",
                _mb(r.batch),
                _mb(r.batch, "children_peak_kib"),
                _mb(r.strict),
                _mb(r.strict, "children_peak_kib"),
                _mb(r.floor),
                f"{r.batch['skipped'] / r.resources:.0%}",
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
        "with its fhir.resources.R4B model; batch = the strict run, per resource)",
    ]
    out += _table(
        ("Observations", "sampled", "naive us/res", "strict us/res", "naive/strict"),
        [
            (
                f"{r.observations:,}",
                f"{r.naive['items']:,}",
                f"{r.naive_us:.1f}",
                f"{1e6 * r.strict['seconds'] / r.resources:.2f}",
                f"{r.naive_us / (1e6 * r.strict['seconds'] / r.resources):.1f}x",
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
            for r in detailed
            if r.core is not None
        ],
    )
    out += [
        "",
        "Where time goes on one process with --strict semantics for parse (us per resource; "
        "parse = floor, read = source reader minus floor, collect = collector minus source "
        "reader, rest = 1-job batch (prefilter) minus collector: negative when skipping saves "
        "more than deciding and writing cost)",
    ]
    out += _table(
        ("Observations", "parse", "read", "collect", "rest", "1 job"),
        [_stage_row(r) for r in detailed],
    )
    if bundle is not None:
        out += [
            "",
            "One large Bundle (streamed by batch mode; load = orjson.loads of the whole file, "
            "how it was read before)",
        ]
        out += _table(
            ("Bundle MB", "entries", "load s", "load peak MB", "batch s", "batch peak MB"),
            [
                (
                    f"{bundle.megabytes:,.0f}",
                    f"{bundle.entries:,}",
                    f"{bundle.load['seconds']:.1f}",
                    _mb(bundle.load),
                    f"{bundle.batch['seconds']:.1f}",
                    _mb(bundle.batch),
                )
            ],
        )
    large = [r for r in results if r.observations >= THROUGHPUT_FROM] or list(results)
    worst_ratio = min(r.ratio for r in large)
    worst_naive = min(r.naive_us / (1e6 * r.strict["seconds"] / r.resources) for r in results)
    drift = max(abs(r.us_per_observation / first.us_per_observation - 1) for r in results)
    # The floor's own drift across sizes: what the machine (and the page cache) moved by.
    floor_us = [float(r.floor["seconds"]) / r.observations for r in results]
    floor_drift = max(abs(value / floor_us[0] - 1) for value in floor_us)
    peak = max(max(r.peak_mb, r.workers_mb) for r in results)
    largest = max(results, key=lambda r: r.observations)
    strict_cost = max(r.strict["seconds"] / r.batch["seconds"] for r in results)
    out += [
        "",
        "Targets (ratios against baselines from this run)",
        f"  throughput: lowest batch/floor from {THROUGHPUT_FROM:,} Observations "
        f"{worst_ratio:.2f}x (target >= {THROUGHPUT_TARGET}x): "
        f"{_verdict(worst_ratio >= THROUGHPUT_TARGET)}",
        f"  naive: lowest naive/strict per resource {worst_naive:.1f}x (expected > "
        f"{NAIVE_EXPECTED:.0f}x): {_verdict(worst_naive > NAIVE_EXPECTED)}",
        f"  scaling: time per Observation varies by at most {100 * drift:.0f}% across sizes "
        f"(target within {100 * SCALING_TOLERANCE:.0f}%): {_verdict(drift <= SCALING_TOLERANCE)}"
        f"; the floor's own varies by {100 * floor_drift:.0f}%",
        f"  memory: highest peak of one process {peak:.0f} MB, at "
        f"{largest.observations:,} Observations main {largest.peak_mb:.0f} + largest worker "
        f"{largest.workers_mb:.0f} MB (target under {MEMORY_LIMIT_MB} MB): "
        f"{_verdict(peak < MEMORY_LIMIT_MB)}",
        f"  strict: --strict takes at most {strict_cost:.2f}x the default's time (reported)",
    ]
    if bundle is not None:
        bundle_peak = float(bundle.batch["rss_peak_kib"]) / 1024
        out.append(
            f"  bundle: {bundle.megabytes:,.0f} MB Bundle, batch peak {bundle_peak:.0f} MB "
            f"(target under {MEMORY_LIMIT_MB} MB): {_verdict(bundle_peak < MEMORY_LIMIT_MB)}"
        )
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
    parser.add_argument(
        "--repeat-large",
        type=int,
        default=1,
        help=f"runs per timing above {DETAIL_LIMIT:,} Observations (default 1)",
    )
    parser.add_argument("--naive-sample", type=int, default=None, help="resources to validate")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument(
        "--exports",
        type=Path,
        default=None,
        help="keep the generated exports here and reuse them in later runs (delete when done)",
    )
    parser.add_argument(
        "--bundle-mb", type=int, default=0, help="also measure one Bundle of about this size"
    )
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    else:
        sizes = [DEFAULT_SIZES[0]] if args.quick else list(DEFAULT_SIZES)
    if args.exports:
        Path(args.exports).mkdir(parents=True, exist_ok=True)
    repeat = args.repeat or (1 if args.quick else 3)
    naive_limit = args.naive_sample or (2_000 if args.quick else 20_000)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rems-bench-", dir=args.work) as scratch:
        results = []
        for size in sizes:
            print(f"... {size:,} Observations", file=sys.stderr, flush=True)
            results.append(
                bench_size(
                    size,
                    Path(scratch),
                    args.seed,
                    repeat,
                    naive_limit,
                    args.exports,
                    args.repeat_large,
                )
            )
        bundle = None
        if args.bundle_mb:
            print(f"... a {args.bundle_mb} MB Bundle", file=sys.stderr, flush=True)
            source = min(
                (s for s in sizes if s * 1.1 / 1000 > args.bundle_mb * 1.2), default=max(sizes)
            )
            export, _, _ = _export(source, Path(scratch), args.seed, args.exports)
            try:
                bundle = bench_bundle(export, Path(scratch), args.bundle_mb)
            finally:
                if args.exports is None and export.exists():
                    for path in export.iterdir():
                        path.unlink()
                    export.rmdir()
    print(report(results, args.seed, repeat, bundle, args.repeat_large))
    return 0


if __name__ == "__main__":
    sys.exit(main())
