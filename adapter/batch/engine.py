"""Reading a large input on every core, in bounded memory (issue 16).

The input is cut into tasks: one per file, and one per byte range (cut on line boundaries) of a
large NDJSON file. This process and its workers read and collect the tasks (shared as
`adapter.batch.processes` shares any work); this process merges the results in input order,
so that the merge is what one process reading everything in order would hold:
the same resources kept, the same versions winning (arrival positions are byte offsets, the same
however the input is cut), the same problems in the same order with the same line numbers.

When the input is large, what is kept per patient is spilled to a SQLite file in a temporary
folder (`Store`) instead of being merged in memory, and the patients are then decided a batch
at a time (`Store.batch`): memory follows the largest batch, not the input.
"""

from __future__ import annotations

import gc
import operator
import os
import pickle
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from adapter.batch.processes import ordered_map
from adapter.batch.sources import (
    Counts,
    InputProblem,
    Prefilter,
    UnreadableInput,
    expand,
    first_line,
    read_file,
    wide_file,
)
from adapter.core.model import LabObservation, PatientInputs, pack_columns, unpack_columns
from adapter.core.reference import ReferenceData
from adapter.fhir.collect import _HANDLERS, Collector
from adapter.fhir.read import Reader, ReportTimes

Rank = tuple[int, str, int]


@dataclass(frozen=True)
class Tuning:
    """Sizes that decide how the work is cut (tests make them tiny to exercise every path)."""

    #: An NDJSON file larger than this is cut into byte ranges of about this size, or smaller
    #: (down to `min_chunk_bytes`) so that each worker has about four tasks to take.
    chunk_bytes: int = 32 * 1024 * 1024
    min_chunk_bytes: int = 1024 * 1024
    #: Below this much input everything is read and decided in this process: a worker costs
    #: ~3-5 ms (its fork, the pages both processes then copy on writing, the hand-over), about
    #: what sharing the reading of 8 MB saves (timed at 10k Observations, 13 MB: 3 ms gained).
    parallel_bytes: int = 8 * 1024 * 1024
    #: Above this much input what is kept per patient is spilled to disk.
    spill_bytes: int = 1536 * 1024 * 1024
    #: Patients decided together when spilled.
    batch_patients: int = 200


@dataclass(frozen=True)
class Task:
    number: int  # its place in the input order
    file_index: int
    path: str
    start: int = 0
    end: int | None = None  # None: to the end of the file
    #: The work it is expected to be: its bytes, weighed by how many of them get parsed.
    cost: float = 0.0


def plan(files: Sequence[Path], chunk_bytes: int, prefilter: Prefilter | None = None) -> list[Task]:
    """The tasks for these files, in input order. Cuts fall at line starts. Each task's cost
    weighs its bytes by what the prefilter does with its file's first line (every line parsed
    costs several times a line most likely skipped)."""
    tasks: list[Task] = []
    for index, path in enumerate(files):
        size = _size(path)
        weight = 1.0 if prefilter is None else prefilter.weight(first_line(path))
        if path.suffix not in (".ndjson", ".jsonl") or size <= chunk_bytes or wide_file(path):
            tasks.append(Task(len(tasks), index, str(path), cost=size * weight))
            continue
        cuts = [0]
        try:
            with path.open("rb") as handle:
                while cuts[-1] + chunk_bytes < size:
                    handle.seek(cuts[-1] + chunk_bytes - 1)
                    handle.readline()  # to the end of the line holding the cut
                    at = handle.tell()
                    if at >= size:
                        break
                    cuts.append(at)
        except OSError as error:
            raise UnreadableInput(f"{path}: {error.strerror}") from error
        for start, end in zip(cuts, [*cuts[1:], None], strict=True):
            cost = ((end if end is not None else size) - start) * weight
            tasks.append(Task(len(tasks), index, str(path), start, end, cost))
    return tasks


def costliest_first(tasks: Sequence[Task]) -> list[int]:
    """The order to start the tasks in: the costliest first (input order among equals), so that
    the last to finish is a small one, not a large file left running alone on one worker."""
    return sorted(range(len(tasks)), key=lambda at: -tasks[at].cost)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error


# ------------------------------------------------------------------ workers


@dataclass
class _Worker:
    reader: Reader
    clock: datetime
    prefilter: Prefilter | None
    spill: str | None  # the folder task databases are written to; None: in memory


_WORKER: _Worker | None = None


