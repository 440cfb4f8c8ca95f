"""A supply handed over while treatment is interrupted, through `rems-adapter run` (clinical-rules
2.2): the completed dispense gets its own `dispense-not-authorized` DetectedIssue implicating it,
with the reasons that held at its hand-over; authorizations.ndjson stays one line per dispense
awaiting a decision."""

from __future__ import annotations

from pathlib import Path

from tests import scenario_kit as k

PID = "p-supplied-while-interrupted"


def _history() -> list[k.Resource]:
    return [
        *k.on_clozapine(PID, "2026-01-05", "2026-01-26"),  # 28-day supplies: 01-05, then none
        k.anc(PID, "2026-01-12", 2100),
        k.anc(PID, "2026-01-19", 800),  # moderate: interrupt
        k.completed_dispense(PID, "2026-01-20", 7, did="refill-during-interruption"),
        k.pending_dispense(PID, "2026-01-21", 7, did="next"),
    ]


def test_completed_dispense_during_interruption_is_surfaced(tmp_path: Path) -> None:
    result = k.run_batch(tmp_path, _history(), k.as_of("2026-01-21"))
    issue = result.dispense_issue("refill-during-interruption")
    assert k.finding_code(issue) == "dispense-not-authorized"
    assert issue["severity"] == "high"
    assert k.evidence_codes(issue) == {"treatment-interrupted"}
    assert f"Observation/{PID}-anc-2026-01-19" in k.evidence_refs(issue)
    assert "handed over on 2026-01-20" in issue["detail"]
    # One authorization line: the pending dispense, still not authorized.
    assert [a["dispense"] for a in result.authorizations] == ["MedicationDispense/next"]
    assert result.authorization_for("next")["outcome"] == "not-authorized"
    assert result.status_for(PID)["recommendation"] == "interrupt"


def test_the_surfaced_finding_is_stable_when_fed_back(tmp_path: Path) -> None:
    first = k.run_batch(tmp_path, _history(), k.as_of("2026-01-21"))
    again = k.run_batch(tmp_path, [*_history(), *first.issues], k.as_of("2026-01-21"))
    before = first.dispense_issue("refill-during-interruption")
    after = again.dispense_issue("refill-during-interruption")
    assert first.identifier(before) == again.identifier(after)
    assert not again.issues_where(status="cancelled")
