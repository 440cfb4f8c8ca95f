"""Batch mode at scale (issue 16) writes the same bytes however it reads: with or without the
line prefilter (`--strict`), on one or several worker processes with files cut into byte
ranges, in memory or spilled to disk, a Bundle loaded whole or streamed.

Every comparison is byte for byte on the four outputs and on problems.ndjson, against one
process reading everything in memory with `--strict`."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.batch import engine, scan, sources
from adapter.batch.engine import Tuning, plan, prefilter_for
from adapter.batch.run import BatchResult, BatchSettings, run_batch
from adapter.batch.sources import Located
from adapter.core.reference import ReferenceData
from adapter.errors import InternalError
from adapter.fhir.collect import Collector
from adapter.fhir.read import Reader
from adapter.mappings_loader import load_reference_data
from tests.bench.workload import AS_OF, generate
from tests.fuzz import corpus as corpus_module
from tests.fuzz.run import make_case
from tests.fuzz.shapes import anything

DECISIONS = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")
FILES = (*DECISIONS, "problems.ndjson")
DEMO = corpus_module.DEMO
#: Every way of reading, each against the plain one (one process, in memory, --strict).
SMALL = Tuning(chunk_bytes=4096, parallel_bytes=0, spill_bytes=0, batch_patients=2)
MODES: dict[str, dict[str, object]] = {
    "prefilter": {"jobs": 1},
    "prefilter, 3 workers, cut in 4 KB ranges": {
        "jobs": 3,
        "tuning": Tuning(chunk_bytes=4096, parallel_bytes=0),
    },
    "strict, 2 workers, spilled, 2 patients a batch": {"jobs": 2, "strict": True, "tuning": SMALL},
    "prefilter, 2 workers, spilled, 1 patient a batch": {
        "jobs": 2,
        "tuning": Tuning(chunk_bytes=8192, parallel_bytes=0, spill_bytes=0, batch_patients=1),
    },
}


@cache
def _data() -> ReferenceData:
    return load_reference_data()


def _run(source: Path, out: Path, as_of: datetime = AS_OF, **options: object) -> BatchResult:
    settings = BatchSettings(
        sources=(str(source),),
        out=out,
        as_of=as_of,
        site_tz=UTC,
        **options,  # type: ignore[arg-type]
    )
    return run_batch(settings, _data())


def _counts(result: BatchResult) -> tuple[object, ...]:
    return (
        result.resources_read,
        result.unresolved_medications,
        result.on_clozapine,
        result.overdue,
        result.issues_written,
        result.withdrawn,
        result.decisions,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


def _plain(source: Path, out: Path, as_of: datetime = AS_OF) -> dict[str, bytes]:
    _run(source, out, as_of, strict=True, jobs=1)
    return _files(out)


@cache
def _workload(folder: str, patients: int, seed: int) -> Path:
    path = Path(folder) / f"export-{patients}-{seed}"
    if not path.exists():
        generate(path, patients=patients, seed=seed)
    return path


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = str(tmp_path_factory.mktemp("workloads"))
    return {
        "bench seed 1": _workload(folder, 4, 1),
        "bench seed 7": _workload(folder, 3, 7),
        "demo": DEMO,
    }


@pytest.mark.parametrize("workload", ["bench seed 1", "bench seed 7", "demo"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_way_of_reading_writes_the_same_bytes(
    workloads: dict[str, Path], workload: str, mode: str, tmp_path: Path
) -> None:
    source = workloads[workload]
    plain = _run(source, tmp_path / "plain", strict=True, jobs=1)
    expected = _files(tmp_path / "plain")
    result = _run(source, tmp_path / "mode", **MODES[mode])
    assert _files(tmp_path / "mode") == expected
    assert _counts(result) == _counts(plain)
    assert expected["DetectedIssue.ndjson"] and expected["status.ndjson"]  # decided
    assert expected["authorizations.ndjson"] or workload != "demo"
    if "strict" not in mode:
        assert result.skipped > 0  # the prefilter did skip lines


@pytest.mark.parametrize("compiled", [True, False], ids=["hyperscan", "standard library"])
@pytest.mark.parametrize("block", [1, 3000, 100_000])
def test_blocks_of_any_size_skip_the_same_lines(
    workloads: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block: int,
    compiled: bool,
) -> None:
    """The prefilter decides a block of lines at a time when it can (tiny blocks: one line),
    with the compiled scanner or without it."""
    monkeypatch.setattr(scan, "AVAILABLE", compiled and scan.AVAILABLE)
    lines = DEMO.read_bytes().splitlines(keepends=True)
    lines[40] = lines[40][:-20] + b"\n"  # malformed, but with its ANC code: not skipped
    lines.insert(41, b"\n")
    lines.insert(200, b'{"resourceType":"Encounter\n')  # no closing quote: parsed, reported
    lines.insert(300, b'{"resourceType":"Encounter","id":"e"}\n')
    source = tmp_path / "demo.ndjson"
    source.write_bytes(b"".join(lines))
    expected = {}
    for name, path in (("bench", workloads["bench seed 7"]), ("demo", source)):
        _run(path, tmp_path / f"big-{name}", jobs=1)
        expected[name] = _files(tmp_path / f"big-{name}")
    monkeypatch.setattr(sources, "BLOCK_BYTES", block)
    for name, path in (("bench", workloads["bench seed 7"]), ("demo", source)):
        _run(path, tmp_path / f"small-{name}", jobs=1)
        assert _files(tmp_path / f"small-{name}") == expected[name], name
    assert len(expected["demo"]["problems.ndjson"].splitlines()) == 2  # the malformed lines


def test_the_prefilter_skips_most_of_a_bulk_export(
    workloads: dict[str, Path], tmp_path: Path
) -> None:
    strict = _run(workloads["bench seed 1"], tmp_path / "strict", strict=True, jobs=1)
    default = _run(workloads["bench seed 1"], tmp_path / "default", jobs=1)
    assert strict.skipped == 0
    assert default.resources_read == strict.resources_read  # skipped lines count as read
    assert default.skipped > 0.8 * strict.resources_read  # 19 in 20 Observations are noise


@cache
def _fuzz_corpus() -> corpus_module.Corpus:
    return corpus_module.load()


FUZZ_CASES = 60


def test_the_fuzz_corpus_decides_the_same_with_and_without_strict(tmp_path: Path) -> None:
    """Mutated demo data (tests/fuzz): the four decision files are identical on every case;
    problems.ndjson too on every case without a malformed line (none reported by --strict),
    and otherwise the default reports a subset (what it skipped, it did not check)."""
    corpus = _fuzz_corpus()
    rng = random.Random(20261216)
    clean = 0
    as_of = datetime(2026, 3, 2, 12, tzinfo=UTC)
    for number in range(FUZZ_CASES):
        data, _, _ = make_case(corpus, rng, 3)
        suffix = ".json" if data.startswith(b'{"resourceType":"Bundle"') else ".ndjson"
        source = tmp_path / f"case{number}{suffix}"
        source.write_bytes(data)
        expected = _plain(source, tmp_path / f"plain{number}", as_of)
        _run(source, tmp_path / f"default{number}", as_of, jobs=1)
        got = _files(tmp_path / f"default{number}")
        for name in DECISIONS:
            assert got[name] == expected[name], (number, name)
        if not expected["problems.ndjson"]:
            clean += 1
            assert got["problems.ndjson"] == b"", number
        else:
            assert set(got["problems.ndjson"].splitlines()) <= set(
                expected["problems.ndjson"].splitlines()
            )
    assert clean >= 5  # enough cases without a malformed line


def test_the_fuzz_corpus_reads_the_same_on_workers_and_spilled(tmp_path: Path) -> None:
    corpus = _fuzz_corpus()
    rng = random.Random(1616)
    as_of = datetime(2026, 3, 2, 12, tzinfo=UTC)
    for number in range(12):
        data, _, _ = make_case(corpus, rng, 4)
        suffix = ".json" if data.startswith(b'{"resourceType":"Bundle"') else ".ndjson"
        source = tmp_path / f"case{number}{suffix}"
        source.write_bytes(data)
        expected = _plain(source, tmp_path / f"plain{number}", as_of)
        _run(source, tmp_path / f"many{number}", as_of, strict=True, jobs=3, tuning=SMALL)
        assert _files(tmp_path / f"many{number}") == expected, number


def test_problems_keep_their_line_numbers_across_byte_ranges(tmp_path: Path) -> None:
    lines = DEMO.read_bytes().splitlines()
    broken = {17, 400, 401, 1203, len(lines) - 1}
    for at in broken:
        lines[at] = lines[at][: len(lines[at]) // 2]  # cut in the middle: not valid JSON
    lines.insert(900, b"")
    lines.insert(901, b'{"resourceType": "Bundle", "entry": [7]}')
    source = tmp_path / "export.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    expected = _plain(source, tmp_path / "plain")
    assert len(plan([source], 4096)) > 20  # cut into many ranges
    _run(source, tmp_path / "cut", strict=True, jobs=2, tuning=SMALL)
    assert _files(tmp_path / "cut") == expected
    problems = [json.loads(line) for line in expected["problems.ndjson"].splitlines()]
    located = {p["location"] for p in problems}
    assert f"{source}:902#Bundle.entry[0]" in located
    assert {f"{source}:{at + 1 + (at >= 900) * 2}" for at in broken} <= located


def _as_bundle(lines: list[bytes], transaction: bool) -> bytes:
    """The resources as one Bundle; a transaction links them by urn:uuid (ids dropped)."""
    entries = []
    for line in lines:
        resource = orjson.loads(line)
        entry: dict[str, object] = {"resource": resource}
        if transaction:
            kind, rid = resource["resourceType"], resource.pop("id")
            entry["fullUrl"] = f"urn:uuid:{rid}"
            entry["request"] = {"method": "PUT", "url": f"{kind}/{rid}"}
        entries.append(entry)
    text = orjson.dumps(
        {"resourceType": "Bundle", "type": "transaction" if transaction else "collection"}
        | {"entry": entries}
    )
    if transaction:  # every reference through the entries' fullUrls
        for line in lines:
            resource = orjson.loads(line)
            ref = f'"reference":"{resource["resourceType"]}/{resource["id"]}"'.encode()
            text = text.replace(ref, f'"reference":"urn:uuid:{resource["id"]}"'.encode())
    return text


@pytest.mark.parametrize("transaction", [False, True])
def test_a_streamed_bundle_reads_as_a_loaded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transaction: bool
) -> None:
    lines = [line for line in DEMO.read_bytes().splitlines() if line.strip()]
    bundle = tmp_path / "demo.json"
    bundle.write_bytes(_as_bundle(lines, transaction))
    expected = _plain(bundle, tmp_path / "loaded")
    monkeypatch.setattr(sources, "STREAM_BYTES", 0)
    assert sources.streamed(bundle)
    _run(bundle, tmp_path / "streamed", jobs=1)
    assert _files(tmp_path / "streamed") == expected


def test_streamed_bundles_of_the_fuzz_corpus_read_as_loaded_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _fuzz_corpus()
    rng = random.Random(7)
    as_of = datetime(2026, 3, 2, 12, tzinfo=UTC)
    seen = 0
    while seen < 12:
        data, _, _ = make_case(corpus, rng, 3)
        if not data.startswith(b'{"resourceType":"Bundle"'):
            continue
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            continue  # the line of a syntax error is approximate when streamed
        seen += 1
        source = tmp_path / f"case{seen}.json"
        source.write_bytes(data)
        monkeypatch.setattr(sources, "STREAM_BYTES", 1 << 40)
        expected = _plain(source, tmp_path / f"loaded{seen}", as_of)
        monkeypatch.setattr(sources, "STREAM_BYTES", 0)
        _run(source, tmp_path / f"streamed{seen}", as_of, strict=True, jobs=1)
        assert _files(tmp_path / f"streamed{seen}") == expected, seen


def test_a_streamed_bundle_with_a_syntax_error_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "STREAM_BYTES", 0)
    source = tmp_path / "bad.json"
    source.write_bytes(b'{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"')
    result = _run(source, tmp_path / "out", jobs=1)
    assert [(p.location, p.message) for p in result.problems] == [(f"{source}:1", "not valid JSON")]


# ------------------------------------------------------------------ the rule itself

ANC = b'"code":{"coding":[{"system":"http://loinc.org","code":"751-8"}]}'
OTHER = b'"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]}'


@pytest.mark.parametrize(
    ("line", "skipped"),
    [
        (b'{"resourceType":"Observation","id":"o",' + OTHER + b"}", True),
        (b'{"resourceType":"Encounter","id":"e","status":"finished"}', True),
        (b'{"resourceType":"Patient","id":"p"}', True),
        (b'{"resourceType":"Observation","id":"o",' + ANC + b"}", False),
        # every lab role of mappings/lab-codes.toml, with or without spaces
        (b'{"resourceType":"Observation","code":{"coding":[{"code" : "6690-2"}]}}', False),
        (b'{"resourceType":"Observation","code":{"coding":[{"code":"770-8"}]}}', False),
        (b'{"resourceType":"Observation","code":{"coding":[{"code":"769-0"}]}}', False),
        (b'{"resourceType":"Observation","code":{"coding":[{"code":"764-1"}]}}', False),
        (b'{"resourceType":"Observation","code":{"coding":[{"code":"26499-4"}]}}', False),
        # a code or a name behind an escape, a contained resource, a repeated key
        (b'{"resourceType":"Observation","code":{"coding":[{"code":"751\\u002d8"}]}}', False),
        (b'{"resourceType":"Observation","resourc\\u0065Type":"Flag"}', False),
        (b'{"resourceType":"Observation","contained":[{"resourceType":"Specimen"}]}', False),
        (b'{"resourceType":"Encounter","resourceType":"Condition"}', False),
        # types whose type cannot be told cheaply are parsed
        (b'{"resourceType": "Observation",' + OTHER + b"}", False),
        (b'{"id":"o","resourceType":"Observation",' + OTHER + b"}", False),
        (b' {"resourceType":"Observation",' + OTHER + b"}", False),
        (b"[1, 2]", False),
        # every type the rules read is parsed, whatever its codes
        (b'{"resourceType":"MedicationDispense","id":"d"}', False),
        (b'{"resourceType":"MedicationRequest","id":"r"}', False),
        (b'{"resourceType":"Medication","id":"m"}', False),
        (b'{"resourceType":"Condition","id":"c"}', False),
        (b'{"resourceType":"Flag","id":"f"}', False),
        (b'{"resourceType":"DetectedIssue","id":"i"}', False),
        (b'{"resourceType":"DiagnosticReport","id":"r"}', False),
        (b'{"resourceType":"Specimen","id":"s"}', False),
        (b'{"resourceType":"Bundle","entry":[]}', False),
    ],
)
def test_what_the_prefilter_skips(line: bytes, skipped: bool) -> None:
    assert prefilter_for(_data()).skips(line) is skipped


def _kept(collector: Collector) -> list[object]:
    return [
        collector.labs,
        collector.dispenses,
        collector.requests,
        collector.medications,
        collector.designations,
        collector.issues,
        collector.reports,
        collector.specimens,
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(anything, st.sampled_from(["", "Observation", "Encounter", "Condition", "Patient"]))
def test_a_skipped_line_would_have_kept_nothing(resource: object, kind: str) -> None:
    """Any FHIR-shaped resource (tests/fuzz/shapes: the types the rules read, with right, absurd
    and wrong values), written compactly: if the prefilter skips it, the collector would keep
    nothing of it."""
    if kind and isinstance(resource, dict):
        resource = {"resourceType": kind} | resource
    try:
        line = orjson.dumps(resource)
    except TypeError:
        return
    if not prefilter_for(_data()).skips(line):
        return
    parsed = orjson.loads(line)
    collector = Collector(Reader(_data(), UTC), AS_OF)
    if isinstance(parsed, dict) and isinstance(parsed.get("resourceType"), str):
        collector.add(Located("x.ndjson", parsed, 1))
    assert not any(_kept(collector))


def test_a_worker_that_dies_fails_the_run_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (say by the out-of-memory killer) ends the run with an internal error."""

    parent = os.getpid()
    run_task = engine._run_task

    def killed(task: engine.Task) -> engine.TaskResult:
        if os.getpid() != parent:  # the parent takes tasks too: only the worker dies
            os._exit(9)
        return run_task(task)

    monkeypatch.setattr(engine, "_run_task", killed)
    with pytest.raises(InternalError, match="worker process ended unexpectedly"):
        _run(DEMO, tmp_path / "out", jobs=2, tuning=SMALL)