def prefilter_for(data: ReferenceData) -> Prefilter:
    """Lines to skip unparsed: types the collector does not read, Observations without a lab
    code of mappings/lab-codes.toml (every role: ANC, WBC, neutrophil, segs, bands; the
    codes of results that are *not* an ANC are not needed: they are ignored too).

    The last one made is kept (workers forked later inherit it): compiling its scanner takes
    ~5 ms, a tenth of a small input's run."""
    global _LAST_PREFILTER
    if _LAST_PREFILTER is not None and _LAST_PREFILTER[0] is data.lab_codes:
        return _LAST_PREFILTER[1]
    codes = data.lab_codes
    relevant = codes.anc | codes.wbc | codes.neutrophil_pct | codes.segs_pct | codes.band_pct
    prefilter = Prefilter.of(_HANDLERS, relevant)
    _LAST_PREFILTER = (codes, prefilter)
    return prefilter


_LAST_PREFILTER: tuple[object, Prefilter] | None = None


def _init(
    data: ReferenceData, site_tz: tzinfo, clock: datetime, strict: bool, spill: str | None
) -> None:
    global _WORKER
    _WORKER = _Worker(Reader(data, site_tz), clock, None if strict else prefilter_for(data), spill)


@dataclass
class TaskResult:
    task: Task
    lines: int
    skipped: int
    collector: Collector  # without its reader (it does not travel between processes)
    #: Spilled: the database the kept results were written to (the collector keeps the rest).
    spilled: str | None = None
    error: str | None = None  # an unreadable input (the exception does not travel well)


def _run_task(task: Task) -> TaskResult:
    worker = _WORKER
    assert worker is not None  # set by _init
    collector = Collector(worker.reader, worker.clock)
    counts = Counts()
    try:
        for located in read_file(
            Path(task.path),
            task.file_index,
            collector.problems,
            task.start,
            task.end,
            worker.prefilter,
            counts,
        ):
            collector.add(located)
    except UnreadableInput as error:
        return TaskResult(task, 0, 0, Collector(worker.reader, worker.clock), error=str(error))
    spilled = None
    if worker.spill is not None:
        spilled = str(Path(worker.spill) / f"task-{task.number}.sqlite")
        _spill(collector, task.number, spilled)
    return TaskResult(task, counts.lines, counts.skipped, collector, spilled)


def _detached(result: TaskResult) -> TaskResult:
    result.collector.reader = None  # type: ignore[assignment]  # re-attached by the parent
    return result


def _run_detached(task: Task) -> TaskResult:
    return _detached(_run_task(task))


def run_tasks(
    tasks: Sequence[Task],
    jobs: int,
    data: ReferenceData,
    site_tz: tzinfo,
    clock: datetime,
    *,
    strict: bool,
    spill: str | None,
) -> Iterator[TaskResult]:
    """The result of every task, in task order; in worker processes when it is worth it."""
    _init(data, site_tz, clock, strict, spill)  # for the tasks this process takes
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(_run_task, tasks)
        return
    reader = Reader(data, site_tz)  # for the results that come from workers
    results = ordered_map(
        _run_detached,
        tasks,
        jobs,
        initializer=_init,
        initargs=(data, site_tz, clock, strict, spill),
        start_order=costliest_first(tasks),
        here=_run_task,
    )
    for result in results:
        result.collector.reader = reader  # a worker's came without one
        yield result


#: The collector's young-generation threshold while batch mode runs (Python's default: 700).
#: Reading allocates millions of short-lived, acyclic objects (parsed lines, their values), which
#: reference counting frees; each young collection over them finds nothing (1.5 % of the
#: instructions of a one-process run at 100k Observations, by callgrind, and more as the kept
#: results grow). Cycles are still collected, only less often.
BATCH_GC_THRESHOLD = 50_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run with the young-generation threshold raised (workers forked inside inherit it)."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], BATCH_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def shift_lines(result: TaskResult, base: int) -> None:
    """Problem locations of a task that started `base` lines into its file, counted from the
    start of the file: every one begins with "file:line" (the line within the task)."""
    if not base:
        return
    prefix = f"{result.task.path}:"
    shifted = []
    for problem in result.collector.problems:
        location = problem.location
        if location.startswith(prefix):
            rest = location[len(prefix) :]
            digits = len(rest) - len(rest.lstrip("0123456789"))
            if digits:
                location = f"{prefix}{int(rest[:digits]) + base}{rest[digits:]}"
        shifted.append(InputProblem(location, problem.message))
    result.collector.problems = shifted


# ------------------------------------------------------------------ spilling


def _rank_columns(rank: Rank) -> tuple[int, str, bytes, int]:
    """A rank as SQLite columns that compare as the tuple does: a version number of any size
    as (digits, text); lastUpdated as UTF-8 bytes (their order is the code point order)."""
    version, updated, arrival = rank
    shown = str(version) if version >= 0 else ""
    return (len(shown) if version >= 0 else -1, shown, _bytes(updated), arrival)


