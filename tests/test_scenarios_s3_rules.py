"""S3: clinical rules (clinical-rules.md sections 1, 2, 4) through `rems-adapter run`.

Each test cites the sentence it checks; where the spec is silent the safer reading is taken
and said so (see tests/SCENARIOS-S3.md)."""

from __future__ import annotations

from pathlib import Path

from tests.scenario_kit import (
    BEN,
    HOSPICE,
    PRESCRIBER,
    Resource,
    anc,
    as_of,
    completed_dispense,
    evidence_codes,
    finding_code,
    medication_request,
    on_clozapine,
    patient,
    pending_dispense,
    percent,
    pharmacist_override,
    practitioner,
    prescriber_rationale,
    run_batch,
    wbc,
    with_mitigation,
)
from tests.scenario_kit_s2 import long_term, version
from tests.scenario_kit_s3 import weekly_patient

# ---------------------------------------------------------------------------------------------
# CR 1 "ANC = WBC x (neutrophil% [+ band%]) / 100, only from the same specimen/collection time
# and only when that collection has no direct ANC; a derived value is marked derived."


def _cbc(pid: str, day: str, wbc_k: float, neut: float) -> list[Resource]:
    return [
        wbc(pid, day, wbc_k, oid=f"{pid}-wbc-{day}"),
        percent(pid, day, neut, loinc="770-8", oid=f"{pid}-neut-{day}"),
    ]


