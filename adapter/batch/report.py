"""``run --report FILE`` and the demo's ``report.html``: the worklist and charts of a batch run.

Drawn from the same values the run wrote (its evaluations, the dispense decisions and findings
of the backend that decided); written atomically like every other output.
"""

from __future__ import annotations

from pathlib import Path

from adapter.batch.run import BatchResult, _write_atomically
from adapter.core.protocol import Protocol
from adapter.report.html import ReportMeta, render_report
from adapter.report.view import build_views


def report_html(result: BatchResult, protocol: Protocol) -> str:
    context = result.context
    if context is None:  # a result built by hand, not by run_batch
        raise ValueError("the batch result carries no evaluation context")
    views = build_views(
        result.inputs, result.evaluations, context, result.decisions, result.findings
    )
    meta = ReportMeta(as_of=context.clock, site_tz=context.site_tz, protocol=protocol)
    return render_report(views, meta)


def write_report(result: BatchResult, protocol: Protocol, path: Path) -> None:
    """Write the report to ``path`` (replaced in one step; the folder must exist)."""
    _write_atomically(path, [report_html(result, protocol).rstrip("\n")])
