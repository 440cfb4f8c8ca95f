"""Extra builders for the S2 scenario files (independent reading of the spec).

Only adds helpers next to tests/scenario_kit.py; nothing here changes the kit's behaviour.
"""

from __future__ import annotations

from typing import Any

from tests.scenario_kit import (
    LOINC,
    Resource,
    anc,
    completed_dispense,
    finding_code,
    on_clozapine,
    when,
)

# A patient on clozapine for more than a year (monthly normal-range schedule), continuously
# supplied every 28 days (28 days each) from START; the last regular supply is 2026-02-02
# (covers up to 2026-03-01). A normal ANC on 2026-02-02.
START = "2025-01-06"
LAST_REGULAR_SUPPLY = "2026-02-02"


def long_term(pid: str, *, designations: tuple[str, ...] = (), until: str = LAST_REGULAR_SUPPLY):
    res = on_clozapine(pid, START, until, designations=designations)
    res.append(anc(pid, "2026-02-02", 1800 if not designations else 1300))
    return res


def strip_effective(obs: Resource) -> Resource:
    """The Observation without any effective[x] (real feeds put the time elsewhere)."""
    obs = dict(obs)
    obs.pop("effectiveDateTime", None)
    obs.pop("effectivePeriod", None)
    return obs


def diagnostic_report(
    pid: str,
    rid: str,
    results: list[str],
    *,
    effective: str | None = None,
    period: bool = False,
    specimens: list[str] | None = None,
    issued: str = "2026-02-20",
) -> Resource:
    """A CBC DiagnosticReport listing Observations in `result`, with its own effective[x]."""
    dr: Resource = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "issued": when(issued, "12:00:00"),
        "result": [{"reference": f"Observation/{o}"} for o in results],
    }
    if effective is not None:
        if period:
            dr["effectivePeriod"] = {"start": when(effective), "end": when(effective, "08:30:00")}
        else:
            dr["effectiveDateTime"] = when(effective)
    if specimens:
        dr["specimen"] = [{"reference": f"Specimen/{s}"} for s in specimens]
    return dr


def specimen(pid: str, sid: str, collected: str, *, period: bool = False) -> Resource:
    coll: dict[str, Any]
    if period:
        coll = {"collectedPeriod": {"start": when(collected), "end": when(collected, "08:10:00")}}
    else:
        coll = {"collectedDateTime": when(collected)}
    return {
        "resourceType": "Specimen",
        "id": sid,
        "status": "available",
        "type": {"text": "Venous blood"},
        "subject": {"reference": f"Patient/{pid}"},
        "collection": coll,
    }


def supply_at(pid: str, instant: str, days: int = 28, *, did: str | None = None, **kw: Any):
    """A completed supply handed over at an exact instant (whenHandedOver = instant)."""
    d = completed_dispense(pid, instant[:10], days, did=did, **kw)
    d["whenHandedOver"] = instant
    d["whenPrepared"] = instant
    return d


def version(obs: Resource, ver: str, *, status: str, value: Any = None, updated: str) -> Resource:
    """A later version of the same Observation id (corrected, amended, entered-in-error...)."""
    new = dict(obs)
    new["meta"] = {"versionId": ver, "lastUpdated": when(updated, "15:00:00")}
    new["status"] = status
    if value is not None:
        vq = dict(obs["valueQuantity"])
        vq["value"] = value
        new["valueQuantity"] = vq
    return new


def codes_of(issues: list[Resource]) -> list[str]:
    return sorted(str(finding_code(i)) for i in issues)
