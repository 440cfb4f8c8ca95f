"""Batch mode (interfaces.md section 3): FHIR files in, four deterministic output files out."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from adapter.batch.sources import read_sources
from adapter.core.evaluate import Context, Evaluation, Withdrawal, evaluate_patient
from adapter.core.findings import Finding
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.core.reference import ReferenceData
from adapter.decide import Backend, Directory, Outcome, local_outcome
from adapter.decide.rems import RemsDecider, RemsSettings
from adapter.fhir.collect import Collector, IdentityCollector, InputProblem, identity_refs
from adapter.fhir.read import Reader
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
    #: What each evaluation was made from, and how (the report draws its history from them).
    inputs: tuple[PatientInputs, ...] = ()
    context: Context | None = None
    #: The findings written (the REMS backend's when it decided).
    findings: tuple[Finding, ...] = ()

    def summary(self, out: Path, seconds: float | None = None) -> str:
        on_clozapine = [e for e in self.evaluations if e.on_clozapine]
        outcomes = Counter(d.outcome for d in self.decisions)
        overdue = sum(1 for e in on_clozapine if e.status.overdue)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        read = f"Read {plural(self.resources_read, 'resource')}{took}"
        lines = [
            f"{read}; {plural(len(self.problems), 'input problem')} "
            f"(on stderr; all in {PROBLEMS_FILE})."
            if self.problems
            else f"{read}.",
            f"{plural(len(on_clozapine), 'patient')} on clozapine ({overdue} overdue for an ANC).",
            "Dispenses decided: "
            + (", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "none")
            + ".",
            f"{plural(self.issues_written, 'DetectedIssue')} written "
            f"({plural(self.withdrawn, 'withdrawal')}).",
            f"Outputs in {out}",
        ]
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


def _evaluate(
    settings: BatchSettings, data: ReferenceData, progress: Progress | None = None
) -> tuple[Collector, list[PatientInputs], list[Evaluation], Context]:
    collector = Collector(Reader(data, settings.site_tz), settings.as_of)
    for count, located in enumerate(read_sources(settings.sources, collector.problems), 1):
        collector.add(located)
        if progress is not None and count % 5000 == 0:
            progress(count)
    context = Context(
        protocol=data.protocol,
        units=data.units,
        site_tz=settings.site_tz,
        clock=settings.as_of,
        derive_anc=settings.derive_anc,
    )
    inputs = collector.patients()
    return collector, inputs, [evaluate_patient(item, context) for item in inputs], context


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


def run_batch(
    settings: BatchSettings, data: ReferenceData, progress: Progress | None = None
) -> BatchResult:
    collector, inputs, evaluations, context = _evaluate(settings, data, progress)
    if settings.rems is None:
        outputs = _local(evaluations)
    else:
        outputs = _rems(settings, settings.rems, data, collector, inputs, evaluations)
    issues = [detected_issue(f, data.finding_system, settings.as_of) for f in outputs.findings]
    issues += [
        withdrawn_issue(collector.raw_issue(withdrawal.issue.ref), withdrawal)
        for withdrawal in outputs.withdrawals
    ]
    issues.sort(key=lambda r: (r["patient"]["reference"], r["code"]["coding"][-1]["code"], r["id"]))

    status = [status_record(e.status, settings.as_of) for e in evaluations if e.on_clozapine]
    outputs.authorizations.sort(key=lambda r: (r["patient"], r["dispense"]))
    outputs.forms.sort(key=lambda r: (r["patient"], r["reportingPeriod"]))
    settings.out.mkdir(parents=True, exist_ok=True)
    files: Sequence[tuple[str, list[dict[str, Any]]]] = (
        ("DetectedIssue.ndjson", issues),
        ("status.ndjson", status),
        ("authorizations.ndjson", outputs.authorizations),
        ("psf.ndjson", outputs.forms),
    )
    for name, records in files:
        _write_atomically(settings.out / name, (_dump(record) for record in records))
    _write_atomically(
        settings.out / PROBLEMS_FILE,
        (_dump({"location": p.location, "message": p.message}) for p in collector.problems),
    )
    return BatchResult(
        evaluations=tuple(evaluations),
        problems=tuple(collector.problems),
        resources_read=collector.resources_read,
        unresolved_medications=collector.unresolved_medications(),
        issues_written=len(issues),
        withdrawn=len(outputs.withdrawals),
        decisions=tuple(outputs.decisions),
        notes=tuple(outputs.notes),
        inputs=tuple(inputs),
        context=context,
        findings=tuple(outputs.findings),
    )
