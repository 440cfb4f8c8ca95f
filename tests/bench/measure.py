"""One measurement in a fresh process: ``python -m tests.bench.measure MODE DIR [...]``.

The harness (``tests.bench.run``) starts this once per measurement so that each peak memory
figure belongs to that measurement alone. It prints one JSON object on its last stdout line:
``seconds`` (wall clock of the measured part only), ``items`` (what was processed) and two
readings of the process's peak resident set (``VmHWM``, KiB): ``rss_ready_kib`` once imports and
reference data are loaded (before the measured part) and ``rss_peak_kib`` at the end.

Modes:
- ``floor DIR``: read every NDJSON line of the export and parse it with orjson, nothing else;
- ``batch DIR OUT [strict] [JOBS]``: ``adapter.batch.run.run_batch`` on the export (or a Bundle
  file) as ``rems-adapter run`` calls it, writing the outputs; ``strict`` parses every line;
  JOBS worker processes (default: the machine's CPUs). Also reports the largest worker's peak
  resident set (``children_peak_kib``);
- ``load FILE``: orjson-parse a whole file at once (how a Bundle was read before streaming);
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


_CPU_AT_READY = [0.0]


def _ready() -> int:
    """The peak resident set before the measured part; notes the CPU time spent so far."""
    _CPU_AT_READY[0] = _cpu_s()
    return _rss_kib()


def _files(folder: Path) -> list[Path]:
    from adapter.batch.sources import expand

    return expand([str(folder)])


def floor(folder: Path) -> dict[str, Any]:
    import orjson

    files = _files(folder)
    ready = _ready()
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


def _children_kib() -> int:
    """The largest peak resident set of this process's children (the workers), KiB, once every
    one has ended: batch mode does not wait for its finished workers to be gone (the standard
    library reaps them later), and a child counts in RUSAGE_CHILDREN only once reaped."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.join(timeout=60)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def batch(folder: Path, out: Path, strict: bool = False, jobs: int | None = None) -> dict[str, Any]:
    from adapter.batch.run import BatchSettings, run_batch
    from adapter.mappings_loader import load_reference_data

    data = load_reference_data()
    settings = BatchSettings(
        sources=(str(folder),),
        out=out,
        as_of=AS_OF,
        site_tz=UTC,
        strict=strict,
        jobs=jobs,
        retain=False,  # as `rems-adapter run`
    )
    ready = _ready()
    began = time.perf_counter()
    result = run_batch(settings, data)
    seconds = time.perf_counter() - began
    decided = len(result.decisions)
    return {
        "seconds": seconds,
        "items": result.resources_read,
        "skipped": result.skipped,
        "rss_ready_kib": ready,
        "children_peak_kib": _children_kib(),
        "patients": result.on_clozapine,
        "problems": len(result.problems),
        "decisions": decided,
        "issues": result.issues_written,
    }


def load(path: Path) -> dict[str, Any]:
    import orjson

    ready = _ready()
    began = time.perf_counter()
    document = orjson.loads(path.read_bytes())
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "items": len(document.get("entry", [])), "rss_ready_kib": ready}


def naive(folder: Path, stride: int, limit: int) -> dict[str, Any]:
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    files = _files(folder)
    ready = _ready()
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
    ready = _ready()
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
    ready = _ready()
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


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str]) -> int:
    mode, folder = argv[0], Path(argv[1])
    if mode == "floor":
        figures = floor(folder)
    elif mode == "batch":
        strict = "strict" in argv[2:]
        jobs = next((int(a) for a in argv[2:] if a.isdigit()), None)
        with tempfile.TemporaryDirectory(prefix="bench-out-") as out:
            figures = batch(folder, Path(out), strict, jobs)
    elif mode == "load":
        figures = load(folder)
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
    # CPU seconds of the measured part, this process and its workers (user + system)
    figures["cpu_s"] = _cpu_s() - _CPU_AT_READY[0]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
