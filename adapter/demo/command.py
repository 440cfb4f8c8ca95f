"""``rems-adapter demo``: batch mode on the bundled synthetic data, and a table to read.

The table is what a pharmacist reads at the counter: one line per patient on clozapine, within
100 columns, with a second indented line for what needs attention (hematology consult, the
repeat-ANC deadline, hospice, the reasons a dispense was refused). `--format csv|json` gives
the same rows for a spreadsheet or a script.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any

from adapter.batch.report import ReportBuilder
from adapter.batch.run import BatchResult, BatchSettings, run_batch
from adapter.core.evaluate import Evaluation
from adapter.core.reference import ReferenceData

#: The demo's fixed clock: the synthetic histories are written relative to it.
DEMO_AS_OF = datetime.fromisoformat("2026-03-02T12:00:00+00:00")

WIDTH = 100
#: The worklist and ANC charts, written beside the other outputs (interfaces.md section 3).
REPORT_FILE = "report.html"

_CATEGORY = {
    "normal": "normal",
    "mild-neutropenia": "mild",
    "moderate-neutropenia": "moderate",
    "ben-neutropenia": "BEN",
    "severe-neutropenia": "severe",
}
_RECOMMENDATION = {
    "continue": "continue",
    "interrupt": "INTERRUPT",
    "may-resume": "may resume",
    "prescriber-decision-required": "prescriber",
    "may-initiate": "may start",
    "do-not-initiate": "do not start",
}
_FREQUENCY = {
    "daily": "daily",
    "three-times-weekly": "3x/week",
    "weekly": "weekly",
    "every-2-weeks": "2-weekly",
    "monthly": "monthly",
    "every-6-months": "6-monthly",
}
_OUTCOME = {
    "authorized": "authorized",
    "authorized-override": "override",
    "not-authorized": "REFUSED",
    "pending": "pending",
}
HEADER = (
    "Patient",
    "Pop.",
    "ANC/µL",
    "Collected",
    "Category",
    "Recommend.",
    "Monitor",
    "Next ANC due",
    "Dispense",
)
LEGEND = (
    "Pop.: BEN = benign ethnic neutropenia ranges, H = hospice.  Next ANC due: grace = past due,"
    " still inside the {grace}-day grace period; OVERDUE = past the grace period."
)


def demo_sources() -> list[str]:
    folder = resources.files("adapter.demo").joinpath("data")
    return sorted(
        str(item) for item in folder.iterdir() if item.name.endswith((".ndjson", ".json"))
    )


def due_state(next_due: date, overdue: bool, today: date, grace_days: int) -> str:
    """'overdue', 'grace' (past due, inside the grace period) or 'on-time'."""
    if overdue:
        return "overdue"
    if today > next_due and today <= next_due + timedelta(days=grace_days):
        return "grace"
    return "on-time"


def rows(
    result: BatchResult, as_of: datetime, site_tz: tzinfo, grace_days: int
) -> list[dict[str, Any]]:
    """One record per patient on clozapine (the CSV/JSON rows; the table is drawn from them)."""
    today = as_of.astimezone(site_tz).date()
    out: list[dict[str, Any]] = []
    for evaluation in result.evaluations:
        if evaluation.on_clozapine:
            out.append(_row(evaluation, today, site_tz, grace_days))
    return out


def _row(evaluation: Evaluation, today: date, site_tz: tzinfo, grace_days: int) -> dict[str, Any]:
    status = evaluation.status
    latest = status.latest
    return {
        "patient": status.patient.removeprefix("Patient/"),
        "population": status.population,
        "hospice": status.hospice,
        "ancPerUL": int(latest.anc.value_per_ul.to_integral_value()) if latest else None,
        "collected": latest.anc.collected.astimezone(site_tz).date().isoformat()
        if latest
        else None,
        "category": status.category,
        "recommendation": status.recommendation,
        "monitoringFrequency": status.frequency,
        "nextAncDue": status.next_due.isoformat(),
        "dueState": due_state(status.next_due, status.overdue, today, grace_days),
        "repeatAncBy": status.repeat_by.astimezone(site_tz).isoformat(timespec="minutes")
        if status.repeat_by
        else None,
        "repeatAncByLocal": status.repeat_by.astimezone(site_tz).strftime("%Y-%m-%d %H:%M %Z")
        if status.repeat_by
        else None,
        "hematologyConsult": status.hematology_consult,
        "dispense": ", ".join(d.outcome for d in evaluation.decisions) or None,
        "reasons": sorted({r for d in evaluation.decisions for r in d.reasons}),
    }


def _cells(row: dict[str, Any]) -> tuple[list[str], str]:
    population = ",".join(
        mark for mark, on in (("BEN", row["population"] == "ben"), ("H", row["hospice"])) if on
    )
    due = (
        row["nextAncDue"]
        + {"overdue": " OVERDUE", "grace": " grace", "on-time": ""}[row["dueState"]]
    )
    outcomes = (row["dispense"] or "").split(", ")
    dispense = ", ".join(_OUTCOME.get(o, o) for o in outcomes if o) or "-"
    notes = []
    if row["hematologyConsult"]:
        notes.append("hematology consult")
    if row["repeatAncBy"]:
        notes.append(f"repeat ANC by {row['repeatAncByLocal']}")
    if row["hospice"]:
        notes.append("hospice")
    if row["reasons"]:
        why = "overridden" if "authorized-override" in outcomes else "not authorized"
        notes.append(f"{why}: " + ", ".join(row["reasons"]))
    line = [
        row["patient"],
        population or "-",
        f"{row['ancPerUL']:,}" if row["ancPerUL"] is not None else "none",
        row["collected"] or "-",
        _CATEGORY.get(row["category"] or "", "-"),
        _RECOMMENDATION[row["recommendation"]],
        _FREQUENCY[row["monitoringFrequency"]],
        due,
        dispense,
    ]
    return line, "; ".join(notes)


def pharmacist_table(records: Sequence[dict[str, Any]], grace_days: int) -> str:
    """The table: fits WIDTH columns; notes go on an indented line under their patient."""
    drawn = [_cells(record) for record in records]
    widths = [len(h) for h in HEADER]
    for line, _ in drawn:
        widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]
    numeric = {2}

    def fmt(cells_: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(cells_)
        ).rstrip()

    lines = [fmt(HEADER), "  ".join("-" * w for w in widths)]
    indent = " " * (widths[0] + 2)
    for line, notes in drawn:
        lines.append(fmt(line))
        if notes:
            lines.extend(_wrap(notes, indent + "> ", indent + "  "))
    lines.append("")
    lines.extend(_wrap(LEGEND.format(grace=grace_days), "", ""))
    return "\n".join(lines)


def _wrap(text: str, first: str, rest: str) -> list[str]:
    import textwrap

    return textwrap.wrap(
        text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def to_csv(records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = list(records[0]) if records else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({**record, "reasons": " ".join(record["reasons"])})
    return buffer.getvalue()


def run_demo(
    out: Path,
    site_tz: tzinfo,
    data: ReferenceData,
    derive_anc: bool = True,
    output_format: str = "table",
) -> tuple[BatchResult, str]:
    """Run the demo into `out`; the result and the text to print in `output_format`."""
    settings = BatchSettings(
        sources=tuple(demo_sources()),
        out=out,
        as_of=DEMO_AS_OF,
        site_tz=site_tz,
        derive_anc=derive_anc,
    )
    builder = ReportBuilder()
    result = run_batch(settings, data, observe=builder)
    builder.write(data.protocol, out / REPORT_FILE)
    grace = data.protocol.timing.grace_days
    records = rows(result, DEMO_AS_OF, site_tz, grace)
    if output_format == "json":
        return result, json.dumps(records, indent=2, ensure_ascii=False)
    if output_format == "csv":
        return result, to_csv(records)
    heading = f"rems-adapter demo: synthetic data, as of {DEMO_AS_OF.isoformat()}\n\n"
    return result, heading + pharmacist_table(records, grace)