_arrival = operator.attrgetter("arrival")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _spill(collector: Collector, number: int, path: str) -> None:
    """Move what is kept per patient (and per resource) out of the collector into a task
    database (the parent merges it into the store, in task order)."""
    db = _connect(path)
    try:
        with db:
            # One row per patient and task, the results in reading order: one pickle each
            # (the strings they share are written once) and few rows to insert and read back.
            db.executemany(
                "INSERT INTO labs VALUES (?, ?, ?)",
                (
                    (_bytes(patient), labs[0].arrival, _dumps(pack_columns(labs)))
                    for patient, labs in collector.labs.items()
                    if labs
                ),
            )
            db.executemany(
                "INSERT INTO dispenses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        _bytes(ref),
                        *_rank_columns(held.rank),
                        _bytes(held.item.patient) if held.item is not None else None,
                        None if held.clozapine is None else int(held.clozapine),
                        None if held.medication_ref is None else _bytes(held.medication_ref),
                        _dumps(held),
                    )
                    for ref, held in collector.dispenses.items()
                ),
            )
            db.executemany(
                "INSERT INTO issues VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (_bytes(ref), *_rank_columns(item[0]), _bytes(item[1].patient), _dumps(item))
                    for ref, item in collector.issues.items()
                ),
            )
            db.executemany(
                "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (_bytes(ref), (number << 32) + position, *_rank_columns(item[0]), _dumps(item))
                    for position, (ref, item) in enumerate(collector.reports.items())
                ),
            )
            db.executemany(
                "INSERT OR IGNORE INTO report_results VALUES (?, ?)",
                (
                    (_bytes(result), _bytes(ref))
                    for ref, (_, report) in collector.reports.items()
                    for result in report.results
                ),
            )
            db.executemany(
                "INSERT INTO specimens VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (_bytes(ref), *_rank_columns(specimen[0]), _dumps(specimen))
                    for ref, specimen in collector.specimens.items()
                ),
            )
    finally:
        db.close()
    collector.labs.clear()
    collector.dispenses.clear()
    collector.issues.clear()
    collector.reports.clear()
    collector.specimens.clear()


