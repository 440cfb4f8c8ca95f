"""One measurement in a fresh process: ``python -m tests.bench.measure MODE DIR [...]``.

The harness (``tests.bench.run``) starts this once per measurement so that each peak memory
figure belongs to that measurement alone. It prints one JSON object on its last stdout line:
``seconds`` (wall clock of the measured part only), ``items`` (what was processed) and two
readings of the process's peak resident set (``VmHWM``, KiB): ``rss_ready_kib`` once imports and
reference data are loaded (before the measured part) and ``rss_peak_kib`` at the end.

Modes:
- ``floor DIR``: read every NDJSON line of the export and parse it with orjson, nothing else;
- ``batch DIR OUT``: ``adapter.batch.run.run_batch`` on the export, writing the four outputs;
- ``naive DIR STRIDE LIMIT``: every STRIDE-th resource (at most LIMIT) validated with its
  ``fhir.resources.R4B`` model (orjson parse + ``model_validate``), the naive way to read;
- ``stages DIR``: the source reader alone, then the reader feeding the collector (cumulative);
- ``core DIR``: collect the export (not timed), then time ``evaluate_patient`` over every patient
  (fastest of several passes after a warm-up one).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from tests.bench.workload import AS_OF

#: The core is timed after a warm-up pass, as the fastest of at least CORE_MIN_PASSES passes
#: (more until CORE_MIN_SECONDS in all): the figure least disturbed by the rest of the machine.
CORE_MIN_PASSES = 3
CORE_MIN_SECONDS = 0.5
CORE_MAX_PASSES = 50


def _rss_kib() -> int:
    """This process's peak resident set, KiB: ``VmHWM`` from /proc/self/status.

    ``ru_maxrss`` is not used on Linux: it carries over the parent's high-water mark across
    fork+exec, so a child started by a large harness would report the harness's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def _files(folder: Path) -> list[Path]:
    from adapter.batch.sources import expand

    return expand([str(folder)])


def floor(folder: Path) -> dict[str, Any]:
    import orjson

    files = _files(folder)
    ready = _rss_kib()
    began = time.perf_counter()
    parsed = 0
    for path in files:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    orjson.loads(line)
                    parsed += 1
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "items": parsed, "rss_ready_kib": ready}


def batch(folder: Path, out: Path) -> dict[str, Any]:
    from adapter.batch.run import BatchSettings, run_batch
    from adapter.mappings_loader import load_reference_data

    data = load_reference_data()
    settings = BatchSettings(sources=(str(folder),), out=out, as_of=AS_OF, site_tz=UTC)
    ready = _rss_kib()
    began = time.perf_counter()
    result = run_batch(settings, data)
    seconds = time.perf_counter() - began
    decided = sum(len(e.decisions) for e in result.evaluations)
    return {
        "seconds": seconds,
        "items": result.resources_read,
        "rss_ready_kib": ready,
        "patients": len(result.evaluations),
        "problems": len(result.problems),
        "decisions": decided,
        "issues": result.issues_written,
    }


def naive(folder: Path, stride: int, limit: int) -> dict[str, Any]:
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    files = _files(folder)
    ready = _rss_kib()
    seconds = 0.0
    validated = failed = seen = 0
    for path in files:
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                seen += 1
                if seen % stride or validated + failed >= limit:
                    continue
                began = time.perf_counter()
                try:
                    document = orjson.loads(line)
                    get_fhir_model_class(document["resourceType"]).model_validate(document)
                    validated += 1
                except ValueError:
                    failed += 1  # counted: a validation error costs time too
                seconds += time.perf_counter() - began
    return {
        "seconds": seconds,
        "items": validated + failed,
        "failed": failed,
        "rss_ready_kib": ready,
    }


def core(folder: Path) -> dict[str, Any]:
    from adapter.batch.sources import read_sources
    from adapter.core.evaluate import Context, evaluate_patient
    from adapter.fhir.collect import Collector
    from adapter.fhir.read import Reader
    from adapter.mappings_loader import load_reference_data

    data = load_reference_data()
    collector = Collector(Reader(data, UTC), AS_OF)
    for located in read_sources([str(folder)], collector.problems):
        collector.add(located)
    patients = collector.patients()
    context = Context(data.protocol, data.units, UTC, AS_OF)
    ready = _rss_kib()
    evaluations = [evaluate_patient(inputs, context) for inputs in patients]  # warm-up pass
    passes, total, best = 0, 0.0, float("inf")
    while passes < CORE_MIN_PASSES or (total < CORE_MIN_SECONDS and passes < CORE_MAX_PASSES):
        evaluations = []
        began = time.perf_counter()
        evaluations = [evaluate_patient(inputs, context) for inputs in patients]
        seconds = time.perf_counter() - began
        passes, total, best = passes + 1, total + seconds, min(best, seconds)
    ancs = sum(len(e.timeline.assessments) for e in evaluations)
    return {
        "seconds": best,
        "items": ancs,
        "patients": len(patients),
        "passes": passes,
        "rss_ready_kib": ready,
    }


def stages(folder: Path) -> dict[str, Any]:
    """Cumulative stages of batch mode, for where the time goes: the source reader alone
    (read, parse, locate), then the reader feeding the collector."""
    from adapter.batch.sources import read_sources
    from adapter.fhir.collect import Collector
    from adapter.fhir.read import Reader
    from adapter.mappings_loader import load_reference_data

    data = load_reference_data()
    ready = _rss_kib()
    began = time.perf_counter()
    read = sum(1 for _ in read_sources([str(folder)], []))
    sources_s = time.perf_counter() - began
    collector = Collector(Reader(data, UTC), AS_OF)
    began = time.perf_counter()
    for located in read_sources([str(folder)], collector.problems):
        collector.add(located)
    collect_s = time.perf_counter() - began
    return {
        "seconds": collect_s,
        "sources_s": sources_s,
        "collect_s": collect_s,
        "items": read,
        "rss_ready_kib": ready,
    }


def main(argv: list[str]) -> int:
    mode, folder = argv[0], Path(argv[1])
    if mode == "floor":
        figures = floor(folder)
    elif mode == "batch":
        if len(argv) > 2:
            figures = batch(folder, Path(argv[2]))
        else:
            with tempfile.TemporaryDirectory(prefix="bench-out-") as out:
                figures = batch(folder, Path(out))
    elif mode == "naive":
        figures = naive(folder, int(argv[2]), int(argv[3]))
    elif mode == "core":
        figures = core(folder)
    elif mode == "stages":
        figures = stages(folder)
    else:
        print(f"measure: unknown mode '{mode}'", file=sys.stderr)
        return 2
    figures["mode"] = mode
    figures["rss_peak_kib"] = _rss_kib()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
