"""``GET /`` and ``GET /patients/{id}``: the pharmacist's worklist and one patient's page.

Drawn from the service's state, with the renderer of ``run --report``: each patient's held
resources are read as the worker reads them and evaluated by the core as of the moment the
worker last decided that patient (``decidedAt`` in the patient's state), so the page shows the
decision that was written. Nothing here calls a backend or the EHR: a page view never submits a
form or asks the REMS. With the ``rems`` backend the dispense outcomes are the REMS's and are
not recomputed here: the pages show the ANC picture and say where the dispense decisions are.

The pages pass the same guards as every endpoint (the inbound bearer token, rate limits) and
are sent with ``Cache-Control: no-store``; they show FHIR ids, results, dates and designations,
never a name, birth date or address (README "The worklist and ANC charts").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Response

from adapter.core.evaluate import Context, Evaluation, evaluate_patient
from adapter.core.findings import Finding
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.decide import local_outcome
from adapter.errors import NotFoundError
from adapter.fhir.collect import Collector, Located
from adapter.fhir.read import Reader
from adapter.report.html import ReportMeta, render_patient, render_worklist
from adapter.report.view import GROUPS, PatientView, build_view
from adapter.serve.extensions import Extension, ServeContext

if TYPE_CHECKING:
    from flask import Flask

    from adapter.pipeline import Pipeline

#: A FHIR id (R4: 1-64 of A-Z a-z 0-9 - .).
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
HTML = "text/html; charset=utf-8"
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class Decided:
    inputs: PatientInputs
    evaluation: Evaluation
    context: Context
    decisions: tuple[DispenseDecision, ...]
    findings: tuple[Finding, ...]


class StateReader:
    """Re-reads what the worker decided, from the store alone."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        worker = pipeline.settings.worker
        self.reader = Reader(pipeline.data, worker.site_tz)

    @property
    def local(self) -> bool:
        return self.pipeline.backend.name == "local"

    def decided_at(self, state: dict[str, Any]) -> datetime | None:
        worker = self.pipeline.settings.worker
        if worker.as_of is not None:
            return worker.as_of
        at = state.get("decidedAt")
        if not isinstance(at, int | float):
            return None
        return datetime.fromtimestamp(at, UTC).replace(microsecond=0)

    def patient(self, patient: str) -> Decided | None:
        store = self.pipeline.store
        state = store.patient_state(patient)
        if not state or not state.get("onClozapine"):
            return None
        clock = self.decided_at(state)
        if clock is None:
            return None
        worker = self.pipeline.settings.worker
        data = self.pipeline.data
        context = Context(
            protocol=data.protocol,
            units=data.units,
            site_tz=worker.site_tz,
            clock=clock,
            derive_anc=worker.derive_anc,
        )
        collector = Collector(self.reader, clock)
        held = store.patient_resources(patient)
        medications: set[str] = set()
        for resource in held:
            try:
                flag, ref = self.reader.medication_of(resource)
            except Exception:  # unreadable: the worker reported it when it decided
                continue
            if flag is None and ref is not None:
                medications.add(ref)
        for ref in sorted(medications):
            medication = store.resource("Medication", ref.removeprefix("Medication/"))
            if medication is not None:
                collector.add(Located(ref, medication))
        for resource in held:
            collector.add(Located(f"{resource['resourceType']}/{resource['id']}", resource))
        inputs = [item for item in collector.patients() if item.patient == patient]
        if not inputs:
            return None
        evaluation = evaluate_patient(inputs[0], context)
        if not evaluation.on_clozapine:
            return None
        if self.local:
            outcome = local_outcome(evaluation)
            decisions, findings = outcome.decisions, outcome.findings
        else:
            # The REMS decided the dispenses; the ANC findings are the core's either way.
            decisions = ()
            findings = tuple(
                f for f in evaluation.findings if not f.code.startswith(("dispense-", "psf-"))
            )
        return Decided(inputs[0], evaluation, context, tuple(decisions), tuple(findings))

    def everyone(self) -> list[Decided]:
        out = []
        for patient in self.pipeline.store.patients():
            decided = self.patient(patient)
            if decided is not None:
                out.append(decided)
        return out


def _meta(reader: StateReader, decided: Sequence[Decided]) -> ReportMeta:
    worker = reader.pipeline.settings.worker
    latest = max(
        (d.context.clock for d in decided),
        default=worker.as_of or datetime.now(UTC).replace(microsecond=0),
    )
    source = "service state (each patient as last decided)"
    if not reader.local:
        source += "; dispense decisions are the REMS's, in the DetectedIssues"
    return ReportMeta(
        as_of=latest, site_tz=worker.site_tz, protocol=reader.pipeline.data.protocol, source=source
    )


def _page(body: str) -> Response:
    return Response(body, status=200, mimetype="text/html", headers=HEADERS)


def worklist_views(reader: StateReader) -> tuple[list[Decided], tuple[PatientView, ...]]:
    """Every patient on clozapine the service knows, in worklist order (each patient is
    evaluated as of their own last decision, so they are built one by one)."""
    decided = reader.everyone()
    views = [
        build_view(item.inputs, item.evaluation, item.context, item.decisions, item.findings)
        for item in decided
    ]
    rank = {group: index for index, (group, _) in enumerate(GROUPS)}
    return decided, tuple(sorted(views, key=lambda v: (rank[v.group], v.patient)))


class Worklist(Extension):
    name = "worklist"

    def routes(self, app: Flask, context: ServeContext) -> None:
        reader = StateReader(context.pipeline)

        def worklist() -> Response:
            decided, views = worklist_views(reader)
            meta = _meta(reader, decided)
            return _page(render_worklist(views, meta, lambda v: f"patients/{v.key}"))

        def patient(pid: str) -> Response:
            if not _ID.match(pid):
                raise NotFoundError("no such patient (not a FHIR id)", where="/patients/{id}")
            decided = reader.patient(f"Patient/{pid}")
            if decided is None:
                raise NotFoundError(
                    "no patient on clozapine with this id in the service's state",
                    where="/patients/{id}",
                )
            view = build_view(
                decided.inputs,
                decided.evaluation,
                decided.context,
                decided.decisions,
                decided.findings,
            )
            return _page(render_patient(view, _meta(reader, [decided]), back="../"))

        app.add_url_rule("/", "worklist", worklist, methods=["GET"])
        app.add_url_rule("/patients/<pid>", "patient_page", patient, methods=["GET"])


def make_worklist(_: object) -> Extension:
    """The factory `adapter.serve.command.EXTENSIONS` lists: the pages are always served."""
    return Worklist()


__all__ = ["StateReader", "Worklist", "make_worklist"]
