"""Batch mode (interfaces.md section 3): FHIR files in, four deterministic output files out."""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from adapter.batch.engine import Collected, Tuning, collect, fewer_collections
from adapter.batch.processes import can_fork, default_jobs, ordered_map
from adapter.batch.sources import read_sources
from adapter.core.evaluate import Context, Evaluation, Withdrawal, evaluate_patient
from adapter.core.findings import Finding
from adapter.core.model import WITHDRAWING_STATUSES, DispenseDecision, PatientInputs
from adapter.core.reference import ReferenceData
from adapter.decide import Backend, Directory, Outcome, local_outcome
from adapter.decide.rems import RemsDecider, RemsSettings
from adapter.fhir.collect import Collector, IdentityCollector, InputProblem, identity_refs
from adapter.fhir.records import status_record
from adapter.fhir.write import detected_issue, withdrawn_issue

OUTPUT_FILES = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")
#: Every input problem (location, message), one object a line; stderr shows only the first ones.
PROBLEMS_FILE = "problems.ndjson"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """'1 resource', '2 resources', '0 resources'."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


@dataclass(frozen=True)
class BatchSettings:
    sources: tuple[str, ...]
    out: Path
    as_of: datetime
    site_tz: tzinfo
    derive_anc: bool = True
    #: The `rems` backend's settings; None for the local backend.
    rems: RemsSettings | None = None
    #: Parse and check every line (no prefilter: every malformed line is reported).
    strict: bool = False
    #: Worker processes (None: the machine's CPUs).
    jobs: int | None = None
    #: Keep every patient's evaluation in the result (False: only counts; memory stays flat).
    retain: bool = True
    tuning: Tuning = field(default_factory=Tuning)


@dataclass(frozen=True)
class BatchResult:
    evaluations: tuple[Evaluation, ...]
    problems: tuple[InputProblem, ...]
    resources_read: int
    unresolved_medications: int
    issues_written: int
    withdrawn: int
    #: The dispense decisions written (the REMS's when that backend decided).
    decisions: tuple[DispenseDecision, ...] = ()
    #: What the backend could not do, for stderr (no patient data beyond references).
    notes: tuple[str, ...] = ()
    #: Lines skipped unparsed by the prefilter (counted in `resources_read`).
    skipped: int = 0
    #: Patients on clozapine, and of them overdue for an ANC (also when not `retain`ed).
    on_clozapine: int = 0
    overdue: int = 0

    def summary(self, out: Path, seconds: float | None = None) -> str:
        outcomes = Counter(d.outcome for d in self.decisions)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        read = f"Read {plural(self.resources_read, 'resource')}{took}"

        lines = [
            f"{read}; {plural(len(self.problems), 'input problem')} "
            f"(on stderr; all in {PROBLEMS_FILE})."
            if self.problems
            else f"{read}.",
            f"{plural(self.on_clozapine, 'patient')} on clozapine "
            f"({self.overdue} overdue for an ANC).",
            "Dispenses decided: "
            + (", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "none")
            + ".",
            f"{plural(self.issues_written, 'DetectedIssue')} written "
            f"({plural(self.withdrawn, 'withdrawal')}).",
            f"Outputs in {out}",
        ]
        if self.skipped:
            lines.insert(
                1,
                f"{plural(self.skipped, 'line')} skipped unparsed (nothing the rules read; "
                "--strict checks every line).",
            )
        if self.unresolved_medications:
            n = self.unresolved_medications
            lines.insert(
                1,
                f"{plural(n, 'dispense')} {'references' if n == 1 else 'reference'} a Medication "
                f"that is not in the input; {'it was' if n == 1 else 'they were'} not treated as "
                "clozapine.",
            )
        return "\n".join(lines)


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def file_mode() -> int:
    """The mode a newly created file gets under the process umask (0644 under umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Replace the file in one step: a rerun replaces, never appends, and never half-writes.
    The file honours the umask (mkstemp alone would leave it 0600)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, file_mode())
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