class _Patients:
    def __init__(self, count: int) -> None:
        self.count = count

    def patients(self) -> list[str]:
        return [f"Patient/{n:04d}" for n in range(self.count)]


@pytest.mark.parametrize(
    ("patients", "jobs", "batches"),
    [
        (0, 2, 1),
        (7, 1, 1),
        (7, 2, 1),  # fewer than a shared batch: decided in one
        (628, 1, 1),  # one process: one batch, as ever
        (628, 2, 8),  # about four a worker
        (100, 2, 7),  # batches of at least 16
        (5000, 2, 25),  # and at most `batch_patients`
    ],
)
def test_patients_in_memory_are_cut_into_batches_for_the_workers(
    patients: int, jobs: int, batches: int
) -> None:
    collected = engine.Collected(_Patients(patients), None, 0, 0)  # type: ignore[arg-type]
    assert collected.plan_batches(200, jobs) == batches
    cut = [collected.batch(n)[1] for n in range(batches)]
    assert [p for part in cut for p in part] == _Patients(patients).patients()  # all, in order


@pytest.mark.parametrize("mode", list(MODES))
def test_withdrawn_dispenses_read_the_same_every_way(tmp_path: Path, mode: str) -> None:
    """A dispense decided, then entered in error (and one cancelled), with the first run's
    DetectedIssues fed back: spilled, cut into ranges or not, the same withdrawals."""
    from tests.scenario_kit import as_of, pending_dispense, run_batch, write_source
    from tests.scenario_kit_s2 import long_term, version

    patients = ("p", "q")
    base = [r for pid in patients for r in long_term(pid)]
    pending = [pending_dispense(pid, "2026-02-05", did=f"{pid}-pend") for pid in patients]
    first = run_batch(tmp_path, [*base, *pending], as_of("2026-02-05"))
    later = [
        version(dispense, "2", status=status, updated="2026-02-06")
        for dispense, status in zip(pending, ("entered-in-error", "cancelled"), strict=True)
    ]
    source = write_source(tmp_path / "in", [*base, *pending, *later, *first.issues], "ndjson")
    when = datetime(2026, 2, 6, 12, tzinfo=UTC)
    plain = _run(source, tmp_path / "plain", when, strict=True, jobs=1)
    assert plain.withdrawn == 2
    result = _run(source, tmp_path / "mode", when, **MODES[mode])
    assert _files(tmp_path / "mode") == _files(tmp_path / "plain")
    assert _counts(result) == _counts(plain)