def _connect(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -16384"):
        db.execute(f"PRAGMA {pragma}")
    db.executescript(_SCHEMA)
    return db


_RANK = "v_len INTEGER, v TEXT, updated BLOB, arrival INTEGER"
_NEWER = (
    "(excluded.v_len, excluded.v, excluded.updated, excluded.arrival) > "
    "({t}.v_len, {t}.v, {t}.updated, {t}.arrival)"
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS labs (patient BLOB, arrival INTEGER, lab BLOB);  -- lab: a list
CREATE TABLE IF NOT EXISTS dispenses (ref BLOB PRIMARY KEY, {_RANK}, patient BLOB,
    clozapine INTEGER, medication BLOB, held BLOB);
CREATE TABLE IF NOT EXISTS issues (ref BLOB PRIMARY KEY, {_RANK}, patient BLOB, held BLOB);
CREATE TABLE IF NOT EXISTS reports (ref BLOB PRIMARY KEY, first INTEGER, {_RANK}, held BLOB);
CREATE TABLE IF NOT EXISTS report_results (result BLOB, report BLOB, PRIMARY KEY (result, report))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS specimens (ref BLOB PRIMARY KEY, {_RANK}, held BLOB);
"""


def _upsert(table: str, columns: Sequence[str]) -> str:
    update = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "ref")
    return (
        f"INSERT INTO main.{table} SELECT * FROM task.{table} WHERE true ON CONFLICT (ref) DO "
        f"UPDATE SET {update} WHERE {_NEWER.format(t=table)}"
    )


_RANKS = ("v_len", "v", "updated", "arrival")
_MERGES = (
    "INSERT INTO main.labs SELECT * FROM task.labs",
    _upsert("dispenses", ("ref", *_RANKS, "patient", "clozapine", "medication", "held")),
    _upsert("issues", ("ref", *_RANKS, "patient", "held")),
    _upsert("specimens", ("ref", *_RANKS, "held")),
    # A report keeps the place of its first version (the collector's dict order).
    "INSERT INTO main.reports SELECT * FROM task.reports WHERE true ON CONFLICT (ref) DO "
    "UPDATE SET {sets}, first = min(first, excluded.first)".format(
        sets=", ".join(
            f"{c} = CASE WHEN {_NEWER.format(t='reports')} THEN excluded.{c} ELSE {c} END"
            for c in ("v_len", "v", "updated", "arrival", "held")
        )
    ),
    "INSERT OR IGNORE INTO main.report_results SELECT * FROM task.report_results",
)


class Store:
    """What is kept per patient, spilled to a SQLite file in a temporary folder (removed by
    `close`); the small global parts (medications, requests, designations) stay in memory."""

    def __init__(self, folder: str | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="rems-adapter-spill-", dir=folder)
        self.folder = self._folder.name
        self.path = Path(self.folder) / "kept.sqlite"
        self._db = _connect(self.path)
        self._pid = os.getpid()

    @property
    def db(self) -> sqlite3.Connection:
        """This process's connection: a worker forked after the merge opens its own (a SQLite
        connection must not cross a fork), read-only."""
        if self._pid != os.getpid():
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._pid = os.getpid()
        return self._db

    def close(self) -> None:
        if self._pid == os.getpid():
            self._db.close()
            self._folder.cleanup()

    def add(self, path: str) -> None:
        """Merge a task's database (tasks in input order), then remove it."""
        self.db.execute("ATTACH DATABASE ? AS task", (path,))
        try:
            with self.db:
                for sql in _MERGES:
                    self.db.execute(sql)
        finally:
            self.db.execute("DETACH DATABASE task")
        Path(path).unlink()

    def index(self) -> None:
        with self.db:
            self.db.execute("CREATE INDEX labs_by_patient ON labs (patient, arrival)")
            self.db.execute("CREATE INDEX dispenses_by_patient ON dispenses (patient)")
            self.db.execute("CREATE INDEX issues_by_patient ON issues (patient)")

    def unresolved_medications(self, medications: Mapping[str, bool]) -> int:
        rows = self.db.execute("SELECT medication FROM dispenses WHERE clozapine IS NULL")
        return sum(1 for (ref,) in rows if ref is None or _text(ref) not in medications)

    def candidates(self, requests: Iterable[str]) -> list[str]:
        """Everyone who may have inputs (a superset of the collector's; sorted)."""
        found = set(requests)
        for sql in (
            "SELECT DISTINCT patient FROM labs",
            "SELECT DISTINCT patient FROM dispenses WHERE patient IS NOT NULL",
            "SELECT DISTINCT patient FROM issues",
        ):
            found.update(_text(patient) for (patient,) in self.db.execute(sql))
        return sorted(found)

    def batch(self, shared: Collector, chosen: Sequence[str]) -> Collector:
        """A collector holding these patients (a batch, in patient order), with the shared
        medications and designations and those patients' requests."""
        keys = [_bytes(p) for p in chosen]
        marks = ", ".join("?" for _ in keys)
        batch = Collector(shared.reader, shared.clock)
        batch.medications = shared.medications
        batch.designations = shared.designations
        wanted = set(chosen)
        batch.requests = {
            ref: request for ref, request in shared.requests.items() if request.patient in wanted
        }
        for patient, lab in self.db.execute(
            f"SELECT patient, lab FROM labs WHERE patient IN ({marks}) ORDER BY arrival",
            keys,
        ):
            batch.labs[_text(patient)].extend(unpack_columns(pickle.loads(lab)))  # in order
        for labs in batch.labs.values():  # in arrival order, as one collector would hold them
            labs.sort(key=_arrival)
        for ref, held in self.db.execute(
            f"SELECT ref, held FROM dispenses WHERE patient IN ({marks}) ORDER BY ref", keys
        ):
            batch.dispenses[_text(ref)] = pickle.loads(held)
        for ref, held in self.db.execute(
            f"SELECT ref, held FROM issues WHERE patient IN ({marks}) ORDER BY ref", keys
        ):
            batch.issues[_text(ref)] = pickle.loads(held)
        return batch

    def context(
        self, undated: list[LabObservation]
    ) -> tuple[Mapping[str, list[ReportTimes]], Mapping[str, tuple[datetime, str]]]:
        """The reports listing these results (in the collector's order: by first version) and
        the specimens they or their reports name."""
        by_result: dict[str, list[ReportTimes]] = {}
        wanted: set[str] = set()
        for lab in undated:
            if lab.ref in by_result:
                continue
            listing = []
            for (held,) in self.db.execute(
                "SELECT r.held FROM report_results AS x JOIN reports AS r ON r.ref = x.report "
                "WHERE x.result = ? ORDER BY r.first",
                (_bytes(lab.ref),),
            ):
                _, report = pickle.loads(held)
                if lab.ref in report.results:  # listed by the version that won
                    listing.append(report)
            by_result[lab.ref] = listing
            if lab.specimen:
                wanted.add(lab.specimen)
            wanted.update(ref for report in listing for ref in report.specimens)
        specimens: dict[str, tuple[datetime, str]] = {}
        for ref in sorted(wanted):
            row = self.db.execute(
                "SELECT held FROM specimens WHERE ref = ?", (_bytes(ref),)
            ).fetchone()
            if row is not None:
                _, moment, raw = pickle.loads(row[0])
                specimens[ref] = (moment, raw)
        return by_result, specimens


# ------------------------------------------------------------------ reading it all


#: Patients are decided on the workers in batches of at least this many (a batch costs its
#: round trip between processes).
MIN_SHARED_BATCH = 16


def _batch_size(patients: int, largest: int, jobs: int) -> int:
    """Patients a batch: at most `largest`; on several processes, small enough for about four
    batches each (an uneven batch then does not hold the others up), but not below
    `MIN_SHARED_BATCH`."""
    if jobs <= 1:
        return max(1, largest)
    share = -(-patients // (jobs * 4))
    return max(1, min(largest, max(MIN_SHARED_BATCH, share)))


@dataclass
class Collected:
    """Everything read: in memory (`collector`), or spilled (`store`, with the collector
    holding the global parts and the problems)."""

    collector: Collector
    store: Store | None
    skipped: int
    resources: int  # read: parsed and skipped
    #: The processes the input was large enough for (deciding shares them too).
    workers: int = 1

    _inputs: list[PatientInputs] | None = field(default=None, repr=False)  # in memory, planned
    _plan: list[Sequence[str]] | None = field(default=None, repr=False)  # spilled: each batch's
    _size: int = 0

    def plan_batches(self, size: int, jobs: int = 1) -> int:
        """Cut the patients into batches to decide (in patient order); how many. Spilled: of
        `size` patients (memory follows a batch). In memory: one, or several for `jobs`
        processes to share (about four each, so that an uneven batch does not hold them up)."""
        if self.store is None:
            self._inputs = inputs = self.collector.patients()
            self._size = _batch_size(len(inputs), size if jobs > 1 else len(inputs), jobs)
            return max(1, -(-len(inputs) // self._size))
        requests = (request.patient for request in self.collector.requests.values())
        patients = self.store.candidates(requests)
        size = _batch_size(len(patients), size, jobs)
        self._plan = [patients[at : at + size] for at in range(0, len(patients), size)]
        return len(self._plan)

    def batch(self, number: int) -> tuple[Collector, list[PatientInputs]]:
        """The collector and the inputs of the `number`-th planned batch."""
        if self.store is None:
            assert self._inputs is not None  # planned
            at = number * self._size
            return self.collector, self._inputs[at : at + self._size]
        assert self._plan is not None  # planned
        batch = self.store.batch(self.collector, self._plan[number])
        return batch, batch.patients(self.store.context)

    def unresolved_medications(self) -> int:
        if self.store is None:
            return self.collector.unresolved_medications()
        return self.store.unresolved_medications(self.collector.medications)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def collect(
    sources: Sequence[str],
    data: ReferenceData,
    site_tz: tzinfo,
    clock: datetime,
    *,
    jobs: int,
    strict: bool,
    tuning: Tuning,
    spill: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> Collected:
    """Read and collect every source: in `jobs` processes when the input is large enough,
    spilled to disk when it is larger still (or as `spill` says)."""
    files = expand(sources)
    total = sum(_size(path) for path in files)
    if spill is None:
        spill = total > tuning.spill_bytes
    workers = jobs if total > tuning.parallel_bytes else 1
    chunk = tuning.chunk_bytes
    if workers > 1:  # about four tasks a worker, so that none waits for a last large one
        chunk = min(chunk, max(tuning.min_chunk_bytes, total // (workers * 4)))
    tasks = plan(files, chunk, None if strict else prefilter_for(data))
    merged = Collector(Reader(data, site_tz), clock)
    store = Store() if spill else None
    skipped = 0
    line_bases: dict[str, int] = {}
    try:
        folder = store.folder if store is not None else None
        for result in run_tasks(tasks, workers, data, site_tz, clock, strict=strict, spill=folder):
            if result.error is not None:
                raise UnreadableInput(result.error)
            shift_lines(result, line_bases.get(result.task.path, 0))
            line_bases[result.task.path] = line_bases.get(result.task.path, 0) + result.lines
            skipped += result.skipped
            merged.merge(result.collector)
            if store is not None and result.spilled is not None:
                store.add(result.spilled)
            if progress is not None:
                progress(merged.resources_read + skipped)
        if store is not None:
            store.index()
    except BaseException:
        if store is not None:
            store.close()
        raise
    return Collected(merged, store, skipped, merged.resources_read + skipped, workers)