#: Called now and then while reading with the count of resources read so far.
Progress = Callable[[int], None]


def _context(settings: BatchSettings, data: ReferenceData) -> Context:
    return Context(
        protocol=data.protocol,
        units=data.units,
        site_tz=settings.site_tz,
        clock=settings.as_of,
        derive_anc=settings.derive_anc,
    )


def _collect(
    settings: BatchSettings, data: ReferenceData, progress: Progress | None, spill: bool | None
) -> Collected:
    return collect(
        settings.sources,
        data,
        settings.site_tz,
        settings.as_of,
        jobs=settings.jobs or default_jobs(),
        strict=settings.strict,
        tuning=settings.tuning,
        spill=spill,
        progress=progress,
    )


@dataclass
class _Outputs:
    findings: list[Finding]
    withdrawals: list[Withdrawal]
    authorizations: list[dict[str, Any]]
    forms: list[dict[str, Any]]
    decisions: list[DispenseDecision]
    notes: list[str]

    def add(self, outcome: Outcome) -> None:
        self.findings += outcome.findings
        self.withdrawals += outcome.withdrawals
        self.authorizations += outcome.authorizations
        self.forms += outcome.forms
        self.decisions += outcome.decisions
        self.notes += outcome.notes


def _local(evaluations: Sequence[Evaluation]) -> _Outputs:
    outputs = _Outputs([], [], [], [], [], [])
    for evaluation in evaluations:
        outputs.add(local_outcome(evaluation))
    return outputs


def _rems(
    settings: BatchSettings,
    rems: RemsSettings,
    data: ReferenceData,
    collector: Collector,
    inputs: Sequence[PatientInputs],
    evaluations: Sequence[Evaluation],
) -> _Outputs:
    on_clozapine = [(i, e) for i, e in zip(inputs, evaluations, strict=True) if e.on_clozapine]
    # Second pass: only the identities the forms need (input problems were reported already).
    identities = IdentityCollector(identity_refs(i for i, _ in on_clozapine))
    for located in read_sources(settings.sources, []):
        identities.add(located)
    directory = Directory(identities.resources(), collector.requesters())
    outputs = _local([e for e in evaluations if not e.on_clozapine])
    backend: Backend = RemsDecider(rems, data.protocol, settings.site_tz)
    try:
        backend.start_run()
        for patient_inputs, evaluation in on_clozapine:
            outputs.add(backend.decide(evaluation, patient_inputs, directory, settings.as_of))
    finally:
        backend.close()
    return outputs


def _standing_withdrawals(
    inputs: Sequence[PatientInputs], findings: Sequence[Finding], clock: datetime
) -> list[str]:
    """Refs of fed-back DetectedIssues that were withdrawn already (cancelled / entered in
    error) and that no decision of this run re-makes: they are written again as they are, so
    the output stays the whole record of decisions (final and withdrawn) and feeding it back
    again is a fixpoint. Without them, a withdrawal would drop out of the files one run after
    it was made (lost if that run's output never reached the EHR)."""
    made = {finding.identifier for finding in findings}
    return [
        issue.ref
        for patient in inputs
        for issue in patient.prior_issues
        if issue.status in WITHDRAWING_STATUSES
        and issue.identifier not in made
        and not (issue.identified and issue.identified > clock)
    ]


def _issues(
    settings: BatchSettings,
    data: ReferenceData,
    collector: Collector,
    inputs: Sequence[PatientInputs],
    outputs: _Outputs,
) -> list[dict[str, Any]]:
    issues = [detected_issue(f, data.finding_system, settings.as_of) for f in outputs.findings]
    issues += [
        withdrawn_issue(collector.raw_issue(withdrawal.issue.ref), withdrawal)
        for withdrawal in outputs.withdrawals
    ]
    issues += [
        collector.raw_issue(ref)
        for ref in _standing_withdrawals(inputs, outputs.findings, settings.as_of)
    ]
    issues.sort(key=_issue_key)
    return issues


