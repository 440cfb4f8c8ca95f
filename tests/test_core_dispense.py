"""Clinical-rules section 2.3 (local backend) and section 4 (answers through mitigations)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.core_kit import anc, at, evaluate, issue, pending, reference, supply


def decide(labs, supplies, dispense, clock=None, **kwargs):
    result = evaluate(labs, supplies, clock, pending_dispenses=(dispense,), **kwargs)
    (decision,) = result.decisions
    return decision


def test_current_normal_anc_authorizes():
    decision = decide([anc(-1, 2000), anc(5, 2000)], [supply(0)], pending(7))
    assert (decision.outcome, decision.reasons) == ("authorized", ())


def test_no_anc_at_all():
    decision = decide([], [supply(0)], pending(7), clock=7)
    assert decision.outcome == "not-authorized"
    assert "anc-missing" in decision.reasons


@pytest.mark.parametrize(("day", "current"), [(14, True), (15, False)])
def test_anc_must_be_current_at_dispense_time(day, current):
    decision = decide([anc(-1, 2000), anc(5, 2000)], [supply(0)], pending(day), clock=day)
    assert ("anc-not-current" not in decision.reasons) is current


def test_interrupted_treatment_blocks():
    decision = decide([anc(-1, 2000), anc(5, 700)], [supply(0)], pending(6))
    assert decision.reasons == ("treatment-interrupted",)


def test_every_failing_condition_is_listed():
    # Moderate on day 5 (daily: current to day 8), a 10-day discharge supply on day 12.
    decision = decide([anc(-1, 2000), anc(5, 700)], [supply(0, 28)], pending(12, 10, "discharge"))
    assert decision.reasons == ("anc-not-current", "treatment-interrupted", "supply-exceeds-limit")


@pytest.mark.parametrize(("second", "allowed"), [(1000, True), (999, False)])
def test_ben_first_supply_needs_both_baselines_at_1000(second, allowed):
    decision = decide([anc(-5, 1200), anc(-2, second)], [], pending(0), clock=0, ben=True)
    assert (decision.outcome == "authorized") is allowed


def test_rechallenge_awaiting_prescriber_blocks():
    labs = [anc(-1, 2000), anc(5, 400), anc(9, 1600)]
    decision = decide(labs, [supply(0)], pending(10))
    assert "rechallenge-requires-prescriber" in decision.reasons
    assert decision.outcome == "not-authorized"


@pytest.mark.parametrize(
    ("baseline_day", "value", "reason"),
    [(-31, 2000, "anc-not-current"), (-30, 2000, None), (-2, 1499, "anc-below-threshold")],
)
def test_first_supply_needs_a_recent_baseline_at_initiation_level(baseline_day, value, reason):
    decision = decide([anc(baseline_day, value, hour=16)], [], pending(0), clock=0)
    assert decision.first_supply
    if reason is None:
        assert decision.outcome == "authorized"
    else:
        assert reason in decision.reasons


def test_ben_first_supply_needs_two_baselines():
    one = decide([anc(-2, 1200)], [], pending(0), clock=0, ben=True)
    two = decide([anc(-5, 1200), anc(-2, 1200)], [], pending(0), clock=0, ben=True)
    assert "anc-missing" in one.reasons
    assert two.outcome == "authorized"


@pytest.mark.parametrize(
    ("setting", "days", "allowed"),
    [
        ("discharge", 7, True),
        ("discharge", 8, False),
        ("inpatient", 8, False),
        ("outpatient", 90, True),
        ("community", 90, True),
        ("discharge", None, False),
    ],
)
def test_discharge_and_inpatient_supply_limit_under_weekly(setting, days, allowed):
    decision = decide([anc(-1, 2000), anc(5, 2000)], [supply(0)], pending(6, days, setting))
    assert ("supply-exceeds-limit" not in decision.reasons) is allowed


@pytest.mark.parametrize(("days", "allowed"), [(7, True), (8, False), (None, False)])
def test_a_dispense_of_unknown_setting_is_held_to_the_discharge_limit(days, allowed):
    # Its category could not be read: it may be an inpatient or discharge supply.
    unknown = replace(pending(6, days, "outpatient"), setting_unknown=True)
    decision = decide([anc(-1, 2000), anc(5, 2000)], [supply(0)], unknown)
    assert ("supply-exceeds-limit" not in decision.reasons) is allowed
    assert decision.supply_limit == 7


def test_supply_limit_follows_monitoring_frequency():
    # 13 months of therapy: monthly monitoring allows 30 days at discharge.
    supplies = [supply(day, 28) for day in range(0, 400, 28)]
    labs = [anc(-1, 2000), anc(399, 2000)]
    assert decide(labs, supplies, pending(400, 30, "discharge")).outcome == "authorized"
    assert "supply-exceeds-limit" in decide(labs, supplies, pending(400, 31, "discharge")).reasons


def test_prescriber_rationale_after_blocking_result_authorizes_with_citation():
    labs = [anc(-1, 2000), anc(5, 700)]
    prior = issue("anc-moderate-neutropenia", author="Practitioner/dr", when=at(5, 15))
    decision = decide(
        labs, [supply(0)], pending(6), prior=(prior,), prescribers=frozenset({"Practitioner/dr"})
    )
    assert decision.outcome == "authorized-override"
    assert decision.citation is not None and decision.citation.role == "prescriber"


def test_rationale_recorded_before_the_blocking_result_does_not_count():
    labs = [anc(-1, 2000), anc(5, 700)]
    prior = issue("anc-mild-neutropenia", author="Practitioner/dr", when=at(4))
    decision = decide(
        labs, [supply(0)], pending(6), prior=(prior,), prescribers=frozenset({"Practitioner/dr"})
    )
    assert decision.outcome == "not-authorized"


def test_rationale_by_someone_else_than_the_prescriber_does_not_count():
    labs = [anc(-1, 2000), anc(5, 700)]
    prior = issue("anc-moderate-neutropenia", author="Practitioner/other", when=at(5, 15))
    decision = decide(
        labs, [supply(0)], pending(6), prior=(prior,), prescribers=frozenset({"Practitioner/dr"})
    )
    assert decision.outcome == "not-authorized"


def _override(dispense: str, when, reasons=("supply-exceeds-limit",)):
    return issue(
        "dispense-not-authorized",
        author="Practitioner/pharmacist",
        when=when,
        action=("EMAUTH",),
        implicated=(dispense,),
        reasons=reasons,
        ref=f"DetectedIssue/{dispense.split('/')[1]}",
    )


def test_pharmacist_override_lifts_the_discharge_limit():
    labs = [anc(-1, 2000), anc(5, 2000)]
    dispense = pending(6, 28, "discharge")
    prior = _override(dispense.ref, at(6, 16))
    decision = decide(labs, [supply(0)], dispense, clock=7, prior=(prior,))
    assert decision.outcome == "authorized-override"
    assert decision.citation is not None and decision.citation.role == "pharmacist"


@pytest.mark.parametrize(
    ("labs", "reason"),
    [
        ([anc(-1, 2000), anc(1, 2000)], "anc-not-current"),  # an override needs a current ANC
        ([anc(-1, 2000), anc(19, 400)], "treatment-interrupted"),  # the prescriber's decision
    ],
)
def test_pharmacist_cannot_override_without_a_current_anc_or_past_an_interruption(labs, reason):
    dispense = pending(20)
    prior = _override(dispense.ref, at(20, 16), reasons=(reason,))
    decision = decide(labs, [supply(0, 28)], dispense, clock=21, prior=(prior,))
    assert decision.outcome == "not-authorized"
    assert reason in decision.reasons


def _limits_discharge():
    base = reference().protocol
    return replace(base, override=replace(base.override, limited_settings=frozenset({"discharge"})))


@pytest.mark.parametrize(("days_after_first", "allowed"), [(364, False), (366, True)])
def test_override_limit_is_three_per_rolling_year(days_after_first, allowed):
    earlier = [_override(f"MedicationDispense/old{i}", at(10 + i * 30)) for i in range(3)]
    day = 10 + days_after_first
    dispense = pending(day, 40, "discharge")  # over the 30 days monthly monitoring allows
    mine = _override(dispense.ref, at(day, 16))
    labs = [anc(-1, 2000), anc(day - 2, 2000)]
    supplies = [supply(d, 28) for d in range(0, day, 28)]
    decision = decide(
        labs,
        supplies,
        dispense,
        clock=day + 1,
        prior=(*earlier, mine),
        protocol=_limits_discharge(),
    )
    assert (decision.outcome == "authorized-override") is allowed
    if not allowed:
        assert "override-limit-reached" in decision.reasons


def test_override_limit_does_not_apply_to_unlimited_settings():
    earlier = [_override(f"MedicationDispense/old{i}", at(10 + i * 30)) for i in range(3)]
    dispense = pending(120, 28, "discharge")
    mine = _override(dispense.ref, at(120, 16))
    labs = [anc(-1, 2000), anc(118, 2000)]
    supplies = [supply(d, 28) for d in range(0, 120, 28)]
    decision = decide(labs, supplies, dispense, clock=121, prior=(*earlier, mine))
    assert decision.outcome == "authorized-override"


def test_restart_after_interruption_needs_a_new_baseline():
    labs = [anc(-1, 2000), anc(20, 2000)]
    supplies = [supply(0, 28)]
    restart_day = 28 + 30
    stale = decide(labs, supplies, pending(restart_day), clock=restart_day)
    assert stale.first_supply and "anc-not-current" in stale.reasons
    fresh = decide([*labs, anc(restart_day - 1, 1400)], supplies, pending(restart_day))
    assert "anc-below-threshold" in fresh.reasons


def test_dispense_prepared_after_the_clock_is_not_decided():
    result = evaluate([anc(-1, 2000)], [], at(0), pending_dispenses=(pending(3),))
    assert result.decisions == ()


def test_decision_time_defaults_to_the_clock():
    from adapter.core.model import PendingDispense
    from tests.core_kit import PATIENT

    undated = PendingDispense("MedicationDispense/u", PATIENT, None, 7, "outpatient")
    result = evaluate(
        [anc(-1, 2000), anc(1, 2000)], [supply(0)], at(20), pending_dispenses=(undated,)
    )
    assert "anc-not-current" in result.decisions[0].reasons
    assert at(20) - at(1) > timedelta(days=9)


@pytest.mark.parametrize(("clock", "current"), [(14, True), (15, False)])
def test_a_pending_dispense_is_decided_as_of_the_clock_not_its_preparation(clock, current):
    # interfaces.md s.3: every decision is made as of the clock. Prepared on day 12, when the
    # day-5 ANC was current (due day 12, + 2 days' grace); still awaiting a decision on day 15,
    # when it is not: it is handed over now, so it is not supported.
    decision = decide([anc(-1, 2000), anc(5, 2000)], [supply(0)], pending(12), clock=clock)
    assert ("anc-not-current" in decision.reasons) is not current
    assert (decision.outcome == "authorized") is current


@pytest.mark.parametrize(("last_anc", "authorized"), [(55, True), (49, True), (48, False)])
def test_a_restart_needs_a_current_anc_as_well_as_its_baseline(last_anc, authorized):
    # clinical-rules 2.3: every rule must hold. A restart after 30 days off (supply 0-28,
    # restart on day 58) with a baseline within the 30 days before it (days 48-55) but no
    # longer current under the schedule in force (weekly: due + 7, + 2 days' grace).
    labs = [anc(-1, 2000), anc(20, 2000), anc(last_anc - 7, 2000), anc(last_anc, 2000)]
    decision = decide(labs, [supply(0, 28)], pending(58), clock=58)
    assert decision.first_supply
    assert (decision.outcome == "authorized") is authorized, decision.reasons
    if not authorized:
        assert decision.reasons == ("anc-not-current",)


@pytest.mark.parametrize(
    ("day", "hour", "within"), [(-30, 23, True), (-30, 0, True), (-31, 23, False)]
)
def test_the_baseline_window_counts_the_sites_dates(day, hour, within):
    # "within the 30 days before it": dates at the site, whatever the hour of either.
    decision = decide([anc(day, 2000, hour=hour)], [], pending(0), clock=0)
    assert ("anc-not-current" not in decision.reasons) is within
