"""S2 feeds: collection time, statuses, corrections and withdrawals, out-of-order arrival, and
withdrawing answered overdue findings (clinical-rules 1; interfaces 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_kit import (
    anc,
    as_of,
    finding_code,
    run_batch,
)
from tests.scenario_kit_s2 import (
    diagnostic_report,
    long_term,
    specimen,
    strip_effective,
    version,
)


def _low(pid: str, oid: str = "p-low", value: int = 800, **kw):
    # Issued 2026-02-20, long after a 2026-02-10 collection: the report time is never the ANC time.
    return strip_effective(anc(pid, "2026-02-10", value, oid=oid, issued="2026-02-20T12:00:00Z"))


# "When the Observation carries no effective time, the collection time is that of the
# DiagnosticReport that lists it in `result` (`effective[x]`), else of its `specimen`
# (`Specimen.collection.collected[x]`); with none of them the result is unevaluable."
@pytest.mark.parametrize(
    "where",
    ["report-datetime", "report-period", "specimen-datetime", "specimen-period", "report-specimen"],
)
def test_feed_collection_time_from_report_or_specimen(tmp_path: Path, where: str) -> None:
    res = long_term("p")
    obs = _low("p")
    if where.startswith("report-") and where != "report-specimen":
        res += [
            obs,
            diagnostic_report(
                "p", "dr1", ["p-low"], effective="2026-02-10", period=where == "report-period"
            ),
        ]
    elif where == "report-specimen":
        # the report lists the Observation but has no effective[x]; its specimen has the time
        res += [
            obs,
            diagnostic_report("p", "dr1", ["p-low"], specimens=["sp1"]),
            specimen("p", "sp1", "2026-02-10"),
        ]
    else:
        obs["specimen"] = {"reference": "Specimen/sp1"}
        res += [obs, specimen("p", "sp1", "2026-02-10", period=where == "specimen-period")]
    r = run_batch(tmp_path, res, as_of("2026-02-21"))
    st = r.status_for("p")
    assert st["latestAnc"]["observation"].endswith("p-low"), st
    assert st["latestAnc"]["collected"].startswith("2026-02-10"), st
    assert r.issues_where(code="anc-moderate-neutropenia", patient="p", observation="p-low")
    assert not r.issues_where(code="anc-unevaluable", patient="p")


def test_feed_no_collection_time_anywhere_is_unevaluable(tmp_path: Path) -> None:
    res = long_term("p")
    res += [_low("p"), diagnostic_report("p", "dr1", ["p-low"])]
    r = run_batch(tmp_path, res, as_of("2026-02-21"))
    found = r.issues_where(code="anc-unevaluable", patient="p", observation="p-low")
    assert len(found) == 1
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-02")


# The Observation's own effective time wins over the report's.
def test_feed_observation_effective_wins_over_report(tmp_path: Path) -> None:
    res = long_term("p")
    res += [
        anc("p", "2026-02-10", 800, oid="p-low"),
        diagnostic_report("p", "dr1", ["p-low"], effective="2026-02-14"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-21"))
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-10")


# A derived ANC whose WBC and % carry no time of their own: the CBC report's time is the
# collection for both (same specimen/collection).
def test_feed_derived_from_report_time(tmp_path: Path) -> None:
    from tests.scenario_kit import percent, wbc

    res = long_term("p")
    w = strip_effective(wbc("p", "2026-02-10", 3.0, oid="p-wbc"))
    n = strip_effective(percent("p", "2026-02-10", 30, loinc="770-8", oid="p-neut"))
    res += [w, n, diagnostic_report("p", "dr1", ["p-wbc", "p-neut"], effective="2026-02-10")]
    r = run_batch(tmp_path, res, as_of("2026-02-21"))
    st = r.status_for("p")
    assert st["category"] == "moderate-neutropenia", st
    assert st["latestAnc"]["collected"].startswith("2026-02-10")


# "Status: final, amended, corrected are usable. preliminary/registered are not used."
@pytest.mark.parametrize(
    ("status", "used"),
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("registered", False),
    ],
)
def test_feed_statuses(tmp_path: Path, status: str, used: bool) -> None:
    res = long_term("p")
    res.append(anc("p", "2026-02-10", 800, oid="p-low", status=status))
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    st = r.status_for("p")
    moderate = r.issues_where(code="anc-moderate-neutropenia", patient="p")
    if used:
        assert st["category"] == "moderate-neutropenia"
        assert len(moderate) == 1
    else:
        assert st["category"] == "normal"
        assert st["latestAnc"]["observation"].endswith("p-anc-2026-02-02")
        assert moderate == []


# A corrected version replaces the earlier one and the decisions are re-made: fed back with the
# first run's DetectedIssues, the moderate finding is withdrawn as cancelled (data changed).
def test_feed_correction_withdraws_finding_as_cancelled(tmp_path: Path) -> None:
    res = long_term("p")
    low = anc("p", "2026-02-10", 800, oid="p-low")
    first = run_batch(tmp_path, [*res, low], as_of("2026-02-10"))
    old = first.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert len(old) == 1
    fixed = version(low, "2", status="corrected", value=1800, updated="2026-02-11")
    second = run_batch(tmp_path, [*res, fixed, *first.issues], as_of("2026-02-11"))
    assert second.status_for("p")["category"] == "normal"
    assert not second.issues_where(code="anc-moderate-neutropenia", patient="p")
    ident = first.identifier(old[0])
    same = [i for i in second.issues if ident in [x.get("value") for x in i.get("identifier", [])]]
    assert [i["status"] for i in same] == ["cancelled"]


# entered-in-error withdraws the result: the finding goes to entered-in-error; the dispense that
# it blocked is re-decided.
def test_feed_entered_in_error_withdraws(tmp_path: Path) -> None:
    from tests.scenario_kit import pending_dispense

    res = long_term("p")
    low = anc("p", "2026-02-10", 800, oid="p-low")
    pend = pending_dispense("p", "2026-02-11", 7, did="p-next")
    first = run_batch(tmp_path, [*res, low, pend], as_of("2026-02-11"))
    assert first.authorization_for("p-next")["outcome"] == "not-authorized"
    old = first.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert len(old) == 1
    gone = version(low, "2", status="entered-in-error", updated="2026-02-11")
    second = run_batch(tmp_path, [*res, gone, pend, *first.issues], as_of("2026-02-11"))
    ident = first.identifier(old[0])
    same = [i for i in second.issues if ident in [x.get("value") for x in i.get("identifier", [])]]
    assert [i["status"] for i in same] == ["entered-in-error"]
    assert second.status_for("p")["category"] == "normal"
    assert second.authorization_for("p-next")["outcome"] == "authorized"


# Both versions present in one export: the latest version (corrected) decides.
def test_feed_both_versions_in_one_source(tmp_path: Path) -> None:
    res = long_term("p")
    low = anc("p", "2026-02-10", 1800, oid="p-v")
    fixed = version(low, "2", status="corrected", value=700, updated="2026-02-11")
    r = run_batch(tmp_path, [*res, fixed, low], as_of("2026-02-11"))
    st = r.status_for("p")
    assert st["category"] == "moderate-neutropenia"
    assert float(st["latestAnc"]["valuePerUL"]) == 700


# "A late, older low result never overwrites a newer state, but it is still surfaced."
def test_feed_late_older_low_result(tmp_path: Path) -> None:
    res = long_term("p")
    newer = anc("p", "2026-02-10", 1800, oid="p-new")
    older = anc("p", "2026-02-06", 1200, oid="p-old", issued="2026-02-11T12:00:00Z")
    older["meta"]["lastUpdated"] = "2026-02-11T12:00:00Z"
    r = run_batch(tmp_path, [*res, newer, older], as_of("2026-02-11"))
    st = r.status_for("p")
    assert st["latestAnc"]["observation"].endswith("p-new")
    assert st["category"] == "normal"
    assert r.issues_where(code="anc-mild-neutropenia", patient="p", observation="p-old")


# "Only open problems stay final: an anc-monitoring-overdue finding that a later usable result
# answers is withdrawn as cancelled" (interfaces 2), in batch when fed back.
def _overdue_first_run(tmp_path: Path):
    res = long_term("p")  # monthly; last ANC 2026-02-02, due 2026-03-02, grace to 2026-03-04
    first = run_batch(tmp_path, res, as_of("2026-03-06"))
    assert first.status_for("p")["overdue"] is True
    overdue = first.issues_where(code="anc-monitoring-overdue", patient="p")
    assert len(overdue) == 1
    return res, first, first.identifier(overdue[0])


def _by_ident(result, ident: str) -> list[dict]:
    return [i for i in result.issues if ident in [x.get("value") for x in i.get("identifier", [])]]


def test_feed_overdue_answered_is_cancelled(tmp_path: Path) -> None:
    res, first, ident = _overdue_first_run(tmp_path)
    later = anc("p", "2026-03-07", 1900, oid="p-late")
    second = run_batch(tmp_path, [*res, later, *first.issues], as_of("2026-03-07"))
    assert second.status_for("p")["overdue"] is False
    assert [i["status"] for i in _by_ident(second, ident)] == ["cancelled"]
    assert not second.issues_where(code="anc-monitoring-overdue", patient="p")


def test_feed_overdue_not_answered_by_preliminary(tmp_path: Path) -> None:
    res, first, ident = _overdue_first_run(tmp_path)
    later = anc("p", "2026-03-07", 1900, oid="p-late", status="preliminary")
    second = run_batch(tmp_path, [*res, later, *first.issues], as_of("2026-03-07"))
    assert second.status_for("p")["overdue"] is True
    assert [i["status"] for i in _by_ident(second, ident)] == ["final"]


def test_feed_overdue_answered_by_low_result_still_cancelled(tmp_path: Path) -> None:
    # A usable low result answers the overdue question (the low value is its own finding).
    res, first, ident = _overdue_first_run(tmp_path)
    later = anc("p", "2026-03-07", 1200, oid="p-late")
    second = run_batch(tmp_path, [*res, later, *first.issues], as_of("2026-03-07"))
    assert [i["status"] for i in _by_ident(second, ident)] == ["cancelled"]
    assert second.issues_where(code="anc-mild-neutropenia", patient="p", observation="p-late")


def test_feed_overdue_fed_back_without_answer_not_duplicated(tmp_path: Path) -> None:
    res, first, ident = _overdue_first_run(tmp_path)
    second = run_batch(tmp_path, [*res, *first.issues], as_of("2026-03-06"))
    assert [i["status"] for i in _by_ident(second, ident)] == ["final"]
    codes = [finding_code(i) for i in second.issues_where(patient="p")]
    assert codes.count("anc-monitoring-overdue") == 1


# "Dates are taken in the site's time zone (configurable; default UTC)": with the default, a
# collection at 23:30 -05:00 on 03-02 is 04:30 UTC on 03-03, so a weekly ANC is due 03-10; a
# collection at 00:30 +02:00 on 03-03 is 22:30 UTC on 03-02, due 03-09.
@pytest.mark.parametrize(
    ("collected", "due"),
    [("2026-03-02T23:30:00-05:00", "2026-03-10"), ("2026-03-03T00:30:00+02:00", "2026-03-09")],
)
def test_feed_dates_in_site_zone_default_utc(tmp_path: Path, collected: str, due: str) -> None:
    from tests.scenario_kit import on_clozapine

    res = on_clozapine("p", "2026-01-05", "2026-03-03")
    res.append(anc("p", collected, 1800, oid="p-tz"))
    r = run_batch(tmp_path, res, as_of("2026-03-04"))
    st = r.status_for("p")
    assert st["latestAnc"]["observation"].endswith("p-tz")
    assert st["monitoringFrequency"] == "weekly"
    assert st["nextAncDue"] == due