def _issue_key(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r["patient"]["reference"], r["code"]["coding"][-1]["code"], r["id"])


def _pair_key(second: str) -> Callable[[dict[str, Any]], tuple[str, str]]:
    return lambda r: (r["patient"], r[second])


#: The outputs, each with the order its records are sorted in (None: patient order).
_ORDER: Sequence[tuple[str, Callable[[dict[str, Any]], Any] | None]] = (
    ("DetectedIssue.ndjson", _issue_key),
    ("status.ndjson", None),
    ("authorizations.ndjson", _pair_key("dispense")),
    ("psf.ndjson", _pair_key("reportingPeriod")),
)


def _parsed(key: Callable[[dict[str, Any]], Any]) -> Callable[[str], Any]:
    return lambda line: key(json.loads(line))


class _Runs:
    """Each output as sorted runs (one per batch of patients) in a temporary folder, merged
    into the output file at the end: the same bytes as sorting everything at once."""

    def __init__(self, out: Path) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix=".runs-", dir=out)
        self.runs: dict[str, list[Path]] = {name: [] for name, _ in _ORDER}

    def write(self, out: Path) -> None:
        for name, key in _ORDER:
            if len(self.runs[name]) == 1:
                # One run (one batch of patients) is the output already: moved into place in
                # one step, as `_write_atomically` would (the same folder, so the same file
                # system; created under the umask as it would be).
                os.replace(self.runs[name][0], out / name)
                continue
            handles = [path.open(encoding="utf-8") for path in self.runs[name]]
            try:
                lines: Iterable[str]
                if key is None or len(handles) == 1:
                    lines = (line for handle in handles for line in handle)
                else:
                    lines = heapq.merge(*handles, key=_parsed(key))
                _write_atomically(out / name, (line.rstrip("\n") for line in lines))
            finally:
                for handle in handles:
                    handle.close()

    def close(self) -> None:
        self.folder.cleanup()


#: Called once per batch of patients decided, with what was decided and written: their inputs,
#: evaluations, the evaluation context, and the dispense decisions and findings of the backend
#: that decided (the report is drawn from them without keeping every patient's inputs).
Observer = Callable[
    [
        Sequence[PatientInputs],
        Sequence[Evaluation],
        Context,
        Sequence[DispenseDecision],
        Sequence[Finding],
    ],
    None,
]


def run_batch(
    settings: BatchSettings,
    data: ReferenceData,
    progress: Progress | None = None,
    observe: Observer | None = None,
) -> BatchResult:
    """Batch mode: read every source (on `settings.jobs` processes), decide every patient,
    write the outputs. Large inputs are spilled to disk and decided a batch of patients at a
    time; the outputs are byte-identical either way."""
    spill = False if settings.rems is not None else None  # the REMS backend reads it all
    with fewer_collections():
        collected = _collect(settings, data, progress, spill)
        try:
            return _decide(settings, data, collected, observe)
        finally:
            collected.close()


@dataclass
class _Part:
    """What deciding one batch of patients gave: its runs of the four outputs are on disk."""

    runs: dict[str, Path]
    on_clozapine: int
    overdue: int
    issues_written: int
    withdrawn: int
    decisions: list[DispenseDecision]
    notes: list[str]
    evaluations: list[Evaluation]  # only when the settings retain them


