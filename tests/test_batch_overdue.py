"""Batch mode, interfaces.md section 2: "an `anc-monitoring-overdue` finding that a later usable
result answers is withdrawn as `cancelled`", when the earlier DetectedIssue is fed back."""

from __future__ import annotations

from pathlib import Path

from tests import scenario_kit as k

PID = "p-overdue-answered"


def _history() -> list[k.Resource]:
    return [*k.on_clozapine(PID, "2026-01-05", "2026-02-02"), k.anc(PID, "2026-01-12", 2100)]


def test_fed_back_overdue_finding_is_cancelled_once_a_later_result_answers_it(
    tmp_path: Path,
) -> None:
    first = k.run_batch(tmp_path, _history(), k.as_of("2026-01-30"))
    (overdue,) = first.issues_where(code="anc-monitoring-overdue", patient=PID)

    answered = [*_history(), *first.issues, k.anc(PID, "2026-02-02", 2200)]
    second = k.run_batch(tmp_path, answered, k.as_of("2026-02-03"))
    (cancelled,) = second.issues_where(code="anc-monitoring-overdue", status="cancelled")
    assert cancelled["id"] == overdue["id"]
    assert second.identifier(cancelled) == first.identifier(overdue)
    assert second.issues_where(code="anc-monitoring-overdue", status="final") == []
    assert not second.status_for(PID)["overdue"]


def test_an_overdue_finding_without_a_later_result_stays(tmp_path: Path) -> None:
    first = k.run_batch(tmp_path, _history(), k.as_of("2026-01-30"))
    second = k.run_batch(tmp_path, [*_history(), *first.issues], k.as_of("2026-01-31"))
    assert second.issues_where(code="anc-monitoring-overdue", status="cancelled") == []


def test_the_overdue_sentence_gives_the_collection_date_in_the_site_time_zone(
    tmp_path: Path,
) -> None:
    """An ANC collected 2026-01-12T02:00Z is collected on 2026-01-11 in Los Angeles: every
    sentence about it says so (the overdue one said the UTC date)."""
    history = [
        *k.on_clozapine(PID, "2026-01-05", "2026-02-02"),
        k.anc(PID, "2026-01-12T02:00:00Z", 1200),
    ]
    run = k.run_batch(
        tmp_path, history, k.as_of("2026-01-30"), extra_args=("--site-tz", "America/Los_Angeles")
    )
    (overdue,) = run.issues_where(code="anc-monitoring-overdue", patient=PID)
    (mild,) = run.issues_where(code="anc-mild-neutropenia", patient=PID)
    assert "collected 2026-01-11" in mild["detail"]
    assert "was collected 2026-01-11 " in overdue["detail"]