def test_s3_derived_not_made_when_the_collection_has_an_unevaluable_direct_anc(
    tmp_path: Path,
) -> None:
    # the collection has a direct ANC (a % on 751-8: unevaluable); literal reading: no derived
    # value from that collection; the unevaluable one is reported.
    res = [
        *long_term("p"),
        anc("p", "2026-02-10", 60, oid="p-direct", code="%"),
        *_cbc("p", "2026-02-10", 3.0, 60),
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.issues_where(code="anc-unevaluable", observation="p-direct")
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-02")


def test_s3_derived_not_made_when_the_collection_has_a_preliminary_direct_anc(
    tmp_path: Path,
) -> None:
    res = [
        *long_term("p"),
        anc("p", "2026-02-10", 1700, oid="p-direct", status="preliminary"),
        *_cbc("p", "2026-02-10", 4.0, 20),  # would derive 800
    ]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert r.status_for("p")["category"] == "normal"


def test_s3_derived_value_is_marked_derived(tmp_path: Path) -> None:
    # Where "marked derived" shows is not fixed; the pharmacist's sentence is the visible place.
    res = [*long_term("p"), *_cbc("p", "2026-02-10", 4.0, 20)]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    found = r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert len(found) == 1
    assert "derived" in found[0]["detail"].lower(), found[0]["detail"]


def test_s3_no_derive_anc_flag(tmp_path: Path) -> None:
    res = [*long_term("p"), *_cbc("p", "2026-02-10", 4.0, 20)]
    r = run_batch(tmp_path, res, as_of("2026-02-10"), extra_args=["--no-derive-anc"])
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-02")


def test_s3_derived_from_a_later_collection_than_the_direct_anc(tmp_path: Path) -> None:
    res = [*long_term("p"), anc("p", "2026-02-10", 1800), *_cbc("p", "2026-02-12", 4.0, 20)]
    r = run_batch(tmp_path, res, as_of("2026-02-12"))
    st = r.status_for("p")
    assert st["category"] == "moderate-neutropenia"
    assert st["latestAnc"]["collected"].startswith("2026-02-12")
    assert st["latestAnc"]["valuePerUL"] == 800


def test_s3_percent_without_wbc_is_no_anc(tmp_path: Path) -> None:
    res = [*long_term("p"), percent("p", "2026-02-10", 20, loinc="770-8", oid="p-neut")]
    r = run_batch(tmp_path, res, as_of("2026-02-10"))
    assert r.status_for("p")["latestAnc"]["collected"].startswith("2026-02-02")
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


# ---------------------------------------------------------------------------------------------
# CR 1 "A corrected/amended version replaces the earlier one (same Observation id, or linked)".


def test_s3_correction_linked_by_identifier(tmp_path: Path) -> None:
    lab_id = [{"system": "urn:oid:1.2.3.4.5", "value": "ACC-1234-ANC"}]
    first = anc("p", "2026-02-10", 800, oid="p-v1", extra={"identifier": lab_id})
    fixed = anc(
        "p",
        "2026-02-10",
        1800,
        oid="p-v2",
        status="corrected",
        last_updated="2026-02-11T09:00:00Z",
        extra={"identifier": lab_id},
    )
    r = run_batch(tmp_path, [*long_term("p"), first, fixed], as_of("2026-02-11"))
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")
    assert r.status_for("p")["latestAnc"]["valuePerUL"] == 1800


def test_s3_correction_listed_before_the_original(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 800, oid="p-low")
    fixed = version(low, "2", status="corrected", value=1800, updated="2026-02-11")
    r = run_batch(tmp_path, [*long_term("p"), fixed, low], as_of("2026-02-11"))
    assert r.status_for("p")["latestAnc"]["valuePerUL"] == 1800
    assert not r.issues_where(code="anc-moderate-neutropenia", patient="p")


def test_s3_amended_lower_value_replaces(tmp_path: Path) -> None:
    low = anc("p", "2026-02-10", 1600, oid="p-low")
    amended = version(low, "2", status="amended", value=900, updated="2026-02-11")
    r = run_batch(tmp_path, [*long_term("p"), low, amended], as_of("2026-02-11"))
    assert r.status_for("p")["category"] == "moderate-neutropenia"
    assert r.issues_where(code="anc-moderate-neutropenia", observation="p-low")


# ---------------------------------------------------------------------------------------------
# CR 1 "Out-of-order arrival: decisions use results ordered by collection time, not arrival. A
# late, older low result never overwrites a newer state, but it is still surfaced."


def test_s3_late_older_mild_does_not_ask_for_a_repeat(tmp_path: Path) -> None:
    newer = anc("p", "2026-02-10", 1800, oid="p-new", last_updated="2026-02-10T12:00:00Z")
    older = anc(
        "p",
        "2026-02-05",
        1400,
        oid="p-old",
        issued="2026-02-11T12:00:00Z",
        last_updated="2026-02-11T12:00:00Z",
    )
    r = run_batch(tmp_path, [*long_term("p"), newer, older], as_of("2026-02-11"))
    st = r.status_for("p")
    assert st["category"] == "normal" and st["latestAnc"]["observation"].endswith("p-new")
    assert st["repeatAncBy"] is None
    assert r.issues_where(code="anc-mild-neutropenia", observation="p-old")


def test_s3_late_older_severe_still_needs_the_prescriber(tmp_path: Path) -> None:
    # Ordered by collection: severe 02-05, then 1800 on 02-10. CR 2.1 severe: "no rechallenge
    # unless the prescriber decides". Safer reading: the late arrival of the severe result does
    # not let the newer normal one authorize the dispense.
    newer = anc("p", "2026-02-10", 1800, oid="p-new")
    older = anc("p", "2026-02-05", 400, oid="p-old", issued="2026-02-11T12:00:00Z")
    res = [*long_term("p"), newer, older, pending_dispense("p", "2026-02-11", did="p-pend")]
    r = run_batch(tmp_path, res, as_of("2026-02-11"))
    assert r.issues_where(code="anc-severe-neutropenia", observation="p-old")
    assert r.status_for("p")["recommendation"] != "continue"
    assert r.authorization_for("p-pend")["outcome"] == "not-authorized"


# ---------------------------------------------------------------------------------------------
# CR 2.1 BEN: "BEN baseline (configurable): the median of ANCs collected before therapy start;
# 1000 if none"; ben-neutropenia "three times weekly until >= 1000 or >= the patient's
# baseline, then weekly for 4 weeks"; severe "daily until >= 500, then three times weekly until
# >= the baseline".


def _ben_with_baselines(values: list[int]) -> list[Resource]:
    res = on_clozapine("b", "2026-01-05", "2026-02-02", baseline=None, designations=(BEN,))
    days = ["2025-12-10", "2025-12-17", "2025-12-24", "2025-12-31"]
    res += [
        anc("b", d, v, oid=f"b-base-{n}")
        for n, (d, v) in enumerate(zip(days, values, strict=False))
    ]
    return res


def test_s3_ben_median_of_an_even_number_of_baselines(tmp_path: Path) -> None:
    # median(600, 650, 950, 1100) = 800 (the mean would be 825); 810 >= 800 ends three times
    # weekly (S1 A4 reading: whichever threshold is reached first).
    res = _ben_with_baselines([600, 650, 950, 1100])
    res += [anc("b", "2026-01-12", 1200), anc("b", "2026-01-19", 700), anc("b", "2026-01-22", 810)]
    r = run_batch(tmp_path, res, as_of("2026-01-22"))
    st = r.status_for("b")
    assert st["category"] == "ben-neutropenia"
    assert st["monitoringFrequency"] == "weekly", st


def test_s3_ben_severe_recovery_below_own_baseline_stays_three_weekly(tmp_path: Path) -> None:
    # baseline median(1100, 1200, 1600, 1900) = 1400; after severe 450, 1200 is >= 500 but
    # below the baseline: three times weekly (a default baseline of 1000 would have ended it)
    res = _ben_with_baselines([1100, 1200, 1600, 1900])
    res += [anc("b", "2026-01-12", 1500), anc("b", "2026-01-19", 450), anc("b", "2026-01-20", 1200)]
    r = run_batch(tmp_path, res, as_of("2026-01-20"))
    st = r.status_for("b")
    assert st["monitoringFrequency"] == "three-times-weekly", st
    assert st["recommendation"] in ("interrupt", "prescriber-decision-required")


def test_s3_ben_default_baseline_without_pre_therapy_anc(tmp_path: Path) -> None:
    # no ANC before therapy start: baseline 1000; ben-neutropenia 700 then 900 (< 1000): three
    # times weekly
    res = _ben_with_baselines([])
    res += [anc("b", "2026-01-12", 1200), anc("b", "2026-01-19", 700), anc("b", "2026-01-21", 900)]
    r = run_batch(tmp_path, res, as_of("2026-01-21"))
    assert r.status_for("b")["monitoringFrequency"] == "three-times-weekly"


def test_s3_ben_first_supply_needs_two_baselines(tmp_path: Path) -> None:
    # CR 2.1 BEN "needs at least two baseline ANCs before initiation"; "BEN >= 1000 (two
    # baselines)"
    def build(values: list[tuple[str, int]]) -> list[Resource]:
        res: list[Resource] = [
            patient("b"),
            practitioner(PRESCRIBER),
            medication_request("b", "2026-02-01"),
            *[anc("b", d, v, oid=f"b-{d}") for d, v in values],
            pending_dispense("b", "2026-02-10", did="b-first"),
        ]
        from tests.scenario_kit import designation

        res.append(designation("b", BEN))
        return res

    one = run_batch(tmp_path, build([("2026-02-08", 1500)]), as_of("2026-02-10"))
    assert one.authorization_for("b-first")["outcome"] == "not-authorized"
    two = run_batch(
        tmp_path, build([("2026-02-03", 1100), ("2026-02-08", 1500)]), as_of("2026-02-10")
    )
    assert two.authorization_for("b-first")["outcome"] == "authorized"


# ---------------------------------------------------------------------------------------------
# CR 2.2 "Hospice (prescriber designation): the normal-range interval is every 6 months."


def test_s3_hospice_early_in_therapy_is_every_six_months(tmp_path: Path) -> None:
    res = [
        *on_clozapine("h", "2026-01-05", "2026-03-02", designations=(HOSPICE,)),
        anc("h", "2026-03-02", 1800),
    ]
    r = run_batch(tmp_path, res, as_of("2026-03-02"))
    st = r.status_for("h")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("every-6-months", "2026-09-02")


def test_s3_hospice_four_month_old_anc_is_current(tmp_path: Path) -> None:
    res = [
        *on_clozapine("h", "2025-01-06", "2026-06-01", designations=(HOSPICE,)),
        anc("h", "2026-02-02", 1800),
        pending_dispense("h", "2026-06-05", did="h-pend"),
    ]
    r = run_batch(tmp_path, res, as_of("2026-06-05"))
    assert r.status_for("h")["overdue"] is False
    assert r.authorization_for("h-pend")["outcome"] == "authorized"


def test_s3_hospice_back_to_six_months_after_mild(tmp_path: Path) -> None:
    # CR 2.1 mild: "three times weekly until >= 1500, then back to the last normal-range
    # interval"
    res = [
        *on_clozapine("h", "2025-01-06", "2026-02-02", designations=(HOSPICE,)),
        anc("h", "2026-02-02", 1800),
        anc("h", "2026-02-09", 1400),
        anc("h", "2026-02-12", 1600),
    ]
    mid = run_batch(tmp_path, res[:-1], as_of("2026-02-09"))
    assert mid.status_for("h")["monitoringFrequency"] == "three-times-weekly"
    r = run_batch(tmp_path, res, as_of("2026-02-12"))
    st = r.status_for("h")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("every-6-months", "2026-08-12")


# ---------------------------------------------------------------------------------------------
# CR 2.2 "An interruption of 30 days or more (days without clozapine supply, or an explicit
# interrupt) restarts the schedule as a new patient (weekly from the restart); under 30 days the
# schedule continues as before". Safer reading: an explicit interrupt counts from the interrupt
# even though the last supply would still cover those days.


def _interrupted(resupply: str) -> list[Resource]:
    res = [*long_term("p"), anc("p", "2026-02-05", 800), anc("p", "2026-02-06", 1200)]
    res += [anc("p", d, 1600) for d in ("2026-02-09", "2026-02-16", "2026-02-23", "2026-03-02")]
    res += [anc("p", "2026-03-09", 1600), completed_dispense("p", resupply, did="p-resupply")]
    return res


def test_s3_explicit_interrupt_of_30_days_or_more_restarts(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _interrupted("2026-03-10"), as_of("2026-03-11"))
    assert r.status_for("p")["therapyStart"] == "2026-03-10"


def test_s3_explicit_interrupt_under_30_days_continues(tmp_path: Path) -> None:
    r = run_batch(tmp_path, _interrupted("2026-02-20"), as_of("2026-02-24"))
    assert r.status_for("p")["therapyStart"] == "2025-01-06"


# ---------------------------------------------------------------------------------------------
# CR 2.2 '"The last normal-range interval" is the interval that was in force before the
# excursion, as the schedule stands when the patient returns to normal.'


def test_s3_last_interval_as_it_stands_at_the_return(tmp_path: Path) -> None:
    # therapy 2025-02-17: every 2 weeks before 2026-02-17, monthly after. Mild 02-13, back to
    # normal 02-19 (after 12 months): monthly.
    res = [
        *on_clozapine("p", "2025-02-17", "2026-02-16"),
        anc("p", "2026-02-02", 1800),
        anc("p", "2026-02-13", 1400),
        anc("p", "2026-02-16", 1450),
        anc("p", "2026-02-19", 1600),
    ]
    before = run_batch(tmp_path, res[:-3], as_of("2026-02-02"))
    assert before.status_for("p")["monitoringFrequency"] == "every-2-weeks"
    r = run_batch(tmp_path, res, as_of("2026-02-19"))
    st = r.status_for("p")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("monthly", "2026-03-19")


def test_s3_last_interval_weekly_early_in_therapy(tmp_path: Path) -> None:
    res = [
        *on_clozapine("p", "2026-01-05", "2026-03-30"),
        anc("p", "2026-03-30", 1800),
        anc("p", "2026-04-02", 1400),
        anc("p", "2026-04-04", 1600),
    ]
    r = run_batch(tmp_path, res, as_of("2026-04-04"))
    st = r.status_for("p")
    assert (st["monitoringFrequency"], st["nextAncDue"]) == ("weekly", "2026-04-11")


# ---------------------------------------------------------------------------------------------
# CR 2.3 "A prescriber's documented rationale (section 4) recorded after the blocking result
# turns a not-authorized into an authorized one"; CR 4 "a prescriber's mitigation (author = the
# prescriber) on a low-ANC, overdue or interrupt issue is the treatment rationale".


def _blocked() -> list[Resource]:
    return [
        *long_term("p"),
        anc("p", "2026-02-10", 800, oid="p-low"),
        pending_dispense("p", "2026-02-11", did="p-pend"),
    ]


def test_s3_rationale_dated_before_the_blocking_result_does_not_lift(tmp_path: Path) -> None:
    first = run_batch(tmp_path, _blocked(), as_of("2026-02-11"))
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low")[0]
    early = prescriber_rationale(low, "2026-02-09")
    second = run_batch(tmp_path, [*_blocked(), early], as_of("2026-02-11"))
    assert second.authorization_for("p-pend")["outcome"] == "not-authorized"


def test_s3_rationale_same_day_after_collection_lifts(tmp_path: Path) -> None:
    first = run_batch(tmp_path, _blocked(), as_of("2026-02-11"))
    low = first.issues_where(code="anc-moderate-neutropenia", observation="p-low")[0]
    answered = prescriber_rationale(low, "2026-02-10")  # 14:00, collection 08:00
    second = run_batch(tmp_path, [*_blocked(), answered], as_of("2026-02-11"))
    assert second.authorization_for("p-pend")["outcome"] == "authorized-override"


def test_s3_rationale_on_the_not_authorized_dispense_issue(tmp_path: Path) -> None:
    first = run_batch(tmp_path, _blocked(), as_of("2026-02-11"))
    refused = first.dispense_issue("p-pend")
    assert finding_code(refused) == "dispense-not-authorized"
    answered = prescriber_rationale(refused, "2026-02-11")
    second = run_batch(tmp_path, [*_blocked(), answered], as_of("2026-02-11"))
    assert second.authorization_for("p-pend")["outcome"] == "authorized-override"


# ---------------------------------------------------------------------------------------------
# CR 4 "a pharmacist's mitigation with action EMAUTH on a not-authorized dispense is ... a
# recorded override (local backend)"; CR 3 override "with ... a current ANC".


def test_s3_emauth_does_not_lift_a_stale_anc_with_the_limit(tmp_path: Path) -> None:
    # weekly ANC 02-02: current through 02-11; 02-14 discharge of 10 days: two reasons
    res = [
        *weekly_patient("p", last_anc="2026-02-02"),
        pending_dispense("p", "2026-02-14", 10, did="p-pend", category="discharge"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-14"))
    refused = first.dispense_issue("p-pend")
    assert {"anc-not-current", "supply-exceeds-limit"} <= evidence_codes(refused)
    second = run_batch(
        tmp_path, [*res, pharmacist_override(refused, "2026-02-14")], as_of("2026-02-14")
    )
    a = second.authorization_for("p-pend")
    assert a["outcome"] == "not-authorized" and "anc-not-current" in a["reasons"]


def test_s3_pharmacist_text_without_emauth_is_no_override(tmp_path: Path) -> None:
    res = [
        *weekly_patient("p"),
        pending_dispense("p", "2026-02-10", 10, did="p-pend", category="discharge"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-10"))
    refused = first.dispense_issue("p-pend")
    note = with_mitigation(
        refused,
        "2026-02-10",
        author="Practitioner/pharmacist-1",
        action={"text": "checked with ward"},
    )
    second = run_batch(tmp_path, [*res, note], as_of("2026-02-10"))
    assert second.authorization_for("p-pend")["outcome"] == "not-authorized"


def test_s3_emauth_lifts_the_discharge_limit(tmp_path: Path) -> None:
    res = [
        *weekly_patient("p"),
        pending_dispense("p", "2026-02-10", 10, did="p-pend", category="discharge"),
    ]
    first = run_batch(tmp_path, res, as_of("2026-02-10"))
    refused = first.dispense_issue("p-pend")
    second = run_batch(
        tmp_path, [*res, pharmacist_override(refused, "2026-02-10")], as_of("2026-02-10")
    )
    issue = second.dispense_issue("p-pend")
    assert finding_code(issue) == "dispense-authorized-override"
    assert second.authorization_for("p-pend")["outcome"] == "authorized-override"