def _decide_part(
    settings: BatchSettings,
    data: ReferenceData,
    collector: Collector,
    inputs: Sequence[PatientInputs],
    folder: Path,
    number: int,
    observe: Observer | None = None,
) -> _Part:
    """Decide one batch of patients and write its sorted runs (named by `number`) to `folder`."""
    context = _context(settings, data)
    evaluations = [evaluate_patient(item, context) for item in inputs]
    if settings.rems is None:
        outputs = _local(evaluations)
    else:
        outputs = _rems(settings, settings.rems, data, collector, inputs, evaluations)
    if observe is not None:
        observe(inputs, evaluations, context, outputs.decisions, outputs.findings)
    issues = _issues(settings, data, collector, inputs, outputs)
    status = [status_record(e.status, settings.as_of) for e in evaluations if e.on_clozapine]
    outputs.authorizations.sort(key=_pair_key("dispense"))
    outputs.forms.sort(key=_pair_key("reportingPeriod"))
    records = {
        "DetectedIssue.ndjson": issues,
        "status.ndjson": status,
        "authorizations.ndjson": outputs.authorizations,
        "psf.ndjson": outputs.forms,
    }
    runs = {}
    for name, lines in records.items():
        runs[name] = path = folder / f"{name}.{number}"
        with path.open("w", encoding="utf-8") as handle:
            for record in lines:
                handle.write(_dump(record))
                handle.write("\n")
    return _Part(
        runs=runs,
        on_clozapine=sum(1 for e in evaluations if e.on_clozapine),
        overdue=sum(1 for e in evaluations if e.on_clozapine and e.status.overdue),
        issues_written=len(issues),
        withdrawn=len(outputs.withdrawals),
        decisions=outputs.decisions,
        notes=outputs.notes,
        evaluations=evaluations if settings.retain else [],
    )


#: What the forked deciding workers read (set by the parent just before it forks them).
_DECIDING: tuple[BatchSettings, ReferenceData, Collected, Path] | None = None


def _decide_in_worker(number: int) -> _Part:
    assert _DECIDING is not None  # inherited from the parent at fork
    settings, data, collected, folder = _DECIDING
    collector, inputs = collected.batch(number)
    return _decide_part(settings, data, collector, inputs, folder, number)


def _parts(
    settings: BatchSettings,
    data: ReferenceData,
    collected: Collected,
    folder: Path,
    observe: Observer | None,
) -> Iterator[_Part]:
    """Every batch of patients decided, in patient order: on forked worker processes when there
    are several batches and CPUs (the local backend, no observer: both need this process),
    else here."""
    jobs = collected.workers
    parallel = jobs > 1 and settings.rems is None and observe is None and can_fork()
    count = collected.plan_batches(settings.tuning.batch_patients, jobs if parallel else 1)
    if not parallel or count <= 1:
        for number in range(count):
            collector, inputs = collected.batch(number)
            yield _decide_part(settings, data, collector, inputs, folder, number, observe)
        return
    global _DECIDING
    _DECIDING = (settings, data, collected, folder)
    try:
        yield from ordered_map(_decide_in_worker, range(count), jobs)
    finally:
        _DECIDING = None


def _decide(
    settings: BatchSettings,
    data: ReferenceData,
    collected: Collected,
    observe: Observer | None = None,
) -> BatchResult:
    settings.out.mkdir(parents=True, exist_ok=True)
    runs = _Runs(settings.out)
    kept: list[Evaluation] = []
    decisions: list[DispenseDecision] = []
    notes: list[str] = []
    on_clozapine = overdue = issues_written = withdrawn = 0
    try:
        for part in _parts(settings, data, collected, Path(runs.folder.name), observe):
            for name, path in part.runs.items():
                runs.runs[name].append(path)
            on_clozapine += part.on_clozapine
            overdue += part.overdue
            issues_written += part.issues_written
            withdrawn += part.withdrawn
            decisions += part.decisions
            notes += part.notes
            kept += part.evaluations
        runs.write(settings.out)
    finally:
        runs.close()
    problems = collected.collector.problems
    _write_atomically(
        settings.out / PROBLEMS_FILE,
        (_dump({"location": p.location, "message": p.message}) for p in problems),
    )
    return BatchResult(
        evaluations=tuple(kept),
        problems=tuple(problems),
        resources_read=collected.resources,
        unresolved_medications=collected.unresolved_medications(),
        issues_written=issues_written,
        withdrawn=withdrawn,
        decisions=tuple(decisions),
        notes=tuple(notes),
        skipped=collected.skipped,
        on_clozapine=on_clozapine,
        overdue=overdue,
    )
