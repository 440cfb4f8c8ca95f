"""Extra builders for the S3 scenario files (an independent reading of the spec).

Only adds helpers next to tests/scenario_kit.py and tests/scenario_kit_s2.py; nothing here
changes their behaviour. Written from shared/spec/*.md, not from adapter/.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from tests.scenario_kit import (
    FINDING_SYSTEM,
    V3_ACTCODE,
    Resource,
    Result,
    anc,
    invoke,
    load_outputs,
    on_clozapine,
    parse_instant,
    run_batch,
    write_source,
)

STATUS_KEYS = (
    "patient",
    "asOf",
    "population",
    "hospice",
    "therapyStart",
    "latestAnc",
    "category",
    "recommendation",
    "monitoringFrequency",
    "nextAncDue",
    "overdue",
    "repeatAncBy",
    "hematologyConsult",
)
AUTH_KEYS = (
    "dispense",
    "patient",
    "outcome",
    "reasons",
    "backend",
    "authorizationNumber",
    "daysSupply",
    "setting",
)
PSF_KEYS = (
    "patient",
    "reportingPeriod",
    "ancResults",
    "monitoringFrequency",
    "treatmentStatus",
    "designations",
    "treatmentRationaleRequired",
    "signerRole",
    "state",
)
CATEGORIES = {
    "normal",
    "mild-neutropenia",
    "moderate-neutropenia",
    "ben-neutropenia",
    "severe-neutropenia",
}
RECOMMENDATIONS = {
    "continue",
    "interrupt",
    "may-resume",
    "prescriber-decision-required",
    "may-initiate",
    "do-not-initiate",
}
FREQUENCIES = {
    "daily",
    "three-times-weekly",
    "weekly",
    "every-2-weeks",
    "monthly",
    "every-6-months",
}
PSF_BOXES = {"three-times-weekly", "weekly", "every-2-weeks", "monthly"}


def weekly_patient(pid: str, *, last_anc: str = "2026-02-09", value: int = 1800) -> list[Resource]:
    """On clozapine since 2026-01-05 (weekly schedule), supplies 01-05 and 02-02 (28 days each),
    a normal ANC on `last_anc`."""
    res = on_clozapine(pid, "2026-01-05", "2026-02-02")
    res.append(anc(pid, last_anc, value))
    return res


def v3_codes(issue: Resource) -> list[str]:
    return [
        c.get("code", "")
        for c in issue.get("code", {}).get("coding", [])
        if c.get("system") == V3_ACTCODE
    ]


def finding_codes(issue: Resource) -> list[str]:
    return [
        c.get("code", "")
        for c in issue.get("code", {}).get("coding", [])
        if c.get("system") == FINDING_SYSTEM
    ]


def ident(issue: Resource) -> str:
    from tests.scenario_kit import DECISION_ID_SYSTEM

    vals = [
        i["value"] for i in issue.get("identifier", []) if i.get("system") == DECISION_ID_SYSTEM
    ]
    assert len(vals) == 1, issue
    return vals[0]


def by_ident(result: Result, value: str) -> list[Resource]:
    return [i for i in result.issues if value in [x.get("value") for x in i.get("identifier", [])]]


def same_instant(a: str | None, b: str) -> bool:
    return a is not None and parse_instant(a) == parse_instant(b)


def number_in(text: str, value: str) -> bool:
    """'1400' appears as 1400 or 1,400 (display may group digits)."""
    if value in text:
        return True
    if "." in value:
        whole, frac = value.split(".")
    else:
        whole, frac = value, ""
    grouped = f"{int(whole):,}" + (f".{frac}" if frac else "")
    return grouped in text


def run_sources(
    tmp_path: Path,
    groups: list[list[Resource]],
    as_of_time: str,
    *,
    name: str,
    extra_args: tuple[str, ...] = (),
) -> Result:
    """Run with one --source per group (in the given order)."""
    work = tmp_path / name
    argv = ["run"]
    first: Path | None = None
    for n, group in enumerate(groups):
        src = write_source(work / f"in{n}", group, "ndjson")
        first = first or src
        argv += ["--source", str(src)]
    out = work / "out"
    argv += ["--out", str(out), "--as-of", as_of_time, *extra_args]
    code, messages = invoke(argv)
    assert code == 0, messages
    assert first is not None
    return load_outputs(out, code, first, messages)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def date_of(value: str) -> dt.date:
    return dt.date.fromisoformat(value[:10])


__all__ = ["run_batch"]
