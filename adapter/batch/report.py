"""``run --report FILE`` and the demo's ``report.html``: the worklist and charts of a batch run.

Drawn from the same values the run wrote: ``ReportBuilder`` observes each batch of patients as
it is decided (their inputs and evaluations, the dispense decisions and findings of the backend
that decided) and keeps only what the report shows, so the run does not keep every patient's
inputs. The file is written atomically like every other output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adapter.batch.run import _write_atomically
from adapter.core.evaluate import Context, Evaluation
from adapter.core.findings import Finding
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.core.protocol import Protocol
from adapter.report.html import ReportMeta, render_report
from adapter.report.view import GROUPS, PatientView, build_views


class ReportBuilder:
    """Pass as ``run_batch(..., observe=builder)``; then ``write``."""

    def __init__(self) -> None:
        self.views: list[PatientView] = []
        self.context: Context | None = None

    def __call__(
        self,
        inputs: Sequence[PatientInputs],
        evaluations: Sequence[Evaluation],
        context: Context,
        decisions: Sequence[DispenseDecision],
        findings: Sequence[Finding],
    ) -> None:
        self.context = context
        self.views += build_views(inputs, evaluations, context, decisions, findings)

    def html(self, protocol: Protocol) -> str:
        if self.context is None:
            raise ValueError("no batch was observed")  # run_batch always decides one batch
        rank = {group: index for index, (group, _) in enumerate(GROUPS)}
        views = sorted(self.views, key=lambda v: (rank[v.group], v.patient))
        meta = ReportMeta(as_of=self.context.clock, site_tz=self.context.site_tz, protocol=protocol)
        return render_report(views, meta)

    def write(self, protocol: Protocol, path: Path) -> None:
        """Write the report to ``path`` (replaced in one step; the folder must exist)."""
        _write_atomically(path, [self.html(protocol).rstrip("\n")])
