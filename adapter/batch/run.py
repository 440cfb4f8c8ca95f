"""Batch mode (interfaces.md section 3): FHIR files in, four deterministic output files out."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from adapter.batch.collect import Collector, IdentityCollector, identity_refs
from adapter.batch.rems_backend import Directory, RemsBackend, RemsSettings
from adapter.batch.sources import InputProblem, read_sources
from adapter.core.evaluate import Context, Evaluation, Withdrawal, evaluate_patient
from adapter.core.findings import Finding
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.core.reference import ReferenceData
from adapter.fhir.read import Reader
from adapter.fhir.records import authorization_record, psf_record, status_record
from adapter.fhir.write import detected_issue, withdrawn_issue
from adapter.rems import RemsClient

OUTPUT_FILES = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")


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

    def summary(self, out: Path) -> str:
        on_clozapine = [e for e in self.evaluations if e.on_clozapine]
        outcomes = Counter(d.outcome for d in self.decisions)
        overdue = sum(1 for e in on_clozapine if e.status.overdue)
        lines = [
            f"Read {self.resources_read} resources; {len(self.problems)} input problems "
            "(on stderr)."
            if self.problems
            else f"Read {self.resources_read} resources.",
            f"{len(on_clozapine)} patients on clozapine ({overdue} overdue for an ANC).",
            "Dispenses decided: "
            + (", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "none")
            + ".",
            f"{self.issues_written} DetectedIssues written ({self.withdrawn} withdrawals).",
            f"Outputs in {out}",
        ]
        if self.unresolved_medications:
            lines.insert(
                1,
                f"{self.unresolved_medications} dispenses reference a Medication that is not in "
                "the input; they were not treated as clozapine.",
            )
        return "\n".join(lines)


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Replace the file in one step: a rerun replaces, never appends, and never half-writes."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _evaluate(
    settings: BatchSettings, data: ReferenceData
) -> tuple[Collector, list[PatientInputs], list[Evaluation]]:
    collector = Collector(Reader(data, settings.site_tz), settings.as_of)
    for located in read_sources(settings.sources, collector.problems):
        collector.add(located)
    context = Context(
        protocol=data.protocol,
        units=data.units,
        site_tz=settings.site_tz,
        clock=settings.as_of,
        derive_anc=settings.derive_anc,
    )
    inputs = collector.patients()
    return collector, inputs, [evaluate_patient(item, context) for item in inputs]


@dataclass
class _Outputs:
    findings: list[Finding]
    withdrawals: list[Withdrawal]
    authorizations: list[dict[str, Any]]
    forms: list[dict[str, Any]]
    decisions: list[DispenseDecision]
    notes: list[str]


def _local(evaluations: Sequence[Evaluation]) -> _Outputs:
    return _Outputs(
        findings=[f for e in evaluations for f in e.findings],
        withdrawals=[w for e in evaluations for w in e.withdrawals],
        authorizations=[
            authorization_record(decision, "local") for e in evaluations for decision in e.decisions
        ],
        forms=[
            psf_record(
                e.psf,
                "awaiting-prescriber"
                if e.psf.signer_role == "prescriber" and not e.psf_signed
                else "prepared",
            )
            for e in evaluations
            if e.psf is not None
        ],
        decisions=[decision for e in evaluations for decision in e.decisions],
        notes=[],
    )


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
    client = RemsClient(rems.url, timeouts=rems.timeouts, retry=rems.retry)
    try:
        backend = RemsBackend(
            client, rems, directory, data.protocol, settings.site_tz, settings.as_of
        )
        for patient_inputs, evaluation in on_clozapine:
            outcome = backend.decide(evaluation, patient_inputs)
            outputs.findings += outcome.findings
            outputs.withdrawals += outcome.withdrawals
            outputs.authorizations += outcome.authorizations
            outputs.forms += outcome.forms
            outputs.decisions += outcome.decisions
            outputs.notes += outcome.notes
    finally:
        client.close()
    return outputs


def run_batch(settings: BatchSettings, data: ReferenceData) -> BatchResult:
    collector, inputs, evaluations = _evaluate(settings, data)
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
    return BatchResult(
        evaluations=tuple(evaluations),
        problems=tuple(collector.problems),
        resources_read=collector.resources_read,
        unresolved_medications=collector.unresolved_medications(),
        issues_written=len(issues),
        withdrawn=len(outputs.withdrawals),
        decisions=tuple(outputs.decisions),
        notes=tuple(outputs.notes),
    )
