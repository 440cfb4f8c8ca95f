"""``rems-adapter demo``: batch mode on the bundled synthetic data, and a table to read."""

from __future__ import annotations

import tempfile
from datetime import datetime, tzinfo
from importlib import resources
from pathlib import Path

from adapter.batch.run import BatchResult, BatchSettings, run_batch
from adapter.core.findings import cells
from adapter.core.reference import ReferenceData

#: The demo's fixed clock: the synthetic histories are written relative to it.
DEMO_AS_OF = datetime.fromisoformat("2026-03-02T12:00:00+00:00")


def demo_sources() -> list[str]:
    folder = resources.files("adapter.demo").joinpath("data")
    return sorted(
        str(item) for item in folder.iterdir() if item.name.endswith((".ndjson", ".json"))
    )


def pharmacist_table(result: BatchResult) -> str:
    """One line per patient on clozapine: what a pharmacist needs at the counter."""
    header = ("Patient", "Latest ANC", "Category", "Frequency", "Next due", "Dispense")
    rows = [header]
    for evaluation in result.evaluations:
        if not evaluation.on_clozapine:
            continue
        status = evaluation.status
        latest = status.latest
        anc = (
            f"{cells(latest.anc.value_per_ul)} ({latest.anc.collected.date()})"
            if latest
            else "none"
        )
        due = f"{status.next_due}{' OVERDUE' if status.overdue else ''}"
        outcomes = ", ".join(
            decision.outcome + (f" [{', '.join(decision.reasons)}]" if decision.reasons else "")
            for decision in evaluation.decisions
        )
        rows.append(
            (
                status.patient.removeprefix("Patient/"),
                anc,
                status.category or "-",
                status.frequency,
                due,
                outcomes or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_demo(
    out: Path | None, site_tz: tzinfo, data: ReferenceData, derive_anc: bool = True
) -> int:
    folder = out or Path(tempfile.mkdtemp(prefix="rems-adapter-demo-"))
    settings = BatchSettings(
        sources=tuple(demo_sources()),
        out=folder,
        as_of=DEMO_AS_OF,
        site_tz=site_tz,
        derive_anc=derive_anc,
    )
    result = run_batch(settings, data)
    print(f"rems-adapter demo: synthetic data, as of {DEMO_AS_OF.isoformat()}")
    print()
    print(pharmacist_table(result))
    print()
    print(result.summary(folder))
    return 0
